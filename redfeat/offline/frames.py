"""Point-in-time correct training frames: ASOF joins in DuckDB over Arrow.

For each entity_df row (entity, t) and each view, the value is the version with the greatest
event_time <= t (inclusive), and >= t - ttl when the view has a ttl (inclusive); ties on
event_time go to the latest written_at. With ``filter_by_written_at`` only versions written
at or before t count. These are Feast's get_historical_features semantics.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import types as t
from ..core.refs import Wanted, shared_columns
from ..core.schema import Entity
from ..errors import ConfigurationError
from .arrow import TS

Progress = Callable[[str, int, int], None]


def event_table(entity_df: Any, event_time_column: str) -> tuple[pa.Table, pa.Array]:
    """(the input as Arrow, its event times as int64 us UTC)."""
    mod = type(entity_df).__module__
    if mod.startswith("pandas") and type(entity_df).__name__ == "DataFrame":
        try:
            table = pa.Table.from_pandas(entity_df, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"entity_df: a column mixes kinds of values Arrow cannot hold together ({exc}); "
                "entity ids must be str or int, event times datetimes or epoch seconds"
            ) from None
    elif mod.startswith("pyarrow") and isinstance(entity_df, pa.Table):
        table = entity_df
    else:
        raise ConfigurationError(
            "entity_df must be a pandas.DataFrame or a pyarrow.Table, "
            f"got {type(entity_df).__name__}"
        )
    if event_time_column not in table.column_names:
        raise ConfigurationError(
            f"entity_df has no column {event_time_column!r} (columns: {table.column_names}); "
            "pass event_time_column="
        )
    ts = table[event_time_column]
    if pa.types.is_timestamp(ts.type):
        # naive timestamps are UTC; aware ones are converted (Arrow stores UTC instants)
        # nanosecond timestamps are truncated to microseconds, the store's precision
        utc = pc.cast(ts, pa.timestamp("us", tz=ts.type.tz or "UTC"), safe=False)
        ts_us = pc.cast(utc, pa.int64())
    elif pa.types.is_integer(ts.type) or pa.types.is_floating(ts.type):
        try:
            ts_us = pc.cast(pc.floor(pc.multiply(pc.cast(ts, pa.float64()), 1e6)), pa.int64())
        except pa.ArrowException as exc:  # inf, NaN or 1e308 seconds
            raise ConfigurationError(
                f"entity_df column {event_time_column!r}: epoch seconds out of range ({exc})"
            ) from None
    elif pa.types.is_date(ts.type):
        ts_us = pc.cast(pc.cast(pc.cast(ts, pa.timestamp("us")), TS), pa.int64())
    else:
        raise ConfigurationError(
            f"entity_df column {event_time_column!r} must hold timestamps or epoch seconds, "
            f"not {ts.type}"
        )
    return table, ts_us


def key_columns(columns: list[str], key: Entity, entity_column: str) -> list[str]:
    """The entity_df columns a view of entity ``key`` joins on: its declared join keys when
    the frame has them all, else ``entity_column`` (ids as written: one key's values, or a
    composite entity's encoded ids)."""
    names = key.key_names
    if key.declared and all(n in columns for n in names):
        return names
    if entity_column in columns:
        return [entity_column]
    missing = [n for n in names if n not in columns] if key.declared else [entity_column]
    raise ConfigurationError(
        f"entity_df has no column(s) {missing} for entity {key.name!r} "
        f"(join keys {names}; columns: {columns}); add them"
        + ("" if key.declared else " or pass entity_column=")
    )


def ids_of(table: pa.Table, cols: list[str], key: Entity) -> pa.Array:
    """Canonical id strings (null where a key is null) from the frame's key columns."""
    if len(cols) == 1 and key.composite:  # encoded ids: read one by one (rare)
        return pa.array([_encoded(key, v) for v in table[cols[0]].to_pylist()], pa.string())
    parts = [_part(table[c], k.dtype is t.Int) for c, k in zip(cols, key.join_keys, strict=False)]
    if len(parts) == 1:
        return parts[0]
    escaped = [
        pc.replace_substring(pc.replace_substring(p, "%", "%25"), ",", "%2C")
        if pc.any(pc.match_substring_regex(p, "[%,]")).as_py()
        else p
        for p in parts
    ]
    return pc.binary_join_element_wise(*escaped, ",")


def _encoded(key: Entity, value: Any) -> str | None:
    """A composite id given whole, canonical; None (no match) when it is not one."""
    from ..core.codec import READ, normalize_id
    from ..errors import ValidationError

    if value is None:
        return None
    try:
        return normalize_id(key.name, value, outcome=READ, key=key)
    except ValidationError:
        return None


def _part(col: pa.ChunkedArray, integer: bool) -> pa.Array:
    try:
        return _cast_part(col, integer)
    except pa.ArrowException as exc:
        raise ConfigurationError(
            f"entity_df: a key column must hold entity ids (str or int): {exc}"
        ) from None


def _cast_part(col: pa.ChunkedArray, integer: bool) -> pa.Array:
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_floating(col.type):
        # pandas turns an int column with a null into floats: whole numbers are int ids,
        # anything else (1.5, inf) is no id at all, and a mistake worth saying
        whole = pc.fill_null(pc.equal(pc.floor(col), col), True)
        if not pc.all(whole, min_count=0).as_py():
            bad = col.filter(pc.invert(whole))[0].as_py()
            raise ConfigurationError(
                f"entity_df: a key column holds {bad!r}, which is no entity id (str or int)"
            )
        col = pc.cast(col, pa.int64())
    text = pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
    if integer and text:  # "007" and 7 are one id of an Int key; "x" is none (no match)
        ok = pc.match_substring_regex(col, r"^[+-]?[0-9]{1,18}$")
        col = pc.cast(pc.if_else(ok, col, pa.scalar(None, col.type)), pa.int64())
    elif integer and not pa.types.is_integer(col.type):
        col = pc.cast(col, pa.int64())
    if not pa.types.is_string(col.type):
        col = pc.cast(col, pa.string())
    return col


def entity_table(
    entity_df: Any, entity_column: str, event_time_column: str, key: Entity | None = None
) -> tuple[pa.Table, pa.Table]:
    """(the input as Arrow, a join table: __rid, entity_id string, __ts int64 us UTC) for the
    entity ``key`` (default: one id column, ``entity_column``)."""
    table, ts_us = event_table(entity_df, event_time_column)
    key = key or Entity("entity")
    cols = key_columns(table.column_names, key, entity_column)
    return table, join_table(table, ts_us, cols, key)


def join_table(table: pa.Table, ts_us: pa.Array, cols: list[str], key: Entity) -> pa.Table:
    return pa.table(
        {
            "__rid": pa.array(np.arange(table.num_rows, dtype=np.int64)),
            "entity_id": ids_of(table, cols, key),
            "__ts": ts_us,
        }
    )


def last_written(vers: pa.Table) -> pa.Table:
    """Per (entity, event time) keep only the last written version, since an ASOF join takes
    one inequality and would pick among ties arbitrarily. Rows arrive grouped by entity and
    sorted by (event time, version id) within it, so a tie's winner is its group's last row.
    """
    n = vers.num_rows
    if n < 2:
        return vers
    ent = vers["entity_id"]
    et = vers["et"]
    same_as_next = pc.and_(
        pc.equal(ent.slice(0, n - 1), ent.slice(1)), pc.equal(et.slice(0, n - 1), et.slice(1))
    )
    keep = pa.concat_arrays([pc.invert(same_as_next).combine_chunks(), pa.array([True])])
    return vers.filter(keep)


def join_view(
    con: Any,
    join: pa.Table,
    codes: pa.Table,
    versions: pa.Table,
    wanted: Wanted,
    filter_by_written_at: bool,
) -> pa.Table:
    """The wanted features of one view for every join row, in __rid order."""
    ttl = wanted.res.view.ttl_us
    feats = ", ".join(f'v."{f}"' for f in wanted.features)
    vers = versions.select(["entity_id", "event_time", "written_at", *wanted.features])
    vers = vers.set_column(1, "et", pc.cast(vers["event_time"], pa.int64()))
    vers = vers.set_column(2, "wa", pc.cast(vers["written_at"], pa.int64()))
    if not filter_by_written_at:
        vers = last_written(vers)
    # Join on integer codes rather than strings: ASOF partitions on them much faster.
    vers = vers.set_column(
        0, "entity_id", pc.index_in(vers["entity_id"], value_set=codes.column("entity_id"))
    )
    con.register("edf", join)
    con.register("vers", vers)
    try:
        if not filter_by_written_at:
            ttl_cond = "" if ttl is None else f" AND v.et >= e.__ts - {int(ttl)}"
            cols = ", ".join(
                f'CASE WHEN v.et IS NOT NULL{ttl_cond} THEN v."{f}" END AS "{f}"'
                for f in wanted.features
            )
            sql = f"""
                SELECT e.__rid, {cols}
                FROM edf e ASOF LEFT JOIN vers v ON e.entity_id = v.entity_id AND e.__ts >= v.et
                ORDER BY e.__rid
            """
        else:
            ttl_cond = "" if ttl is None else f" AND v.et >= e.__ts - {int(ttl)}"
            sql = f"""
                SELECT e.__rid, {feats}
                FROM edf e LEFT JOIN vers v
                  ON e.entity_id = v.entity_id AND v.et <= e.__ts AND v.wa <= e.__ts{ttl_cond}
                QUALIFY row_number() OVER (
                    PARTITION BY e.__rid ORDER BY v.et DESC NULLS LAST, v.wa DESC NULLS LAST
                ) = 1
                ORDER BY e.__rid
            """
        result: pa.Table = con.sql(sql).to_arrow_table()
    finally:
        con.unregister("edf")
        con.unregister("vers")
    return result


Direct = Callable[[Wanted, pa.Table, pa.Table, int | None, int | None], pa.Table | None]


def training_frame(
    entity_df: Any,
    wanted: list[Wanted],
    fetch: Callable[[Wanted, list[str], int | None, int | None], pa.Table],
    *,
    entity_column: str,
    event_time_column: str,
    filter_by_written_at: bool,
    as_arrow: bool,
    direct: Direct | None = None,
) -> Any:
    """Join every wanted view onto entity_df; ``fetch`` returns a view's candidate versions.
    ``direct`` (the offline log) joins a view itself from where its versions are, given the
    coded join table, the codes and the time bounds (None: nothing there); it serves every
    frame but those with ``filter_by_written_at``."""
    import duckdb

    table, ts_us = event_table(entity_df, event_time_column)
    clash = [o for w in wanted for o in w.outputs if o in table.column_names]
    if clash:
        raise ConfigurationError(
            f"entity_df already has column(s) {clash}; rename them or pass full_feature_names=True"
        )
    hi = pc.max(ts_us).as_py() if table.num_rows else None
    lo_all = pc.min(ts_us).as_py() if table.num_rows else None
    # each view joins on its own entity's columns: one join table per set of columns
    used: dict[tuple[str, ...], Entity] = {}
    groups: dict[tuple[str, ...], tuple[pa.Table, pa.Table, list[str]]] = {}
    view_cols: dict[str, tuple[str, ...]] = {}
    for w in wanted:
        cols = key_columns(table.column_names, w.res.key, entity_column)
        shared_columns(used, cols, w.res.key)
        view_cols[w.res.name] = tuple(cols)
        if tuple(cols) not in groups:
            join = join_table(table, ts_us, cols, w.res.key)
            unique = pc.unique(join["entity_id"].drop_null())
            coded = join.set_column(
                1, "entity_id", pc.index_in(join["entity_id"], value_set=unique)
            )
            groups[tuple(cols)] = (coded, pa.table({"entity_id": unique}), unique.to_pylist())
    columns: dict[str, pa.ChunkedArray] = {}
    con: Any = None  # a connection takes ~30 ms to open: only when a view is joined here
    # DuckDB releases the GIL: view k is joined on a worker thread while this thread reads
    # the versions of view k+1 from Redis. Views joined where they lie (the log) run two at
    # a time: one ASOF JOIN keeps about one core busy.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="redfeat-join")
    direct_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="redfeat-log-join")
    joins: list[tuple[Wanted, Future[pa.Table | None]]] = []
    try:
        for w in wanted:
            coded, codes, entities = groups[view_cols[w.res.name]]
            ttl = w.res.view.ttl_us
            # Only versions that can win are fetched: none after the latest row's time and,
            # with a ttl, none older than the earliest row's window.
            lo = None if ttl is None or lo_all is None else lo_all - ttl
            if direct is not None and not filter_by_written_at and entities:
                joins.append((w, direct_pool.submit(direct, w, coded, codes, lo, hi)))
                continue
            versions = fetch(w, entities, lo, hi) if entities else None
            if versions is None or versions.num_rows == 0:
                for f, out in zip(w.features, w.outputs, strict=True):
                    columns[out] = pa.chunked_array([pa.nulls(table.num_rows, _type(w, f))])
                continue
            if con is None:
                con = duckdb.connect()
            job = pool.submit(join_view, con, coded, codes, versions, w, filter_by_written_at)
            joins.append((w, job))
        for w, job in joins:
            result = job.result()
            for f, out in zip(w.features, w.outputs, strict=True):
                columns[out] = (
                    pa.chunked_array([pa.nulls(table.num_rows, _type(w, f))])
                    if result is None
                    else result[f]
                )
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        direct_pool.shutdown(wait=True, cancel_futures=True)
        if con is not None:
            con.close()
    # keep the caller's order of features
    columns = {o: columns[o] for w in wanted for o in w.outputs}
    if as_arrow:
        for name, col in columns.items():
            table = table.append_column(name, col)
        return table
    import pandas as pd

    if type(entity_df).__module__.startswith("pandas"):
        frame = entity_df.copy()
        index = entity_df.index
    else:
        frame = table.to_pandas()
        index = frame.index
    mapper = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}.get
    for name, col in columns.items():
        series = col.to_pandas(types_mapper=mapper)
        series.index = index
        frame[name] = series
    return frame


def _type(w: Wanted, feature: str) -> pa.DataType:
    from .arrow import arrow_type

    return arrow_type(w.res.codec.fields[feature].dtype)
