"""Range queries: raw points, or buckets from tiles when a rollup fits, else from raw.

Window semantics: with a bucket, ``start`` is rounded down and ``end`` up to bucket
boundaries (multiples of the bucket length from the epoch): every bucket that overlaps
[start, end] is returned whole, so the tile path and the raw path give the same buckets.
Empty buckets are omitted (like RedisTimeSeries without EMPTY).
"""

from __future__ import annotations

import numpy as np

from ..core.context import Ctx
from ..errors import BackendError, wrap_redis
from .spec import Rollup, SeriesSpec
from .storage import raw_points
from .tiles import MEM, WIRE_BYTES, aggregate, aggregate_points, coarsen, from_wire, partials


def pick_rollup(
    spec: SeriesSpec, bucket_ms: int, lo: int | None, newest: int | None
) -> Rollup | None:
    """The coarsest rollup that divides the bucket and still holds the range's start."""
    best: Rollup | None = None
    for r in spec.rollups:
        if bucket_ms % r.bucket_ms:
            continue
        if lo is None:
            ok = r.retention_ms >= spec.retention_ms  # tiles reach back as far as raw
        else:
            ok = newest is None or lo >= (newest - r.retention_ms) // r.bucket_ms * r.bucket_ms
        if ok and (best is None or r.bucket_ms > best.bucket_ms):
            best = r
    return best


def _newest(ctx: Ctx, spec: SeriesSpec) -> int | None:
    with wrap_redis(f"series {spec.name!r}"):
        raw = ctx.client.hget(ctx.keys.series(spec.escaped), "newest")
    return None if raw is None else int(raw)


def read_tiles(ctx: Ctx, spec: SeriesSpec, r: Rollup, lo: int | None, hi: int | None) -> np.ndarray:
    """Tiles of rollup ``r`` with bucket start in [lo, hi], inside its retention, sorted."""
    e = spec.escaped
    with wrap_redis(f"series {spec.name!r}: cannot read tiles"):
        # the page index is scored by page end: a page overlaps [lo, hi] when it ends
        # after lo and starts at or before hi
        members: list[bytes] = ctx.client.zrangebyscore(  # type: ignore[assignment]
            ctx.keys.series_pages(e),
            "-inf" if lo is None else f"({lo}",
            "+inf" if hi is None else hi + r.page_ms,
        )
        prefix = b"%d:" % r.bucket_ms
        pages = sorted(int(m[len(prefix) :]) for m in members if m.startswith(prefix))
        pipe = ctx.client.pipeline(transaction=False)
        pipe.hget(ctx.keys.series(e), "newest")
        for p in pages:
            pipe.hgetall(ctx.keys.series_page(e, r.bucket_ms, p))
        replies = pipe.execute()
    newest = None if replies[0] is None else int(replies[0])
    parts: list[np.ndarray] = []
    for p, h in zip(pages, replies[1:], strict=True):
        if not h:
            continue
        slots = np.fromiter((int(k) for k in h), np.int64, len(h))
        raw = b"".join(h.values())
        if len(raw) != len(h) * WIRE_BYTES:
            raise BackendError(f"series {spec.name!r}: a tile page is damaged")
        parts.append(from_wire(p * r.slots + slots, raw, r.bucket_ms))
    tiles = np.concatenate(parts) if parts else np.empty(0, MEM)
    tiles = tiles[np.argsort(tiles["b"], kind="stable")]
    start = tiles["b"] * r.bucket_ms
    keep = np.ones(len(tiles), bool)
    if newest is not None:
        keep &= start + r.bucket_ms > newest - r.retention_ms
    if lo is not None:
        keep &= start >= lo
    if hi is not None:
        keep &= start <= hi
    return tiles[keep]


def bucketed(
    ctx: Ctx, spec: SeriesSpec, lo: int | None, hi: int | None, bucket_ms: int, agg: str
) -> tuple[np.ndarray, np.ndarray, str]:
    """(bucket starts ms, values, source) where source is 'tiles:<rollup>' or 'raw'."""
    ts, values, source = bucketed_many(ctx, spec, lo, hi, bucket_ms, [agg])
    return ts, values[0], source


def bucketed_many(
    ctx: Ctx, spec: SeriesSpec, lo: int | None, hi: int | None, bucket_ms: int, aggs: list[str]
) -> tuple[np.ndarray, list[np.ndarray], str]:
    """Several aggregates of the same buckets from one read: (bucket starts ms, values per
    agg, source)."""
    lo_b = None if lo is None else lo // bucket_ms * bucket_ms
    hi_b = None if hi is None else (hi // bucket_ms + 1) * bucket_ms - 1
    r = pick_rollup(spec, bucket_ms, lo_b, _newest(ctx, spec))
    if r is not None:
        tiles = coarsen(read_tiles(ctx, spec, r, lo_b, hi_b), bucket_ms // r.bucket_ms)
        return tiles["b"] * bucket_ms, [aggregate(tiles, a) for a in aggs], f"tiles:{r.label}"
    ts, vs, _ = raw_points(ctx, spec, lo_b, hi_b)
    if len(aggs) == 1:  # computes only what the one aggregate needs
        b, values = aggregate_points(ts, vs, bucket_ms, aggs[0])
        return b * bucket_ms, [values], "raw"
    t = partials(ts, vs, bucket_ms)
    return t["b"] * bucket_ms, [aggregate(t, a) for a in aggs], "raw"
