"""Feature profiles: mergeable summaries of the values of each feature.

A profile per feature holds exact moments (count, nulls, min, max, mean, variance) and
Apache DataSketches: KLL quantiles for numbers, exact counts for categories (a Category's
set is bounded) or frequent items for free strings, and HLL distinct counts for everything
but floats (distinct floats are ~ the count, and an HLL update per float would cost more
than the write). Profiles merge exactly for counts and moments, and within sketch error for
quantiles, so hours merge into days and weeks.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import datasketches as ds
import msgspec
import numpy as np

from ..core.schema import Field

KLL_K = 200  # ~1.3% rank error: enough for PSI bins at deciles
HLL_LG_K = 12  # ~1.6% error on distinct counts
ITEMS_LG_MAX = 7  # frequent items: tracks up to 96 heavy hitters

NUMERIC_KINDS = {"Int", "Float", "Timestamp"}
CATEGORICAL_KINDS = {"Category", "Bool", "String"}


def kind_of(f: Field) -> str:
    k = f.dtype.kind
    if k in NUMERIC_KINDS:
        return "numeric"
    if k in CATEGORICAL_KINDS:
        return "categorical"
    return "other"  # vectors and lists: counts and nulls only


@dataclass(slots=True)
class FeatureProfile:
    """Summary of one feature's values over some time (mergeable)."""

    kind: str
    count: int = 0  # non-null values
    nulls: int = 0
    min: float | None = None
    max: float | None = None
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean (Chan et al. merges)
    kll: Any = None  # ds.kll_doubles_sketch for numbers
    cats: dict[str, int] | None = None  # exact counts (Category, Bool)
    items: Any = None  # ds.frequent_strings_sketch (String)
    hll: Any = None  # ds.hll_sketch (everything but Float)

    # -- building -----------------------------------------------------------------------

    def add_numbers(self, arr: np.ndarray[Any, Any], nulls: int, distinct: bool) -> None:
        self.nulls += nulls
        n = int(arr.size)
        if n == 0:
            return
        if self.kll is None:
            self.kll = ds.kll_doubles_sketch(KLL_K)
        self.kll.update(arr)
        lo, hi = float(arr.min()), float(arr.max())
        with np.errstate(over="ignore", invalid="ignore"):  # values near 1e308: inf, no warning
            mean = float(arr.mean())
            m2 = float(((arr - mean) ** 2).sum())
        self._merge_moments(n, mean, m2, lo, hi)
        if distinct:
            if self.hll is None:
                self.hll = ds.hll_sketch(HLL_LG_K)
            for v in np.unique(arr).tolist():
                self.hll.update(v)

    def add_labels(self, counts: Mapping[str, int], nulls: int, exact: bool) -> None:
        self.nulls += nulls
        n = sum(counts.values())
        if n == 0:
            return
        self.count += n
        if exact:
            if self.cats is None:
                self.cats = {}
            for k, c in counts.items():
                self.cats[k] = self.cats.get(k, 0) + c
        else:
            if self.items is None:
                self.items = ds.frequent_strings_sketch(ITEMS_LG_MAX)
            for k, c in counts.items():
                self.items.update(k, c)
        if self.hll is None:
            self.hll = ds.hll_sketch(HLL_LG_K)
        for k in counts:
            self.hll.update(k)

    def _merge_moments(self, n: int, mean: float, m2: float, lo: float, hi: float) -> None:
        total = self.count + n
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.count * n / total
        self.mean += delta * n / total
        self.count = total
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)

    def merge(self, other: FeatureProfile) -> None:
        """Fold another profile of the same feature into this one."""
        self.nulls += other.nulls
        if other.kind == "numeric" and other.count:
            assert other.min is not None and other.max is not None
            self._merge_moments(other.count, other.mean, other.m2, other.min, other.max)
        elif other.count:
            self.count += other.count
        if other.kll is not None:
            if self.kll is None:
                self.kll = ds.kll_doubles_sketch(KLL_K)
            self.kll.merge(other.kll)
        if other.cats is not None:
            self.cats = dict(self.cats or {})
            for k, c in other.cats.items():
                self.cats[k] = self.cats.get(k, 0) + c
        if other.items is not None:
            if self.items is None:
                self.items = ds.frequent_strings_sketch(ITEMS_LG_MAX)
            self.items.merge(other.items)
        if other.hll is not None:
            union = ds.hll_union(HLL_LG_K)
            if self.hll is not None:
                union.update(self.hll)
            union.update(other.hll)
            self.hll = union.get_result()

    # -- reading ------------------------------------------------------------------------

    @property
    def total(self) -> int:
        return self.count + self.nulls

    @property
    def null_rate(self) -> float:
        return self.nulls / self.total if self.total else 0.0

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1), NaN below two values."""
        return self.m2 / (self.count - 1) if self.count > 1 else math.nan

    @property
    def std(self) -> float:
        return math.sqrt(self.variance) if self.count > 1 else math.nan

    @property
    def distinct(self) -> float | None:
        """Estimated number of distinct values (None for floats, which are not counted)."""
        if self.cats is not None:
            return float(len(self.cats))
        return None if self.hll is None else float(self.hll.get_estimate())

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        if self.kll is None or self.kll.is_empty():
            return [math.nan] * len(qs)
        return [float(x) for x in self.kll.get_quantiles(list(qs))]

    def cdf(self, points: Sequence[float], *, inclusive: bool = False) -> list[float]:
        """Share of values below (or at, with ``inclusive``) each point."""
        if self.kll is None or self.kll.is_empty():
            return [math.nan] * len(points)
        return [float(x) for x in self.kll.get_cdf(list(points), inclusive)[:-1]]

    @property
    def exact(self) -> bool:
        """Whether categorical counts are exact (Category, Bool) or sketched (String)."""
        return self.cats is not None

    def estimate(self, value: str) -> float:
        """Count of one value (exact, or the frequent-items estimate; 0 if untracked)."""
        if self.cats is not None:
            return float(self.cats.get(value, 0))
        return 0.0 if self.items is None else float(self.items.get_estimate(value))

    def never_saw(self, value: str) -> bool:
        """True only when the value certainly never occurred (a sketch that dropped
        untracked values cannot be sure, and says False)."""
        if self.cats is not None:
            return value not in self.cats
        return self.items is None or float(self.items.get_upper_bound(value)) == 0.0

    def frequent(self) -> list[str]:
        """Values whose count is known: every value for exact counts; for free strings the
        ones the sketch guarantees frequent (count above its maximum error)."""
        if self.cats is not None:
            return list(self.cats)
        if self.items is None:
            return []
        rows = self.items.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_POSITIVES)
        return [str(r[0]) for r in rows]

    def frequencies(self, values: Iterable[str] | None = None) -> dict[str, float]:
        """Share of each value (default: ``frequent()``); the rest is "__other__"."""
        if self.count == 0:
            return {}
        keys = self.frequent() if values is None else list(values)
        out = {k: min(self.estimate(k), self.count) / self.count for k in keys}
        rest = 1.0 - sum(out.values())
        if rest > 1e-12:
            out["__other__"] = rest
        return out

    def top(self, n: int = 5) -> list[tuple[str, float]]:
        return sorted(self.frequencies().items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "count": self.count,
            "nulls": self.nulls,
            "null_rate": self.null_rate,
            "distinct": self.distinct,
        }
        if self.kind == "numeric":
            q = self.quantiles([0.01, 0.25, 0.5, 0.75, 0.99])
            out.update(
                min=self.min,
                max=self.max,
                mean=self.mean if self.count else None,
                std=None if self.count < 2 else self.std,
                p01=q[0],
                p25=q[1],
                p50=q[2],
                p75=q[3],
                p99=q[4],
            )
        elif self.kind == "categorical":
            out["top"] = self.top()
        return out

    # -- storage ------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "k": self.kind,
            "n": self.count,
            "z": self.nulls,
            "lo": self.min,
            "hi": self.max,
            "mu": self.mean,
            "m2": self.m2,
        }
        if self.kll is not None:
            d["kll"] = self.kll.serialize()
        if self.cats is not None:
            d["cats"] = self.cats
        if self.items is not None:
            d["items"] = self.items.serialize()
        if self.hll is not None:
            d["hll"] = self.hll.serialize_compact()
        return d

    @classmethod
    def load(cls, d: Mapping[str, Any]) -> FeatureProfile:
        return cls(
            kind=d["k"],
            count=d["n"],
            nulls=d["z"],
            min=d["lo"],
            max=d["hi"],
            mean=d["mu"],
            m2=d["m2"],
            kll=ds.kll_doubles_sketch.deserialize(d["kll"]) if "kll" in d else None,
            cats=dict(d["cats"]) if "cats" in d else None,
            items=ds.frequent_strings_sketch.deserialize(d["items"]) if "items" in d else None,
            hll=ds.hll_sketch.deserialize(d["hll"]) if "hll" in d else None,
        )


@dataclass(slots=True)
class Profile:
    """Profiles of a view's features over a span of time (``rows``: rows profiled)."""

    view: str
    rows: int = 0
    features: dict[str, FeatureProfile] = field(default_factory=dict)
    start: datetime | None = None
    end: datetime | None = None

    def merge(self, other: Profile) -> None:
        self.rows += other.rows
        for name, fp in other.features.items():
            mine = self.features.get(name)
            if mine is None:
                mine = self.features[name] = FeatureProfile(fp.kind)
            mine.merge(fp)

    def feature(self, name: str, kind: str) -> FeatureProfile:
        fp = self.features.get(name)
        if fp is None:
            fp = self.features[name] = FeatureProfile(kind)
        return fp

    def to_dict(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "rows": self.rows,
            "start": None if self.start is None else self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "features": {k: v.to_dict() for k, v in sorted(self.features.items())},
        }

    def dumps(self) -> bytes:
        return msgspec.msgpack.encode(
            {"rows": self.rows, "f": {k: v.dump() for k, v in self.features.items()}}
        )

    @classmethod
    def loads(cls, view: str, blob: bytes) -> Profile:
        d = msgspec.msgpack.decode(blob)
        return cls(view, d["rows"], {k: FeatureProfile.load(v) for k, v in d["f"].items()})


def _numbers(f: Field, col: Sequence[Any]) -> tuple[np.ndarray[Any, Any], int]:
    vals = [v for v in col if v is not None] if None in col else col
    nulls = len(col) - len(vals)
    if f.dtype.kind == "Timestamp":
        # checked bulk columns hold int microseconds; single writes, datetimes
        secs = (v / 1e6 if type(v) is int else v.timestamp() for v in vals)
        return np.fromiter(secs, np.float64, len(vals)), nulls
    arr = np.asarray(vals, dtype=np.float64)
    if arr.size and not np.isfinite(arr).all():
        arr = arr[np.isfinite(arr)]  # values refused on write never reach here; frames may
    return arr, nulls


def add_column(profile: Profile, f: Field, col: Sequence[Any]) -> None:
    """Profile one column of checked values (None = null)."""
    kind = kind_of(f)
    fp = profile.feature(f.name, kind)
    if kind == "numeric":
        arr, nulls = _numbers(f, col)
        fp.add_numbers(arr, nulls, distinct=f.dtype.kind != "Float")
    elif kind == "categorical":
        counts = Counter(col)
        nulls = counts.pop(None, 0)
        if f.dtype.kind == "Bool":
            labels = {("true" if k else "false"): c for k, c in counts.items()}
        else:
            labels = {str(k): c for k, c in counts.items()}
        fp.add_labels(labels, nulls, exact=f.dtype.kind != "String")
    else:
        nulls = sum(1 for v in col if v is None)
        fp.nulls += nulls
        fp.count += len(col) - nulls


def profile_rows(
    view: str, fields: Mapping[str, Field], rows: Iterable[Mapping[str, Any]]
) -> Profile:
    """A profile of row dicts (fields missing from a row count as nulls)."""
    rows = list(rows)
    prof = Profile(view, len(rows))
    for name, f in fields.items():
        add_column(prof, f, [r.get(name) for r in rows])
    return prof
