"""Series: one metric's verbs (add, add_many, range, latest, stats, delete, analysis)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..core.context import Ctx
from ..core.metrics import timed
from ..core.time import from_us, now_us
from ..errors import ConfigurationError, wrap_redis
from . import analysis
from .query import bucketed, bucketed_many
from .spec import SeriesRegistry, SeriesSpec, as_ms_array, as_values, finite_value, to_ms
from .spec import duration_ms as _duration_ms
from .storage import base_keys, raw_points
from .tiles import check_agg
from .write import Writer, dedupe_batch

if TYPE_CHECKING:
    from .analysis import Baseline

MAX_BATCH = 1 << 20  # points per atomic step; larger batches go in several steps


def to_datetimes(ms: np.ndarray) -> np.ndarray:
    return ms.astype("datetime64[ms]")


def frame(ts: np.ndarray, vs: np.ndarray, column: str = "value") -> pd.DataFrame:
    idx = pd.DatetimeIndex(to_datetimes(ts), name="timestamp").tz_localize("UTC")
    return pd.DataFrame({column: vs}, index=idx)


class Series:
    """A time series kept in Redis: compressed raw chunks plus rollup tiles.

    Get one with ``store.series(name, ...)``. Timestamps are datetimes (naive = UTC) or
    epoch seconds, stored with millisecond precision; values are finite floats.
    """

    def __init__(self, ctx: Ctx, registry: SeriesRegistry, spec: SeriesSpec) -> None:
        self._ctx = ctx
        self.metrics = ctx.metrics
        self._registry = registry
        self._writer = Writer(ctx, spec, registry)

    @property
    def spec(self) -> SeriesSpec:
        """The definition this handle uses (reloaded by a write that finds it stale)."""
        return self._writer.spec

    def __repr__(self) -> str:
        return f"Series({self.name!r}, labels={self.labels!r})"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.spec.labels)

    # -- writes -------------------------------------------------------------------------

    @timed("series.add")
    def add(self, value: float, ts: Any = None) -> int:
        """Add one point (``ts`` None: now); returns its timestamp in ms."""
        v = finite_value(value, series=self.name)
        t = now_us() // 1000 if ts is None else to_ms(ts, series=self.name)
        self._writer.write_one(t, v)
        return t

    @timed("series.add_many")
    def add_many(self, timestamps: Any, values: Any = None) -> int:
        """Add points: two sequences/arrays, or a pandas Series with a DatetimeIndex.

        Checked first (lengths, numbers, finite values, timestamps): a bad batch writes
        nothing. Each step of up to 2**20 points is atomic. Returns the number of points."""
        if isinstance(timestamps, pd.Series) and values is None:
            s = timestamps
            if not isinstance(s.index, pd.DatetimeIndex):
                raise ConfigurationError(
                    f"series {self.name!r}: a pandas Series needs a DatetimeIndex"
                )
            idx = s.index if s.index.tz is None else s.index.tz_convert("UTC").tz_localize(None)
            timestamps, values = idx.to_numpy(), s.to_numpy()
        if values is None:
            raise ConfigurationError(f"series {self.name!r}: add_many needs values")
        if isinstance(timestamps, pd.DatetimeIndex) and timestamps.tz is not None:
            timestamps = timestamps.tz_convert("UTC").tz_localize(None)
        ts = as_ms_array(timestamps, series=self.name)
        vs = as_values(values, len(ts), series=self.name)
        if len(ts) > MAX_BATCH:
            # duplicates inside the whole batch are combined (or refused, 'block') before it
            # is cut into steps: a duplicate across a step boundary must not leave the
            # first step written; sorted steps also take the fast paths
            ts, vs = dedupe_batch(self.spec, ts, vs)
        for i in range(0, len(ts), MAX_BATCH):
            self._writer.write(ts[i : i + MAX_BATCH], vs[i : i + MAX_BATCH])
        return len(ts)

    # -- reads --------------------------------------------------------------------------

    def _bounds(self, start: Any, end: Any) -> tuple[int | None, int | None]:
        lo = None if start is None else to_ms(start, series=self.name, what="start")
        hi = None if end is None else to_ms(end, series=self.name, what="end")
        return lo, hi

    @timed("series.range")
    def range(
        self,
        start: Any = None,
        end: Any = None,
        *,
        bucket: Any = None,
        agg: str | list[str] = "avg",
        limit: int | None = None,
        as_frame: bool = False,
    ) -> Any:
        """Points in [start, end] (None: open), or aggregated per bucket.

        Returns (timestamps as datetime64[ms] UTC, float64 values), or a DataFrame indexed
        by UTC timestamp with a ``value`` column. With ``bucket``, every bucket overlapping
        [start, end] is returned whole, timestamped by its start; tiles serve it when a
        rollup divides the bucket and still covers the start, raw points otherwise.
        ``agg`` a list (``["avg", "min", "max"]``): every aggregate of the same buckets from
        one read, as (timestamps, {agg: values}) or a DataFrame with a column per agg."""
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise ConfigurationError(f"series {self.name!r}: limit must be an int >= 0")
        if not isinstance(agg, str):
            ts, cols = self._range_many(start, end, bucket, agg)
            if limit is not None:
                ts, cols = ts[:limit], {a: v[:limit] for a, v in cols.items()}
            if as_frame:
                out = frame(ts, np.zeros(len(ts)))[[]]
                for a, v in cols.items():
                    out[a] = v
                return out
            return to_datetimes(ts), cols
        ts, vs, _ = self._range(start, end, bucket, agg)
        if limit is not None:
            ts, vs = ts[:limit], vs[:limit]
        return frame(ts, vs) if as_frame else (to_datetimes(ts), vs)

    def _range_many(
        self, start: Any, end: Any, bucket: Any, aggs: Any
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        where = f"series {self.name!r}"
        if isinstance(aggs, bytes | Mapping) or not isinstance(aggs, Iterable):
            raise ConfigurationError(f"{where}: agg is one name or a list, got {aggs!r:.60}")
        wanted = list(aggs)
        if not wanted or len(set(map(str, wanted))) != len(wanted):
            raise ConfigurationError(f"{where}: agg lists distinct aggregates, got {wanted!r}")
        for a in wanted:
            check_agg(a)
        if bucket is None:
            raise ConfigurationError(f"{where}: several aggregates need a bucket= (e.g. '1m')")
        b = _duration_ms(bucket, what=f"{where} bucket")
        lo, hi = self._bounds(start, end)
        if lo is not None and hi is not None and lo > hi:
            return np.zeros(0, np.int64), {a: np.zeros(0) for a in wanted}
        ts, values, _ = bucketed_many(self._ctx, self.spec, lo, hi, b, wanted)
        return ts, dict(zip(wanted, values, strict=True))

    def _range(
        self, start: Any, end: Any, bucket: Any, agg: str
    ) -> tuple[np.ndarray, np.ndarray, str]:
        lo, hi = self._bounds(start, end)
        if lo is not None and hi is not None and lo > hi:
            # an empty window, bucketed or not (rounding to buckets must not widen it)
            if bucket is not None:
                check_agg(agg)
                _duration_ms(bucket, what=f"series {self.name!r} bucket")
            return np.zeros(0, np.int64), np.zeros(0), "raw"
        if bucket is None:
            ts, vs, _ = raw_points(self._ctx, self.spec, lo, hi)
            return ts, vs, "raw"
        check_agg(agg)
        b = _duration_ms(bucket, what=f"series {self.name!r} bucket")
        return bucketed(self._ctx, self.spec, lo, hi, b, agg)

    def source(self, start: Any, end: Any, *, bucket: Any, agg: str = "avg") -> str:
        """Where a bucketed range is read from: 'tiles:<rollup>' or 'raw'."""
        return self._range(start, end, bucket, agg)[2]

    def latest(self) -> tuple[datetime, float] | None:
        """The newest point, or None for an empty series."""
        with wrap_redis(f"series {self.name!r}"):
            newest = self._ctx.client.hget(self._ctx.keys.series(self.spec.escaped), "newest")
        if newest is None:
            return None
        ts, vs, _ = raw_points(self._ctx, self.spec, int(newest), int(newest))
        if len(ts) == 0:
            return None
        return from_us(int(ts[-1]) * 1000), float(vs[-1])

    def stats(self, start: Any = None, end: Any = None) -> dict[str, Any]:
        """count, min, max, mean, std (sample), first, last (and their times) of raw points."""
        lo, hi = self._bounds(start, end)
        ts, vs, _ = raw_points(self._ctx, self.spec, lo, hi)
        n = len(ts)
        if n == 0:
            return {"count": 0}
        with np.errstate(over="ignore", invalid="ignore"):  # near 1e308: inf, as in pandas
            return self._stats(ts, vs)

    @staticmethod
    def _stats(ts: np.ndarray, vs: np.ndarray) -> dict[str, Any]:
        n = len(ts)
        return {
            "count": n,
            "min": float(vs.min()),
            "max": float(vs.max()),
            "mean": float(vs.mean()),
            "std": float(vs.std(ddof=1)) if n > 1 else float("nan"),
            "first": float(vs[0]),
            "first_time": from_us(int(ts[0]) * 1000),
            "last": float(vs[-1]),
            "last_time": from_us(int(ts[-1]) * 1000),
        }

    def delete(self) -> None:
        """Remove the series' definition and its data. Handles still open elsewhere then
        fail to write (NotFoundError) instead of recreating its keys."""
        # the definition first: a write racing the delete then finds no generation and
        # no definition, and refuses
        self._registry.remove(self.name)
        delete_series(self._ctx, self.spec)

    # -- analysis -----------------------------------------------------------------------

    def anomalies(
        self,
        start: Any,
        end: Any,
        *,
        method: str = "zscore",
        threshold: float | None = None,
        baseline: Any = "1d",
    ) -> pd.DataFrame:
        """What stands out in [start, end] against the ``baseline`` window before start.

        The baseline comes from rollup tiles (the finest rollup still holding it), not a
        raw scan. ``zscore``: raw points against the exact mean/std of the baseline's
        points (threshold 3). ``ewma``: raw points against an exponentially weighted
        mean/std seeded from the baseline (alpha 0.1, threshold 3; flagged points do not
        move it). ``mad``: the range's bucket means against the median and MAD of the
        baseline's bucket means (modified z-score, threshold 3.5), one row per bucket.
        Returns a DataFrame (UTC timestamp index; value, score), empty when nothing stands
        out. Raises InsufficientDataError when the baseline is too thin to judge."""
        lo, hi = self._bounds(start, end)
        if lo is None or hi is None:
            raise ConfigurationError(f"series {self.name!r}: anomalies needs a start and end")
        limit = analysis.threshold_for(method, threshold, f"series {self.name!r}")
        base = self.baseline(lo, baseline)
        if method == "mad":
            r = next(r for r in self.spec.rollups if r.label == base.rollup)
            ts, vs, _ = bucketed(self._ctx, self.spec, lo, hi, r.bucket_ms, "avg")
        else:
            ts, vs, _ = raw_points(self._ctx, self.spec, lo, hi)
        scores = analysis.score(base, vs, method, limit)
        hit = np.abs(scores) > limit
        out = frame(ts[hit], vs[hit])
        out["score"] = scores[hit]
        return out

    def is_anomalous(
        self,
        value: float,
        ts: Any = None,
        *,
        method: str = "zscore",
        threshold: float | None = None,
        baseline: Any = "1d",
    ) -> bool:
        """Whether ``value`` at ``ts`` (None: now) stands out from the baseline window
        before it (see ``anomalies``; for ``mad`` the value is judged as a bucket mean)."""
        v = finite_value(value, series=self.name)
        t = now_us() // 1000 if ts is None else to_ms(ts, series=self.name)
        limit = analysis.threshold_for(method, threshold, f"series {self.name!r}")
        score = analysis.score(self.baseline(t, baseline), np.array([v]), method, limit)[0]
        return bool(abs(score) > limit)

    def baseline(self, before_ms: int, window: Any) -> Baseline:
        w = _duration_ms(window, what=f"series {self.name!r} baseline")
        return analysis.baseline_from_tiles(self._ctx, self.spec, before_ms - w, before_ms)

    def outliers(self, start: Any, end: Any, *, k: float = 1.5) -> pd.DataFrame:
        """Raw points outside [Q1 - k*IQR, Q3 + k*IQR] of the points in [start, end]."""
        lo, hi = self._bounds(start, end)
        ts, vs, _ = raw_points(self._ctx, self.spec, lo, hi)
        mask = analysis.iqr_mask(vs, k, self.name)
        return frame(ts[mask], vs[mask])


def delete_series(ctx: Ctx, spec: SeriesSpec) -> None:
    e = spec.escaped
    with wrap_redis(f"series {spec.name!r}: cannot delete"):
        pages: list[bytes] = ctx.client.zrange(ctx.keys.series_pages(e), 0, -1)  # type: ignore[assignment]
        keys = [*base_keys(ctx.keys, spec), ctx.keys.series_pages(e)]
        for m in pages:
            bucket_ms, page = m.decode().split(":")
            keys.append(ctx.keys.series_page(e, int(bucket_ms), int(page)))
        for i in range(0, len(keys), 500):
            ctx.client.unlink(*keys[i : i + 500])
