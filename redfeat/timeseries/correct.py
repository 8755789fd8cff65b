"""Corrections: a duplicate that changes a value updates its buckets' tiles in place.

A tile cannot be rebuilt from the raw points still readable: raw retention is usually
shorter than the coarse buckets (1h, 1d), so a rebuild would drop every trimmed point from
the tile. Instead the changed points are removed from the stored tile and their new values
added (Chan et al. in reverse, then forward): count is unchanged, sum and m2 exact up to
rounding, first/last replaced only when the changed point is the tile's first/last.

min/max: when a removed value was the tile's min (or max) and its replacement is larger
(smaller), the true extreme is among points the tile does not list. The caller rebuilds
such a tile from raw points when raw still holds its whole bucket; otherwise the tile keeps
the old extreme, a bound (min <= true min, max >= true max) rather than the exact value.
"""

from __future__ import annotations

import numpy as np
import redis

from ..errors import BackendError
from .spec import Rollup, SeriesSpec
from .storage import Ctx
from .tiles import MEM, WIRE_BYTES, from_wire, partials


def stored_tiles(ctx: Ctx, spec: SeriesSpec, r: Rollup, buckets: np.ndarray) -> np.ndarray:
    """The stored tiles of rollup ``r`` for the given sorted bucket ids (missing: left out)."""
    pages = buckets // r.slots
    try:
        pipe = ctx.client.pipeline(transaction=False)
        for p in np.unique(pages).tolist():
            slots = (buckets[pages == p] - p * r.slots).tolist()
            pipe.hmget(ctx.keys.series_page(spec.escaped, r.bucket_ms, p), slots)
        replies = pipe.execute()
    except redis.RedisError as exc:
        raise BackendError(f"series {spec.name!r}: cannot read tiles: {exc}") from exc
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
