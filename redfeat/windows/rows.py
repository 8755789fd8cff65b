"""Input checks of record / record_many: every row is read and checked before anything is
recorded, so that a bad row changes nothing."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..core.keys import MAX_ID_BYTES
from ..core.time import now_us
from ..errors import ConfigurationError, Problem, ValidationError
from .spec import MAX_MS, WindowFeatures


def finite(name: str, entity: str, value: object) -> float:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise ConfigurationError(
            f"window features {name!r}, entity {entity!r}: value {value!r} is not a number; "
            "nothing was recorded"
        )
    v = float(value)
    if not math.isfinite(v):
        raise ConfigurationError(
            f"window features {name!r}, entity {entity!r}: value {value!r} is not finite; "
            "nothing was recorded"
        )
    return v


def future_limit(wf: WindowFeatures) -> int:
    """Latest event time (ms) taken now: one hop ahead of this clock. Retention counts back
    from an entity's newest tile, so an event two hops ahead would drop a tile the windows
    at now still need (and one in 2199 would drop them all, and refuse every real event
    after it as late); one hop ahead keeps exactly what a read at now needs, and allows for
    producers whose clock runs a little ahead."""
    return now_us() // 1000 + wf.hop_ms


def refuse_future(
    wf: WindowFeatures, ents: list[str], times_ms: list[int], rows: list[int | None], total: int
) -> None:
    """ValidationError for events past future_limit (the first 1,000 listed)."""
    problems = [
        Problem(
            wf.name,
            ent,
            wf.source,
            "future_event_time",
            t,
            f"window features {wf.name!r}: event time {t} ms is more than one hop "
            f"({wf.hop_ms} ms) ahead of now; it would drop the tiles windows at now need",
            row,
        )
        for ent, t, row in list(zip(ents, times_ms, rows, strict=True))[:1000]
    ]
    raise ValidationError(problems, outcome=f"{total} event(s) refused; nothing was recorded")


def _ms_column(name: str, col: Any, column: str) -> np.ndarray:
    """An event-time column (timestamps, naive = UTC, or epoch seconds) as int64 ms."""
    if pa.types.is_timestamp(col.type):
        utc = pc.cast(col, pa.timestamp("ms", tz=col.type.tz or "UTC"), safe=False)
        ms = pc.cast(utc, pa.int64()).to_numpy(zero_copy_only=False)
    elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        sec = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        if not np.isfinite(sec).all():
            raise ConfigurationError(
                f"window features {name!r}: column {column!r} has non-finite times; "
                "nothing was recorded"
            )
        ms = np.floor(sec * 1000.0).astype(np.int64)
    else:
        raise ConfigurationError(
            f"window features {name!r}: column {column!r} must hold timestamps or epoch "
            f"seconds, not {col.type}; nothing was recorded"
        )
    return np.asarray(ms, np.int64)


def events_table(wf: WindowFeatures, rows: Any, cols: list[str | None]) -> pa.Table:
    """The rows as an Arrow table with the columns record_many needs."""
    mod = type(rows).__module__.split(".")[0]
    try:
        if mod == "pandas":
            table = pa.Table.from_pandas(rows, preserve_index=False)
        elif isinstance(rows, pa.Table):
            table = rows
        elif isinstance(rows, list) and all(isinstance(r, dict) for r in rows):
            for i, r in enumerate(rows):
                v = r.get(cols[1])
                if isinstance(v, bool):
                    raise ConfigurationError(
                        f"window features {wf.name!r}: row {i} has value {v!r}, not a "
                        "number; nothing was recorded"
                    )
            table = pa.Table.from_pylist(rows)
        else:
            raise ConfigurationError(
                f"window features {wf.name!r}: record_many takes a list of dicts, a "
                f"pandas.DataFrame or a pyarrow.Table, got {type(rows).__name__}"
            )
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"window features {wf.name!r}: cannot read the rows ({exc}); nothing was recorded"
        ) from None
    missing = [c for c in cols if c is not None and c not in table.column_names]
    if missing and table.num_rows:
        raise ConfigurationError(
            f"window features {wf.name!r}: the rows have no column(s) {missing} "
            f"(columns: {table.column_names}); pass entity_column= / value_column= / "
            "event_time_column=; nothing was recorded"
        )
    return table


def checked_events(
    wf: WindowFeatures,
    table: pa.Table,
    entity_column: str,
    value_column: str,
    event_time_column: str | None,
) -> tuple[pa.ChunkedArray, np.ndarray, np.ndarray]:
    """(entity ids as strings, event times in ms, values) of a non-empty table."""
    n = table.num_rows
    ids = table[entity_column]
    if ids.null_count:
        raise ConfigurationError(
            f"window features {wf.name!r}: column {entity_column!r} has null entity ids; "
            "nothing was recorded"
        )
    if pa.types.is_floating(ids.type) or pa.types.is_boolean(ids.type):
        raise ConfigurationError(
            f"window features {wf.name!r}: entity ids must be strings or ints, column "
            f"{entity_column!r} holds {ids.type}; nothing was recorded"
        )
    ids = pc.cast(ids, pa.string())
    if (
        pc.max(pc.binary_length(ids)).as_py() > MAX_ID_BYTES
        or pc.min(pc.binary_length(ids)).as_py() == 0
    ):
        raise ConfigurationError(
            f"window features {wf.name!r}: entity ids must be 1..{MAX_ID_BYTES} bytes; "
            "nothing was recorded"
        )
    vcol = table[value_column]
    if not (pa.types.is_integer(vcol.type) or pa.types.is_floating(vcol.type)):
        raise ConfigurationError(
            f"window features {wf.name!r}: column {value_column!r} must be numeric, not "
            f"{vcol.type}; nothing was recorded"
        )
    vs = pc.cast(vcol, pa.float64()).to_numpy(zero_copy_only=False)
    bad = ~np.isfinite(vs)
    if vcol.null_count or bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ConfigurationError(
            f"window features {wf.name!r}: row {i} (entity {ids[i].as_py()!r}) has value "
            f"{vcol[i].as_py()!r}, not a finite number; nothing was recorded"
        )
    if event_time_column is None:
        ts = np.full(n, now_us() // 1000, np.int64)
    else:
        ts = _ms_column(wf.name, table[event_time_column], event_time_column)
        out = (ts < 0) | (ts >= MAX_MS)
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise ConfigurationError(
                f"window features {wf.name!r}: row {i} (entity {ids[i].as_py()!r}) has an "
                "event time outside 1970-01-01 .. 2200-01-01; nothing was recorded"
            )
        ahead = np.flatnonzero(ts > future_limit(wf))
        if len(ahead):
            first = ahead[:1000]
            refuse_future(
                wf,
                [str(x) for x in ids.take(pa.array(first)).to_pylist()],
                ts[first].tolist(),
                first.tolist(),
                len(ahead),
            )
    return ids, ts, vs
