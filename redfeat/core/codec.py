"""Typed encoding of rows: validation against the schema, msgpack payloads, typed decoding.

A payload is a msgpack array indexed by *slot*. Each field owns a slot for life; a new field
takes the next slot, a field whose type changes takes a new one and the old slot goes dead.
So any row ever written decodes with the current layout: short arrays read as nulls.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import msgspec
import numpy as np

from .. import types as t
from ..errors import Problem, ValidationError
from .keys import MAX_ID_BYTES
from .schema import Entity, FeatureView, Field, JoinKey
from .time import from_us, to_us

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
F32_MAX = float(np.finfo(np.float32).max)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
encode = _encoder.encode
decode = _decoder.decode


class Refuse(Exception):
    """Internal: one value broke one rule."""

    def __init__(self, rule: str, message: str) -> None:
        self.rule = rule
        self.message = message


Check = Callable[[Any], Any]
READ = "nothing was read"  # the outcome of a ValidationError raised by a read


def normalize_id(
    view: str,
    entity_id: object,
    row: int | None = None,
    *,
    outcome: str = "nothing was written",
    key: Entity | None = None,
    extra_ok: bool = False,
) -> str:
    """The canonical id string of one entity, or ValidationError (``outcome`` ends its
    message: reads pass "nothing was read").

    Ids of a one-key entity are a str or an int. With ``key`` (the view's Entity), an id
    may also be a tuple (or list) in join-key order or a mapping of join key to value
    (``extra_ok``: other keys in the mapping are ignored, as in get_features' entity rows);
    a composite entity's id is its parts joined by ``,`` (see ``encode_parts``), and a str
    given for one is read as that encoded form and checked. Without ``key`` a tuple is
    encoded the same way, unchecked against any entity."""
    try:
        if type(entity_id) is str and key is None:  # the hot path of every read and write
            return _normalize_id(view, entity_id, row)
        if key is None or not key.declared:
            if isinstance(entity_id, str | int) or not isinstance(
                entity_id, tuple | list | Mapping
            ):
                return _normalize_id(view, entity_id, row)
            if key is not None and isinstance(entity_id, Mapping):
                return _keyed_id(view, key, entity_id, row, extra_ok)  # {"entity_id": ...}
            if key is not None or isinstance(entity_id, Mapping) or len(entity_id) < 2:
                raise _problem(
                    view,
                    "entity_id_type",
                    shorten(entity_id),
                    f"entity id must be a str or int, got {type(entity_id).__name__}"
                    + (
                        ""
                        if key is not None
                        else " (a tuple needs two parts or more, a mapping its view's entity)"
                    ),
                    row,
                )
            # a composite id reached without its entity: encoded the same way, unchecked
            parts = [_normalize_id(view, p, row) for p in entity_id]
            return _normalize_id(view, encode_parts(parts), row)
        if not key.composite and key.join_keys[0].dtype is t.String and type(entity_id) is str:
            return _normalize_id(view, entity_id, row)
        return _keyed_id(view, key, entity_id, row, extra_ok)
    except ValidationError as exc:
        if outcome == "nothing was written":
            raise
        raise ValidationError(exc.problems, outcome=outcome) from None


SEP = ","  # between the parts of a composite id: readable, and left as is by escape_id


def encode_parts(parts: list[str]) -> str:
    """Join canonical parts into one id: injective, since a ``%`` or ``,`` inside a part is
    written ``%25`` / ``%2C`` first."""
    return SEP.join(
        p.replace("%", "%25").replace(",", "%2C") if ("%" in p or "," in p) else p for p in parts
    )


_PART_ESCAPE = re.compile("%(25|2C|2c)")


def split_id(encoded: str) -> list[str] | None:
    """The parts of a composite id (None when a ``%`` is not one of the two escapes)."""
    parts = encoded.split(SEP)
    out = []
    for p in parts:
        if "%" in p:
            if _PART_ESCAPE.sub("", p).count("%"):
                return None
            p = _PART_ESCAPE.sub(lambda m: "%" if m.group(1) == "25" else ",", p)
        out.append(p)
    return out


def decode_id(key: Entity, entity_id: str) -> tuple[str | int, ...]:
    """An encoded id back as its typed parts, in join-key order."""
    parts = split_id(entity_id) if key.composite else [entity_id]
    if parts is None or len(parts) != len(key.join_keys):
        raise ValueError(f"{entity_id!r} is not an id of entity {key.name!r}")
    return tuple(
        int(p) if k.dtype is t.Int else p for p, k in zip(parts, key.join_keys, strict=True)
    )


_INT_TEXT = re.compile(r"[+-]?[0-9]+")


def _problem(view: str, rule: str, value: Any, message: str, row: int | None) -> ValidationError:
    return ValidationError([Problem(view, None, None, rule, value, message, row)])


def _part(view: str, k: JoinKey, v: Any, row: int | None) -> str:
    """One join key's value as its canonical text (Int keys: decimal, no leading zeros)."""
    if v is None:
        raise _problem(view, "entity_key_null", None, f"join key {k.name!r} is null", row)
    if k.dtype is t.Int:
        if isinstance(v, str):
            if not _INT_TEXT.fullmatch(v.strip()):
                raise _problem(
                    view,
                    "entity_key_type",
                    shorten(v),
                    f"join key {k.name!r} is an Int; {shorten(v)!r} is not a whole number",
                    row,
                )
            v = int(v)
        elif not _is_int(v):
            raise _problem(
                view,
                "entity_key_type",
                shorten(v),
                f"join key {k.name!r} is an Int, got {type(v).__name__}",
                row,
            )
        v = int(v)
        if not INT64_MIN <= v <= INT64_MAX:
            raise _problem(
                view, "entity_key_range", v, f"join key {k.name!r} does not fit in 64 bits", row
            )
        return str(v)
    if isinstance(v, str):
        if not v:
            raise _problem(view, "entity_id_empty", v, f"join key {k.name!r} is empty", row)
        return v
    if _is_int(v):
        return str(int(v))
    raise _problem(
        view,
        "entity_key_type",
        shorten(v),
        f"join key {k.name!r} is a String (or an int), got {type(v).__name__}",
        row,
    )


def _keyed_id(view: str, key: Entity, entity_id: Any, row: int | None, extra_ok: bool) -> str:
    names = key.key_names
    values: list[Any]
    if isinstance(entity_id, Mapping):
        missing = [n for n in names if n not in entity_id]
        extra = [] if extra_ok else [str(k) for k in entity_id if k not in names]
        if missing or extra:
            raise _problem(
                view,
                "entity_key_missing" if missing else "entity_key_unknown",
                sorted(map(str, entity_id)),
                f"entity {key.name!r} has join keys {names}; "
                + (f"the id lacks {missing}" if missing else f"{extra} are not among them"),
                row,
            )
        values = [entity_id[n] for n in names]
    elif isinstance(entity_id, tuple | list):
        if len(entity_id) != len(names):
            raise _problem(
                view,
                "entity_key_arity",
                shorten(entity_id),
                f"entity {key.name!r} has {len(names)} join key(s) {names}; "
                f"the id has {len(entity_id)} part(s)",
                row,
            )
        values = list(entity_id)
    elif isinstance(entity_id, str) and key.composite:
        split = split_id(entity_id)
        if split is None or len(split) != len(names):
            raise _problem(
                view,
                "entity_key_arity",
                shorten(entity_id),
                f"entity {key.name!r} has join keys {names}: give a tuple, a mapping, or "
                f"the encoded id (parts joined by ',', e.g. 'u1,m9'); "
                f"{shorten(entity_id)!r} is not one",
                row,
            )
        values = list(split)
    else:
        values = [entity_id]
    parts = [_part(view, k, v, row) for k, v in zip(key.join_keys, values, strict=True)]
    return _normalize_id(view, encode_parts(parts) if key.composite else parts[0], row)


def _normalize_id(view: str, entity_id: object, row: int | None) -> str:
    if isinstance(entity_id, str):
        sid = entity_id
    elif isinstance(entity_id, int | np.integer) and not isinstance(entity_id, bool | np.bool_):
        try:
            sid = str(int(entity_id))
        except ValueError:  # more digits than Python will print: far over the id limit
            raise ValidationError(
                [
                    Problem(
                        view,
                        None,
                        None,
                        "entity_id_too_long",
                        "<huge int>",
                        f"entity id is an int of more than {MAX_ID_BYTES} digits",
                        row,
                    )
                ]
            ) from None
    else:
        raise ValidationError(
            [
                Problem(
                    view,
                    None,
                    None,
                    "entity_id_type",
                    entity_id,
                    f"entity id must be a str or int, got {type(entity_id).__name__}"
                    + ("; decode bytes first" if isinstance(entity_id, bytes) else ""),
                    row,
                )
            ]
        )
    if sid.isascii() and 0 < len(sid) <= MAX_ID_BYTES:
        return sid
    if not sid:
        raise ValidationError(
            [Problem(view, sid, None, "entity_id_empty", sid, "entity id is empty", row)]
        )
    try:
        size = len(sid.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValidationError(
            [
                Problem(
                    view,
                    None,
                    None,
                    "entity_id_unicode",
                    sid,
                    "entity id is not valid unicode (lone surrogate)",
                    row,
                )
            ]
        ) from None
    if size > MAX_ID_BYTES:
        raise ValidationError(
            [
                Problem(
                    view,
                    sid[:40] + "...",
                    None,
                    "entity_id_too_long",
                    size,
                    f"entity id is {size} bytes; the limit is {MAX_ID_BYTES}",
                    row,
                )
            ]
        )
    return sid


def _is_int(v: Any) -> bool:
    return (type(v) is int) or (
        isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)
    )


def _is_number(v: Any) -> bool:
    return _is_int(v) or isinstance(v, float | np.floating)


def _bounds(f: Field) -> Callable[[float], None]:
    lo, hi = f.min, f.max
    if lo is None and hi is None:
        return lambda v: None

    def check(v: float) -> None:
        if lo is not None and v < lo:
            raise Refuse("min", f"{v!r} is below the minimum {lo}")
        if hi is not None and v > hi:
            raise Refuse("max", f"{v!r} is above the maximum {hi}")

    return check


def _scalar_check(f: Field, dtype: t.DType) -> Check:
    bounds = _bounds(f)
    if dtype is t.Int:

        def check_int(v: Any) -> int:
            if type(v) is not int:
                if not _is_int(v):
                    if isinstance(v, float) and v.is_integer():
                        raise Refuse("type", f"expected an int, got float {v!r} (write int(x))")
                    raise Refuse("type", f"expected an int, got {type(v).__name__}")
                v = int(v)
            if not INT64_MIN <= v <= INT64_MAX:
                raise Refuse("range", "int does not fit in 64 bits")
            bounds(v)
            return int(v)

        return check_int
    if dtype is t.Float:

        def check_float(v: Any) -> float:
            if type(v) is not float:
                if not _is_number(v):
                    raise Refuse("type", f"expected a float, got {type(v).__name__}")
                if _is_int(v) and abs(int(v)) > 2**53:
                    raise Refuse("range", "int too large to store exactly as a float")
                v = float(v)
            if not math.isfinite(v):
                raise Refuse("finite", f"{v!r} is not a finite number")
            bounds(v)
            return float(v)

        return check_float
    if dtype is t.Bool:

        def check_bool(v: Any) -> bool:
            if not isinstance(v, bool | np.bool_):
                raise Refuse("type", f"expected a bool, got {type(v).__name__}")
            return bool(v)

        return check_bool
    if dtype is t.String:
        cats = frozenset(f.categories) if f.categories is not None else None
        max_len = f.max_length
        rx = re.compile(f.pattern) if f.pattern is not None else None

        def check_str(v: Any) -> str:
            if not isinstance(v, str):
                raise Refuse("type", f"expected a str, got {type(v).__name__}")
            if max_len is not None and len(v) > max_len:
                raise Refuse("max_length", f"{len(v)} characters; the limit is {max_len}")
            if rx is not None and not rx.fullmatch(v):
                raise Refuse("pattern", f"{v[:60]!r} does not match {f.pattern!r}")
            if cats is not None and v not in cats:
                raise Refuse("category", f"{v[:60]!r} is not one of {sorted(cats)}")
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise Refuse("unicode", "string is not valid unicode") from None
            return v

        return check_str
    if isinstance(dtype, t.Category):
        allowed = frozenset(dtype.categories)

        def check_cat(v: Any) -> str:
            if not isinstance(v, str):
                raise Refuse("type", f"expected a category str, got {type(v).__name__}")
            if v not in allowed:
                raise Refuse("category", f"{v[:60]!r} is not one of {list(dtype.categories)}")
            return v

        return check_cat
    if dtype is t.Timestamp:

        def check_ts(v: Any) -> int:
            if isinstance(v, float) and not math.isfinite(v):
                raise Refuse("finite", f"{v!r} is not a finite timestamp")
            try:
                us = to_us(v, what="timestamp")
            except ValueError as exc:
                raise Refuse("range" if "outside" in str(exc) else "type", str(exc)) from None
            if f.min is not None or f.max is not None:
                bounds(us / 1e6)
            return us

        return check_ts
    raise AssertionError(f"unhandled type {dtype!r}")


def _vector_check(f: Field, dtype: t.Vector) -> Check:
    dim = dtype.dim

    def check_vec(v: Any) -> bytes:
        if isinstance(v, np.ndarray):
            if v.dtype.kind not in "fiu":
                raise Refuse("type", f"expected a numeric array, got dtype {v.dtype}")
        elif isinstance(v, list | tuple):
            if not all(_is_number(x) for x in v):
                if any(isinstance(x, list | tuple | np.ndarray) for x in v):
                    raise Refuse("dimension", f"expected a flat vector of {dim} numbers")
                raise Refuse("type", f"expected a vector of {dim} numbers (int or float)")
        else:
            raise Refuse("type", f"expected a vector of {dim} floats, got {type(v).__name__}")
        try:
            arr = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            raise Refuse("type", f"expected a vector of {dim} numbers") from None
        if arr.shape != (dim,):
            raise Refuse("dimension", f"expected shape ({dim},), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise Refuse("finite", "vector has NaN or infinite values")
        if np.abs(arr).max(initial=0.0) > F32_MAX:
            raise Refuse("range", "vector value too large for float32")
        return arr.astype("<f4").tobytes()

    return check_vec


def _list_check(f: Field, dtype: t.List) -> Check:
    elem = _scalar_check(f, dtype.element)
    max_len = f.max_length

    def check_list(v: Any) -> list[Any]:
        if isinstance(v, str | bytes | dict | set | frozenset) or not hasattr(v, "__iter__"):
            raise Refuse("type", f"expected a list of {dtype.element!r}, got {type(v).__name__}")
        items = list(v)
        if max_len is not None and len(items) > max_len:
            raise Refuse("max_length", f"{len(items)} items; the limit is {max_len}")
        out = []
        for i, x in enumerate(items):
            if x is None:
                raise Refuse("null", f"item {i} is null")
            try:
                out.append(elem(x))
            except Refuse as r:
                raise Refuse(r.rule, f"item {i}: {r.message}") from None
        return out

    return check_list


def field_check(f: Field) -> Check:
    if isinstance(f.dtype, t.Vector):
        return _vector_check(f, f.dtype)
    if isinstance(f.dtype, t.List):
        return _list_check(f, f.dtype)
    return _scalar_check(f, f.dtype)


def decoder_for(dtype: t.DType) -> Callable[[Any], Any] | None:
    """Conversion from the msgpack value to the Python value (None: use as is)."""
    if dtype is t.Timestamp:
        return from_us
    if isinstance(dtype, t.Vector):
        return lambda b: np.frombuffer(b, dtype="<f4").copy()
    return None  # msgpack keeps int, float, bool, str and lists apart: nothing to convert


class Reader:
    """Compiled read of some fields: one C-level itemgetter, then the few conversions."""

    __slots__ = ("names", "getter", "convs", "width")

    def __init__(self, readers: list[tuple[str, int, Any]]) -> None:
        self.names = tuple(r[0] for r in readers)
        slots = [r[1] for r in readers]
        get = operator.itemgetter(*slots)
        self.getter: Callable[[list[Any]], Any] | None = (
            None  # fields in slot order from 0: zip over the array itself
            if slots == list(range(len(slots)))
            else get
            if len(slots) > 1
            else (lambda arr: (get(arr),))
        )
        self.convs = [(r[0], r[2]) for r in readers if r[2] is not None]
        self.width = max(slots) + 1


class ViewCodec:
    """Validation and (de)serialisation for one version of a view's layout."""

    def __init__(
        self,
        view: FeatureView,
        slots: Mapping[str, int],
        n_slots: int,
        key: Entity | None = None,
    ) -> None:
        self.view = view
        self.name = view.name
        self.key = key or Entity(view.entity)  # the entity: its join keys make the ids
        self.slots = dict(slots)
        self.n_slots = n_slots
        self.fields = {f.name: f for f in view.fields}
        self.checks = [(f.name, slots[f.name], f.nullable, field_check(f)) for f in view.fields]
        self.readers = [(f.name, slots[f.name], decoder_for(f.dtype)) for f in view.fields]
        self.reader = Reader(self.readers)
        self.numeric = {f.name for f in view.fields if f.dtype in (t.Int, t.Float)}

    def problems_for(
        self,
        entity: str,
        values: Any,
        row: int | None = None,
        skip: frozenset[str] = frozenset(),
        partial: bool = False,
    ) -> tuple[list[Any] | None, list[Problem]]:
        """Validate one row; return (slot array, []) or (None, problems).

        ``partial``: the row will be merged into the latest, so absent fields are fine."""
        name = self.name
        if not isinstance(values, Mapping):
            return None, [
                Problem(
                    name,
                    entity,
                    None,
                    "row_type",
                    type(values).__name__,
                    "a row must be a mapping of field name to value",
                    row,
                )
            ]
        problems: list[Problem] = []
        extra = values.keys() - self.fields.keys()
        if extra and (extra := extra - skip):
            problems.extend(
                Problem(
                    name,
                    entity,
                    str(key),
                    "unknown_field",
                    values[key],
                    f"view {name!r} has no field {key!r}; known: {sorted(self.fields)}",
                    row,
                )
                for key in sorted(extra, key=str)
            )
        arr: list[Any] = [None] * self.n_slots
        for fname, slot, nullable, check in self.checks:
            v = values.get(fname)
            if v is None:
                if not nullable and not (partial and fname not in values):
                    problems.append(
                        Problem(
                            name,
                            entity,
                            fname,
                            "not_null",
                            None,
                            "value is required (field is not nullable)",
                            row,
                        )
                    )
                continue
            try:
                arr[slot] = check(v)
            except Refuse as r:
                problems.append(Problem(name, entity, fname, r.rule, shorten(v), r.message, row))
        if problems:
            return None, problems
        return arr, []

    def encode_row(self, entity: str, values: Any, row: int | None = None) -> bytes:
        arr, problems = self.problems_for(entity, values, row)
        if arr is None:
            raise ValidationError(problems)
        return encode(arr)

    def select(self, features: list[str] | None) -> Reader:
        """Readers for a subset of fields, in the order asked (all fields when None)."""
        if features is None:
            return self.reader
        if isinstance(features, str) or not features:
            raise ValidationError(
                [
                    Problem(
                        self.name,
                        None,
                        None,
                        "features",
                        features,
                        "features must be a non-empty list of field names (or None for all)",
                    )
                ],
                outcome="nothing was read",
            )
        by_name = {r[0]: r for r in self.readers}
        unknown = [f for f in features if f not in by_name]
        if unknown:
            raise ValidationError(
                [
                    Problem(
                        self.name,
                        None,
                        f,
                        "unknown_field",
                        f,
                        f"view {self.name!r} has no field {f!r}; known: {sorted(by_name)}",
                    )
                    for f in unknown
                ],
                outcome="nothing was read",
            )
        return Reader([by_name[f] for f in features])

    def decode(self, payload: bytes | memoryview, reader: Reader | None = None) -> dict[str, Any]:
        arr = decode(payload)
        r = reader if reader is not None else self.reader
        if len(arr) < r.width:  # written before later fields were added
            arr.extend([None] * (r.width - len(arr)))
        out = dict(zip(r.names, arr if r.getter is None else r.getter(arr), strict=False))
        for name, conv in r.convs:
            v = out[name]
            if v is not None:
                out[name] = conv(v)
        return out


def shorten(v: Any) -> Any:
    """A value short enough to quote in an error message."""
    if isinstance(v, str) and len(v) > 80:
        return v[:80] + "..."
    if isinstance(v, bytes) and len(v) > 80:
        return v[:80] + b"..."
    if isinstance(v, datetime | int | float | bool | str | bytes) or v is None:
        return v
    r = repr(v)
    return r if len(r) <= 80 else r[:80] + "..."
