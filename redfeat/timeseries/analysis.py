"""Anomalies, outliers and correlation. Baselines come from rollup tiles, not raw scans.

Too little baseline data is an explicit answer: InsufficientDataError, never a guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.context import Ctx
from ..errors import ConfigurationError, RedfeatError, wrap_redis
from .query import read_tiles
from .spec import SeriesSpec

METHODS = ("zscore", "mad", "ewma")
MIN_POINTS = 30  # baseline points for zscore/ewma
MIN_BUCKETS = 10  # baseline buckets for mad
EWMA_ALPHA = 0.1
_THRESHOLDS = {"zscore": 3.0, "mad": 3.5, "ewma": 3.0}


class InsufficientDataError(RedfeatError):
    """Not enough data for an answer (``.needed`` and ``.found`` say how much)."""

    def __init__(self, message: str, *, needed: int, found: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.found = found


@dataclass(frozen=True)
class Baseline:
    """Summary of the points in a window, merged from tiles of one rollup."""

    series: str
    rollup: str
    count: int
    mean: float
    std: float
    bucket_means: np.ndarray


def default_threshold(method: str) -> float:
    if method not in METHODS:
        raise ConfigurationError(f"anomaly method {method!r} is not one of {METHODS}")
    return _THRESHOLDS[method]


def threshold_for(method: str, threshold: Any, what: str) -> float:
    """The score limit: the method's default for None, else a finite number > 0 (NaN or
    inf would flag nothing, <= 0 everything)."""
    limit = default_threshold(method)
    if threshold is None:
        return limit
    ok = isinstance(threshold, int | float | np.integer | np.floating)
    if isinstance(threshold, bool) or not ok or not math.isfinite(threshold) or threshold <= 0:
        raise ConfigurationError(
            f"{what}: threshold must be a finite number > 0 (or None for the method's "
            f"default, {limit:g}), got {threshold!r}"
        )
    return float(threshold)


def baseline_from_tiles(ctx: Ctx, spec: SeriesSpec, lo: int, hi: int) -> Baseline:
    """Merge the tiles of the finest rollup still holding ``lo``, over buckets that end by
    ``hi`` (so the points being judged never leak into their own baseline)."""
    if not spec.rollups:
        raise ConfigurationError(
            f"series {spec.name!r} keeps no rollups; anomaly baselines are read from tiles"
        )
    with wrap_redis(f"series {spec.name!r}"):
        raw = ctx.client.hget(ctx.keys.series(spec.escaped), "newest")
    newest = None if raw is None else int(raw)
    usable = [
        r
        for r in spec.rollups
        if newest is None or lo >= (newest - r.retention_ms) // r.bucket_ms * r.bucket_ms
    ]
    r = usable[0] if usable else spec.rollups[-1]
    tiles = read_tiles(ctx, spec, r, lo, hi - r.bucket_ms)
    n = float(tiles["n"].sum()) if len(tiles) else 0.0
    if n == 0:
        return Baseline(spec.name, r.label, 0, float("nan"), float("nan"), np.zeros(0))
    lo_v, hi_v = float(tiles["min"].min()), float(tiles["max"].max())
    if lo_v == hi_v:
        # every point has one value: say so exactly (sum/n and m2 carry rounding)
        std = 0.0 if n > 1 else float("nan")
        return Baseline(spec.name, r.label, int(n), lo_v, std, np.full(len(tiles), lo_v))
    total = float(tiles["sum"].sum())
    mean = total / n
    means = tiles["sum"] / tiles["n"]
    m2 = float((tiles["m2"] + tiles["n"] * (means - mean) ** 2).sum())
    std = (m2 / (n - 1)) ** 0.5 if n > 1 else float("nan")
    return Baseline(spec.name, r.label, int(n), mean, std, means)


# Relative tolerance of "flat": bucket means (sum/n) and m2 of a constant metric are off
# by rounding (a few ulps per merge), so a constant baseline shows a spread of ~1e-17 and
# its own value a deviation of one ulp. 4096 ulps of the centre covers the rounding of sums
# of ~10^5 points (a day of 1 s points) and is far below any real spread.
FLAT_ULPS = 4096


def _scale(dev: np.ndarray, spread: float, center: float) -> np.ndarray:
    # A flat baseline: values equal to the centre (within rounding) score 0, any other value
    # is infinitely far.
    tol = FLAT_ULPS * np.finfo(np.float64).eps * abs(center)
    if spread > tol:
        return dev / spread
    return np.where(np.abs(dev) <= tol, 0.0, np.copysign(np.inf, dev))


def score(base: Baseline, values: np.ndarray, method: str, limit: float) -> np.ndarray:
    """Signed scores of ``values`` against the baseline (for ``ewma``, points scoring past
    ``limit`` do not move the running mean and variance: one spike does not hide the next)."""
    default_threshold(method)
    if method == "mad":
        nb = len(base.bucket_means)
        if nb < MIN_BUCKETS:
            raise InsufficientDataError(
                f"series {base.series!r}: the baseline has {nb} {base.rollup} bucket(s), "
                f"method 'mad' needs at least {MIN_BUCKETS}; widen baseline= or wait for data",
                needed=MIN_BUCKETS,
                found=nb,
            )
        med = float(np.median(base.bucket_means))
        mad = float(np.median(np.abs(base.bucket_means - med)))
        # 0.6745: the modified z-score of Iglewicz and Hoaglin (MAD scaled to a std)
        return 0.6745 * _scale(values - med, mad, med)
    if base.count < MIN_POINTS:
        raise InsufficientDataError(
            f"series {base.series!r}: the baseline has {base.count} point(s), method "
            f"{method!r} needs at least {MIN_POINTS}; widen baseline= or wait for data",
            needed=MIN_POINTS,
            found=base.count,
        )
    if method == "zscore":
        return _scale(values - base.mean, base.std, base.mean)
    out = np.empty(len(values))
    mean, var = base.mean, base.std**2
    for i, x in enumerate(values.tolist()):
        out[i] = _scale(np.array([x - mean]), var**0.5, mean)[0]
        if abs(out[i]) > limit:
            continue
        diff = x - mean
        incr = EWMA_ALPHA * diff
        mean += incr
        var = (1 - EWMA_ALPHA) * (var + diff * incr)
    return out


def iqr_mask(values: np.ndarray, k: float, name: str) -> np.ndarray:
    if isinstance(k, bool) or not isinstance(k, int | float) or not 0 <= k < math.inf:
        raise ConfigurationError(f"series {name!r}: k must be a finite number >= 0, got {k!r}")
    if len(values) < 4:
        raise InsufficientDataError(
            f"series {name!r}: {len(values)} point(s) in range; quartiles need at least 4",
            needed=4,
            found=len(values),
        )
    q1, q3 = np.percentile(values, [25, 75])
    with np.errstate(over="ignore", invalid="ignore"):  # k * iqr past 1e308: no bound
        iqr = q3 - q1
        return np.asarray((values < q1 - k * iqr) | (values > q3 + k * iqr))
