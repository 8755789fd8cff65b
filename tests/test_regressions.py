"""Defects found in review, each pinned by the behaviour a user would see."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from redfeat import ConfigurationError, FeatureStore, FeatureView, Field, ValidationError
from redfeat import types as t

T0 = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def apply(store: FeatureStore, **kw: object) -> None:
    fields = kw.pop("fields", [Field("x", t.Int), Field("y", t.Float)])
    store.apply(FeatureView("v", entity="user", fields=fields, **kw))  # type: ignore[arg-type]


def test_failing_progress_callback_leaves_the_connection_usable(store: FeatureStore) -> None:
    apply(store)
    store.write("v", "alice", {"x": 1})
    store.write("v", "bob", {"x": 2})

    def boom(done: int, total: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        store.write_many("v", [{"entity_id": f"e{i}", "x": i} for i in range(5000)], progress=boom)
    assert store.get("v", "alice") == {"x": 1, "y": None}
    assert store.get("v", "bob") == {"x": 2, "y": None}


def test_write_survives_a_dropped_idle_connection(store: FeatureStore, client: redis.Redis) -> None:
    apply(store)
    store.write("v", "a", {"x": 1})
    conn = store._online.direct.conn()
    conn.send_command("CLIENT", "ID")
    client.client_kill_filter(_id=str(conn.read_response()))
    store.write("v", "a", {"x": 2})
    assert store.get("v", "a") == {"x": 2, "y": None}


def test_update_in_the_past_merges_into_the_version_of_then(store: FeatureStore) -> None:
    apply(store)
    store.write("v", "a", {"x": 1, "y": 1.0}, event_time=T0)
    store.write("v", "a", {"x": 2, "y": 999.0}, event_time=T0 + 2 * H)
    v = store.update("v", "a", {"x": 40}, event_time=T0 + H)
    assert v.values == {"x": 40, "y": 1.0}  # nothing from the future
    assert store.get("v", "a") == {"x": 2, "y": 999.0}
    assert store.get("v", "a", as_of=T0 + H) == {"x": 40, "y": 1.0}


def test_increment_is_never_late_when_data_runs_ahead_of_the_clock(store: FeatureStore) -> None:
    apply(store)
    future = datetime.now(UTC) + timedelta(days=1)
    store.write("v", "a", {"x": 5}, event_time=future)
    v = store.increment("v", "a", {"x": 1})
    assert v.event_time == future
    assert store.get("v", "a") == {"x": 6, "y": None}


def test_same_event_time_a_b_a_ends_on_a(store: FeatureStore) -> None:
    apply(store, fields=[Field("flag", t.String)])
    v1 = store.write("v", "a", {"flag": "on"}, event_time=T0)
    store.write("v", "a", {"flag": "off"}, event_time=T0)
    v3 = store.write("v", "a", {"flag": "on"}, event_time=T0)
    assert v3.id != v1.id
    assert store.get("v", "a") == {"flag": "on"}
    assert len(store.history("v", "a")) == 3


def test_late_data_for_a_latest_only_view_is_reported_dropped(store: FeatureStore) -> None:
    apply(store, history=0)
    store.write("v", "a", {"x": 2}, event_time=T0 + H)
    v = store.write("v", "a", {"x": 1}, event_time=T0)
    assert v.id == 0
    report = store.write_many("v", [{"entity_id": "a", "x": 0, "ts": T0}], event_time_column="ts")
    assert (report.written, report.dropped) == (0, 1)
    assert store.get("v", "a") == {"x": 2, "y": None}


def test_after_the_latest_expires_an_older_write_stays_late(store: FeatureStore) -> None:
    apply(store, ttl="1h", history=10)
    now = datetime.now(UTC)
    store.write("v", "a", {"x": 2}, event_time=now - 2 * H)  # already past the ttl
    store.write("v", "a", {"x": 1}, event_time=now - 3 * H)  # older still
    hist = store.history("v", "a")
    assert [h.values["x"] for h in hist] == [2, 1]
    assert hist[1].id > hist[0].id  # written later: a larger id, even with no latest key


def test_history_switched_on_and_off(store: FeatureStore, client: redis.Redis) -> None:
    apply(store, history=0)
    store.write("v", "a", {"x": 1}, event_time=T0)
    apply(store, history=10)
    assert store.get("v", "a", as_of=T0 + H) == {"x": 1, "y": None}
    assert [h.values["x"] for h in store.history("v", "a")] == [1]
    store.write("v", "a", {"x": 2}, event_time=T0 + H)
    apply(store, history=0)
    assert client.exists(store.keys.history("v", "a")) == 0
    store.write("v", "a", {"x": 3}, event_time=T0 + 2 * H)
    apply(store, history=10)
    assert store.get("v", "a", as_of=T0 + 90 * timedelta(minutes=1)) is None  # nothing stale


def test_thread_connections_close_with_their_threads(store: FeatureStore) -> None:
    apply(store)
    store.write("v", "a", {"x": 1})
    threads = [threading.Thread(target=lambda: store.get("v", "a")) for _ in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    import gc

    gc.collect()
    assert len(store._online.direct._all) <= 2


def test_widening_categories_and_changing_metric_keep_values(store: FeatureStore) -> None:
    apply(store, fields=[Field("seg", t.Category(["a", "b"])), Field("emb", t.Vector(2))])
    store.write("v", "u", {"seg": "b", "emb": [1, 2]})
    widened = [Field("seg", t.Category(["a", "b", "c"])), Field("emb", t.Vector(2, metric="l2"))]
    assert store.apply(FeatureView("v", entity="user", fields=widened)) == {"v": "updated"}
    got = store.get("v", "u")
    assert got is not None and got["seg"] == "b" and list(got["emb"]) == [1.0, 2.0]
    store.write("v", "w", {"seg": "c"})


def test_bad_clients_and_arguments_raise_redfeat_errors(
    store: FeatureStore, embedded_url: str
) -> None:
    apply(store)
    with pytest.raises(ConfigurationError, match="decode_responses"):
        FeatureStore.from_url(embedded_url, decode_responses=True)
    with pytest.raises(ValidationError):
        store.get("v", "a", features=[])
    with pytest.raises(ConfigurationError):
        store.write_many("v", None)


# -- found in the second review (events, ingestion, cache, derived views) -----------------


def test_pushed_rows_of_one_entity_replay_without_duplicates(store: FeatureStore) -> None:
    apply(store, history=10)
    store.push("v", [{"entity_id": "a", "x": 1}, {"entity_id": "a", "x": 2}])
    first = store.run_worker(["v"], until_idle=True)
    assert first.rows == 2
    # replay the same batch, as a second worker does after a crash before the ack
    import msgspec

    client: Any = store.client
    ((_, data),) = client.xrange(store.keys.ingest("v", store.keys.partition("a")))
    rows = msgspec.msgpack.decode(data[b"rows"])
    for row in rows:
        row["__event_time_us"] = datetime.fromtimestamp(row["__event_time_us"] / 1e6, UTC)
    report = store.write_many("v", rows, event_time_column="__event_time_us")
    assert report.duplicates == 2 and report.written == 0
    assert [h.values["x"] for h in store.history("v", "a")] == [2, 1]


def test_a_batch_failing_whole_is_dead_lettered_and_acknowledged(store: FeatureStore) -> None:
    from redfeat.transforms.builtins import ratio

    apply(store)
    store.apply(FeatureView("d", entity="user", source="v", transforms=[ratio("x", "y")]))
    store.push("v", [{"entity_id": "a", "x": 1, "y": 1e-320}])  # ratio -> inf: refused
    store.push("v", [{"entity_id": "b", "x": 2, "y": 1.0}])
    stats = store.run_worker(["v"], until_idle=True)
    assert stats.dead == 1 and store.get("d", "b") == {"x_per_y": 2.0}
    assert "finite" in store.dead_letters("v")[0]["error"]


def test_backfilled_versions_with_one_written_at_stay_distinct(store: FeatureStore) -> None:
    import pandas as pd

    apply(store, history=10)
    store.import_frame(
        "v",
        pd.DataFrame(
            {
                "entity_id": ["a", "a", "a"],
                "event_time": [T0, T0 + H, T0 + 2 * H],
                "x": [1, 2, 3],
                "written_at": [T0, T0, T0],
            }
        ),
        written_at_column="written_at",
    )
    assert store.versions("v", ["a"]).num_rows == 3
    ids = [h.id for h in store.history("v", "a")]
    assert len(set(ids)) == 3


def test_cached_vectors_are_copies_and_delete_view_clears_everything(
    client: redis.Redis, project: str
) -> None:
    from redfeat.realtime.cache import Cache

    store = FeatureStore(client=client, project=project, cache=Cache())
    try:
        store.apply(FeatureView("v", entity="user", fields=[Field("e", t.Vector(2))]))
        store.write("v", "a", {"e": [1, 2]})
        import time as _time

        _time.sleep(0.2)
        got = store.get("v", "a")
        assert got is not None
        got["e"][0] = 99
        again = store.get("v", "a")
        assert again is not None and list(again["e"]) == [1.0, 2.0]
        store.push("v", [{"entity_id": "b", "e": [3, 4]}])
        store.delete_view("v")
        left = list(client.scan_iter(match=f"rf:{project}:*"))
        assert [k for k in left if not k.endswith(b"registry")] == []
    finally:
        store.close()
        client.delete(f"rf:{project}:registry")
