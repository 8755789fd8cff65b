"""``store.stats()``: the store's operation metrics and storage accounting.

Storage comes from INFO, the registries and sampled MEMORY USAGE: every project key when
the database is small (a bounded SCAN of the project's prefix), a RANDOMKEY sample
extrapolated by DBSIZE when it is large; never KEYS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .core.codec import READ, normalize_id
from .core.context import Ctx
from .core.keys import escape_id
from .core.records import EntityStats, Status
from .core.time import to_us
from .errors import wrap_redis
from .online.history import from_latest, ttl_ok
from .timeseries.spec import SeriesRegistry

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


def stats(ctx: Ctx, *, storage: bool, flush: Callable[[], None]) -> dict[str, Any]:
    """``store.stats()``: operations of this process, and (``storage``) what is stored;
    ``flush`` sends buffered profiles first, so that they count as stored."""
    out: dict[str, Any] = {"operations": ctx.metrics.snapshot()}
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
            pipe.zcard(history)
            pipe.memory_usage(history, samples=0)
        replies = pipe.execute()
    blob, pttl, mem = replies[0], int(replies[1]), int(replies[2] or 0)
    kept = int(replies[3]) if keeps else (1 if blob is not None else 0)
    mem += int(replies[4] or 0) if keeps else 0
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
