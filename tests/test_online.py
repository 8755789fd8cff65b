"""Writes and reads against a real server: typing, versions, ttl, time travel, batches."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import redis

from redfeat import (
    ConfigurationError,
    FeatureStore,
    FeatureView,
    Field,
    Status,
    ValidationError,
)
from redfeat import types as t

T0 = datetime(2026, 1, 1, tzinfo=UTC)

ROW = {
    "age": 34,
    "income": 1e3,
    "zip_code": "00123",
    "segment": "premium",
    "active": True,
    "signup": datetime(2020, 5, 17, 8, 30, 0, 123456),
    "embedding": [0.5, -1.25, 3.0, 1e-3],
    "tags": ["a", "b"],
    "scores": [1.0, 2.5],
}


def apply(store: FeatureStore, name: str = "v", **kw: object) -> FeatureView:
    fields = kw.pop("fields", [Field("x", t.Int), Field("y", t.Float)])
    view = FeatureView(name, entity="user", fields=fields, **kw)  # type: ignore[arg-type]
    store.apply(view)
    return view


def test_values_come_back_typed_as_written(store: FeatureStore, profile_view: FeatureView) -> None:
    version = store.write("user_profile", "user123", ROW, event_time=T0)
    got = store.get("user_profile", "user123")
    assert got is not None
    assert got["age"] == 34 and type(got["age"]) is int
    assert got["income"] == 1000.0 and type(got["income"]) is float
    assert got["zip_code"] == "00123"
    assert got["segment"] == "premium"
    assert got["active"] is True
    assert got["signup"] == datetime(2020, 5, 17, 8, 30, 0, 123456, tzinfo=UTC)
    assert isinstance(got["embedding"], np.ndarray) and got["embedding"].dtype == np.float32
    np.testing.assert_array_equal(got["embedding"], np.array(ROW["embedding"], dtype=np.float32))
    assert got["tags"] == ["a", "b"] and got["scores"] == [1.0, 2.5]
    assert version.event_time == T0
    assert version.values["zip_code"] == "00123"
    assert abs((version.written_at - datetime.now(UTC)).total_seconds()) < 60


def test_missing_fields_read_as_null_and_numpy_scalars_are_accepted(
    store: FeatureStore, profile_view: FeatureView
) -> None:
    store.write("user_profile", 7, {"age": np.int64(3), "income": np.float32(2.5)})
    got = store.get("user_profile", "7")
    assert got is not None
    assert got["age"] == 3 and type(got["age"]) is int
    assert got["income"] == 2.5
    assert got["zip_code"] is None and got["embedding"] is None


def test_get_many_is_aligned_with_input_and_selects_features(store: FeatureStore) -> None:
    apply(store)
    for i in range(5):
        store.write("v", f"e{i}", {"x": i, "y": i / 2})
    rows = store.get_many("v", ["e3", "nope", "e0", "e3"], features=["y"])
    assert rows == [{"y": 1.5}, None, {"y": 0.0}, {"y": 1.5}]
    assert store.get_many("v", []) == []
    assert store.get("v", "e4", features=["y", "x"]) == {"y": 2.0, "x": 4}


def test_with_meta_reports_present_expired_missing(store: FeatureStore) -> None:
    apply(store, ttl="1h")
    now = datetime.now(UTC)
    store.write("v", "fresh", {"x": 1}, event_time=now)
    store.write("v", "stale", {"x": 2}, event_time=now - timedelta(hours=2))
    recs = store.get_many("v", ["fresh", "stale", "never"], with_meta=True)
    assert [r.status for r in recs] == [Status.PRESENT, Status.EXPIRED, Status.MISSING]
    assert recs[0].values == {"x": 1, "y": None}
    assert recs[1].values is None and recs[1].event_time == now - timedelta(hours=2)
    assert recs[2].event_time is None
    assert store.get("v", "stale") is None


def test_ttl_sets_key_expiry(store: FeatureStore, client: redis.Redis) -> None:
    apply(store, ttl="1h", history=0)
    et = datetime.now(UTC) - timedelta(minutes=30)
    store.write("v", "u", {"x": 1}, event_time=et)
    pttl = client.pttl(store.keys.latest("v", "u"))
    assert 29 * 60_000 < pttl <= 30 * 60_000 + 1000


def test_ttl_expired_latest_key_is_gone_but_history_stays(
    store: FeatureStore, client: redis.Redis
) -> None:
    apply(store, ttl="1s", history=5)
    store.write("v", "u", {"x": 1}, event_time=time.time() - 0.5)
    time.sleep(0.7)
    assert client.exists(store.keys.latest("v", "u")) == 0
    (rec,) = store.get_many("v", ["u"], with_meta=True)
    assert rec.status == Status.EXPIRED
    assert len(store.history("v", "u")) == 1


def test_late_data_lands_in_history_only(store: FeatureStore) -> None:
    apply(store)
    store.write("v", "u", {"x": 2}, event_time=T0 + timedelta(hours=2))
    late = store.write("v", "u", {"x": 1}, event_time=T0 + timedelta(hours=1))
    assert store.get("v", "u") == {"x": 2, "y": None}
    hist = store.history("v", "u")
    assert [h.values["x"] for h in hist] == [2, 1]
    assert hist[1].id == late.id
    tie = store.write("v", "u", {"x": 3}, event_time=T0 + timedelta(hours=2))
    assert store.get("v", "u") == {"x": 3, "y": None}  # equal event time: last written wins
    assert store.history("v", "u")[0].id == tie.id


def test_retried_write_creates_no_second_version(store: FeatureStore) -> None:
    apply(store)
    a = store.write("v", "u", {"x": 1}, event_time=T0)
    b = store.write("v", "u", {"x": 1}, event_time=T0)
    assert a.id == b.id
    store.write("v", "u", {"x": 2}, event_time=T0 + timedelta(seconds=1))
    c = store.write("v", "u", {"x": 1}, event_time=T0)  # retry after a newer write
    assert c.id == a.id
    assert len(store.history("v", "u")) == 2
    report = store.write_many(
        "v", [{"entity_id": "u", "x": 1}], event_time_column=None
    )  # new event time (now): a genuine new version
    assert report.written == 1


def test_version_ids_grow_and_give_written_at(store: FeatureStore) -> None:
    apply(store)
    ids = [store.write("v", "u", {"x": i}, event_time=T0 - timedelta(days=i)).id for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5


def test_as_of_returns_greatest_event_time_at_or_before(store: FeatureStore) -> None:
    apply(store)
    for h in (1, 2, 3):
        store.write("v", "u", {"x": h}, event_time=T0 + timedelta(hours=h))
    assert store.get("v", "u", as_of=T0) is None
    assert store.get("v", "u", as_of=T0 + timedelta(hours=1)) == {"x": 1, "y": None}
    assert store.get("v", "u", as_of=T0 + timedelta(hours=2, minutes=59)) == {"x": 2, "y": None}
    assert store.get("v", "u", as_of=(T0 + timedelta(hours=9)).timestamp()) == {"x": 3, "y": None}
    naive = datetime(2026, 1, 1, 1, 30)  # naive means UTC
    assert store.get("v", "u", as_of=naive) == {"x": 1, "y": None}
    rows = store.get_many("v", ["u", "other"], as_of=T0 + timedelta(hours=2), features=["x"])
    assert rows == [{"x": 2}, None]


def test_as_of_respects_ttl_and_latest_only_views(store: FeatureStore) -> None:
    apply(store, ttl="1h")
    store.write("v", "u", {"x": 1}, event_time=T0)
    assert store.get("v", "u", as_of=T0 + timedelta(minutes=59)) is not None
    assert store.get("v", "u", as_of=T0 + timedelta(hours=2)) is None
    apply(store, "flat", history=0)
    store.write("flat", "u", {"x": 5}, event_time=T0)
    assert store.get("flat", "u", as_of=T0 - timedelta(seconds=1)) is None
    assert store.get("flat", "u", as_of=T0) == {"x": 5, "y": None}


def test_history_is_trimmed_to_count(store: FeatureStore) -> None:
    apply(store, history=3)
    for i in range(6):
        store.write("v", "u", {"x": i}, event_time=T0 + timedelta(minutes=i))
    hist = store.history("v", "u", limit=100)
    assert [h.values["x"] for h in hist] == [5, 4, 3]
    assert [h.values["x"] for h in store.history("v", "u", limit=2)] == [5, 4]


def test_history_is_trimmed_by_duration_from_newest(store: FeatureStore) -> None:
    apply(store, history="2h")
    for h in (0, 1, 2, 3):
        store.write("v", "u", {"x": h}, event_time=T0 + timedelta(hours=h))
    assert [v.values["x"] for v in store.history("v", "u")] == [3, 2, 1]
    # a backfill far older than the newest version is not kept
    store.write("v", "u", {"x": -5}, event_time=T0 - timedelta(days=5))
    assert [v.values["x"] for v in store.history("v", "u")] == [3, 2, 1]


def test_history_zero_keeps_latest_only(store: FeatureStore, client: redis.Redis) -> None:
    apply(store, history=0)
    store.write("v", "u", {"x": 1}, event_time=T0)
    store.write("v", "u", {"x": 2}, event_time=T0 + timedelta(seconds=1))
    assert [h.values["x"] for h in store.history("v", "u")] == [2]
    assert client.exists(store.keys.history("v", "u")) == 0


def test_update_merges_into_latest(store: FeatureStore) -> None:
    apply(store)
    store.write("v", "u", {"x": 1, "y": 2.0}, event_time=T0)
    v = store.update("v", "u", {"y": 3.5})
    assert v.values == {"x": 1, "y": 3.5}
    assert store.get("v", "u") == {"x": 1, "y": 3.5}
    assert len(store.history("v", "u")) == 2
    fresh = store.update("v", "new", {"x": 9})
    assert fresh.values == {"x": 9, "y": None}


def test_increment_is_atomic_under_concurrency(store: FeatureStore, client: redis.Redis) -> None:
    apply(store, fields=[Field("clicks", t.Int), Field("spend", t.Float)], history=500)
    store.write("v", "u", {"clicks": 0, "spend": 0.0})

    def worker() -> None:
        s = FeatureStore(client=client, project=store.project)
        for _ in range(50):
            s.increment("v", "u", {"clicks": 1, "spend": 0.5})

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert store.get("v", "u") == {"clicks": 200, "spend": 100.0}
    assert len(store.history("v", "u", limit=1000)) == 201


def test_increment_respects_constraints(store: FeatureStore) -> None:
    apply(store, fields=[Field("n", t.Int, max=2)])
    store.increment("v", "u", {"n": 2})
    with pytest.raises(ValidationError) as err:
        store.increment("v", "u", {"n": 1})
    assert err.value.problems[0].rule == "max"
    assert store.get("v", "u") == {"n": 2}


def test_delete_entity_and_view(store: FeatureStore, client: redis.Redis) -> None:
    apply(store)
    apply(store, "other")
    for i in range(1200):  # more than one SCAN batch
        store.write("v", f"e{i}", {"x": i}, event_time=T0)
        store.write("v", f"e{i}", {"x": i + 1}, event_time=T0)  # a second: a history key
    store.write("other", "e1", {"x": 1})
    assert store.delete("v", "e5") is True
    assert store.delete("v", "e5") is False
    assert store.get("v", "e5") is None and store.history("v", "e5") == []
    store.quality.flush()  # the profiles of those writes, stored now rather than later
    quality = len(list(client.scan_iter(match=f"rf:{store.project}:q:v:*", count=1000)))
    removed = store.delete_view("v")
    # latest and history keys, the change feed, and the view's quality data
    assert removed == 1199 * 2 + 1 + quality
    assert [v.name for v in store.views()] == ["other"]
    assert store.get("other", "e1") == {"x": 1, "y": None}
    left = list(client.scan_iter(match=f"rf:{store.project}:{{v|*", count=1000))
    assert left == []


def test_delete_view_can_keep_definition(store: FeatureStore) -> None:
    apply(store)
    store.write("v", "a", {"x": 1})
    store.delete_view("v", keep_definition=True)
    assert store.get("v", "a") is None
    assert store.view("v").name == "v"


def test_write_many_accepts_dicts_pandas_and_arrow(store: FeatureStore) -> None:
    apply(store, fields=[Field("x", t.Int), Field("y", t.Float), Field("z", t.String)])
    rows = [{"entity_id": f"d{i}", "x": i, "y": i * 0.5, "z": f"{i:05d}"} for i in range(300)]
    assert store.write_many("v", rows).written == 300
    frame = pd.DataFrame(
        {"id": ["p1", "p2"], "x": [1, 2], "y": [0.5, np.nan], "z": ["00001", None]}
    )
    report = store.write_many("v", frame, entity_column="id")
    assert report.written == 2
    assert store.get("v", "p2") == {"x": 2, "y": None, "z": None}  # NaN in pandas = missing
    table = pa.table({"entity_id": ["a1"], "x": [7], "y": [1.5], "z": ["007"]})
    store.write_many("v", table)
    assert store.get("v", "a1") == {"x": 7, "y": 1.5, "z": "007"}
    assert store.get("v", "d42") == {"x": 42, "y": 21.0, "z": "00042"}


def test_write_many_event_times_and_progress(store: FeatureStore) -> None:
    apply(store)
    calls: list[tuple[int, int]] = []
    rows = [{"entity_id": "u", "x": i, "ts": T0 + timedelta(minutes=i)} for i in range(1000)]
    rows += [{"entity_id": f"w{i}", "x": i, "ts": (T0).timestamp()} for i in range(1000)]
    report = store.write_many(
        "v", rows, event_time_column="ts", progress=lambda d, n: calls.append((d, n))
    )
    assert report.written == 2000
    assert calls[-1] == (2000, 2000) and len(calls) > 1
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert store.get("v", "u") == {"x": 999, "y": None}
    assert len(store.history("v", "u", limit=100)) == 10  # the default history
    assert store.history("v", "w3")[0].event_time == T0


def test_write_many_counts_late_and_duplicate_rows(store: FeatureStore) -> None:
    apply(store)
    store.write("v", "u", {"x": 1}, event_time=T0 + timedelta(hours=1))
    rows = [
        {"entity_id": "u", "x": 1, "ts": T0 + timedelta(hours=1)},  # duplicate
        {"entity_id": "u", "x": 0, "ts": T0},  # late
    ]
    report = store.write_many("v", rows, event_time_column="ts")
    assert (report.written, report.duplicates, report.late) == (1, 1, 1)


def test_get_features_across_views(store: FeatureStore) -> None:
    apply(store, "a", fields=[Field("age", t.Int), Field("score", t.Float)])
    apply(store, "b", fields=[Field("clicks", t.Int), Field("score", t.Float)])
    store.write("a", "u1", {"age": 30, "score": 0.5})
    store.write("b", "u1", {"clicks": 4, "score": 0.9})
    store.write("b", "u2", {"clicks": 1})
    rows = store.get_features(["u1", "u2", "u3"], ["a:age", "b:clicks"])
    assert rows == [
        {"age": 30, "clicks": 4},
        {"age": None, "clicks": 1},
        {"age": None, "clicks": None},
    ]
    with pytest.raises(ValidationError, match="full_feature_names"):
        store.get_features(["u1"], ["a:score", "b:score"])
    frame = store.get_features(
        ["u1"], ["a:score", "b:score"], full_feature_names=True, as_frame=True
    )
    assert list(frame.columns) == ["entity_id", "a__score", "b__score"]
    assert frame.iloc[0].tolist() == ["u1", 0.5, 0.9]
    with pytest.raises(ConfigurationError):
        store.get_features(["u1"], ["a-age"])


def test_get_features_refuses_views_of_different_entities(store: FeatureStore) -> None:
    apply(store, "a")
    store.apply(FeatureView("m", entity="merchant", fields=[Field("x", t.Int)]))
    with pytest.raises(ConfigurationError, match="entities"):
        store.get_features(["u1"], ["a:x", "m:x"])


def test_written_values_survive_script_cache_flush(
    store: FeatureStore, client: redis.Redis
) -> None:
    apply(store)
    store.write("v", "u", {"x": 1})
    client.script_flush()
    store.write_many("v", [{"entity_id": f"e{i}", "x": i} for i in range(600)])
    assert store.get("v", "e599") == {"x": 599, "y": None}


def test_from_url_and_context_manager(embedded_url: str, project: str) -> None:
    with FeatureStore.from_url(embedded_url, project=project) as s:
        s.apply(FeatureView("v", entity="user", fields=[Field("x", t.Int)]))
        s.write("v", "u", {"x": 1})
        assert s.get("v", "u") == {"x": 1}
        s.delete_view("v")
    with pytest.raises(ConfigurationError):
        FeatureStore.from_url("http://localhost:6379")


def test_capabilities_are_detected(store: FeatureStore) -> None:
    caps = store.capabilities
    assert caps["server"] in ("redis", "valkey")
    assert int(caps["version"].split(".")[0]) >= 7
    assert isinstance(caps["hash_field_expiry"], bool)


def test_write_many_from_pandas_with_timestamps(store: FeatureStore) -> None:
    apply(store, fields=[Field("seen", t.Timestamp), Field("x", t.Int)])
    df = pd.DataFrame(
        {
            "entity_id": ["a", "b"],
            "seen": [datetime(2020, 1, 2, 3, 4, 5, 6), None],
            "x": [1, 2],
            "et": pd.to_datetime(
                ["2021-01-01T00:00:00+02:00", "2021-01-02T00:00:00+00:00"], utc=True
            ),
        }
    )
    assert store.write_many("v", df, event_time_column="et").written == 2
    assert store.get("v", "a") == {"seen": datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "x": 1}
    assert store.history("v", "a")[0].event_time == datetime(2020, 12, 31, 22, tzinfo=UTC)
    assert store.history("v", "b")[0].event_time == datetime(2021, 1, 2, tzinfo=UTC)
