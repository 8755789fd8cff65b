"""Monitoring of the store itself: operation counters and latency histograms (in process),
and storage (``store.stats()``).

Latencies go into fixed log-spaced buckets (20 per decade from 1 us to 100 s: a quantile
reads as its bucket's upper bound, up to 12 % high; anything over 100 s reads as 100 s), so
recording is a bisect and an increment, and histograms from many processes could be summed.
Only the outermost timed call of a thread is recorded: a verb that calls another (get on an
on-read view reading its source, put_text writing) counts once.

Storage comes from INFO, the registries and sampled MEMORY USAGE: every project key when
the database is small (a bounded SCAN of the project's prefix), a RANDOMKEY sample
extrapolated by DBSIZE when it is large; never KEYS.
"""

from __future__ import annotations

import bisect
import functools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import redis

from ..errors import BackendError

if TYPE_CHECKING:
    from ..store import FeatureStore

P = ParamSpec("P")
R = TypeVar("R")

# bucket upper bounds in ns: 1 us .. 100 s, 20 per decade
_BOUNDS = [int(1_000 * 10 ** (i / 20)) for i in range(0, 161)]
FULL_SCAN_UNDER = 200_000  # keys in the database: below this, scan the project exactly
SAMPLE_KEYS = 2_000  # RANDOMKEY samples for a large database
MEMORY_SAMPLES = 200  # MEMORY USAGE calls per view or series group


@dataclass(slots=True)
class OpStats:
    count: int = 0
    errors: int = 0
    total_ns: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(_BOUNDS) + 1))

    def quantile(self, q: float) -> float | None:
        """Latency in ms at quantile q (the upper bound of its bucket)."""
        n = sum(self.buckets)
        if n == 0:
            return None
        rank = max(1, math.ceil(q * n))
        seen = 0
        for i, c in enumerate(self.buckets):
            seen += c
            if seen >= rank:
                return (_BOUNDS[i] if i < len(_BOUNDS) else _BOUNDS[-1]) / 1e6
        return _BOUNDS[-1] / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "errors": self.errors,
            "mean_ms": self.total_ns / self.count / 1e6 if self.count else None,
            "p50_ms": self.quantile(0.5),
            "p99_ms": self.quantile(0.99),
        }


class Metrics:
    """Per-operation counters and latency histograms of one store."""

    def __init__(self) -> None:
        self._ops: dict[str, OpStats] = {}
        self._lock = threading.Lock()

    def record(self, op: str, ns: int, failed: bool) -> None:
        i = bisect.bisect_left(_BOUNDS, ns)
        with self._lock:
            s = self._ops.get(op)
            if s is None:
                s = self._ops[op] = OpStats()
            s.count += 1
            s.total_ns += ns
            s.buckets[i] += 1
            if failed:
                s.errors += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {op: s.to_dict() for op, s in sorted(self._ops.items())}

    def reset(self) -> None:
        with self._lock:
            self._ops.clear()


_depth = threading.local()


def timed(op: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Count and time a store method under ``op`` (errors: calls that raised)."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            if getattr(_depth, "busy", False):  # inside another timed verb: not a new call
                return fn(*args, **kwargs)
            _depth.busy = True
            t0 = time.perf_counter_ns()
            failed = True
            try:
                out = fn(*args, **kwargs)
                failed = False
                return out
            finally:
                _depth.busy = False
                metrics: Metrics | None = getattr(args[0], "metrics", None)
                if metrics is not None:
                    metrics.record(op, time.perf_counter_ns() - t0, failed)

        return inner

    return wrap


def _classify(key: bytes, prefix: bytes) -> str | None:
    """'view:<name>', 'series:<name>', 'quality:<view>', 'other', or None (not ours)."""
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :]
    if rest.startswith(b"{"):
        return "view:" + rest[1 : rest.find(b"|")].decode(errors="replace")
    if rest.startswith(b"ts:{"):
        return "series:" + rest[4 : rest.find(b"}")].decode(errors="replace")
    if rest.startswith(b"q:"):
        return "quality:" + rest[2:].split(b":", 1)[0].decode(errors="replace")
    return "other:" + rest.split(b":", 1)[0].decode(errors="replace")


def _series_storage(store: FeatureStore) -> dict[str, dict[str, Any]]:
    """Keys and bytes of each series from its known key set (the registry lists series; a
    series lists its tile pages), MEMORY USAGE of up to MEMORY_SAMPLES pages extrapolated."""
    from ..timeseries.spec import SeriesRegistry

    k = store.keys
    out: dict[str, dict[str, Any]] = {}
    client = store.client
    for spec in SeriesRegistry(client, k).all():
        e = spec.escaped
        fixed = [k.series(e), k.series_head(e), k.series_chunk_index(e), k.series_chunks(e)]
        fixed.append(k.series_pages(e))
        pages: list[bytes] = client.zrange(k.series_pages(e), 0, -1)  # type: ignore[assignment]
        page_keys = [f"{k.series(e)}:t:{m.decode()}" for m in pages]
        pipe = client.pipeline(transaction=False)
        for key in fixed + page_keys[:MEMORY_SAMPLES]:
            pipe.memory_usage(key, samples=0)
        sizes = [int(s or 0) for s in pipe.execute()]
        head, tail = sizes[: len(fixed)], sizes[len(fixed) :]
        per_page = sum(tail) / len(tail) if tail else 0.0
        out[spec.name] = {
            "keys": sum(1 for s in head if s) + len(page_keys),
            "bytes": round(sum(head) + per_page * len(page_keys)),
            "estimated": len(page_keys) > MEMORY_SAMPLES,
        }
    return out


def storage(store: FeatureStore) -> dict[str, Any]:
    """Server memory and this project's keys and bytes per view, series and quality data."""
    client = store.client
    prefix = store.keys.prefix.encode()
    try:
        info = client.info("memory")
        dbsize = int(client.dbsize())
        groups: dict[str, list[bytes]] = {}
        exact = dbsize <= FULL_SCAN_UNDER
        if exact:
            for key in client.scan_iter(match=store.keys.prefix + "*", count=1000):
                g = _classify(key, prefix)
                if g is not None:
                    groups.setdefault(g, []).append(key)
            scale = 1.0
        else:
            pipe = client.pipeline(transaction=False)
            for _ in range(SAMPLE_KEYS):
                pipe.randomkey()
            for key in pipe.execute():
                g = None if key is None else _classify(key, prefix)
                if g is not None:
                    groups.setdefault(g, []).append(key)
            scale = dbsize / SAMPLE_KEYS
        out: dict[str, dict[str, Any]] = {}
        for g, keys in sorted(groups.items()):
            sample = keys[:MEMORY_SAMPLES]
            pipe = client.pipeline(transaction=False)
            for k in sample:
                pipe.memory_usage(k, samples=0)
            sizes = [int(s or 0) for s in pipe.execute()]
            n = len(keys) * scale
            per_key = sum(sizes) / len(sizes) if sizes else 0.0
            out[g] = {
                "keys": round(n),
                "bytes": round(per_key * n),
                "estimated": not exact or len(sample) < len(keys),
            }
    except redis.RedisError as exc:
        raise BackendError(f"reading storage statistics failed: {exc}") from exc
    kinds: dict[str, dict[str, Any]] = {"views": {}, "series": {}, "quality": {}, "other": {}}
    for g, v in out.items():
        kind, name = g.split(":", 1)
        if kind != "series":  # series are counted exactly below
            kinds[{"view": "views"}.get(kind, kind)][name] = v
    kinds["series"] = _series_storage(store)
    for view in store.views():  # views in the registry that no key (or sample) showed
        kinds["views"].setdefault(view.name, {"keys": 0, "bytes": 0, "estimated": not exact})
    return {
        "server": {
            "used_memory": int(info["used_memory"]),
            "used_memory_peak": int(info["used_memory_peak"]),
            "maxmemory": int(info.get("maxmemory", 0)),
            "fragmentation": float(info.get("mem_fragmentation_ratio", 0.0)),
            "dbsize": dbsize,
        },
        "exact": exact,
        **kinds,
    }
