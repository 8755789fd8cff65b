"""``store.stats()``: the store's operation metrics, the server's memory, the realtime
backlog, the age of buffered profiles, and (``storage``) storage accounting. ``GET /metrics``
(``redfeat.serve.prom``) renders these same numbers for Prometheus.

Storage comes from INFO, the registries and sampled MEMORY USAGE: every project key when
the database is small (a bounded SCAN of the project's prefix), a RANDOMKEY sample
extrapolated by DBSIZE when it is large; never KEYS. The realtime section is one pipelined
round trip per view for the change feed and ingest streams (XLEN, XRANGE ... COUNT 1,
XINFO GROUPS, XPENDING): O(views), never O(entries).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import redis
from redis.cluster import RedisCluster

from .core.codec import READ, normalize_id
from .core.context import Ctx
from .core.keys import escape_id
from .core.metrics import BOUNDS_NS, Metrics
from .core.records import EntityStats, Status
from .core.time import to_us
from .errors import wrap_redis
from .online import events
from .online.history import LATEST_HEAD, chunk_head, from_latest, read_chunks, ttl_ok
from .timeseries.spec import SeriesRegistry

# Histogram edges for exporters (seconds): each counts the operations whose fine bucket
# (20 a decade) ends at or below it, so an edge is exact to the fine buckets' 12 %.
EDGES_S = (
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Profiles(Protocol):
    """What stats() reads of the profile recorder (``quality.recorder.Recorder``)."""

    flushed_at: float | None
    pending_since: float | None


FULL_SCAN_UNDER = 200_000  # keys in the database: below this, scan the project exactly
SAMPLE_KEYS = 2_000  # RANDOMKEY samples for a large database
MEMORY_SAMPLES = 200  # MEMORY USAGE calls per view or series group


def _classify(ctx: Ctx, key: bytes) -> str | None:
    """'view:<name>', 'series:<name>', 'quality:<view>', 'other:<family>', or None (not
    this project's)."""
    parsed = ctx.keys.parse(key)
    if parsed is None:
        return None
    kind = {"entity": "view", "ts": "series", "q": "quality"}.get(parsed.family)
    if kind is not None:
        return f"{kind}:{parsed.name}"
    return "other:" + parsed.family


def _series_storage(ctx: Ctx) -> dict[str, dict[str, Any]]:
    """Keys and bytes of each series from its known key set (the registry lists series; a
    series lists its tile pages), MEMORY USAGE of up to MEMORY_SAMPLES pages extrapolated."""
    k = ctx.keys
    out: dict[str, dict[str, Any]] = {}
    client = ctx.client
    for spec in SeriesRegistry(client, k).all():
        e = spec.escaped
        fixed = [k.series(e), k.series_head(e), k.series_chunk_index(e), k.series_chunks(e)]
        fixed.append(k.series_pages(e))
        pages: list[bytes] = client.zrange(k.series_pages(e), 0, -1)  # type: ignore[assignment]
        page_keys = [k.series_page_member(e, m.decode()) for m in pages]
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


def storage_report(ctx: Ctx) -> dict[str, Any]:
    """Server memory and this project's keys and bytes per view, series and quality data."""
    client = ctx.client
    with wrap_redis("reading storage statistics failed"):
        info = client.info("memory")
        dbsize = int(client.dbsize())
        groups: dict[str, list[bytes]] = {}
        exact = dbsize <= FULL_SCAN_UNDER
        if exact:
            for key in client.scan_iter(match=ctx.keys.prefix + "*", count=1000):
                g = _classify(ctx, key)
                if g is not None:
                    groups.setdefault(g, []).append(key)
            scale = 1.0
        else:
            pipe = client.pipeline(transaction=False)
            for _ in range(SAMPLE_KEYS):
                pipe.randomkey()
            for key in pipe.execute():
                g = None if key is None else _classify(ctx, key)
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
    kinds: dict[str, dict[str, Any]] = {"views": {}, "series": {}, "quality": {}, "other": {}}
    for g, v in out.items():
        kind, name = g.split(":", 1)
        if kind != "series":  # series are counted exactly below
            kinds[{"view": "views"}.get(kind, kind)][name] = v
    kinds["series"] = _series_storage(ctx)
    for view in ctx.registry.views():  # views in the registry that no key (or sample) showed
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


def operations(metrics: Metrics) -> dict[str, dict[str, Any]]:
    """Per operation of this process: count, errors, mean/p50/p99 ms, the sum of latencies
    and cumulative counts at ``EDGES_S`` (a Prometheus histogram's buckets)."""
    out = metrics.snapshot()
    for op, h in metrics.histograms().items():
        cum, i, seen = [], 0, 0
        for edge in EDGES_S:
            limit = edge * 1e9 * (1 + 1e-9)
            while i < len(BOUNDS_NS) and BOUNDS_NS[i] <= limit:
                seen += h.buckets[i]
                i += 1
            cum.append(seen)
        out[op] = {
            **out[op],
            "sum_s": h.total_ns / 1e9,
            "buckets": {"le_s": list(EDGES_S), "counts": cum},
        }
    return out


def _server(client: redis.Redis) -> dict[str, Any]:
    """The server's memory and key count; on a cluster summed over the masters (memory,
    keys; fragmentation: the worst master's), ``masters`` saying how many."""
    if isinstance(client, RedisCluster):
        reply: Any = client.info("memory", target_nodes=RedisCluster.PRIMARIES)
        infos = [reply] if "used_memory" in reply else list(reply.values())
        dbsize = client.dbsize(target_nodes=RedisCluster.PRIMARIES)
    else:
        infos, dbsize = [client.info("memory")], client.dbsize()
    return {
        "used_memory": sum(int(i["used_memory"]) for i in infos),
        "used_memory_peak": sum(int(i["used_memory_peak"]) for i in infos),
        "maxmemory": sum(int(i.get("maxmemory", 0)) for i in infos),
        "fragmentation": max(float(i.get("mem_fragmentation_ratio", 0.0)) for i in infos),
        "dbsize": int(dbsize),
        **({"masters": len(infos)} if isinstance(client, RedisCluster) else {}),
    }


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _id_ms(entry_id: Any) -> int:
    return int(_text(entry_id).partition("-")[0])


def _first_id(reply: Any) -> Any:
    return reply[0][0] if reply else None


def realtime(ctx: Ctx) -> dict[str, Any]:
    """Per view: the change feed (``entries`` kept; ``age_s``: seconds since its newest
    event by the server's clock, the change-feed lag a consumer that is up to date with the
    feed can have; ``span_s``: how far back a cursor can resume) and the ingest stream
    (``backlog``: rows not yet read by a worker group, ``pending``: read, not acknowledged,
    ``lag_s``: age of the oldest row not yet acknowledged, ``dead_letters``). In a
    partitioned project each is summed (the ages: the oldest) over the partitions."""
    client: Any = ctx.client  # redis-py's stream replies are loosely typed
    k = ctx.keys
    views = [v.name for v in ctx.registry.views()]
    with wrap_redis("reading the change feed and ingest streams failed"):
        sec, usec = client.time()  # alone: a cluster pipeline refuses a keyless command
        pipe = client.pipeline(transaction=False)
        for v in views:
            for f in k.feeds(v):  # every partition's (one when not partitioned)
                pipe.xlen(f)
                pipe.xrevrange(f, count=1)
                pipe.xrange(f, count=1)
            for i in k.ingests(v):
                pipe.xlen(i)
                pipe.xinfo_groups(i)
            for d in k.dead_letter_streams(v):
                pipe.xlen(d)
        replies = pipe.execute(raise_on_error=False)
        now_ms = int(sec) * 1000 + int(usec) // 1000
        out: dict[str, Any] = {}
        second = client.pipeline(transaction=False)
        asks: list[str] = []
        unread: list[tuple[str, str]] = []  # (view, stream) pushed to, never read by a group
        at = 0
        nparts = max(1, k.partitions)
        for v in views:
            feeds = replies[at : at + 3 * nparts]
            at += 3 * nparts
            streams = replies[at : at + 2 * nparts]
            at += 2 * nparts
            deads = replies[at : at + nparts]
            at += nparts
            newest_ms = [_id_ms(_first_id(r)) for r in feeds[1::3] if r]
            oldest_ms = [_id_ms(_first_id(r)) for r in feeds[2::3] if r]
            entries = sum(int(n) for n in feeds[0::3] if not isinstance(n, Exception))
            feed: dict[str, Any] = {"entries": entries, "age_s": None, "span_s": None}
            if newest_ms and oldest_ms:
                feed["age_s"] = max(0, now_ms - max(newest_ms)) / 1000
                feed["span_s"] = (max(newest_ms) - min(oldest_ms)) / 1000
            backlog = pending = 0
            for key, ilen, groups in zip(k.ingests(v), streams[0::2], streams[1::2], strict=True):
                if isinstance(groups, Exception):  # no stream yet: nothing was pushed
                    groups = []
                n = 0 if isinstance(ilen, Exception) else int(ilen)
                behind = n if not groups else 0
                for g in groups:
                    g = {_text(a): b for a, b in g.items()}
                    lag = g.get("lag")
                    behind = max(behind, n if lag is None else int(lag))
                    pending += int(g.get("pending") or 0)
                    last = _text(g.get("last-delivered-id") or "0-0")
                    second.xpending(key, _text(g["name"]))
                    second.xrange(key, min=f"({last}", count=1)
                    asks.append(v)
                if not groups and n:
                    unread.append((v, key))
                backlog += behind
            out[v] = {
                "feed": feed,
                "ingest": {
                    "backlog": backlog,
                    "pending": pending,
                    "lag_s": 0.0,
                    "dead_letters": sum(int(d) for d in deads if not isinstance(d, Exception)),
                },
            }
        for _v, key in unread:  # pushed, but no worker ever read it
            second.xrange(key, count=1)
        if asks or unread:
            more = second.execute(raise_on_error=False)
            for j, v in enumerate(asks):
                summary, undelivered = more[2 * j], more[2 * j + 1]
                oldest = []
                if isinstance(summary, dict) and summary.get("pending"):
                    oldest.append(_id_ms(summary["min"]))
                if isinstance(undelivered, list) and undelivered:
                    oldest.append(_id_ms(undelivered[0][0]))
                if oldest:
                    ing = out[v]["ingest"]
                    ing["lag_s"] = max(ing["lag_s"], max(0, now_ms - min(oldest)) / 1000)
            for (v, _key), first in zip(unread, more[2 * len(asks) :], strict=True):
                if isinstance(first, list) and first:
                    ing = out[v]["ingest"]
                    ing["lag_s"] = max(ing["lag_s"], max(0, now_ms - _id_ms(first[0][0])) / 1000)
    return out


def profiles(recorder: Profiles) -> dict[str, Any]:
    """``flush_age_s``: how long the oldest profile data not yet in Redis has waited (0:
    nothing waits); ``last_flush_s``: seconds since the last successful flush (None: none
    yet in this process)."""
    now = time.time()
    pending = recorder.pending_since
    flushed = recorder.flushed_at
    return {
        "flush_age_s": 0.0 if pending is None else max(0.0, now - pending),
        "last_flush_s": None if flushed is None else max(0.0, now - flushed),
    }


def offline(ctx: Ctx, feeder: dict[str, Any] | None) -> dict[str, Any]:
    """The offline log's consumer group on each view's feed, whichever process runs it:
    ``lag`` (entries not yet read; None without a group), ``pending`` (read, not yet in
    Parquet) and ``gap`` (entries trimmed before it read them); with a feeder in this
    process, its ``versions_written`` and ``gaps`` resynced from history."""
    views = {
        v.name: events.group_state(ctx.client, ctx.keys, v.name, events.OFFLINE_GROUP)
        for v in ctx.registry.views()
    }
    return {"views": views, **(feeder or {})}


def stats(
    ctx: Ctx,
    *,
    storage: bool,
    flush: Callable[[], None],
    recorder: Profiles | None = None,
    feeder: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``store.stats()``: operations of this process, the server's memory, the realtime
    backlog, buffered profiles and (``storage``) what is stored; ``flush`` sends buffered
    profiles first, so that they count as stored."""
    out: dict[str, Any] = {"operations": operations(ctx.metrics)}
    with wrap_redis("reading server statistics failed"):
        out["server"] = _server(ctx.client)
    out["realtime"] = realtime(ctx)
    out["offline"] = offline(ctx, feeder)
    if recorder is not None:
        out["profiles"] = profiles(recorder)
    if storage:
        flush()
        out["storage"] = storage_report(ctx)
    return out


def entity_stats(ctx: Ctx, view: str, entity_id: str | int) -> EntityStats:
    """One entity's fields, latest version, versions kept and bytes, in one round trip."""
    res = ctx.registry.get(view)
    ent = normalize_id(view, entity_id, outcome=READ)
    latest = ctx.keys.latest(view, escape_id(ent))
    history = ctx.keys.history(view, escape_id(ent))
    keeps = res.hist_mode != "n"
    with wrap_redis(f"view {view!r}, entity {ent!r}: reading its stats failed"):
        pipe = ctx.client.pipeline(transaction=False)
        pipe.get(latest)
        pipe.pttl(latest)
        pipe.memory_usage(latest, samples=0)
        if keeps:
            pipe.get(history)
            pipe.memory_usage(history, samples=0)
        replies = pipe.execute(raise_on_error=False)
        for r in replies[:3] + replies[4:]:
            if isinstance(r, Exception):
                raise r
        chunk = read_chunks(ctx.client, [history], replies[3:4])[0] if keeps else None
    blob, pttl, mem = replies[0], int(replies[1]), int(replies[2] or 0)
    kept = 1 if blob is not None else 0
    if keeps:
        # history holds the versions older than the latest (and the latest too with a ttl)
        _, top, n = chunk_head(chunk) if chunk else (0, 0, 0)
        twice = blob is not None and n > 0 and top == LATEST_HEAD.unpack_from(blob)[1]
        kept = n + kept - twice
        mem += int(replies[4] or 0)
    fields = {f.name: repr(f.dtype).removeprefix("t.") for f in res.view.fields}
    if blob is None:
        status = Status.EXPIRED if kept else Status.MISSING  # the latest key expired
        return EntityStats(view, ent, status, fields, [], None, None, kept, mem, 0, None)
    v = from_latest(res, blob)
    status = Status.PRESENT if ttl_ok(res, to_us(v.event_time)) else Status.EXPIRED
    present = [name for name in fields if v.values.get(name) is not None]
    expires = pttl / 1000 if pttl >= 0 else None
    return EntityStats(
        view,
        ent,
        status,
        fields,
        present,
        v.event_time,
        v.written_at,
        kept,
        mem,
        len(blob),
        expires,
    )
