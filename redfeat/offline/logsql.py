"""DuckDB over the offline log's Parquet: the versions and window events a training frame
needs, with the entity and time filters pushed into the scan (files sorted by entity and
event time, row-group statistics skip the rest).

The same SQL runs on any engine that reads Parquet (README, "The offline log"); here
DuckDB reads the files directly, one connection per frame, ``TimeZone`` UTC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..core.schema import FeatureView
from .arrow import version_schema
from .log import conform


def _glob(root: Path, name: str, sub: str) -> str | None:
    pattern = f"{sub}/date=*/part-*.parquet"
    if not any((root / name).glob(pattern)):
        return None
    return str(root / name / pattern).replace("'", "''")


def _source(con: Any, root: Path, name: str) -> tuple[str, set[str]] | None:
    """A view's logged versions as a DuckDB table expression and the columns they have;
    None when nothing is logged. Files of several schema versions are read by name (and
    described); with one schema version, the common case, one file's footer tells."""
    files = _glob(root, name, "schema=*")
    if files is None:
        return None
    if sum(1 for d in (root / name).glob("schema=*") if d.is_dir()) == 1:
        first = next((root / name).glob("schema=*/date=*/part-*.parquet"))
        return f"read_parquet('{files}')", set(pq.read_schema(first).names)
    src = f"read_parquet('{files}', union_by_name = true)"
    return src, {r[0] for r in con.sql(f"DESCRIBE SELECT * FROM {src}").fetchall()}


def _bounds(col: str, lo: int | None, hi: int | None) -> str:
    out = []
    if lo is not None:
        out.append(f"{col} >= make_timestamp({int(lo)}::BIGINT)::TIMESTAMPTZ")
    if hi is not None:
        out.append(f"{col} <= make_timestamp({int(hi)}::BIGINT)::TIMESTAMPTZ")
    return " AND ".join(out) or "TRUE"


def connect() -> Any:
    import duckdb

    con = duckdb.connect()
    con.execute("SET GLOBAL TimeZone = 'UTC'")  # GLOBAL: its cursors too
    return con


def versions(
    con: Any,
    root: Path,
    view: FeatureView,
    features: list[str],
    ids: pa.Array,
    lo: int | None,
    hi: int | None,
) -> pa.Table | None:
    """Logged versions of ``view`` for the entities ``ids`` with event time in [lo, hi] (us,
    inclusive), one row per (entity, version), grouped by entity and sorted by (event time,
    version id); None when nothing is logged. A version logged twice (a resync overlapping
    the feed) comes twice: the join keeps one of equal (entity, event time) rows anyway,
    so the scan is not de-duplicated at this cost."""
    found = _source(con, root, view.name)
    if found is None:
        return None
    src, have = found
    cols = ", ".join(f'"{f}"' for f in features if f in have)
    con.register("__ids", pa.table({"entity_id": ids}))
    try:
        sql = f"""
            SELECT entity_id, event_time, written_at, version_id{", " if cols else ""}{cols}
            FROM {src}
            WHERE entity_id IN (SELECT entity_id FROM __ids)
              AND {_bounds("event_time", lo, hi)}
            ORDER BY entity_id, event_time, version_id
        """
        table: pa.Table = con.sql(sql).to_arrow_table()
    finally:
        con.unregister("__ids")
    schema = version_schema(view)
    keep = ["entity_id", "event_time", "written_at", "version_id", *features]
    target = pa.schema([schema.field(n) for n in keep])
    for i, name in enumerate(table.column_names):
        want = target.field(name).type
        if not table.schema.field(i).type.equals(want):
            try:  # DuckDB gives FLOAT[n] arrays back as lists, TIMESTAMPTZ in its zone
                table = table.set_column(i, name, table.column(i).cast(want))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                continue  # another type under the same schema version: conform nulls it
    return conform(table, target)


# A training frame's join of one view over the log, as the README shows it: the ASOF JOIN
# takes one inequality, so (event time, version id) become one HUGEINT key (event time x
# 2^64 + version id: a product, not a shift, which DuckDB refuses before 1970), the row's side
# carrying the largest version id: the greatest event time at or before the row's time
# wins, ties to the last written; the ttl is checked on the winner.
FRAME_SQL = """
SELECT e.__rid, {columns}
FROM (SELECT *, __ts::HUGEINT * 18446744073709551616 + 9223372036854775807 AS __k FROM edf) e
ASOF LEFT JOIN (
    SELECT c.code AS entity_id, epoch_us(v.event_time) AS et,
           epoch_us(v.event_time)::HUGEINT * 18446744073709551616 + v.version_id AS __k, {features}
    FROM {source} v
    JOIN codes c ON v.entity_id = c.entity_id
    WHERE {bounds}
) v ON e.entity_id = v.entity_id AND e.__k >= v.__k
"""


def join(
    con: Any,
    root: Path,
    view: FeatureView,
    features: list[str],
    edf: pa.Table,
    codes: pa.Table,
    ttl: int | None,
    lo: int | None,
    hi: int | None,
) -> pa.Table | None:
    """One view's features for every row of ``edf`` (__rid, entity_id as an int code into
    ``codes``, __ts in us), read from the log's Parquet in one DuckDB query (FRAME_SQL);
    None when nothing is logged. Columns in the view's Arrow types, missing ones null."""
    found = _source(con, root, view.name)
    if found is None:
        return None
    source, have = found
    present = [f for f in features if f in have]
    ttl_cond = "" if ttl is None else f" AND v.et >= e.__ts - {int(ttl)}"
    columns = ", ".join(
        f'CASE WHEN v.et IS NOT NULL{ttl_cond} THEN v."{f}" END AS "{f}"' for f in present
    )
    sql = FRAME_SQL.format(
        columns=columns or "NULL AS __none",
        features=", ".join(f'v."{f}"' for f in present) or "NULL AS __none",
        source=source,
        bounds=_bounds("v.event_time", lo, hi),
    )
    con.register("edf", edf)
    con.register("codes", codes.append_column("code", pa.array(np.arange(codes.num_rows))))
    try:
        got: pa.Table = con.sql(sql).to_arrow_table()
    finally:
        con.unregister("edf")
        con.unregister("codes")
    # rows come back in any order (no ORDER BY: a sort of the whole result); put each at
    # its __rid with one take per column
    where = np.empty(got.num_rows, np.int64)
    where[got["__rid"].to_numpy()] = np.arange(got.num_rows)
    got = got.take(pa.array(where))
    schema = version_schema(view)
    out: dict[str, pa.ChunkedArray] = {}
    for f in features:
        want = schema.field(f).type
        if f not in present:
            out[f] = pa.chunked_array([pa.nulls(got.num_rows, want)], want)
            continue
        col = got[f]
        if not col.type.equals(want):
            try:
                col = col.cast(want)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                col = pa.chunked_array([pa.nulls(got.num_rows, want)], want)
        out[f] = col
    return pa.table(out)


def window_events(
    con: Any, root: Path, name: str, ids: pa.Array, hi: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Logged events of window features ``name`` for the entities ``ids`` at or before ``hi``
    (us): (entity ids, event times in ms, values), sorted by entity, event time and the
    order recorded; None when nothing is logged."""
    files = _glob(root, name, "events")
    if files is None:
        return None
    con.register("__ids", pa.table({"entity_id": ids}))
    try:
        sql = f"""
            SELECT entity_id, epoch_ms(event_time) AS ms, value
            FROM read_parquet('{files}')
            WHERE entity_id IN (SELECT entity_id FROM __ids) AND {_bounds("event_time", None, hi)}
            ORDER BY entity_id, event_time, written_at, seq
        """
        t: pa.Table = con.sql(sql).to_arrow_table()
    finally:
        con.unregister("__ids")
    return (
        t["entity_id"].to_numpy(zero_copy_only=False),
        t["ms"].to_numpy(),
        t["value"].to_numpy(),
    )
