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
import hashlib
import inspect
import json
import marshal
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from . import types as t
from ._time import MAX_US, MIN_US, to_us
from .errors import ConfigurationError, NotFoundError
from .schema import Field, check_name

RowFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]
FrameFn = Callable[[pd.DataFrame], pd.DataFrame]
F = TypeVar("F", bound=Callable[..., Any])
_US_PER_DAY = 86_400_000_000


def _missing(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, np.datetime64):
        return bool(np.isnat(v))
    return isinstance(v, float | np.floating) and math.isnan(v)


def _py(v: Any) -> Any:
    """A value as plain Python: missing -> None, numpy scalars -> int/float/bool."""
    if _missing(v):
        return None
    return v.item() if isinstance(v, np.generic) else v


def _num(v: Any, where: str) -> float | None:
    if _missing(v):
        return None
    if isinstance(v, int | float | np.integer | np.floating | np.bool_):
        return float(v)
    # Strings are refused rather than parsed: "12" in a numeric feature is a data bug.
    raise ConfigurationError(f"{where}: expected a number, got {v!r}")


def _nums(s: pd.Series, where: str) -> np.ndarray:
    """A column as float64, NaN where missing; same acceptance rules as ``_num``."""
    if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    vals = [_num(v, where) for v in s]
    return np.array([math.nan if x is None else x for x in vals], dtype=np.float64)


def _number(v: Any, what: str, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigurationError(f"{where}: {what} must be a finite number, got {v!r}")
    return float(v)


def _column(values: Any, fld: Field, index: pd.Index) -> pd.Series:
    """Values in the frame representation of ``fld``'s type (see the module docstring)."""
    if isinstance(values, pd.Series):
        s = values.set_axis(index)
    elif isinstance(values, np.ndarray):
        # Keep the dtype: pandas would infer an Arrow string column from object arrays.
        s = pd.Series(values, index=index, dtype=values.dtype)
    else:
        s = pd.Series(list(values), index=index, dtype=object)
    kind = fld.dtype.kind
    if kind == "Float":
        return pd.Series(_nums(s, f"output {fld.name!r}"), index=index, dtype=np.float64)
    if kind == "Int":
        return s.astype("Int64")
    if kind == "Bool":
        return s.astype("boolean")
    s = s.astype(object)
    return s.where(s.notna(), None)


@dataclass(frozen=True, slots=True, eq=False)
class Transform:
    """Derives ``outputs`` from ``inputs``; build one with a built-in or a registry.

    ``kind`` is "builtin" or "custom"; ``params`` the built-in's arguments (JSON-able);
    ``code_hash`` the sha256 of a custom function's source; ``created_at`` (ISO) when it was
    registered. Compare definitions by ``spec()`` (equality is identity).
    """

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[Field, ...]
    kind: str
    params: Mapping[str, Any]
    code_hash: str | None
    created_at: str | None
    row_fn: RowFn | None
    frame_fn: FrameFn | None

    def __repr__(self) -> str:
        outs = [f.name for f in self.outputs]
        return f"Transform({self.name!r}, inputs={list(self.inputs)}, outputs={outs})"

    def _check(self, got: Sequence[str]) -> None:
        want = [f.name for f in self.outputs]
        missing = [n for n in want if n not in got]
        extra = [n for n in got if n not in want]
        if missing or extra:
            raise ConfigurationError(
                f"transform {self.name!r} returned missing outputs {missing} and unexpected "
                f"outputs {extra}; it declares {want}"
            )

    def apply_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """One row (a mapping holding at least the inputs) -> {output name: value}."""
        absent = [i for i in self.inputs if i not in row]
        if absent:
            raise ConfigurationError(f"transform {self.name!r}: the row has no {absent}")
        # Functions see only their declared inputs, so the lineage in spec() is the truth.
        values = {i: row[i] for i in self.inputs}
        if self.row_fn is not None:
            got = self.row_fn(values)
            if not isinstance(got, Mapping):
                raise ConfigurationError(
                    f"transform {self.name!r} must return a dict, got {type(got).__name__}"
                )
            self._check(list(got))
            return {f.name: _py(got[f.name]) for f in self.outputs}
        frame = self.apply_frame(pd.DataFrame([values]))
        return {f.name: _py(frame[f.name].iloc[0]) for f in self.outputs}

    def apply_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Vectorised ``apply_row``: a frame of the outputs, on ``frame``'s index."""
        absent = [i for i in self.inputs if i not in frame.columns]
        if absent:
            raise ConfigurationError(f"transform {self.name!r}: the frame has no columns {absent}")
        sub = frame[list(self.inputs)]
        if self.frame_fn is not None:
            got = self.frame_fn(sub)
            if not isinstance(got, pd.DataFrame) or len(got) != len(sub):
                what = f"{len(got)} rows" if isinstance(got, pd.DataFrame) else type(got).__name__
                raise ConfigurationError(
                    f"transform {self.name!r} must return a DataFrame of {len(sub)} rows, "
                    f"got {what}"
                )
            self._check([str(c) for c in got.columns])
            if self.kind == "builtin":  # already in the frame representation
                return got
            cols: dict[str, Any] = {f.name: got[f.name] for f in self.outputs}
        else:
            recs = sub.to_dict("records")
            rows = [self.apply_row({str(k): _py(v) for k, v in r.items()}) for r in recs]
            cols = {f.name: [r[f.name] for r in rows] for f in self.outputs}
        data = {f.name: _column(cols[f.name], f, frame.index) for f in self.outputs}
        return pd.DataFrame(data, index=frame.index)

    def spec(self) -> dict[str, Any]:
        """The definition as JSON-able data (a custom function is recorded by hash only)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "inputs": list(self.inputs),
            "outputs": [f.spec() for f in self.outputs],
            "params": json.loads(json.dumps(dict(self.params), default=str)),  # deep JSON copy
            "code_hash": self.code_hash,
            "created_at": self.created_at,
        }


def _builtin(
    kind: str,
    inputs: tuple[str, ...],
    outputs: tuple[Field, ...],
    params: dict[str, Any],
    scalar: Callable[..., Any],
    vector: Callable[..., Any],
) -> Transform:
    """A built-in from ``scalar`` (input values -> output value(s)) and its vector form.

    With several outputs both return one value/column per output, in order.
    """
    names = [f.name for f in outputs]

    def row_fn(r: Mapping[str, Any]) -> dict[str, Any]:
        got = scalar(*(r[i] for i in inputs))
        return dict(zip(names, got, strict=True)) if len(names) > 1 else {names[0]: got}

    def frame_fn(f: pd.DataFrame) -> pd.DataFrame:
        got = vector(*(f[i] for i in inputs))
        cols = got if len(names) > 1 else [got]
        return pd.DataFrame(
            {n: _column(c, o, f.index) for n, c, o in zip(names, cols, outputs, strict=True)},
            index=f.index,
        )

    return Transform(
        kind, inputs, outputs, "builtin", MappingProxyType(params), None, None, row_fn, frame_fn
    )


def _float_transform(
    kind: str,
    inputs: tuple[str, ...],
    out: Field,
    params: dict[str, Any],
    fn: Callable[..., Any],
) -> Transform:
    """A Float built-in from one formula ``fn`` that works on floats and on float64 arrays.

    One formula for both paths keeps rows and frames bit-identical; NaN results are missing.
    """
    where = f"{kind}({', '.join(map(repr, inputs))})"

    def scalar(*vals: Any) -> float | None:
        xs = [_num(v, where) for v in vals]
        if any(x is None for x in xs):
            return None
        with np.errstate(all="ignore"):  # overflow to inf is a value; invalid -> NaN -> None
            got = fn(*(np.float64(x) for x in xs))
        return None if math.isnan(got) else float(got)

    def vector(*cols: pd.Series) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.asarray(fn(*(_nums(c, where) for c in cols)), dtype=np.float64)

    return _builtin(kind, inputs, (out,), params, scalar, vector)


def _edges(bins: Sequence[float], where: str) -> tuple[float, ...]:
    edges = tuple(_number(b, "each bin", where) for b in bins)
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
        x = _num(v, where)
        return None if x is None else labs[pick(edges, x)]

    def vector(s: pd.Series) -> np.ndarray:
        x = _nums(s, where)
        got = lab_arr[np.searchsorted(edge_arr, x, side=side)]  # fancy indexing copies
        got[np.isnan(x)] = None
        return got

    params = {"bins": tuple(bins), "labels": labs, "right": right}
    return _builtin("bucketize", (field,), (out,), params, scalar, vector)


def min_max(
    field: str, lo: float, hi: float, *, clip: bool = True, output: str | None = None
) -> Transform:
    """``(x - lo) / (hi - lo)``, clipped to [0, 1] unless ``clip=False``. Float,
    default ``f"{field}_minmax"``."""
    where = f"min_max({field!r})"
    a, b = _number(lo, "lo", where), _number(hi, "hi", where)
    if a >= b:
        raise ConfigurationError(f"{where}: lo must be < hi, got lo={lo}, hi={hi}")
    lo_hi = (0.0, 1.0) if clip else (None, None)
    out = Field(output or f"{field}_minmax", t.Float, min=lo_hi[0], max=lo_hi[1])

    def fn(x: Any) -> Any:
        y = (x - a) / (b - a)
        return np.clip(y, 0.0, 1.0) if clip else y

    params = {"lo": lo, "hi": hi, "clip": clip}
    return _float_transform("min_max", (field,), out, params, fn)


def z_score(field: str, mean: float, std: float, *, output: str | None = None) -> Transform:
    """``(x - mean) / std``; ``std`` must be > 0. Float, default ``f"{field}_zscore"``."""
    where = f"z_score({field!r})"
    m, s = _number(mean, "mean", where), _number(std, "std", where)
    if s <= 0:
        raise ConfigurationError(f"{where}: std must be > 0, got {std}")
    out = Field(output or f"{field}_zscore", t.Float)
    return _float_transform(
        "z_score", (field,), out, {"mean": mean, "std": std}, lambda x: (x - m) / s
    )


def log1p(field: str, *, output: str | None = None) -> Transform:
    """``log(1 + x)``; x <= -1 (no real logarithm) gives None. Float, default
    ``f"{field}_log1p"``."""
    out = Field(output or f"{field}_log1p", t.Float)

    def fn(x: Any) -> Any:
        ok = x > -1.0  # log1p is not real there; substitute 0 so nothing invalid is computed
        return np.where(ok, np.log1p(np.where(ok, x, 0.0)), np.nan)[()]

    return _float_transform("log1p", (field,), out, {}, fn)


def clip(field: str, lo: float | None, hi: float | None, *, output: str | None = None) -> Transform:
    """``x`` limited to [lo, hi] (either bound may be None). Always Float (the input type is
    not known here), with the bounds as the field's min/max; default ``f"{field}_clipped"``."""
    where = f"clip({field!r})"
    a = None if lo is None else _number(lo, "lo", where)
    b = None if hi is None else _number(hi, "hi", where)
    if a is None and b is None:
        raise ConfigurationError(f"{where}: give lo, hi or both")
    if a is not None and b is not None and a >= b:
        raise ConfigurationError(f"{where}: lo must be < hi, got lo={lo}, hi={hi}")
    out = Field(output or f"{field}_clipped", t.Float, min=a, max=b)
    return _float_transform("clip", (field,), out, {"lo": lo, "hi": hi}, lambda x: np.clip(x, a, b))


def ratio(a: str, b: str, *, output: str | None = None) -> Transform:
    """``a / b``; b == 0 or either missing gives None. Float, default ``f"{a}_per_{b}"``."""
    out = Field(output or f"{a}_per_{b}", t.Float)

    def fn(x: Any, y: Any) -> Any:
        return np.where(y != 0, x / np.where(y != 0, y, 1.0), np.nan)[()]

    return _float_transform("ratio", (a, b), out, {}, fn)


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
        return [None if _missing(v) else bool(v == c) for c in cats]

    def vector(s: pd.Series) -> list[pd.Series]:
        s = s.astype(object)
        miss = s.isna()
        return [s.eq(c).astype("boolean").mask(miss) for c in cats]

    return _builtin("one_hot", (field,), outs, {"categories": cats}, scalar, vector)


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
        return None if _missing(v) else table.get(v, default)

    def vector(s: pd.Series) -> list[Any]:
        return [scalar(v) for v in s.astype(object)]  # dict lookups: as fast as .map here

    # Pairs, not a dict: keys may be ints or None, which JSON objects would turn into strings.
    params = {"mapping": tuple((k, v) for k, v in table.items()), "default": default}
    return _builtin("category_map", (field,), (out,), params, scalar, vector)


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
        return None if _missing(v) else (now_us() - _us(v, where)) / _US_PER_DAY

    def vector(s: pd.Series) -> Any:
        ref = now_us()
        if not pd.api.types.is_datetime64_any_dtype(s.dtype):
            return [None if _missing(v) else (ref - _us(v, where)) / _US_PER_DAY for v in s]
        utc = pd.to_datetime(s, utc=True).dt.tz_convert(None)
        miss = utc.isna().to_numpy()
        us = np.where(miss, 0, utc.to_numpy(dtype="datetime64[us]").astype(np.int64))
        if ((us < MIN_US) | (us >= MAX_US)).any():  # the same window as the row path
            raise ConfigurationError(f"{where}: a timestamp is outside 1900-01-01 .. 2200-01-01")
        return np.where(miss, np.nan, (ref - us) / _US_PER_DAY)

    params = {"now": now.isoformat() if isinstance(now, datetime) else None}
    return _builtin("days_since", (field,), (out,), params, scalar, vector)


def _us(v: Any, where: str) -> int:
    try:
        return to_us(v, what=where)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc


def _code_hash(fn: Callable[..., Any]) -> str:
    try:
        src = inspect.getsource(fn).encode()
    except (OSError, TypeError):
        # No source file (e.g. defined in an interactive shell): hash the bytecode instead.
        code = getattr(fn, "__code__", None)
        src = marshal.dumps(code) if code is not None else repr(fn).encode()
    return hashlib.sha256(src).hexdigest()


class TransformRegistry:
    """Custom transforms of this process, by name (code lives in your modules, not in data)."""

    def __init__(self) -> None:
        self._items: dict[str, Transform] = {}

    def register(
        self,
        name: str,
        *,
        inputs: list[str],
        outputs: list[Field],
        vectorized: bool = False,
    ) -> Callable[[F], F]:
        """Decorator: ``fn(row) -> dict`` or, if ``vectorized``, ``fn(frame) -> frame``.

        The function receives only the declared inputs and must return exactly the declared
        outputs. Re-registering a name is allowed only for the same function (by module and
        qualified name), e.g. a notebook cell run again.
        """
        check_name("transform", name)
        ins = tuple(check_name("field", i) for i in inputs)
        outs = tuple(outputs)
        if isinstance(inputs, str) or not ins or len(set(ins)) != len(ins):
            raise ConfigurationError(f"transform {name!r}: inputs must be distinct, non-empty")
        if not outs or not all(isinstance(f, Field) for f in outs):
            raise ConfigurationError(f"transform {name!r}: outputs must be a list of Field(...)")
        # A stand-in transform, only to reuse the duplicate-output check.
        output_fields([Transform(name, (), outs, "custom", {}, None, None, None, None)])
        params = MappingProxyType({"vectorized": vectorized})

        def decorate(fn: F) -> F:
            old = self._items.get(name)
            old_fn = old and (old.row_fn or old.frame_fn)
            if old_fn and _ident(old_fn) != _ident(fn):
                raise ConfigurationError(
                    f"transform {name!r} is already registered by {_ident(old_fn)}"
                )
            row, frame = (None, fn) if vectorized else (fn, None)
            stamp = datetime.now(UTC).isoformat()
            self._items[name] = Transform(
                name, ins, outs, "custom", params, _code_hash(fn), stamp, row, frame
            )
            return fn

        return decorate

    def get(self, name: str) -> Transform:
        """The transform registered as ``name``; NotFoundError if this process has none."""
        try:
            return self._items[name]
        except KeyError:
            raise NotFoundError(
                f"transform {name!r} is not registered; register it with "
                f"@store.transform(...) in this process (code is never loaded from the "
                f"registry). Registered: {self.names()}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)


def _ident(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def output_fields(transforms: Sequence[Transform]) -> list[Field]:
    """Every output field, in order; ConfigurationError if two share a name."""
    seen: dict[str, str] = {}
    fields: list[Field] = []
    for tr in transforms:
        for f in tr.outputs:
            if f.name in seen:
                raise ConfigurationError(
                    f"output {f.name!r} is produced twice (by {seen[f.name]!r} and {tr.name!r})"
                )
            seen[f.name] = tr.name
            fields.append(f)
    return fields


def derive(transforms: Sequence[Transform], row: Mapping[str, Any]) -> dict[str, Any]:
    """The row plus every transform's outputs, applied in order (later ones may read
    earlier outputs)."""
    output_fields(transforms)
    out = dict(row)
    for tr in transforms:
        out.update(tr.apply_row(out))
    return out


def derive_frame(transforms: Sequence[Transform], frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of the frame with every transform's output columns, applied in order."""
    output_fields(transforms)
    out = frame.copy()
    for tr in transforms:
        got = tr.apply_frame(out)
        for col in got.columns:
            out[col] = got[col]
    return out


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
