"""Point-in-time training frames, diffs, export and backfill, against a real server."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from redfeat import (
    ConfigurationError,
    FeatureStore,
    FeatureView,
    Field,
    NotFoundError,
    ValidationError,
)
from redfeat import types as t

T0 = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def view(store: FeatureStore, name: str = "v", **kw: object) -> None:
    fields = kw.pop("fields", [Field("x", t.Int)])
    store.apply(FeatureView(name, entity="user", fields=fields, history=1000, **kw))  # type: ignore[arg-type]


def frame(rows: Sequence[tuple[object, datetime]]) -> pd.DataFrame:
    return pd.DataFrame({"entity_id": [r[0] for r in rows], "event_time": [r[1] for r in rows]})


def xs(df: pd.DataFrame, col: str = "x") -> list[object]:
    return [None if pd.isna(v) else v for v in df[col].tolist()]


def test_bounds_are_inclusive_and_no_match_is_null(store: FeatureStore) -> None:
    view(store)
    store.write("v", "u", {"x": 1}, event_time=T0)
    store.write("v", "u", {"x": 2}, event_time=T0 + H)
    out = store.training_frame(
        frame(
            [
                ("u", T0 - timedelta(microseconds=1)),
                ("u", T0),
                ("u", T0 + H - timedelta(microseconds=1)),
                ("u", T0 + H),
                ("never", T0 + H),
            ]
        ),
        ["v:x"],
    )
    assert xs(out) == [None, 1, 1, 2, None]
    assert str(out["x"].dtype) == "Int64"  # ints stay ints, nulls are <NA>


def test_ttl_window_is_inclusive(store: FeatureStore) -> None:
    view(store, ttl="1h")
    store.write("v", "u", {"x": 1}, event_time=T0)
    out = store.training_frame(
        frame(
            [
                ("u", T0 + H),
                ("u", T0 + H + timedelta(microseconds=1)),
                ("u", T0 + 30 * timedelta(minutes=1)),
            ]
        ),
        ["v:x"],
    )
    assert xs(out) == [1, None, 1]


def test_ties_on_event_time_go_to_the_last_written(store: FeatureStore) -> None:
    view(store)
    store.write("v", "u", {"x": 1}, event_time=T0)
    store.write("v", "u", {"x": 2}, event_time=T0)
    store.write("v", "u", {"x": 3}, event_time=T0 + H)
    out = store.training_frame(
        frame([("u", T0 + timedelta(minutes=30)), ("u", T0 + 2 * H)]), ["v:x"]
    )
    assert xs(out) == [2, 3]


def test_late_data_written_after_newer_data(store: FeatureStore) -> None:
    view(store)
    store.write("v", "u", {"x": 10}, event_time=T0 + 2 * H)
    store.write("v", "u", {"x": 5}, event_time=T0 + H)  # late: written after, happened before
    assert store.get("v", "u") == {"x": 10}
    out = store.training_frame(
        frame([("u", T0), ("u", T0 + H), ("u", T0 + 90 * timedelta(minutes=1)), ("u", T0 + 3 * H)]),
        ["v:x"],
    )
    assert xs(out) == [None, 5, 5, 10]


def test_filter_by_written_at_hides_backfills(store: FeatureStore) -> None:
    view(store)
    store.import_frame(
        "v",
        pd.DataFrame(
            {
                "entity_id": ["u", "u"],
                "event_time": [T0, T0 + H],
                "x": [1, 2],
                "written_at": [T0, T0 + 5 * H],  # the second version was backfilled later
            }
        ),
        written_at_column="written_at",
    )
    rows = frame([("u", T0 + 2 * H), ("u", T0 + 6 * H)])
    assert xs(store.training_frame(rows, ["v:x"])) == [2, 2]
    assert xs(store.training_frame(rows, ["v:x"], filter_by_written_at=True)) == [1, 2]
    versions = store.history("v", "u")
    assert versions[0].written_at == T0 + 5 * H and versions[1].written_at == T0


def test_several_views_names_and_ambiguity(store: FeatureStore) -> None:
    view(store, "a", fields=[Field("x", t.Int), Field("s", t.String)])
    view(store, "b", fields=[Field("x", t.Float), Field("e", t.Vector(2))], ttl="1h")
    store.write("a", "u", {"x": 1, "s": "00123"}, event_time=T0)
    store.write("b", "u", {"x": 0.5, "e": [1, 2]}, event_time=T0)
    rows = frame([("u", T0 + timedelta(minutes=5)), ("u", T0 + 2 * H)])
    with pytest.raises(ValidationError, match="full_feature_names"):
        store.training_frame(rows, ["a:x", "b:x"])
    out = store.training_frame(rows, ["a:x", "a:s", "b:x", "b:e"], full_feature_names=True)
    assert list(out.columns) == ["entity_id", "event_time", "a__x", "a__s", "b__x", "b__e"]
    assert xs(out, "a__x") == [1, 1] and xs(out, "a__s") == ["00123", "00123"]
    assert xs(out, "b__x")[0] == 0.5 and pd.isna(out["b__x"][1])
    np.testing.assert_array_equal(out["b__e"][0], np.array([1, 2], dtype=np.float32))
    with pytest.raises(ValidationError):
        store.training_frame(rows, ["a:nope"])
    with pytest.raises(ConfigurationError):
        store.training_frame(rows, ["a.x"])
    store.apply(FeatureView("m", entity="merchant", fields=[Field("y", t.Int)]))
    with pytest.raises(ConfigurationError, match="one entity"):
        store.training_frame(rows, ["a:x", "m:y"])


def test_rows_columns_order_index_and_duplicates_are_kept(store: FeatureStore) -> None:
    view(store)
    store.write("v", "7", {"x": 1}, event_time=T0)
    df = pd.DataFrame(
        {
            "label": [0.1, 0.2, 0.3, 0.4],
            "entity_id": [7, 8, 7, 7],  # ints address the same entities as strings
            "event_time": [T0 + H, T0 + H, T0 - H, T0 + H],
        },
        index=[10, 11, 12, 13],
    )
    out = store.training_frame(df, ["v:x"])
    assert list(out.index) == [10, 11, 12, 13]
    assert list(out.columns) == ["label", "entity_id", "event_time", "x"]
    assert xs(out) == [1, None, None, 1]
    pd.testing.assert_frame_equal(out[df.columns], df)
    table = store.training_frame(
        pa.Table.from_pandas(df, preserve_index=False), ["v:x"], as_arrow=True
    )
    assert isinstance(table, pa.Table) and table.column("x").to_pylist() == [1, None, None, 1]
    with pytest.raises(ConfigurationError, match="already has"):
        store.training_frame(df.assign(x=1), ["v:x"])
    with pytest.raises(ConfigurationError, match="no column"):
        store.training_frame(df, ["v:x"], event_time_column="ts")


def test_time_zones(store: FeatureStore) -> None:
    view(store)
    store.write("v", "u", {"x": 1}, event_time=T0)
    store.write("v", "u", {"x": 2}, event_time=T0 + H)
    plus2 = timezone(timedelta(hours=2))
    naive = pd.DataFrame({"entity_id": ["u"], "event_time": [datetime(2026, 1, 1, 0, 30)]})
    aware = pd.DataFrame(
        {
            "entity_id": ["u", "u"],
            "event_time": [
                datetime(2026, 1, 1, 2, 30, tzinfo=plus2),  # 00:30 UTC
                datetime(2026, 1, 1, 3, 0, tzinfo=plus2),
            ],
        }
    )  # 01:00 UTC
    assert xs(store.training_frame(naive, ["v:x"])) == [1]
    assert xs(store.training_frame(aware, ["v:x"])) == [1, 2]
    seconds = pd.DataFrame({"entity_id": ["u"], "event_time": [(T0 + H).timestamp()]})
    assert xs(store.training_frame(seconds, ["v:x"])) == [2]


def test_latest_only_views_join_their_latest(store: FeatureStore) -> None:
    store.apply(FeatureView("flat", entity="user", fields=[Field("x", t.Int)], history=0))
    store.write("flat", "u", {"x": 1}, event_time=T0)
    store.write("flat", "u", {"x": 2}, event_time=T0 + H)
    out = store.training_frame(
        frame([("u", T0 + 30 * timedelta(minutes=1)), ("u", T0 + 2 * H)]), ["flat:x"]
    )
    assert xs(out) == [None, 2]  # history=0 keeps no older version


def test_randomised_against_brute_force(store: FeatureStore) -> None:
    rng = random.Random(20261127)
    n_entities, views = 150, {"va": None, "vb": 3 * H, "vc": 30 * timedelta(minutes=1)}
    truth: dict[str, dict[str, list[tuple[datetime, int, int]]]] = {}
    for name, ttl in views.items():
        store.apply(
            FeatureView(name, entity="user", fields=[Field("x", t.Int)], history=1000, ttl=ttl)
        )
        rows: list[dict[str, Any]] = []
        seq = 0
        for e in range(n_entities):
            for _ in range(rng.randint(0, 12)):
                et = T0 + timedelta(
                    minutes=rng.randrange(0, 24 * 60, 7)
                )  # coarse grid: ties happen
                seq += 1
                rows.append({"entity_id": f"e{e}", "event_time": et, "x": seq})
        rng.shuffle(rows)  # arrival order differs from event order: late data everywhere
        for i in range(0, len(rows), 500):
            store.write_many(name, rows[i : i + 500], event_time_column="event_time")
        per: dict[str, list[tuple[datetime, int, int]]] = {}
        for order, r in enumerate(rows):
            per.setdefault(str(r["entity_id"]), []).append((r["event_time"], order, int(r["x"])))
        truth[name] = per
    queries = [
        (f"e{rng.randrange(n_entities + 10)}", T0 + timedelta(minutes=rng.randrange(-60, 26 * 60)))
        for _ in range(10_000)
    ]
    out = store.training_frame(frame(queries), [f"{v}:x" for v in views], full_feature_names=True)
    assert len(out) == 10_000
    for name, ttl in views.items():
        expected = []
        for ent, ts in queries:
            cands = [
                c
                for c in truth[name].get(ent, [])
                if c[0] <= ts and (ttl is None or c[0] >= ts - ttl)
            ]
            expected.append(max(cands)[2] if cands else None)  # (event time, arrival order)
        assert xs(out, f"{name}__x") == expected, name


def test_offline_log_keeps_history_redis_trimmed(
    client: redis.Redis, project: str, tmp_path: Path
) -> None:
    store = FeatureStore(client=client, project=project, offline_dir=tmp_path / "log")
    try:
        store.apply(FeatureView("v", entity="user", fields=[Field("x", t.Int)], history=2))
        for i in range(5):
            store.write("v", "u", {"x": i}, event_time=T0 + i * H)
        store.write_many("v", [{"entity_id": "w", "x": 9}])
        assert len(store.history("v", "u")) == 2
        rows = frame([("u", T0), ("u", T0 + 2 * H), ("u", T0 + 9 * H)])
        assert xs(store.training_frame(rows, ["v:x"])) == [0, 2, 4]
        store.close()
        assert list((tmp_path / "log").rglob("part-*.parquet"))
        again = FeatureStore(client=client, project=project, offline_dir=tmp_path / "log")
        assert xs(again.training_frame(rows, ["v:x"])) == [0, 2, 4]
        assert again.versions("v", ["u"]).num_rows == 5
        assert again.offline is not None and again.offline.compact("v") >= 0
        assert xs(again.training_frame(rows, ["v:x"])) == [0, 2, 4]
        again.close()  # its log feeder must not outlive the client
    finally:
        store.close()
        store.delete_view("v")


def test_export_and_import(store: FeatureStore, tmp_path: Path) -> None:
    view(store, fields=[Field("x", t.Int), Field("s", t.String)])
    for i in range(3):
        store.write("v", f"e{i}", {"x": i, "s": f"{i:03d}"}, event_time=T0 + i * H)
    store.write("v", "e0", {"x": 10, "s": "010"}, event_time=T0 + 5 * H)
    n = store.export("v", tmp_path / "all.parquet")
    assert n == 4
    table = pq.read_table(tmp_path / "all.parquet")
    assert table.column_names[:4] == ["entity_id", "event_time", "written_at", "version_id"]
    assert sorted(table.column("s").to_pylist()) == ["000", "001", "002", "010"]
    assert store.export("v", tmp_path / "some.parquet", start=T0 + H, end=T0 + 2 * H) == 2
    assert not list(tmp_path.glob(".tmp-*"))
    # backfill: older rows land in history without moving latest pointers backwards
    report = store.import_frame(
        "v",
        pd.DataFrame(
            {
                "entity_id": ["e0", "e9"],
                "event_time": [T0 - H, T0 - H],
                "x": [-1, -9],
                "s": ["old", "new"],
            }
        ),
    )
    assert report.written == 2 and report.late == 1
    assert store.get("v", "e0") == {"x": 10, "s": "010"}
    assert store.get("v", "e9") == {"x": -9, "s": "new"}
    assert [v.values["x"] for v in store.history("v", "e0")] == [10, 0, -1]
    with pytest.raises(ValidationError):
        store.import_frame(
            "v", pd.DataFrame({"entity_id": ["e0"], "event_time": [T0], "x": ["bad"]})
        )
    with pytest.raises(ConfigurationError):
        store.import_frame("v", pd.DataFrame({"entity_id": ["e0"], "x": [1]}))


def test_diff(store: FeatureStore) -> None:
    view(store, fields=[Field("x", t.Int), Field("s", t.String), Field("e", t.Vector(2))])
    a = store.write("v", "u", {"x": 1, "s": "a", "e": [1, 2]}, event_time=T0)
    b = store.write("v", "u", {"x": 2, "e": [1, 2]}, event_time=T0 + H)
    c = store.write("v", "u", {"x": 2, "s": "c", "e": [1, 3]}, event_time=T0 + 2 * H)
    d = store.diff("v", "u", a.id, b.id)
    assert d == {"added": {}, "removed": {"s": "a"}, "modified": {"x": (1, 2)}}
    d2 = store.diff("v", "u", b.id, c.id)
    assert d2["added"] == {"s": "c"} and list(d2["modified"]) == ["e"]
    assert store.diff("v", "u", T0 + 30 * timedelta(minutes=1), T0 + 2 * H)["modified"]["x"] == (
        1,
        2,
    )
    assert store.diff("v", "u", a.id, a.id) == {"added": {}, "removed": {}, "modified": {}}
    with pytest.raises(NotFoundError):
        store.diff("v", "u", a.id, 12345)
    with pytest.raises(NotFoundError):
        store.diff("v", "u", T0 - H, a.id)


def test_cli_export_and_training_frame(data_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from redfeat.serve.cli import app

    with FeatureStore(data_dir=data_dir) as store:
        store.apply(FeatureView("v", entity="user", fields=[Field("x", t.Int)], history=10))
        for i in range(3):
            store.write("v", "u", {"x": i}, event_time=T0 + i * H)
        pq.write_table(
            pa.table({"entity_id": ["u", "u"], "event_time": [T0 + H, T0 + 5 * H]}),
            tmp_path / "entities.parquet",
        )
        runner = CliRunner()
        env = {"REDFEAT_HOME": str(data_dir)}
        res = runner.invoke(app, ["export", "v", str(tmp_path / "v.parquet")], env=env)
        assert res.exit_code == 0, res.output
        assert "3 versions" in res.output
        assert pq.read_table(tmp_path / "v.parquet").num_rows == 3
        res = runner.invoke(
            app,
            ["export", "v", str(tmp_path / "w.parquet"), "--start", "2026-01-01T01:00:00"],
            env=env,
        )
        assert res.exit_code == 0 and pq.read_table(tmp_path / "w.parquet").num_rows == 2
        res = runner.invoke(
            app,
            [
                "training-frame",
                str(tmp_path / "entities.parquet"),
                "--features",
                "v:x",
                "-o",
                str(tmp_path / "tf.parquet"),
            ],
            env=env,
        )
        assert res.exit_code == 0, res.output
        assert pq.read_table(tmp_path / "tf.parquet").column("x").to_pylist() == [1, 2]
