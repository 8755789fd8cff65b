"""Feature transformations: derive features from raw ones, row by row or a whole frame at once.

Pure Python/numpy/pandas (no Redis). ``apply_row`` and ``apply_frame`` give the same results;
missing input (None, NaN, NaT, pd.NA) gives a missing output. The seed scenario, with
built-ins only (a value equal to a split goes up with ``right=False``, stays down with
``right=True``, as in ``pandas.cut``):

>>> from redfeat.transforms import bucketize, derive, min_max
>>> transforms = [
...     bucketize("age", [25, 35, 55], ["young", "young_adult", "adult", "senior"],
...               output="age_group"),
...     bucketize("income", [30000, 70000], ["low", "medium", "high"], output="income_category"),
...     bucketize("credit_score", [580, 670, 740], ["poor", "fair", "good", "excellent"],
...               output="credit_category"),
...     bucketize("purchase_count", [12, 24], ["occasional", "regular", "frequent"], right=True,
...               output="purchase_frequency"),
...     bucketize("avg_order_value", [50, 100], ["low", "medium", "high"], right=True,
...               output="spending_level"),
...     min_max("income", 30000, 200000, output="normalized_income"),
... ]
>>> row = {"age": 25, "income": 30000, "credit_score": 740, "purchase_count": 24,
...        "avg_order_value": 100.01}
>>> out = derive(transforms, row)
>>> [out[k] for k in ("age_group", "income_category", "credit_category",
...                   "purchase_frequency", "spending_level", "normalized_income")]
['young_adult', 'medium', 'excellent', 'regular', 'high', 0.0]

Default output names are ``f"{field}_{suffix}"``: ``_bucket``, ``_minmax``, ``_zscore``,
``_log1p``, ``_clipped``, ``_mapped``, ``_days_since``; ``ratio(a, b)`` gives ``f"{a}_per_{b}"``
and ``one_hot(field, cats)`` one Bool field ``f"{field}_{category}"`` per category.

In frames, Float outputs are float64 (NaN = missing), Int ``Int64``, Bool ``boolean`` and the
rest (Category, String...) object columns holding None when missing.

Custom transforms are plain functions registered in a :class:`TransformRegistry`; only a hash
of their source is ever recorded, code is never stored or run from data.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from .. import types as t
from ..core.schema import Field
from ..core.time import MAX_US, MIN_US, to_us
from ..errors import ConfigurationError
from .core import (
    US_PER_DAY,
    Transform,
    TransformRegistry,
    builtin,
    derive,
    derive_frame,
    float_transform,
    missing,
    num,
    number,
    nums,
    output_fields,
)

__all__ = [
    "Transform",
    "TransformRegistry",
    "bucketize",
    "category_map",
    "clip",
    "days_since",
    "derive",
    "derive_frame",
    "log1p",
    "min_max",
    "one_hot",
    "output_fields",
    "ratio",
    "seed_scenario",
    "z_score",
]


def _edges(bins: Sequence[float], where: str) -> tuple[float, ...]:
    edges = tuple(number(b, "each bin", where) for b in bins)
    if not edges or any(a >= b for a, b in zip(edges, edges[1:], strict=False)):
        raise ConfigurationError(f"{where}: bins must be non-empty and strictly increasing")
    return edges


def bucketize(
    field: str,
    bins: Sequence[float],
    labels: Sequence[str],
    *,
    right: bool = False,
    output: str | None = None,
) -> Transform:
    """Label a number by interval: ``labels[i]`` between ``bins[i-1]`` and ``bins[i]``.

    ``right=False``: intervals [a, b), a value equal to a split goes up; ``right=True``:
    (a, b], it stays down (as ``pandas.cut``). Output ``Category(labels)``, default
    ``f"{field}_bucket"``.
    """
    where = f"bucketize({field!r})"
    edges = _edges(bins, where)
    labs = tuple(labels)
    if len(labs) != len(edges) + 1:
        raise ConfigurationError(
            f"{where}: {len(edges)} bins need {len(edges) + 1} labels, got {len(labs)}"
        )
    if not all(isinstance(x, str) for x in labs) or len(set(labs)) != len(labs):
        raise ConfigurationError(f"{where}: labels must be distinct strings, got {list(labs)}")
    out = Field(output or f"{field}_bucket", t.Category(labs))
    pick = bisect.bisect_left if right else bisect.bisect_right
    side: Any = "left" if right else "right"
    edge_arr, lab_arr = np.array(edges), np.array(labs, dtype=object)

    def scalar(v: Any) -> str | None:
        x = num(v, where)
        return None if x is None else labs[pick(edges, x)]

    def vector(s: pd.Series) -> np.ndarray:
        x = nums(s, where)
        got = lab_arr[np.searchsorted(edge_arr, x, side=side)]  # fancy indexing copies
        got[np.isnan(x)] = None
        return got

    params = {"bins": tuple(bins), "labels": labs, "right": right}
    return builtin("bucketize", (field,), (out,), params, scalar, vector)


def min_max(
    field: str, lo: float, hi: float, *, clip: bool = True, output: str | None = None
) -> Transform:
    """``(x - lo) / (hi - lo)``, clipped to [0, 1] unless ``clip=False``. Float,
    default ``f"{field}_minmax"``."""
    where = f"min_max({field!r})"
    a, b = number(lo, "lo", where), number(hi, "hi", where)
    if a >= b:
        raise ConfigurationError(f"{where}: lo must be < hi, got lo={lo}, hi={hi}")
    lo_hi = (0.0, 1.0) if clip else (None, None)
    out = Field(output or f"{field}_minmax", t.Float, min=lo_hi[0], max=lo_hi[1])

    def fn(x: Any) -> Any:
        y = (x - a) / (b - a)
        return np.clip(y, 0.0, 1.0) if clip else y

    params = {"lo": lo, "hi": hi, "clip": clip}
    return float_transform("min_max", (field,), out, params, fn)


def z_score(field: str, mean: float, std: float, *, output: str | None = None) -> Transform:
    """``(x - mean) / std``; ``std`` must be > 0. Float, default ``f"{field}_zscore"``."""
    where = f"z_score({field!r})"
    m, s = number(mean, "mean", where), number(std, "std", where)
    if s <= 0:
        raise ConfigurationError(f"{where}: std must be > 0, got {std}")
    out = Field(output or f"{field}_zscore", t.Float)
    return float_transform(
        "z_score", (field,), out, {"mean": mean, "std": std}, lambda x: (x - m) / s
    )


def log1p(field: str, *, output: str | None = None) -> Transform:
    """``log(1 + x)``; x <= -1 (no real logarithm) gives None. Float, default
    ``f"{field}_log1p"``."""
    out = Field(output or f"{field}_log1p", t.Float)

    def fn(x: Any) -> Any:
        ok = x > -1.0  # log1p is not real there; substitute 0 so nothing invalid is computed
        return np.where(ok, np.log1p(np.where(ok, x, 0.0)), np.nan)[()]

    return float_transform("log1p", (field,), out, {}, fn)


def clip(field: str, lo: float | None, hi: float | None, *, output: str | None = None) -> Transform:
    """``x`` limited to [lo, hi] (either bound may be None). Always Float (the input type is
    not known here), with the bounds as the field's min/max; default ``f"{field}_clipped"``."""
    where = f"clip({field!r})"
    a = None if lo is None else number(lo, "lo", where)
    b = None if hi is None else number(hi, "hi", where)
    if a is None and b is None:
        raise ConfigurationError(f"{where}: give lo, hi or both")
    if a is not None and b is not None and a >= b:
        raise ConfigurationError(f"{where}: lo must be < hi, got lo={lo}, hi={hi}")
    out = Field(output or f"{field}_clipped", t.Float, min=a, max=b)
    return float_transform("clip", (field,), out, {"lo": lo, "hi": hi}, lambda x: np.clip(x, a, b))


def ratio(a: str, b: str, *, output: str | None = None) -> Transform:
    """``a / b``; b == 0 or either missing gives None. Float, default ``f"{a}_per_{b}"``."""
    out = Field(output or f"{a}_per_{b}", t.Float)

    def fn(x: Any, y: Any) -> Any:
        return np.where(y != 0, x / np.where(y != 0, y, 1.0), np.nan)[()]

    return float_transform("ratio", (a, b), out, {}, fn)


def one_hot(field: str, categories: Sequence[str | int], *, output: str | None = None) -> Transform:
    """One Bool output per category, ``f"{output or field}_{category}"`` (the category with
    characters other than [A-Za-z0-9_] replaced by '_'). An unknown value gives all False,
    a missing one all None."""
    where = f"one_hot({field!r})"
    cats = tuple(categories)
    if not cats or not all(isinstance(c, str | int) and not isinstance(c, bool) for c in cats):
        raise ConfigurationError(f"{where}: categories must be a non-empty list of str or int")
    names = [f"{output or field}_{re.sub(r'[^A-Za-z0-9_]', '_', str(c))}" for c in cats]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigurationError(f"{where}: categories give duplicate output names {dupes}")
    outs = tuple(Field(n, t.Bool) for n in names)

    def scalar(v: Any) -> list[bool | None]:
        return [None if missing(v) else bool(v == c) for c in cats]

    def vector(s: pd.Series) -> list[pd.Series]:
        s = s.astype(object)
        miss = s.isna()
        return [s.eq(c).astype("boolean").mask(miss) for c in cats]

    return builtin("one_hot", (field,), outs, {"categories": cats}, scalar, vector)


def category_map(
    field: str,
    mapping: Mapping[Any, str | int | float],
    *,
    default: str | int | float | None = None,
    output: str | None = None,
) -> Transform:
    """Map values through ``mapping``; values not in it give ``default``, missing stays None.

    Output type from the values (and default): all str -> ``Category(sorted values)``, all int
    -> Int, numbers -> Float. Default name ``f"{field}_mapped"``.
    """
    where = f"category_map({field!r})"
    table = dict(mapping)
    vals = list(table.values()) + ([] if default is None else [default])
    if not table:
        raise ConfigurationError(f"{where}: mapping is empty")
    dtype: t.DType
    if all(isinstance(v, str) for v in vals):
        dtype = t.Category(sorted({str(v) for v in vals}))
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        dtype = t.Int
    elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
        dtype = t.Float
    else:
        raise ConfigurationError(f"{where}: values must be all str, or all numbers, got {vals}")
    out = Field(output or f"{field}_mapped", dtype)

    def scalar(v: Any) -> Any:
        return None if missing(v) else table.get(v, default)

    def vector(s: pd.Series) -> list[Any]:
        return [scalar(v) for v in s.astype(object)]  # dict lookups: as fast as .map here

    # Pairs, not a dict: keys may be ints or None, which JSON objects would turn into strings.
    params = {"mapping": tuple((k, v) for k, v in table.items()), "default": default}
    return builtin("category_map", (field,), (out,), params, scalar, vector)


def days_since(
    field: str,
    *,
    now: datetime | Callable[[], datetime] | None = None,
    output: str | None = None,
) -> Transform:
    """Days (Float) from a timestamp (datetime, naive = UTC, or epoch seconds) to ``now``.

    ``now``: a datetime or a callable returning one, read once per apply; default
    ``datetime.now(UTC)``. Default name ``f"{field}_days_since"``.
    """
    where = f"days_since({field!r})"
    if not (now is None or isinstance(now, datetime) or callable(now)):
        raise ConfigurationError(f"{where}: now= must be a datetime or a callable")
    out = Field(output or f"{field}_days_since", t.Float)

    def now_us() -> int:
        at = now() if callable(now) else now or datetime.now(UTC)
        return _us(at, f"{where} now")

    def scalar(v: Any) -> float | None:
        # Integer microseconds, then one division: the frame path does exactly the same.
        return None if missing(v) else (now_us() - _us(v, where)) / US_PER_DAY

    def vector(s: pd.Series) -> Any:
        ref = now_us()
        if not pd.api.types.is_datetime64_any_dtype(s.dtype):
            return [None if missing(v) else (ref - _us(v, where)) / US_PER_DAY for v in s]
        utc = pd.to_datetime(s, utc=True).dt.tz_convert(None)
        miss = utc.isna().to_numpy()
        us = np.where(miss, 0, utc.to_numpy(dtype="datetime64[us]").astype(np.int64))
        if ((us < MIN_US) | (us >= MAX_US)).any():  # the same window as the row path
            raise ConfigurationError(f"{where}: a timestamp is outside 1900-01-01 .. 2200-01-01")
        return np.where(miss, np.nan, (ref - us) / US_PER_DAY)

    params = {"now": now.isoformat() if isinstance(now, datetime) else None}
    return builtin("days_since", (field,), (out,), params, scalar, vector)


def _us(v: Any, where: str) -> int:
    try:
        return to_us(v, what=where)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc


def seed_scenario(*, purchases: str = "purchase_history_length") -> list[Transform]:
    """The customer segments of redfeat's original prototype, as built-ins: age_group,
    income_category, credit_category, purchase_frequency, spending_level (bucketized) and
    normalized_income (min-max). Used by the demo; also a worked example."""
    return [
        bucketize(
            "age", [25, 35, 55], ["young", "young_adult", "adult", "senior"], output="age_group"
        ),
        bucketize("income", [30000, 70000], ["low", "medium", "high"], output="income_category"),
        bucketize(
            "credit_score",
            [580, 670, 740],
            ["poor", "fair", "good", "excellent"],
            output="credit_category",
        ),
        bucketize(
            purchases,
            [12, 24],
            ["occasional", "regular", "frequent"],
            right=True,
            output="purchase_frequency",
        ),
        bucketize(
            "avg_order_value",
            [50, 100],
            ["low", "medium", "high"],
            right=True,
            output="spending_level",
        ),
        min_max("income", 30000, 200000, output="normalized_income"),
    ]
