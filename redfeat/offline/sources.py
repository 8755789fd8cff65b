"""Reading batch sources for materialization: one DuckDB query per run turns the source's
rows in a time window into what ``write_many`` takes, a batch at a time.

The query keeps the rows with ``start <= event time < end``, maps source columns onto the
view's fields, builds each row's entity id from its join-key columns (encoded as
``normalize_id`` does, so that the bulk path sees one canonical id string), keeps one row
per (entity, event time) -- the latest created, then a fixed order, so that a rerun writes
the same versions and the write step finds them all as duplicates -- and streams them in
event-time order, which lets a run record how far it got and resume from there.

Parquet and CSV are read by DuckDB itself (the time window pushed into the scan);
PostgreSQL through ADBC (libpq, Arrow out; the window pushed into the SQL); a DuckDB file
by opening it read-only.
"""

from __future__ import annotations

import contextlib
import glob as globlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from .. import types as t
from ..core.registry import Resolved
from ..core.schema import Entity
from ..core.sources import CsvSource, ParquetSource, Source, SqlSource, redact
from ..core.time import from_us
from ..errors import ConfigurationError, NotFoundError

ID, ET = "__rf_id", "__rf_et"  # the id and event-time columns handed to write_many


def _q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class Scan:
    """An open read of one source window: its batches (Arrow, event-time order) and, when
    asked, how many rows they hold."""

    batches: Iterator[pa.Table]
    total: int | None
    close: Any


def _duckdb(path: str = ":memory:") -> Any:
    """A DuckDB connection whose sorts spill to the system's temp dir (not the cwd)."""
    con = duckdb.connect(path, read_only=path != ":memory:")
    spill = os.path.join(tempfile.gettempdir(), "redfeat-duckdb")
    con.execute(f"SET temp_directory = {_lit(spill)}")
    return con


def _files(path: str, pattern: str) -> list[str]:
    if "://" in path:
        return [path]  # a URL: DuckDB reads it (where its extension is available)
    if os.path.isdir(path):
        found = sorted(globlib.glob(os.path.join(path, "**", pattern), recursive=True))
    elif globlib.has_magic(path):
        found = sorted(globlib.glob(path, recursive=True))
    else:
        found = [path] if os.path.exists(path) else []
    if not found:
        raise NotFoundError(f"source {path!r}: no such file (or no file matches)")
    return found


def _open(source: Source, start_us: int | None, end_us: int, opened: list[Any]) -> tuple[Any, str]:
    """A DuckDB connection where the relation ``src`` holds the source's rows (for SQL
    sources already cut to the window), and what the source is for error messages.
    ``opened`` gets whatever must be closed with it."""
    if isinstance(source, ParquetSource):
        con = _duckdb()
        files = _files(source.path, "*.parquet")
        listed = "[" + ", ".join(_lit(f) for f in files) + "]"
        con.execute(
            f"CREATE TEMP VIEW src AS SELECT * FROM read_parquet({listed}, union_by_name = true)"
        )
        return con, f"parquet {source.path}"
    if isinstance(source, CsvSource):
        con = _duckdb()
        files = _files(source.path, "*.csv")
        listed = "[" + ", ".join(_lit(f) for f in files) + "]"
        con.execute(
            f"CREATE TEMP VIEW src AS SELECT * FROM read_csv({listed}, header = true, "
            f"delim = {_lit(source.delimiter)}, union_by_name = true)"
        )
        return con, f"csv {source.path}"
    if isinstance(source, SqlSource):
        if source.url.startswith("duckdb://"):
            path = source.url[len("duckdb://") :]
            if not os.path.exists(path):
                raise NotFoundError(f"sql source: no DuckDB file at {path!r}")
            con = _duckdb(path)
            con.execute(f"CREATE TEMP VIEW src AS {source.query}")
            return con, f"sql {source.url}"
        return _postgres(source, start_us, end_us, opened), f"sql {redact(source.url)}"
    raise ConfigurationError(f"unknown batch source {source!r}")


def _pg_connect(url: str) -> Any:
    try:
        import adbc_driver_postgresql.dbapi as pg
    except ImportError:
        raise ConfigurationError(
            "reading a PostgreSQL SqlSource needs the ADBC driver: "
            "pip install 'redfeat[postgres]' (adbc-driver-postgresql)"
        ) from None
    try:
        conn = pg.connect(url.replace("postgres://", "postgresql://", 1))
    except Exception as exc:  # the driver's own error types
        raise ConfigurationError(f"sql source: cannot connect to {redact(url)}: {exc}") from None
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")  # naive timestamps are read as UTC, as elsewhere
    return conn


def _postgres(source: SqlSource, start_us: int | None, end_us: int, opened: list[Any]) -> Any:
    """The query's rows in the window, streamed from PostgreSQL into DuckDB as Arrow."""
    conn = _pg_connect(source.url)
    opened.append(conn)
    col = _q(source.event_time_column)
    where = [f"src.{col} < $1"]
    params: list[Any] = [_dt(end_us)]
    if start_us is not None:
        where.append(f"src.{col} >= $2")
        params.append(_dt(start_us))
    sql = f"SELECT * FROM ({source.query}) AS src WHERE {' AND '.join(where)}"
    cur = conn.cursor()
    opened.insert(0, cur)
    try:
        cur.execute(sql, parameters=tuple(params))
        reader = cur.fetch_record_batch()
    except Exception as exc:  # the driver's own error types
        raise ConfigurationError(
            f"sql source {redact(source.url)}: the query failed: {str(exc).strip()}"
        ) from None
    # PostgreSQL numeric arrives as text (it may not fit a double): read it as numbers
    numeric = [
        f.name
        for f in reader.schema
        if (f.metadata or {}).get(b"POSTGRESQL:type") in (b"numeric", b"decimal")
    ]
    con = _duckdb()
    if numeric:
        con.register("pg_src", reader)
        casts = ", ".join(f"CAST({_q(c)} AS DOUBLE) AS {_q(c)}" for c in numeric)
        con.execute(f"CREATE TEMP VIEW src AS SELECT * REPLACE ({casts}) FROM pg_src")
    else:
        con.register("src", reader)
    return con


def _dt(us: int) -> datetime:
    return from_us(us)


def _et_expr(col: str, kind: str) -> str:
    """SQL giving the event time in int64 microseconds (naive timestamps are UTC)."""
    q = _q(col)
    if kind.startswith("TIMESTAMP"):
        return f"epoch_us({q})"
    if kind == "DATE":
        return f"epoch_us(CAST({q} AS TIMESTAMP))"
    if kind in _NUMERIC:
        return f"CAST(floor({q} * 1000000) AS BIGINT)"  # epoch seconds
    return f"epoch_us(CAST({q} AS TIMESTAMPTZ))"  # text: parsed by DuckDB


_NUMERIC = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "FLOAT",
    "DOUBLE",
}
_INTEGER = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"}


def _window(col: str, kind: str, start_us: int | None, end_us: int) -> str:
    """The window as a filter on the raw column where its type allows (so that Parquet row
    groups outside it are skipped), else on the computed event time."""
    q = _q(col)
    conds = []
    for op, us in ((">=", start_us), ("<", end_us)):
        if us is None:
            continue
        text = _dt(us).strftime("%Y-%m-%d %H:%M:%S.%f")
        if kind == "TIMESTAMP" or kind.startswith("TIMESTAMP_"):
            conds.append(f"{q} {op} TIMESTAMP {_lit(text)}")
        elif kind == "TIMESTAMP WITH TIME ZONE":
            conds.append(f"{q} {op} TIMESTAMPTZ {_lit(text + '+00')}")
        else:
            conds.append(f"{_et_expr(col, kind)} {op} {us}")
    return " AND ".join(conds) or "TRUE"


def columns_for(source: Source, res: Resolved) -> tuple[list[str], dict[str, str]]:
    """(the source's entity columns, field -> source column)."""
    key = res.key
    ent_cols = list(source.entity_column or key.key_names)
    if len(ent_cols) != len(key.join_keys):
        raise ConfigurationError(
            f"view {res.name!r}: its entity {key.name!r} has {len(key.join_keys)} join key(s) "
            f"{key.key_names}, the source names {len(ent_cols)} entity column(s) {ent_cols}"
        )
    to_field = dict(source.field_mapping)
    bad = [f for f in to_field.values() if f not in res.codec.fields]
    if bad:
        raise ConfigurationError(
            f"view {res.name!r}: field_mapping names field(s) {bad} the view does not have "
            f"(fields: {sorted(res.codec.fields)})"
        )
    by_field = {f: s for s, f in to_field.items()}
    return ent_cols, {f: by_field.get(f, f) for f in res.codec.fields}


def _id_expr(key: Entity, cols: list[str], types: dict[str, str]) -> str:
    """SQL building the canonical id (NULL when a key is null, empty or not a whole number
    for an Int key): one key as its text, several joined by ',' with '%' and ',' escaped."""
    parts = []
    for k, c in zip(key.join_keys, cols, strict=True):
        q = _q(c)
        if k.dtype is t.Int:
            parts.append(
                f"CAST(TRY_CAST({q} AS BIGINT) AS VARCHAR)"
                if types[c] not in _INTEGER
                else f"CAST({q} AS VARCHAR)"
            )
        else:
            text = f"CAST({q} AS VARCHAR)"
            parts.append(f"NULLIF({text}, '')")
    if len(parts) == 1:
        return parts[0]
    escaped = [f"replace(replace({p}, '%', '%25'), ',', '%2C')" for p in parts]
    return " || ',' || ".join(escaped)  # NULL in, NULL out


def _field_expr(field: str, dtype: t.DType, col: str, kind: str) -> str:
    q = _q(col)
    if dtype is t.Float and (kind in _NUMERIC or kind.startswith("DECIMAL")):
        return f"CAST({q} AS DOUBLE) AS {_q(field)}"
    if dtype is t.Int and kind.startswith("DECIMAL") and kind.endswith(",0)"):
        return f"CAST({q} AS BIGINT) AS {_q(field)}"
    return f"{q} AS {_q(field)}"


def scan(
    source: Source,
    res: Resolved,
    start_us: int | None,
    end_us: int,
    *,
    batch_rows: int,
    count: bool,
) -> Scan:
    """The source's rows with ``start_us <= event time < end_us`` as write_many batches:
    ``__rf_id`` (canonical id, null where a key is missing), ``__rf_et`` (timestamp us
    UTC), then the view's fields; one row per (entity, event time), in event-time order."""
    opened: list[Any] = []
    try:
        con, what = _open(source, start_us, end_us, opened)
    except duckdb.Error as exc:
        _close(opened)
        raise ConfigurationError(
            f"view {res.name!r}: cannot read the source ({source.describe()}): {exc}"
        ) from None
    except BaseException:
        _close(opened)
        raise
    opened.insert(0, con)
    try:
        try:
            rel = con.sql("SELECT * FROM src LIMIT 0")
            types = {c: str(ty) for c, ty in zip(rel.columns, rel.types, strict=True)}
        except duckdb.Error as exc:
            raise ConfigurationError(
                f"view {res.name!r}: cannot read the source ({what}): {exc}"
            ) from None
        ent_cols, field_cols = columns_for(source, res)
        need = {
            **{
                c: f"entity column for join key {k!r}"
                for c, k in zip(ent_cols, res.key.key_names, strict=True)
            },
            source.event_time_column: "event_time_column",
            **({source.created_column: "created_column"} if source.created_column else {}),
            **{c: f"field {f!r}" for f, c in field_cols.items()},
        }
        missing = [f"{c!r} ({why})" for c, why in need.items() if c not in types]
        if missing:
            raise ConfigurationError(
                f"view {res.name!r}: the source ({what}) has no column {', '.join(missing)}; "
                f"its columns: {sorted(types)} (map others with field_mapping=, "
                "entity_column=, event_time_column=)"
            )
        et_kind = types[source.event_time_column]
        fields = list(field_cols)
        selects = [
            f"{_id_expr(res.key, ent_cols, types)} AS {ID}",
            f"{_et_expr(source.event_time_column, et_kind)} AS {ET}",
            *(
                _field_expr(f, res.codec.fields[f].dtype, field_cols[f], types[field_cols[f]])
                for f in fields
            ),
        ]
        if source.created_column:
            selects.append(f"{_q(source.created_column)} AS __rf_created")
        window = _window(source.event_time_column, et_kind, start_us, end_us)
        inner = f"SELECT {', '.join(selects)} FROM src WHERE {window}"
        # One row per (entity, event time): the latest created, then a fixed order of the
        # values, so that a rerun picks the same row. Then only the versions the view keeps
        # (the latest; its history count; or its duration back from the entity's newest row
        # in the window): older ones would be trimmed as soon as written. One window (one
        # sort per entity) does both.
        created = "__rf_created DESC NULLS LAST, " if source.created_column else ""
        tie = ", ".join(f"{_q(f)} NULLS LAST" for f in fields)
        out = ", ".join([ID, ET, *(_q(f) for f in fields)])
        w = f"PARTITION BY {ID} ORDER BY {ET} DESC, {created}{tie}"
        if res.hist_mode == "n":
            kept = (
                f"SELECT {out} FROM ({inner}) QUALIFY row_number() OVER ({w}) = 1 OR {ID} IS NULL"
            )
        else:
            first = f"lag({ET}) OVER w IS DISTINCT FROM {ET}"  # first row of its event time
            if res.hist_mode == "c":
                keep = f"dense_rank() OVER (PARTITION BY {ID} ORDER BY {ET} DESC)"
                keep += f" <= {int(res.hist_value)}"
            else:
                keep = f"{ET} >= first_value({ET}) OVER w - {int(res.hist_value)}"
            # rows without an id are kept, each, to be refused (and counted) one by one
            kept = (
                f"SELECT {out} FROM ({inner}) WINDOW w AS ({w}) "
                f"QUALIFY ({first} AND {keep}) OR {ID} IS NULL"
            )
        sql = f"{kept} ORDER BY {ET}"
        total = None
        if count:  # a second pass (for a SQL source, a second query): only for progress
            if isinstance(source, SqlSource) and not source.url.startswith("duckdb://"):
                total = _pg_count(source, start_us, end_us)
            else:
                row = con.execute(f"SELECT count(*) FROM ({sql})").fetchall()[0]
                total = int(row[0]) if row else 0
        try:
            reader = con.sql(sql).to_arrow_reader(batch_rows)
        except duckdb.Error as exc:
            raise ConfigurationError(
                f"view {res.name!r}: reading the source ({what}) failed: {exc}"
            ) from None
    except BaseException:
        _close(opened)
        raise

    def batches() -> Iterator[pa.Table]:
        it = iter(reader)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except (duckdb.Error, pa.ArrowException) as exc:  # e.g. text that is no time
                raise ConfigurationError(
                    f"view {res.name!r}: reading the source ({what}) failed: {exc}"
                ) from None
            table = pa.Table.from_batches([batch])
            ets = pc.cast(table[ET], pa.timestamp("us", tz="UTC"))
            yield table.set_column(1, ET, ets)

    return Scan(batches(), total, lambda: _close(opened))


def _pg_count(source: SqlSource, start_us: int | None, end_us: int) -> int:
    """Rows of the window in PostgreSQL (an upper bound: ties are not removed yet)."""
    conn = _pg_connect(source.url)
    try:
        col = _q(source.event_time_column)
        where = f"src.{col} < $1" + ("" if start_us is None else f" AND src.{col} >= $2")
        params = (_dt(end_us),) + (() if start_us is None else (_dt(start_us),))
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT count(*) FROM ({source.query}) AS src WHERE {where}", parameters=params
            )
            row = cur.fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


def _close(opened: list[Any]) -> None:
    for x in opened:  # DuckDB first, then the cursor and connection it read from
        with contextlib.suppress(Exception):  # already gone: nothing left to free
            x.close()
