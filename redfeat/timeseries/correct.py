"""Corrections: a duplicate that changes a value updates its buckets' tiles in place.

A tile cannot be rebuilt from the raw points still readable: raw retention is usually
shorter than the coarse buckets (1h, 1d), so a rebuild would drop every trimmed point from
the tile. Instead the changed points are removed from the stored tile and their new values
added (Chan et al. in reverse, then forward): count is unchanged, sum and m2 exact up to
rounding, first/last replaced only when the changed point is the tile's first/last.

min/max: when a removed value was the tile's min (or max) and its replacement is larger
(smaller), the true extreme is among points the tile does not list. When raw still holds
the whole bucket the extreme is recomputed exactly: from a finer rollup's stored tiles plus
the raw points of the finer buckets the write touched (a 1d tile from 1,440 1m tiles), or
from the bucket's raw points when no finer rollup covers it. Otherwise the tile keeps the
old extreme, a bound (min <= true min, max >= true max) rather than the exact value.
(Finer tiles inside a bucket raw still holds are exact: raw held them at every earlier
correction too, as the retention cut only moves forward.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.context import Ctx
from ..errors import wrap_redis
from .query import read_tiles
from .spec import Rollup, SeriesSpec
from .tiles import MEM, WIRE_BYTES, from_wire, partials


def stored_tiles(ctx: Ctx, spec: SeriesSpec, r: Rollup, buckets: np.ndarray) -> np.ndarray:
    """The stored tiles of rollup ``r`` for the given sorted bucket ids (missing: left out)."""
    pages = buckets // r.slots
    with wrap_redis(f"series {spec.name!r}: cannot read tiles"):
        pipe = ctx.client.pipeline(transaction=False)
        for p in np.unique(pages).tolist():
            slots = (buckets[pages == p] - p * r.slots).tolist()
            pipe.hmget(ctx.keys.series_page(spec.escaped, r.bucket_ms, p), slots)
        replies = pipe.execute()
    ids: list[int] = []
    raw: list[bytes] = []
    for p, got in zip(np.unique(pages).tolist(), replies, strict=True):
        for b, blob in zip(buckets[pages == p].tolist(), got, strict=True):
            if blob is not None and len(blob) == WIRE_BYTES:
                ids.append(b)
                raw.append(blob)
    if not ids:
        return np.empty(0, MEM)
    return from_wire(np.array(ids, np.int64), b"".join(raw), r.bucket_ms)


def corrected(
    stored: np.ndarray, ts: np.ndarray, old: np.ndarray, new: np.ndarray, bucket_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stored tiles with the points at ``ts`` changed from ``old`` to ``new`` (sorted,
    distinct ts). Returns (tiles, lost) where lost marks tiles whose min or max may now be
    too wide (see the module doc); those keep the old extreme as a bound."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        rem = partials(ts, old, bucket_ms)
        add = partials(ts, new, bucket_ms)
        keep = np.isin(rem["b"], stored["b"])
        rem, add = rem[keep], add[keep]
        t = stored[np.isin(stored["b"], rem["b"])].copy()
        n, k = t["n"], rem["n"]
        rn = n - k
        some = rn > 0  # points the correction does not touch remain in the bucket
        mean = t["sum"] / n
        # remove the old values (reverse Chan merge), then add the new ones
        # M2 = M2_rest + M2_rem + k*rn/n * (mean_rem - mean_rest)**2, and
        # mean_rem - mean = rn/n * (mean_rem - mean_rest)
        safe = np.where(some, rn, 1)
        lose = k * n / safe * (rem["sum"] / k - mean) ** 2
        rest_m2 = np.maximum(t["m2"] - rem["m2"] - lose, 0)
        rest_mean = np.where(some, (t["sum"] - rem["sum"]) / safe, 0.0)
        spread = k * rn / n * (add["sum"] / k - rest_mean) ** 2
        t["m2"] = np.where(some, rest_m2 + add["m2"] + spread, add["m2"])
        t["sum"] = np.where(some, t["sum"] + (add["sum"] - rem["sum"]), add["sum"])
        lost = (some & (rem["min"] <= t["min"]) & (add["min"] > rem["min"])) | (
            some & (rem["max"] >= t["max"]) & (add["max"] < rem["max"])
        )
        # exact unless lost: an extreme not carried by a removed point is still there
        t["min"] = np.where(some, np.minimum(t["min"], add["min"]), add["min"])
        t["max"] = np.where(some, np.maximum(t["max"], add["max"]), add["max"])
        t["first"] = np.where(add["ft"] == t["ft"], add["first"], t["first"])
        t["last"] = np.where(add["lt"] == t["lt"], add["last"], t["last"])
    return t, lost


@dataclass
class Plan:
    """Tile corrections of one careful write.

    fixes: corrected stored tiles (replace); redo: per rollup, buckets to rebuild from raw;
    extremes: (fix index, rows, finer rollup index) whose min/max are recomputed from the
    finer rollup's stored tiles plus the raw points of the finer buckets the batch touched
    (a day's 1d tile from 1,440 1m tiles and a minute of raw, not 86,400 points); spans:
    the raw ranges [lo, hi] ms all of that needs."""

    fixes: list[tuple[int, np.ndarray, str]] = field(default_factory=list)
    redo: dict[int, np.ndarray] = field(default_factory=dict)
    extremes: list[tuple[int, np.ndarray, int]] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)


def _finer(spec: SeriesSpec, ri: int, start: int, newest: int) -> int | None:
    """The coarsest finer rollup dividing rollup ri whose tiles still cover ``start``."""
    r = spec.rollups[ri]
    for j in range(ri - 1, -1, -1):
        f = spec.rollups[j]
        if r.bucket_ms % f.bucket_ms == 0 and start >= (
            (newest - f.retention_ms) // f.bucket_ms * f.bucket_ms
        ):
            return j
    return None


def plan(
    ctx: Ctx,
    spec: SeriesSpec,
    newest: int,
    cut: int,
    ts: np.ndarray,
    old: np.ndarray,
    new: np.ndarray,
) -> Plan:
    """Corrections for points at ``ts`` changed from ``old`` to ``new`` (see the module doc).
    ``newest``/``cut``: the series' newest point before the write and its raw cut."""
    out = Plan()
    for ri, r in enumerate(spec.rollups):
        stored = stored_tiles(ctx, spec, r, np.unique(ts // r.bucket_ms))
        t, lost = corrected(stored, ts, old, new, r.bucket_ms)
        # raw holds the whole bucket: its min/max can be made exact again
        whole = lost & (t["b"] * r.bucket_ms >= cut)
        fin = [_finer(spec, ri, int(b) * r.bucket_ms, newest) for b in t["b"].tolist()]
        via = whole & np.array([j is not None for j in fin], bool)
        out.redo[ri] = t["b"][whole & ~via]
        for b in out.redo[ri].tolist():
            out.spans.append((b * r.bucket_ms, (b + 1) * r.bucket_ms - 1))
        t = t[~(whole & ~via)]
        fin = [j for j, w in zip(fin, whole & ~via, strict=True) if not w]
        via = via[~(whole & ~via)]
        if not len(t):
            continue
        out.fixes.append((ri, t, "r"))
        for j in sorted(
            {x for x in (fin[i] for i in np.flatnonzero(via).tolist()) if x is not None}
        ):
            rows = via & np.array([x == j for x in fin], bool)
            out.extremes.append((len(out.fixes) - 1, rows, j))
            fb = spec.rollups[j].bucket_ms
            touched = np.unique(ts // fb)
            inside = np.isin(touched * fb // r.bucket_ms, t["b"][rows])
            for b in touched[inside].tolist():
                out.spans.append((b * fb, (b + 1) * fb - 1))
    return out


def finish(
    ctx: Ctx, spec: SeriesSpec, p: Plan, ts: np.ndarray, mts: np.ndarray, mvs: np.ndarray
) -> None:
    """Exact min/max for the plan's ``extremes``, from the merged raw points ``mts``/``mvs``
    (which cover the plan's spans) and the finer rollup's stored tiles of the other buckets."""
    for k, rows, j in p.extremes:
        ri, t, mode = p.fixes[k]
        r, f = spec.rollups[ri], spec.rollups[j]
        touched = np.unique(ts // f.bucket_ms)
        for i in np.flatnonzero(rows).tolist():
            start = int(t["b"][i]) * r.bucket_ms
            fine = read_tiles(ctx, spec, f, start, start + r.bucket_ms - 1)
            fine = fine[~np.isin(fine["b"], touched)]
            sel = np.isin(mts // f.bucket_ms, touched) & (mts // r.bucket_ms == t["b"][i])
            lo = [fine["min"].min()] if len(fine) else []
            hi = [fine["max"].max()] if len(fine) else []
            if sel.any():
                lo.append(mvs[sel].min())
                hi.append(mvs[sel].max())
            if lo:
                t["min"][i], t["max"][i] = min(lo), max(hi)
        p.fixes[k] = (ri, t, mode)
