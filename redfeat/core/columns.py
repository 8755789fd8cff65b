"""Bulk encoding for write_many: columns in, one payload per valid row out.

Validation runs a column at a time. The common case (a column of one Python type with no
nulls) is checked with C-level builtins and numpy; any column that fails the quick check is
re-checked value by value so that every problem is reported with its row and entity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import types as t
from ..errors import ConfigurationError, Problem, ValidationError
from .codec import INT64_MAX, INT64_MIN, Refuse, ViewCodec, encode, normalize_id, shorten
from .keys import escape_id
from .records import ValidationReport
from .schema import Entity, Field
from .time import MAX_US, MIN_US, from_us, now_us, to_us

_MISSING = object()


@dataclass(slots=True)
class Columns:
    """Rows as columns: ``n`` rows, each column a list of length ``n``."""

    n: int
    data: dict[str, list[Any]]
    # Per-row column names, only for list-of-dicts input (to report unknown fields).
    row_keys: list[Any] | None = None
    # From pandas/Arrow: an int column with a missing value arrives as floats (1.0, NaN).
    from_frame: bool = False
    # Arrow timestamp columns, already as int microseconds since the epoch (UTC): turning
    # a million of them into datetimes and back would cost more than the write itself.
    micros: frozenset[str] = frozenset()


def _missing(v: Any) -> bool:
    if v is None or type(v).__name__ in ("NaTType", "NAType"):
        return True
    try:
        return bool(v != v)
    except Exception:  # an array, or a value that cannot compare: not missing
        return False


def _pandas_columns(frame: Any) -> Columns:
    if not hasattr(frame, "columns"):
        raise ConfigurationError(
            f"rows must be a list of dicts, a pandas.DataFrame or a pyarrow.Table, "
            f"got {type(frame).__name__}"
        )
    data = {
        str(name): [None if _missing(v) else v for v in frame[name].tolist()]
        for name in frame.columns
    }
    return Columns(len(frame), data, from_frame=True)


def columns_of(rows: Any) -> Columns:
    """A list of dicts, a pandas.DataFrame or a pyarrow.Table, as columns."""
    mod = type(rows).__module__
    if mod.startswith("pandas"):
        import pyarrow as pa

        # pandas' missing values (NaN, None, NaT, pd.NA) become nulls on the way.
        try:
            rows = pa.Table.from_pandas(rows, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError):
            # a column Arrow cannot type (mixed kinds in an object column): value by value,
            # so each bad value is reported with its row and field
            return _pandas_columns(rows)
        mod = "pyarrow"
    if mod.startswith("pyarrow"):
        import pyarrow as pa
        import pyarrow.compute as pc

        data: dict[str, list[Any]] = {}
        micros: set[str] = set()
        for name in rows.column_names:
            col = rows.column(name)
            if pa.types.is_timestamp(col.type):
                # naive timestamps are UTC; aware ones are instants already
                utc = pc.cast(col, pa.timestamp("us", tz=col.type.tz or "UTC"))
                data[name] = pc.cast(utc, pa.int64()).to_pylist()
                micros.add(name)
            else:
                data[name] = col.to_pylist()
        return Columns(rows.num_rows, data, from_frame=True, micros=frozenset(micros))
    if not isinstance(rows, list):
        rows = list(rows)
    if all(type(r) is dict for r in rows):
        names: dict[Any, None] = dict.fromkeys(set().union(*rows)) if rows else {}
        return Columns(len(rows), {name: [r.get(name) for r in rows] for name in names}, rows)
    names = {}
    for r in rows:
        if isinstance(r, Mapping):
            names.update(dict.fromkeys(r))
    data = {
        name: [r.get(name, None) if isinstance(r, Mapping) else None for r in rows]
        for name in names
    }
    return Columns(len(rows), data, rows)


def _int_if_whole(v: Any) -> Any:
    return int(v) if type(v) is float and v.is_integer() else v


def _fast(f: Field, col: list[Any]) -> list[Any] | None:
    """The column unchanged if it passes quick whole-column checks, else None."""
    if not col:
        return col
    dt = f.dtype
    if dt is t.Float:
        if not all(type(v) is float for v in col):
            return None
        arr = np.fromiter(col, dtype=np.float64, count=len(col))
        if not np.isfinite(arr).all():
            return None
        if (f.min is not None and arr.min() < f.min) or (f.max is not None and arr.max() > f.max):
            return None
        return col
    if dt is t.Int:
        if not all(type(v) is int for v in col):
            return None
        lo, hi = min(col), max(col)
        if lo < INT64_MIN or hi > INT64_MAX:
            return None
        if (f.min is not None and lo < f.min) or (f.max is not None and hi > f.max):
            return None
        return col
    if dt is t.Bool:
        return col if all(type(v) is bool for v in col) else None
    if dt is t.String or isinstance(dt, t.Category):
        if f.pattern is not None or not all(type(v) is str for v in col):
            return None
        allowed = dt.categories if isinstance(dt, t.Category) else f.categories
        if allowed is not None and not set(col) <= set(allowed):
            return None
        if f.max_length is not None and max(map(len, col)) > f.max_length:
            return None
        if not all(v.isascii() for v in col):
            return None  # the slow path checks for unencodable (surrogate) strings
        return col
    return None


def _plain_ids(ids: list[Any], key: Entity) -> bool:
    """Whether the ids are already canonical, checked at C speed: short ASCII strings, and
    for a composite entity one ',' between each two parts (anything else is checked and
    encoded one id at a time)."""
    if key.join_keys[0].dtype is t.Int and not key.composite:
        return False
    if not all(type(e) is str and e.isascii() and 0 < len(e) <= 1024 for e in ids):
        return False
    if key.composite:
        seps = len(key.join_keys) - 1
        if any(e.count(",") != seps for e in ids) or any(k.dtype is t.Int for k in key.join_keys):
            return False
    return True


# Custom checks on checked columns: (entity ids, field -> typed values, problems by row to
# add refusals to) -> warnings (rows written anyway).
ColumnCheck = Callable[[list[str], dict[str, list[Any]], dict[int, list[Problem]]], list[Problem]]


def encode_columns(
    codec: ViewCodec,
    cols: Columns,
    *,
    entity_column: str,
    event_time_column: str | None,
    custom: ColumnCheck | None = None,
    out: dict[str, Any] | None = None,
) -> tuple[Iterator[tuple[str, int, bytes, None]], int, dict[int, list[Problem]]]:
    """Validate every row, then return a lazy stream of write items for the valid rows (so
    that encoding overlaps with the server's work), their count, and problems by row.

    ``custom`` runs custom validators over the typed columns; ``out`` receives
    ``ets`` (us), ``checked`` (field -> typed values) and ``warnings`` (for profiling)."""
    view = codec.name
    n = cols.n
    problems: dict[int, list[Problem]] = {}

    def refuse(i: int, p: Problem) -> None:
        problems.setdefault(i, []).append(p)

    if cols.from_frame:
        ints = [f for f in codec.fields.values() if f.dtype is t.Int] + [entity_column]
        ints += [k.name for k in codec.key.join_keys if k.dtype is t.Int]
        for f in ints:
            name = f if isinstance(f, str) else f.name
            col = cols.data.get(name)
            if col and any(type(v) is float for v in col):
                cols.data[name] = [_int_if_whole(v) for v in col]
    raw_ids = cols.data.get(entity_column)
    ids: list[str] = [""] * n
    key = codec.key
    key_cols: list[str] = []
    if raw_ids is None and key.declared and all(k in cols.data for k in key.key_names):
        # rows keyed by the entity's join-key columns (user_id, merchant_id...)
        key_cols = key.key_names
        raw_ids = (
            cols.data[key_cols[0]]
            if len(key_cols) == 1
            else list(zip(*(cols.data[k] for k in key_cols), strict=True))
        )
    if raw_ids is None:
        for i in range(n):
            refuse(
                i,
                Problem(
                    view,
                    None,
                    entity_column,
                    "entity_column",
                    None,
                    f"row has no {entity_column!r} (the entity id column)"
                    + (f" nor the join keys {key.key_names}" if key.declared else ""),
                    i,
                ),
            )
    elif len(key_cols) < 2 and _plain_ids(raw_ids, key):
        ids = raw_ids
    else:
        for i, e in enumerate(raw_ids):
            try:
                ids[i] = normalize_id(view, e, i, key=key)
            except ValidationError as exc:
                problems.setdefault(i, []).extend(exc.problems)

    if event_time_column is None:
        ets: list[int] = [now_us()] * n
    else:
        raw_ets = cols.data.get(event_time_column, [None] * n)
        ets = [0] * n
        exact = event_time_column in cols.micros
        if (
            exact
            and None not in raw_ets
            and min(raw_ets, default=0) >= MIN_US
            and max(raw_ets, default=0) < MAX_US
        ):
            ets, raw_ets = raw_ets, []
        for i, v in enumerate(raw_ets):
            try:
                ets[i] = to_us(v if not exact or v is None else from_us(v), what="event_time")
            except ValueError as exc:
                refuse(
                    i,
                    Problem(
                        view,
                        ids[i] or None,
                        event_time_column,
                        "event_time",
                        shorten(v),
                        str(exc),
                        i,
                    ),
                )

    skip = {entity_column, event_time_column, *key_cols}
    unknown = [c for c in cols.data if c not in codec.fields and c not in skip]
    for name in unknown:
        for i, v in enumerate(cols.data[name]):
            present = v is not None or (
                cols.row_keys is not None
                and isinstance(cols.row_keys[i], Mapping)
                and name in cols.row_keys[i]
            )
            if present:
                refuse(
                    i,
                    Problem(
                        view,
                        ids[i] or None,
                        name,
                        "unknown_field",
                        shorten(v),
                        f"view {view!r} has no field {name!r}; known: {sorted(codec.fields)}",
                        i,
                    ),
                )
    if cols.row_keys is not None:
        for i, r in enumerate(cols.row_keys):
            if not isinstance(r, Mapping):
                refuse(
                    i,
                    Problem(
                        view,
                        None,
                        None,
                        "row_type",
                        type(r).__name__,
                        "a row must be a mapping of field name to value",
                        i,
                    ),
                )

    none_col = [None] * n
    slot_cols: list[list[Any]] = [none_col] * codec.n_slots
    for fname, slot, nullable, check in codec.checks:
        f = codec.fields[fname]
        col = cols.data.get(fname, none_col)
        if fname in cols.micros and col is not none_col:
            # int microseconds from an Arrow timestamp column: back to datetimes for the
            # checks (a Timestamp field is rare enough not to need a faster path)
            col = [None if v is None else from_us(v) for v in col]
        good = _fast(f, col) if col is not none_col else None
        if good is None:
            good = [None] * n
            for i, v in enumerate(col):
                if v is None:
                    if not nullable:
                        refuse(
                            i,
                            Problem(
                                view,
                                ids[i] or None,
                                fname,
                                "not_null",
                                None,
                                "value is required (field is not nullable)",
                                i,
                            ),
                        )
                    continue
                try:
                    good[i] = check(v)
                except Refuse as r:
                    refuse(
                        i, Problem(view, ids[i] or None, fname, r.rule, shorten(v), r.message, i)
                    )
        slot_cols[slot] = good

    checked = {fname: slot_cols[slot] for fname, slot, _n, _c in codec.checks}
    warnings = custom(ids, checked, problems) if custom is not None else []
    if out is not None:
        out.update(ids=ids, ets=ets, checked=checked, warnings=warnings)

    def items() -> Iterator[tuple[str, int, bytes, None]]:
        rows = zip(map(escape_id, ids), ets, map(encode, zip(*slot_cols, strict=True)), strict=True)
        if not problems:
            for esc, et, payload in rows:
                yield esc, et, payload, None
        else:
            for i, (esc, et, payload) in enumerate(rows):
                if i not in problems:
                    yield esc, et, payload, None

    return items(), n - len(problems), problems


def validate(
    codec: ViewCodec,
    rows: Any,
    *,
    entity_column: str,
    event_time_column: str | None,
    check: ColumnCheck | None = None,
) -> ValidationReport:
    """Check rows as write_many would, and report instead of writing."""
    cols = columns_of(rows)
    out: dict[str, Any] = {}
    _items, _total, problems = encode_columns(
        codec,
        cols,
        entity_column=entity_column,
        event_time_column=event_time_column,
        custom=check,
        out=out,
    )
    flat = [p for i in sorted(problems) for p in problems[i]]
    return ValidationReport(cols.n, cols.n - len(problems), flat, out.get("warnings", []))
