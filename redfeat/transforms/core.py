"""The transform mechanism: the Transform type, how built-ins are made from a scalar and a
vector form, the registry of custom transforms, and applying several in order. The
built-ins themselves are in transforms.py."""

from __future__ import annotations

import hashlib
import inspect
import json
import marshal
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from ..core.schema import Field, check_name
from ..errors import ConfigurationError, NotFoundError

RowFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]
FrameFn = Callable[[pd.DataFrame], pd.DataFrame]
F = TypeVar("F", bound=Callable[..., Any])
US_PER_DAY = 86_400_000_000


def missing(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, np.datetime64):
        return bool(np.isnat(v))
    return isinstance(v, float | np.floating) and math.isnan(v)


def _py(v: Any) -> Any:
    """A value as plain Python: missing -> None, numpy scalars -> int/float/bool."""
    if missing(v):
        return None
    return v.item() if isinstance(v, np.generic) else v


def num(v: Any, where: str) -> float | None:
    if missing(v):
        return None
    if isinstance(v, int | float | np.integer | np.floating | np.bool_):
        return float(v)
    # Strings are refused rather than parsed: "12" in a numeric feature is a data bug.
    raise ConfigurationError(f"{where}: expected a number, got {v!r}")


def nums(s: pd.Series, where: str) -> np.ndarray:
    """A column as float64, NaN where missing; same acceptance rules as ``num``."""
    if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    vals = [num(v, where) for v in s]
    return np.array([math.nan if x is None else x for x in vals], dtype=np.float64)


def number(v: Any, what: str, where: str) -> float:
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
        return pd.Series(nums(s, f"output {fld.name!r}"), index=index, dtype=np.float64)
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


def builtin(
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


def float_transform(
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
        xs = [num(v, where) for v in vals]
        if any(x is None for x in xs):
            return None
        with np.errstate(all="ignore"):  # overflow to inf is a value; invalid -> NaN -> None
            got = fn(*(np.float64(x) for x in xs))
        return None if math.isnan(got) else float(got)

    def vector(*cols: pd.Series) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.asarray(fn(*(nums(c, where) for c in cols)), dtype=np.float64)

    return builtin(kind, inputs, (out,), params, scalar, vector)


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
