"""The golden point-in-time tests of test_training.py, unchanged, against a store whose
training frames read the offline log (DuckDB over Parquet) instead of Redis history; and
window features over history older than the tiles keep (issue 14)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis
from test_training import (  # noqa: F401  -- collected here with this module's store
    test_bounds_are_inclusive_and_no_match_is_null,
    test_filter_by_written_at_hides_backfills,
    test_late_data_written_after_newer_data,
    test_randomised_against_brute_force,
    test_rows_columns_order_index_and_duplicates_are_kept,
    test_several_views_names_and_ambiguity,
    test_ties_on_event_time_go_to_the_last_written,
    test_time_zones,
    test_ttl_window_is_inclusive,
)

from redfeat import FeatureStore, WindowFeatures


@pytest.fixture
def store(client: redis.Redis, project: str, tmp_path: Path) -> Iterator[FeatureStore]:
    s = FeatureStore(client=client, project=project, offline_dir=tmp_path / "log")
    yield s
    s.close()
    for batch in [list(client.scan_iter(match=f"rf:{project}:*", count=1000))]:
        if batch:
            client.unlink(*batch)


def test_frames_read_the_log_not_redis(store: FeatureStore) -> None:
    from redfeat import FeatureView, Field
    from redfeat import types as t

    store.apply(FeatureView("v", entity="user", fields=[Field("x", t.Int)], history=1))
    for i in range(5):
        store.write("v", "u", {"x": i}, event_time=1_700_000_000 + 3600 * i)
    assert len(store.history("v", "u")) == 1  # Redis keeps the newest only
    rows = pd.DataFrame(
        {"entity_id": ["u"] * 5, "event_time": [1_700_000_000 + 3600 * i for i in range(5)]}
    )
    assert store.training_frame(rows, ["v:x"]).x.tolist() == [0, 1, 2, 3, 4]
    # a latest-only view too: the log keeps the versions Redis does not (test_training's
    # test_latest_only_views_join_their_latest gives None there, from Redis alone)
    store.apply(FeatureView("flat", entity="user", fields=[Field("x", t.Int)], history=0))
    store.write("flat", "u", {"x": 1}, event_time=1_700_000_000)
    store.write("flat", "u", {"x": 2}, event_time=1_700_003_600)
    assert store.training_frame(rows.iloc[:2], ["flat:x"]).x.tolist() == [1, 2]


def test_window_values_over_history_the_tiles_no_longer_keep(store: FeatureStore) -> None:
    t0 = 1_767_225_600
    store.apply(
        WindowFeatures(
            "w", entity="u", source="x", aggs=["count", "sum", "last"], windows=["1h"], hop="5m"
        )
    )
    rng = np.random.default_rng(3)
    ts = t0 + np.sort(rng.choice(10 * 86_400, size=600, replace=False)).astype(float)
    vs = np.round(rng.normal(10, 3, size=600), 3)
    ents = rng.choice(["a", "b"], size=600)
    store.record_many(
        "w", pd.DataFrame({"entity_id": ents, "x": vs, "event_time": pd.to_datetime(ts, unit="s")})
    )
    at = t0 + rng.integers(0, 10 * 86_400, size=50)
    rows = pd.DataFrame({"entity_id": rng.choice(["a", "b"], 50), "event_time": at})
    frame = store.training_frame(rows, ["w:x_count_1h", "w:x_sum_1h", "w:x_last_1h"])
    for i, (e, t_s) in enumerate(zip(rows.entity_id, rows.event_time, strict=True)):
        lo = (t_s - 3600) // 300 * 300
        sel = (ents == e) & (ts >= lo) & (ts <= t_s)
        assert frame.x_count_1h.iloc[i] == sel.sum()  # never NaN: the log holds it all
        assert frame.x_sum_1h.iloc[i] == pytest.approx(vs[sel].sum())
        if sel.any():
            assert frame.x_last_1h.iloc[i] == vs[sel][-1]


def test_readme_sql_reproduces_a_training_frame(store: FeatureStore, tmp_path: Path) -> None:
    import re

    import duckdb

    from redfeat import FeatureView, Field
    from redfeat import types as t

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    join_sql, window_sql = re.findall(r"```sql\n(.*?)```", readme, re.S)[:2]
    store.apply(
        FeatureView("txn", entity="user", fields=[Field("amount", t.Float)], ttl="6h"),
        WindowFeatures(
            "txn_stats", entity="user", source="amount", aggs=["sum"], windows=["1h"], hop="5m"
        ),
    )
    t0 = 1_767_225_600
    rng = np.random.default_rng(5)
    for i in range(200):
        et = t0 + int(rng.integers(0, 86_400))
        e = f"u{rng.integers(5)}"
        store.write("txn", e, {"amount": float(i)}, event_time=et)
        if i % 7 == 0:
            store.write("txn", e, {"amount": float(-i)}, event_time=et)  # a tie: last wins
        store.record("txn_stats", e, float(i), ts=et)
    edf = pd.DataFrame(
        {
            "entity_id": [f"u{i}" for i in rng.integers(5, size=100)],
            "event_time": pd.to_datetime(
                t0 + rng.integers(0, 90_000, size=100), unit="s", utc=True
            ),
        }
    )
    want = store.training_frame(edf, ["txn:amount", "txn_stats:amount_sum_1h"])
    root = str(store.offline.root) if store.offline is not None else ""
    con = duckdb.connect()
    con.register("edf", edf.assign(rid=range(len(edf))))
    got = {}
    for sql, col in ((join_sql, "amount"), (window_sql, "amount_sum_1h")):
        statements = [s for s in sql.replace("features/", root + "/").split(";") if s.strip()]
        for s in statements[:-1]:
            con.execute(s)
        rows = con.sql(statements[-1]).df().sort_values("rid")
        got[col] = rows[col].to_numpy(dtype=float, na_value=np.nan)
    for col in ("amount", "amount_sum_1h"):
        np.testing.assert_allclose(
            got[col], want[col].to_numpy(dtype=float, na_value=np.nan), equal_nan=True
        )


def test_deletes_reach_the_log_and_frames_agree_with_redis(
    store: FeatureStore, client: redis.Redis, tmp_path: Path
) -> None:
    """A delete is logged (a tombstone): frames, versions and scans of the log leave out
    every version written before it, as Redis does; a version written after it counts;
    compaction drops the deleted versions from the files for good."""
    import pyarrow.parquet as pq

    from redfeat import FeatureView, Field
    from redfeat import types as t
    from redfeat.offline.log import OfflineLog

    view = FeatureView("v", entity="user", fields=[Field("x", t.Int)], history=10)
    store.apply(view)
    t0 = 1_700_000_000
    for i in range(3):
        store.write("v", "gone", {"x": i}, event_time=t0 + 3600 * i)
        store.write("v", "kept", {"x": 10 + i}, event_time=t0 + 3600 * i)
    assert store.delete("v", "gone")
    store.write("v", "gone", {"x": 99}, event_time=t0 + 3600 * 3)  # after the delete: counts
    rows = pd.DataFrame(
        {
            "entity_id": ["gone"] * 4 + ["kept"] * 4,
            "event_time": [t0 + 3600 * i for i in range(4)] * 2,
        }
    )
    from_log = store.training_frame(rows, ["v:x"])
    with FeatureStore(client=client, project=store.project) as redis_only:
        from_redis = plain(redis_only.training_frame(rows, ["v:x"]).x)
        assert from_redis == [None, None, None, 99, 10, 11, 12, 12]
    assert plain(from_log.x) == from_redis
    # the written_at path (DuckDB over the log) leaves them out too
    by_written = store.training_frame(rows, ["v:x"], filter_by_written_at=True)
    assert plain(by_written.x)[:3] == [None, None, None]
    log = OfflineLog(tmp_path / "log")
    scanned = log.scan(view)
    assert sorted(zip(scanned["entity_id"].to_pylist(), scanned["x"].to_pylist(), strict=True)) == [
        ("gone", 99), ("kept", 10), ("kept", 11), ("kept", 12)
    ]  # fmt: skip
    deletes = log.deletes("v")
    assert deletes is not None and deletes["entity_id"].to_pylist() == ["gone"]

    def in_files() -> list[int]:
        return sorted(
            x.as_py()
            for p in (tmp_path / "log" / "v").glob("schema=*/date=*/part-*.parquet")
            for e, x in zip(*pq.read_table(p, columns=["entity_id", "x"]).columns, strict=True)
            if e.as_py() == "gone"
        )

    assert in_files() == [0, 1, 2, 99]  # still on disk until compacted
    log.compact("v")
    assert in_files() == [99]
    assert plain(store.training_frame(rows, ["v:x"]).x) == from_redis


def plain(col: pd.Series) -> list[object]:
    return [None if pd.isna(v) else v for v in col.tolist()]
