"""Tiles: mergeable per-bucket aggregates (count, sum, m2, min, max, first, last).

The same numpy code builds the partial tiles of a batch at ingest, merges tiles into
coarser buckets (15m from 5m tiles), and aggregates raw points when no rollup fits, so the
tile path and the raw path give the same answer. Buckets align to multiples of their
length from the epoch, like RedisTimeSeries. std/var are the sample ones (ddof=1, like
pandas); a bucket of one point gives NaN.
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import ConfigurationError

# In memory: absolute first/last timestamps, bucket id = start // bucket length.
MEM = np.dtype(
    [
        ("b", "<i8"),
        ("n", "<f8"),
        ("sum", "<f8"),
        ("m2", "<f8"),
        ("min", "<f8"),
        ("max", "<f8"),
        ("first", "<f8"),
        ("last", "<f8"),
        ("ft", "<i8"),
        ("lt", "<i8"),
    ]
)
# Stored (60 bytes, Lua format '<IddddddII'): offsets from the bucket start in ms.
WIRE = np.dtype(
    [
        ("n", "<u4"),
        ("sum", "<f8"),
        ("m2", "<f8"),
        ("min", "<f8"),
        ("max", "<f8"),
        ("first", "<f8"),
        ("last", "<f8"),
        ("fo", "<u4"),
        ("lo", "<u4"),
    ]
)
WIRE_BYTES = WIRE.itemsize
# One raw event of a window-features tile, as stored and as logged: ms from its bucket's
# start (like a tile's offsets) and the value.
EVENT = np.dtype([("o", "<u4"), ("v", "<f8")])
_ONE = struct.Struct("<IddddddII")  # WIRE, packed one at a time


def one_tile(v: float, off: int) -> bytes:
    """The stored tile of a single point ``v`` at ``off`` ms into its bucket."""
    return _ONE.pack(1, v, 0.0, v, v, v, v, off, off)


AGGS = ("avg", "sum", "min", "max", "count", "first", "last", "range", "std", "var")


def check_agg(agg: str) -> str:
    if not isinstance(agg, str) or agg not in AGGS:
        raise ConfigurationError(f"agg {agg!r} is not one of {AGGS}")
    return agg


def _starts(groups: np.ndarray) -> np.ndarray:
    if len(groups) == 0:
        return np.zeros(0, np.int64)
    return np.concatenate(([0], np.flatnonzero(groups[1:] != groups[:-1]) + 1))


def partials(
    ts: np.ndarray, values: np.ndarray, bucket_ms: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """Tiles of sorted, distinct points, one per non-empty bucket. ``groups`` (sorted,
    one per point) replaces the bucket ids as the grouping key, e.g. (entity, bucket) codes
    for window features, whose points may also share a timestamp."""
    # values near the float limits overflow sums to inf, as they do in pandas
    with np.errstate(over="ignore", invalid="ignore"):
        return _partials(ts, values, bucket_ms, groups)


def _partials(
    ts: np.ndarray, values: np.ndarray, bucket_ms: int, groups: np.ndarray | None
) -> np.ndarray:
    b = np.floor_divide(ts, bucket_ms) if groups is None else groups
    st = _starts(b)
    out = np.empty(len(st), MEM)
    if len(st) == 0:
        return out
    ends = np.append(st[1:], len(ts))
    n = (ends - st).astype(np.float64)
    s = np.add.reduceat(values, st)
    mean = np.repeat(s / n, (ends - st))
    out["b"] = b[st]
    out["n"] = n
    out["sum"] = s
    out["m2"] = np.add.reduceat((values - mean) ** 2, st)
    out["min"] = np.minimum.reduceat(values, st)
    out["max"] = np.maximum.reduceat(values, st)
    out["first"] = values[st]
    out["last"] = values[ends - 1]
    out["ft"] = ts[st]
    out["lt"] = ts[ends - 1]
    return out


def rollup_partials(ts: np.ndarray, values: np.ndarray, buckets: list[int]) -> list[np.ndarray]:
    """Tiles of sorted, distinct points for each bucket length: the finest from the points,
    each coarser one merged from the finest it is a multiple of (a pass over tiles instead
    of over every point)."""
    out: list[np.ndarray] = []
    for i, b in enumerate(buckets):
        src = next((j for j in range(i - 1, -1, -1) if b % buckets[j] == 0), None)
        if src is None:
            out.append(partials(ts, values, b))
        else:
            out.append(coarsen(out[src], b // buckets[src]))
    return out


def aggregate_points(
    ts: np.ndarray, values: np.ndarray, bucket_ms: int, agg: str
) -> tuple[np.ndarray, np.ndarray]:
    """(bucket ids, aggregate) of sorted points, computing only what ``agg`` needs."""
    if agg in ("std", "var", "first", "last"):
        t = partials(ts, values, bucket_ms)
        return t["b"], aggregate(t, agg)
    b = np.floor_divide(ts, bucket_ms)
    st = _starts(b)
    if len(st) == 0:
        return b[:0], values[:0].copy()
    with np.errstate(over="ignore", invalid="ignore"):
        if agg in ("avg", "sum", "count"):
            n = np.diff(np.append(st, len(ts))).astype(np.float64)
            if agg == "count":
                return b[st], n
            s = np.add.reduceat(values, st)
            return b[st], s / n if agg == "avg" else s
        lo = np.minimum.reduceat(values, st)
        hi = np.maximum.reduceat(values, st)
    return b[st], {"min": lo, "max": hi}.get(agg, hi - lo)


def coarsen(tiles: np.ndarray, factor: int) -> np.ndarray:
    """Merge tiles sorted by bucket into buckets ``factor`` times longer."""
    if factor == 1 or len(tiles) == 0:
        return tiles
    with np.errstate(over="ignore", invalid="ignore"):
        return _coarsen(tiles, factor)


def _coarsen(tiles: np.ndarray, factor: int) -> np.ndarray:
    g = np.floor_divide(tiles["b"], factor)
    st = _starts(g)
    ends = np.append(st[1:], len(tiles))
    out = np.empty(len(st), MEM)
    n = np.add.reduceat(tiles["n"], st)
    s = np.add.reduceat(tiles["sum"], st)
    dev = tiles["sum"] / tiles["n"] - np.repeat(s / n, ends - st)
    out["b"] = g[st]
    out["n"] = n
    out["sum"] = s
    out["m2"] = np.add.reduceat(tiles["m2"] + tiles["n"] * dev * dev, st)
    out["min"] = np.minimum.reduceat(tiles["min"], st)
    out["max"] = np.maximum.reduceat(tiles["max"], st)
    out["first"] = tiles["first"][st]
    out["ft"] = tiles["ft"][st]
    out["last"] = tiles["last"][ends - 1]
    out["lt"] = tiles["lt"][ends - 1]
    return out


def aggregate(tiles: np.ndarray, agg: str) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _aggregate(tiles, agg)


def _aggregate(tiles: np.ndarray, agg: str) -> np.ndarray:
    n = tiles["n"]
    if agg == "avg":
        return np.asarray(tiles["sum"] / n)
    if agg == "count":
        return n.copy()
    if agg == "range":
        return np.asarray(tiles["max"] - tiles["min"])
    if agg in ("std", "var"):
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(n > 1, np.maximum(tiles["m2"], 0.0) / (n - 1), np.nan)
        return np.sqrt(var) if agg == "std" else var
    return np.asarray(tiles[agg]).copy()


def to_wire(tiles: np.ndarray, bucket_ms: int) -> np.ndarray:
    w = np.empty(len(tiles), WIRE)
    for f in ("n", "sum", "m2", "min", "max", "first", "last"):
        w[f] = tiles[f]
    start = tiles["b"] * bucket_ms
    w["fo"] = tiles["ft"] - start
    w["lo"] = tiles["lt"] - start
    return w


def from_wire(bucket_ids: np.ndarray, raw: bytes, bucket_ms: int) -> np.ndarray:
    w = np.frombuffer(raw, WIRE)
    out = np.empty(len(w), MEM)
    for f in ("n", "sum", "m2", "min", "max", "first", "last"):
        out[f] = w[f]
    out["b"] = bucket_ids
    start = bucket_ids * bucket_ms
    out["ft"] = start + w["fo"]
    out["lt"] = start + w["lo"]
    return out


def tile_args(
    tiles: np.ndarray, bucket_ms: int, slots: int, mode: str
) -> list[tuple[int, list[bytes | str | int]]]:
    """Lua tile groups, one per page: (page, [mode, page end, member, slots, tiles]), the
    slots one byte each (a page holds at most 256 buckets), the tiles 60 bytes each."""
    if len(tiles) == 0:
        return []
    raw = to_wire(tiles, bucket_ms).tobytes()
    pages = np.floor_divide(tiles["b"], slots)
    st = _starts(pages)
    ends = np.append(st[1:], len(tiles))
    slot = (tiles["b"] - pages * slots).astype(np.uint8).tobytes()
    out: list[tuple[int, list[bytes | str | int]]] = []
    for a, z in zip(st.tolist(), ends.tolist(), strict=True):
        page = int(pages[a])
        out.append(
            (
                page,
                [
                    mode,
                    (page + 1) * slots * bucket_ms,
                    f"{bucket_ms}:{page}",
                    slot[a:z],
                    raw[a * WIRE_BYTES : z * WIRE_BYTES],
                ],
            )
        )
    return out
