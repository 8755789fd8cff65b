"""``GET /metrics``: Prometheus text format through ``prometheus_client``.

HTTP: ``redfeat_http_requests_total`` and ``redfeat_http_request_duration_seconds`` per
method, route (the documented path, never the raw one: bounded label values) and status.
Store, from ``store.stats(storage=False)`` read at scrape time (the same numbers):
``redfeat_store_operation_seconds`` (histogram per operation: get, get_many, write_many,
training_frame, ...), ``redfeat_store_operation_errors_total``, the change feed
(``redfeat_change_feed_age_seconds``, ``..._entries``), ingest (``redfeat_ingest_backlog``,
``..._pending``, ``..._lag_seconds``, ``redfeat_dead_letters``), buffered profiles
(``redfeat_profile_flush_age_seconds``), the Redis server's memory
(``redfeat_server_used_memory_bytes`` ...) and this process's resident memory.

Several workers (``redfeat serve --workers N``): ``PROMETHEUS_MULTIPROC_DIR`` is set for
them, the HTTP metrics use prometheus_client's multiprocess mode, and each worker leaves
its store's operation counters in that directory (at most once a second, and at each
scrape), so that a scrape answered by any worker sums them all.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..store import FeatureStore

HTTP_BUCKETS = (
    0.0002,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)
ENV = "PROMETHEUS_MULTIPROC_DIR"


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the peak instead
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _merge_ops(parts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for ops in parts:
        for op, s in ops.items():
            m = out.setdefault(
                op,
                {
                    "count": 0,
                    "errors": 0,
                    "sum_s": 0.0,
                    "buckets": {
                        "le_s": s["buckets"]["le_s"],
                        "counts": [0] * len(s["buckets"]["counts"]),
                    },
                },
            )
            m["count"] += s["count"]
            m["errors"] += s["errors"]
            m["sum_s"] += s["sum_s"]
            m["buckets"]["counts"] = [
                a + b for a, b in zip(m["buckets"]["counts"], s["buckets"]["counts"], strict=True)
            ]
    return out


class StoreCollector(Collector):
    """The store's numbers at scrape time (``store.stats(storage=False)``)."""

    def __init__(self, metrics: HttpMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        stats = self.m.store.stats(storage=False)
        ops = stats["operations"]
        if self.m.shared is not None:
            self.m.dump(ops, force=True)
            ops = _merge_ops(self.m.read_dumps())
        hist = HistogramMetricFamily(
            "redfeat_store_operation_seconds",
            "Latency of store operations (get, get_many, write_many, training_frame, ...)",
            labels=["op"],
        )
        errors = CounterMetricFamily(
            "redfeat_store_operation_errors", "Store operations that raised", labels=["op"]
        )
        for op, s in sorted(ops.items()):
            b = s["buckets"]
            counts = [(repr(float(le)), c) for le, c in zip(b["le_s"], b["counts"], strict=True)]
            counts.append(("+Inf", s["count"]))
            hist.add_metric([op], counts, s["sum_s"])
            errors.add_metric([op], s["errors"])
        yield hist
        yield errors
        feed_age = GaugeMetricFamily(
            "redfeat_change_feed_age_seconds",
            "Change-feed lag: seconds since the view's newest change event (server clock)",
            labels=["view"],
        )
        feed_n = GaugeMetricFamily(
            "redfeat_change_feed_entries", "Change events kept in the view's feed", labels=["view"]
        )
        backlog = GaugeMetricFamily(
            "redfeat_ingest_backlog", "Pushed rows no worker group has read yet", labels=["view"]
        )
        pending = GaugeMetricFamily(
            "redfeat_ingest_pending", "Rows read by a worker, not yet acknowledged", labels=["view"]
        )
        lag = GaugeMetricFamily(
            "redfeat_ingest_lag_seconds",
            "Age of the oldest pushed row not yet acknowledged",
            labels=["view"],
        )
        dead = GaugeMetricFamily(
            "redfeat_dead_letters", "Rows workers refused (store.dead_letters)", labels=["view"]
        )
        for view, r in sorted(stats["realtime"].items()):
            f, i = r["feed"], r["ingest"]
            if f["age_s"] is not None:
                feed_age.add_metric([view], f["age_s"])
            feed_n.add_metric([view], f["entries"])
            backlog.add_metric([view], i["backlog"])
            pending.add_metric([view], i["pending"])
            lag.add_metric([view], i["lag_s"])
            dead.add_metric([view], i["dead_letters"])
        yield from (feed_age, feed_n, backlog, pending, lag, dead)
        prof = stats.get("profiles") or {}
        yield GaugeMetricFamily(
            "redfeat_profile_flush_age_seconds",
            "How long the oldest profile data not yet in Redis has waited (0: none waits)",
            value=prof.get("flush_age_s", 0.0),
        )
        server = stats["server"]
        for key, name, doc in (
            ("used_memory", "redfeat_server_used_memory_bytes", "Memory the Redis server uses"),
            ("used_memory_peak", "redfeat_server_used_memory_peak_bytes", "Its peak"),
            ("maxmemory", "redfeat_server_maxmemory_bytes", "Its maxmemory (0: no limit)"),
            ("dbsize", "redfeat_server_keys", "Keys in the database"),
        ):
            yield GaugeMetricFamily(name, doc, value=server[key])


class HttpMetrics:
    """The request metrics of one app, and the scrape that renders them with the store's."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        shared = os.environ.get(ENV)
        self.shared = Path(shared) if shared else None
        self._dumped = 0.0
        reg = None if self.shared is not None else CollectorRegistry(auto_describe=True)
        self.registry = reg
        kw: dict[str, Any] = {"registry": reg}
        self.requests = Counter(
            "redfeat_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            **kw,
        )
        self.latency = Histogram(
            "redfeat_http_request_duration_seconds",
            "HTTP request latency by method, route and status",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            **kw,
        )
        gauge_kw = kw if self.shared is None else {**kw, "multiprocess_mode": "liveall"}
        self.rss = Gauge(
            "redfeat_http_process_resident_bytes",
            "Resident memory of the serving process (per pid with several workers)",
            **gauge_kw,
        )
        self.rss.set(_rss_bytes())
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._rss_at = time.monotonic()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        pair = self._children.get(key)
        if pair is None:  # labels() costs ~1 us: once per (method, route, status)
            labels = (method, route, str(status))
            pair = self._children[key] = (
                self.requests.labels(*labels),
                self.latency.labels(*labels),
            )
        pair[0].inc()
        pair[1].observe(seconds)
        now = time.monotonic()
        if now - self._rss_at > 1.0:
            self._rss_at = now
            self.rss.set(_rss_bytes())
            if self.shared is not None:
                self.dump(None)

    # -- several workers: each leaves its store's counters for the others' scrapes -------

    def _dump_path(self) -> Path:
        assert self.shared is not None
        return self.shared / f"redfeat-store-{os.getpid()}.json"

    def dump(self, ops: dict[str, Any] | None, force: bool = False) -> None:
        if self.shared is None:
            return
        from ..stats import operations

        now = time.monotonic()
        if not force and now - self._dumped < 1.0:
            return
        self._dumped = now
        data = ops if ops is not None else operations(self.store.metrics)
        path = self._dump_path()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    def read_dumps(self) -> list[dict[str, Any]]:
        assert self.shared is not None
        out = []
        for p in sorted(self.shared.glob("redfeat-store-*.json")):
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, ValueError):  # being replaced right now: the next scrape has it
                continue
        return out

    # -- the scrape ---------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The exposition (blocking: it reads Redis)."""
        if self.shared is not None:
            from prometheus_client import multiprocess

            reg = CollectorRegistry()
            multiprocess.MultiProcessCollector(reg, path=str(self.shared))  # type: ignore[no-untyped-call]
        else:
            assert self.registry is not None
            reg = CollectorRegistry()
            reg.register(_Forward(self.registry))
        self.rss.set(_rss_bytes())
        reg.register(StoreCollector(self))
        return generate_latest(reg), CONTENT_TYPE_LATEST

    def close(self) -> None:
        if self.shared is not None:
            from prometheus_client import multiprocess

            # counters of a worker that stopped stay counted; its live gauges go
            multiprocess.mark_process_dead(os.getpid(), str(self.shared))  # type: ignore[no-untyped-call]


class _Forward(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
