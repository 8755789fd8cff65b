"""The numpy ASOF join over the offline log's sorted runs (offline/asof.py) against DuckDB's
ASOF JOIN (offline/logsql.py FRAME_SQL) and a brute-force reference, on random logs: many
files, ties on event time in one file and across files, ttl edges, rows before every
version, unknown and null entities, a column the older schema lacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from redfeat import FeatureView, Field
from redfeat import types as t
from redfeat.offline import asof, logsql
from redfeat.offline.arrow import version_schema
from redfeat.offline.log import OfflineLog

V1 = FeatureView("v", entity="user", fields=[Field("x", t.Int)], history=5)
V2 = FeatureView(
    "v", entity="user", fields=[Field("x", t.Int), Field("y", t.Float)], history=5, schema_version=2
)

version = st.tuples(
    st.integers(0, 5),  # entity
    st.integers(-48, 72),  # event time in hours, before 1970 too (ties are likely)
    st.integers(0, 10_000),  # x
)


def write(root: Path, batches: list[list[tuple[int, int, int]]]) -> list[tuple[Any, ...]]:
    """Each batch is one file per day; the first half of the batches in schema 1 (no y)."""
    log = OfflineLog(root)
    rows: list[tuple[Any, ...]] = []
    vid = 1_000
    for b, batch in enumerate(batches):
        view = V1 if b < len(batches) // 2 else V2
        cols: dict[str, list[Any]] = {n: [] for n in version_schema(view).names}
        for ent, hour, x in batch:
            vid += 1
            y = None if view is V1 else x / 2
            rows.append((f"e{ent}", hour * 3_600_000_000, vid, x, y))
            cols["entity_id"].append(f"e{ent}")
            cols["event_time"].append(hour * 3_600_000_000)
            cols["written_at"].append(vid)
            cols["version_id"].append(vid)
            cols["x"].append(x)
            if view is V2:
                cols["y"].append(y)
        if batch:
            log.write_named(view, pa.table(cols, schema=version_schema(view)), f"b{b:04d}")
    return rows


def reference(
    rows: list[tuple[Any, ...]], ent: str | None, ts: int, ttl: int | None
) -> tuple[Any, Any]:
    best = None
    for e, et, vid, x, y in rows:
        if e == ent and et <= ts and (best is None or (et, vid) > (best[0], best[1])):
            best = (et, vid, x, y)
    if best is None or (ttl is not None and best[0] < ts - ttl):
        return None, None
    return best[2], best[3]


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.lists(version, max_size=25), min_size=1, max_size=6),
    queries=st.lists(
        st.tuples(st.one_of(st.none(), st.integers(0, 7)), st.integers(-2, 80)), max_size=40
    ),
    ttl_hours=st.one_of(st.none(), st.integers(0, 30)),
)
def test_numpy_join_equals_duckdb_and_the_reference(
    tmp_path_factory: Any,
    batches: list[list[tuple[int, int, int]]],
    queries: list[tuple[int | None, int]],
    ttl_hours: int | None,
) -> None:
    root = tmp_path_factory.mktemp("log")
    rows = write(root, batches)
    ttl = None if ttl_hours is None else ttl_hours * 3_600_000_000
    ids = pa.array([None if e is None else f"e{e}" for e, _ in queries], pa.string())
    ts = [h * 3_600_000_000 for _, h in queries]
    unique = pc.unique(ids.drop_null())
    edf = pa.table(
        {
            "__rid": pa.array(np.arange(len(queries), dtype=np.int64)),
            "entity_id": pc.index_in(ids, value_set=unique),
            "__ts": pa.array(ts, pa.int64()),
        }
    )
    codes = pa.table({"entity_id": unique})
    log = OfflineLog(root)
    runs = log.runs(V2, ["entity_id", "event_time", "version_id", "x", "y"], None, None)
    want = [reference(rows, e, s, ttl) for e, s in zip(ids.to_pylist(), ts, strict=True)]
    if runs is None:
        assert not rows
        return
    got = asof.join(runs, ["x", "y"], edf, codes, ttl)
    assert got is not None
    assert list(zip(got["x"].to_pylist(), got["y"].to_pylist(), strict=True)) == want
    con = logsql.connect()
    try:
        sql = logsql.join(con, root, V2, ["x", "y"], edf, codes, ttl, None, None)
    finally:
        con.close()
    assert sql is not None
    assert sql["x"].to_pylist() == got["x"].to_pylist()
    assert sql["y"].to_pylist() == got["y"].to_pylist()


def test_keys_too_wide_for_int64_fall_back() -> None:
    versions = pa.table(
        {
            "entity_id": ["a", "b"],
            "event_time": pa.array([0, 2**61], pa.timestamp("us", tz="UTC")),
            "version_id": [1, 2],
            "x": [1, 2],
        }
    )
    edf = pa.table({"__rid": [0], "entity_id": pa.array([1], pa.int32()), "__ts": [2**61]})
    codes = pa.table({"entity_id": ["a", "b"]})
    assert asof.join(versions, ["x"], edf, codes, None) is None
