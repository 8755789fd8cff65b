"""Batch sources and materialization: Parquet, CSV, DuckDB files and the machine's real
PostgreSQL; windows, watermarks, idempotent reruns, created-time ties, history limits,
bad rows, and a run killed half-way that resumes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from redfeat import (
    ConfigurationError,
    CsvSource,
    Entity,
    FeatureStore,
    FeatureView,
    Field,
    NotFoundError,
    ParquetSource,
    SqlSource,
    ValidationError,
)
from redfeat import types as t
from redfeat.core.embedded import ServerInfo
from redfeat.core.sources import source_from_spec

T0 = datetime(2024, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
PAIR = Entity("user_merchant", join_keys=["user_id", ("merchant_id", t.Int)])
FIELDS = [Field("txn_count", t.Int, min=0), Field("amount", t.Float)]


def rows_table(rows: list[tuple[str, int, datetime, int, float]]) -> pa.Table:
    return pa.table(
        {
            "user_id": [r[0] for r in rows],
            "merchant_id": [r[1] for r in rows],
            "event_time": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
            "txn_count": [r[3] for r in rows],
            "amount": [r[4] for r in rows],
        }
    )


def pair_view(source: Any, name: str = "pairs", history: int | str = 10) -> FeatureView:
    return FeatureView(name, entity=PAIR, fields=FIELDS, history=history, batch_source=source)


def versions(store: FeatureStore, view: str, ids: list[Any]) -> dict[Any, list[int]]:
    return {e: [v.values["txn_count"] for v in store.history(view, e, limit=100)] for e in ids}


def test_parquet_incremental_twice_with_new_files_between(
    store: FeatureStore, tmp_path: Path
) -> None:
    pq.write_table(
        rows_table(
            [
                ("u1", 9, T0, 1, 1.0),
                ("u1", 9, T0 + H, 2, 2.0),
                ("u,2", 7, T0, 5, 5.0),
                ("u3", 1, T0 + 30 * H, 9, 9.0),  # after the first end: loaded the second time
            ]
        ),
        tmp_path / "day1.parquet",
    )
    view = pair_view(ParquetSource(tmp_path / "*.parquet"))
    store.apply(PAIR, view)
    first = store.materialize_incremental("pairs", end=T0 + 24 * H)
    assert (first.start, first.rows, first.written, first.duplicates) == (None, 3, 3, 0)
    assert first.watermark == T0 + 24 * H
    assert store.get("pairs", ("u1", 9)) == {"txn_count": 2, "amount": 2.0}
    assert store.get("pairs", ("u,2", 7)) == {"txn_count": 5, "amount": 5.0}
    assert store.get("pairs", ("u3", 1)) is None
    assert store.materialization("pairs")["watermark"] == T0 + 24 * H
    pq.write_table(
        rows_table([("u1", 9, T0 + 26 * H, 3, 3.0), ("u1", 9, T0 + 60 * H, 4, 4.0)]),
        tmp_path / "day2.parquet",
    )
    second = store.materialize_incremental("pairs", end=T0 + 48 * H)
    assert (second.start, second.rows, second.written) == (T0 + 24 * H, 2, 2)
    assert store.get("pairs", ("u1", 9)) == {"txn_count": 3, "amount": 3.0}
    assert store.get("pairs", ("u3", 1)) == {"txn_count": 9, "amount": 9.0}
    assert versions(store, "pairs", [("u1", 9)]) == {("u1", 9): [3, 2, 1]}
    # nothing new up to the watermark; a rerun of everything writes no version
    assert store.materialize_incremental("pairs", end=T0 + 48 * H).rows == 0
    again = store.materialize("pairs", None, T0 + 48 * H)
    assert (again.rows, again.written, again.duplicates) == (5, 0, 5)
    assert versions(store, "pairs", [("u1", 9)]) == {("u1", 9): [3, 2, 1]}
    # the view object carries its source; so does the registry's copy
    assert store.view("pairs").batch_source == view.batch_source
    rep = store.materialize(view, T0 + 48 * H, T0 + 72 * H)
    assert rep.written == 1 and rep.watermark == T0 + 72 * H
    # a window after a gap does not move the watermark past the gap
    assert store.materialize("pairs", T0 + 100 * H, T0 + 200 * H).watermark == T0 + 72 * H
    # deleting the view forgets where its loading got
    store.delete_view("pairs")
    store.apply(view)
    assert store.materialization("pairs")["watermark"] is None


def test_ties_history_limits_and_progress(store: FeatureStore, tmp_path: Path) -> None:
    # three rows of one entity at one event time: the latest created wins, every run
    tbl = pa.table(
        {
            "uid": ["a", "a", "a", "b"],
            "mid": [1, 1, 1, 1],
            "ts": pa.array([T0] * 4, pa.timestamp("us", tz="UTC")),
            "created": pa.array([T0 + 2 * H, T0 + 5 * H, T0 + H, T0], pa.timestamp("us", tz="UTC")),
            "n": [1, 2, 3, 4],
            "amt": [1.0, 2.0, 3.0, 4.0],
        }
    )
    pq.write_table(tbl, tmp_path / "ties.parquet")
    src = ParquetSource(
        tmp_path / "ties.parquet",
        entity_column=["uid", "mid"],
        event_time_column="ts",
        created_column="created",
        field_mapping={"n": "txn_count", "amt": "amount"},
    )
    store.apply(PAIR, pair_view(src))
    seen: list[tuple[int, int]] = []
    rep = store.materialize("pairs", T0, T0 + H, progress=lambda d, n: seen.append((d, n)))
    assert (rep.rows, rep.written) == (2, 2) and seen[-1] == (2, 2)
    assert store.get("pairs", ("a", 1)) == {"txn_count": 2, "amount": 2.0}
    for _ in range(2):
        assert store.materialize("pairs", T0, T0 + H).written == 0
    assert versions(store, "pairs", [("a", 1)]) == {("a", 1): [2]}
    # more versions in the window than the view keeps: only the kept ones are written
    many = rows_table([("u", 1, T0 + i * H, i, float(i)) for i in range(30)])
    pq.write_table(many, tmp_path / "many.parquet")
    src = ParquetSource(tmp_path / "many.parquet")
    store.apply(pair_view(src, "keep5", history=5), pair_view(src, "latest", history=0))
    store.apply(pair_view(src, "last3h", history="3h"))
    for name, want in (("keep5", [29, 28, 27, 26, 25]), ("last3h", [29, 28, 27, 26])):
        first = store.materialize(name, None, T0 + 100 * H)
        assert first.written == len(want) and first.rows == len(want)
        assert store.materialize(name, None, T0 + 100 * H).written == 0
        assert versions(store, name, [("u", 1)]) == {("u", 1): want}
    assert store.materialize("latest", None, T0 + 100 * H).rows == 1
    assert store.get("latest", ("u", 1)) == {"txn_count": 29, "amount": 29.0}


def test_csv_source_int_keys_from_text_and_bad_rows(store: FeatureStore, tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(
        "user_id,merchant_id,event_time,txn_count,amount\n"
        "u1,009,2024-01-01T00:00:00Z,1,1.5\n"
        "u2,x,2024-01-01T00:00:00Z,2,2.5\n"
        ",3,2024-01-01T00:00:00Z,3,3.5\n"
        "u4,4,2024-01-01T00:00:00Z,-4,4.5\n"
    )
    store.apply(PAIR, pair_view(CsvSource(tmp_path / "a.csv")))
    with pytest.raises(ValidationError, match="join key"):
        store.materialize("pairs", None, T0 + H)
    assert store.get("pairs", ("u1", 9)) is None  # the batch was refused whole
    rep = store.materialize("pairs", None, T0 + H, on_error="skip")
    assert (rep.rows, rep.written, rep.refused) == (4, 1, 3)  # bad key x2, txn_count < 0
    assert store.get("pairs", "u1,9") == {"txn_count": 1, "amount": 1.5}


def test_source_mistakes_are_named(store: FeatureStore, tmp_path: Path) -> None:
    pq.write_table(rows_table([("u1", 1, T0, 1, 1.0)]), tmp_path / "x.parquet")
    store.apply(PAIR, FeatureView("plain", entity=PAIR, fields=FIELDS))
    with pytest.raises(ConfigurationError, match="no batch_source"):
        store.materialize("plain", None, T0)
    store.apply(pair_view(ParquetSource(tmp_path / "x.parquet", event_time_column="ts")))
    with pytest.raises(ConfigurationError, match=r"no column 'ts' \(event_time_column\)"):
        store.materialize("pairs", None, T0 + H)
    store.apply(pair_view(ParquetSource(tmp_path / "x.parquet", entity_column="user_id")))
    with pytest.raises(ConfigurationError, match="2 join key"):
        store.materialize("pairs", None, T0 + H)
    store.apply(pair_view(ParquetSource(tmp_path / "nothing-*.parquet")))
    with pytest.raises(NotFoundError, match="no such file"):
        store.materialize("pairs", None, T0 + H)
    with pytest.raises(ConfigurationError):
        FeatureView("d", entity=PAIR, source="pairs", transforms=[],
                    batch_source=ParquetSource("x"))  # fmt: skip
    with pytest.raises(ConfigurationError, match="url"):
        SqlSource("select 1", url="mysql://x")
    with pytest.raises(ConfigurationError, match="on_error"):
        store.materialize("pairs", None, T0, on_error="ignore")
    (tmp_path / "broken.parquet").write_text("not parquet")
    store.apply(pair_view(ParquetSource(tmp_path / "broken.parquet")))
    with pytest.raises(ConfigurationError, match="cannot read the source"):
        store.materialize("pairs", None, T0 + H)
    (tmp_path / "t.csv").write_text(
        "user_id,merchant_id,event_time,txn_count,amount\nu,1,soon,1,1.0\n"
    )
    store.apply(pair_view(CsvSource(tmp_path / "t.csv")))
    with pytest.raises(ConfigurationError, match="soon"):
        store.materialize("pairs", None, T0 + H)
    assert store.materialization("pairs")["watermark"] is None


def test_duckdb_file_source(store: FeatureStore, tmp_path: Path) -> None:
    db = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE txn AS SELECT 'u' || (i % 3) AS user_id, i % 2 AS merchant_id, "
        "TIMESTAMP '2024-01-01' + INTERVAL (i) MINUTE AS event_time, i AS txn_count, "
        "CAST(i AS DECIMAL(10, 2)) AS amount FROM range(60) t(i)"
    )
    con.close()
    src = SqlSource("SELECT * FROM txn WHERE txn_count >= 10", url=f"duckdb://{db}")
    store.apply(PAIR, pair_view(src))
    rep = store.materialize("pairs", None, T0 + H)
    assert rep.rows == 50 and rep.written == 50
    assert store.get("pairs", ("u2", 1)) == {"txn_count": 59, "amount": 59.0}


def test_sources_round_trip_and_keep_no_password() -> None:
    for src in (
        ParquetSource("rel/*.parquet", entity_column="k", created_column="c"),
        CsvSource("/a.csv", delimiter=";", field_mapping={"x": "y"}),
        SqlSource("select 1;", url="postgresql://bob:secret@db:5432/x", event_time_column="ts"),
    ):
        spec = src.spec()
        assert "secret" not in str(spec)
        back = source_from_spec(spec)
        assert back.spec() == spec
    assert ParquetSource("rel/x.parquet").path == os.path.abspath("rel/x.parquet")


# -- PostgreSQL -------------------------------------------------------------------------

PG = "postgresql://postgres@127.0.0.1:5432/"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A database of this test's own on the machine's PostgreSQL, dropped afterwards."""
    pg = pytest.importorskip("adbc_driver_postgresql.dbapi")
    name = f"rf_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = pg.connect(PG + "postgres", autocommit=True)
    except Exception as exc:  # noqa: BLE001 - the driver's own error types
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {exc}")
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield PG + name
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def pg_exec(url: str, *sql: str) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        for s in sql:
            cur.execute(s)


def test_postgres_source_loaded_incrementally_twice(store: FeatureStore, pg_url: str) -> None:
    pg_exec(
        pg_url,
        "CREATE TABLE txn (user_id text, merchant_id bigint, ts timestamp, created timestamptz,"
        " txn_count int, amount numeric(12, 2))",
        "INSERT INTO txn VALUES ('u1', 9, '2024-01-01 00:00', '2024-01-01 00:00Z', 1, 1.50),"
        " ('u1', 9, '2024-01-01 01:00', '2024-01-01 01:00Z', 2, 2.50),"
        " ('u1', 9, '2024-01-01 01:00', '2024-01-01 03:00Z', 3, 3.50),"  # a correction
        " ('u2', 7, '2024-01-01 00:30', NULL, 4, 4.00)",
    )
    src = SqlSource(
        "SELECT * FROM txn", url=pg_url, event_time_column="ts", created_column="created"
    )
    view = pair_view(src)
    store.apply(PAIR, view)
    first = store.materialize_incremental(view, end=T0 + 24 * H)
    assert (first.rows, first.written) == (3, 3)  # one row per (entity, event time)
    assert store.get("pairs", ("u1", 9)) == {"txn_count": 3, "amount": 3.5}
    assert store.get("pairs", ("u2", 7)) == {"txn_count": 4, "amount": 4.0}
    assert versions(store, "pairs", [("u1", 9)]) == {("u1", 9): [3, 1]}
    pg_exec(
        pg_url,
        "INSERT INTO txn VALUES ('u1', 9, '2024-01-02 05:00', now(), 5, 5.25),"
        " ('u3', 1, '2024-01-02 06:00', now(), 6, 6.00),"
        " ('u1', 9, '2024-01-01 02:00', now(), 99, 9.00)",  # late: before the watermark
    )
    second = store.materialize_incremental(view, end=T0 + 48 * H)
    assert (second.rows, second.written, second.start) == (2, 2, T0 + 24 * H)
    assert store.get("pairs", ("u1", 9)) == {"txn_count": 5, "amount": 5.25}
    assert store.get("pairs", ("u3", 1)) == {"txn_count": 6, "amount": 6.0}
    # the late row is loaded by an explicit window over it; reruns add nothing
    again = store.materialize(view, None, T0 + 48 * H)
    assert (again.written, again.late) == (1, 1)
    assert store.materialize(view, None, T0 + 48 * H).written == 0
    assert versions(store, "pairs", [("u1", 9)]) == {("u1", 9): [5, 99, 3, 1]}
    # the registry keeps the source (no password in it), enough to load by name
    assert store.view("pairs").batch_source == src
    assert store.materialize("pairs", None, T0 + 48 * H).duplicates == 6
    bad = SqlSource("SELECT * FROM nope", url=pg_url, event_time_column="ts")
    store.apply(pair_view(bad, "bad"))
    with pytest.raises(ConfigurationError, match="query failed"):
        store.materialize("bad", None, T0)


# -- a run killed half-way resumes -------------------------------------------------------

CRASH = """
import os, signal, sys
from redfeat import FeatureStore
url, project, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = FeatureStore.from_url(url, project=project)
def step(done, total):
    if done >= kill_at:
        os.kill(os.getpid(), signal.SIGKILL)   # a crash: no cleanup, no finally
store.materialize_incremental("pairs", end=sys.argv[4], progress=step, batch_rows=1000)
"""


def test_a_killed_run_resumes_and_writes_nothing_twice(
    embedded: ServerInfo, project: str, tmp_path: Path
) -> None:
    n = 5000
    pq.write_table(
        rows_table(
            [(f"u{i % 700}", i % 3, T0 + i * timedelta(seconds=1), i, 1.0) for i in range(n)]
        ),
        tmp_path / "big.parquet",
    )
    url = embedded.url()
    end = (T0 + 24 * H).isoformat()
    with FeatureStore.from_url(url, project=project) as store:
        store.apply(PAIR, pair_view(ParquetSource(tmp_path / "big.parquet"), history=100))
        proc = subprocess.run([sys.executable, "-c", CRASH, url, project, "2500", end], timeout=120)
        assert proc.returncode == -9
        state = store.materialization("pairs")
        assert state["watermark"] is None and state["running"] is not None
        done = state["running"]["done"]
        assert T0 < done < T0 + n * timedelta(seconds=1)
        rep = store.materialize_incremental("pairs", end=T0 + 24 * H)
        assert rep.resumed_from == done and rep.rows < n and rep.watermark == T0 + 24 * H
        assert store.materialization("pairs")["running"] is None
        ids = sorted({(f"u{i % 700}", i % 3) for i in range(n)})
        got = versions(store, "pairs", ids)
        assert sum(len(v) for v in got.values()) == n  # every row once
        assert all(v == sorted(v, reverse=True) for v in got.values())
        assert store.materialize("pairs", None, T0 + 24 * H).written == 0


def test_materialized_versions_equal_a_plain_write_many(
    store: FeatureStore, client: redis.Redis, tmp_path: Path
) -> None:
    rows = [("u1", 1, T0 + i * H, i, i / 2) for i in range(5)]
    pq.write_table(rows_table(rows), tmp_path / "x.parquet")
    store.apply(PAIR, pair_view(ParquetSource(tmp_path / "x.parquet")))
    store.apply(FeatureView("same", entity=PAIR, fields=FIELDS))
    store.materialize("pairs", None, T0 + 24 * H)
    store.write_many("same", rows_table(rows), event_time_column="event_time")
    a = store.history("pairs", ("u1", 1), limit=10)
    b = store.history("same", ("u1", 1), limit=10)
    assert [(v.event_time, v.values) for v in a] == [(v.event_time, v.values) for v in b]
    keys = {k.decode() for k in client.scan_iter(match=f"rf:{store.project}:mat:*")}
    assert keys == {f"rf:{store.project}:mat:pairs"}
