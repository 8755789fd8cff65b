"""Regressions of issue 17 (items 9-16): each test failed before its fix."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from redfeat import ConfigurationError, FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.realtime.cache import Cache

# -- item 9: a write already past the ttl is reported ---------------------------------------


@pytest.fixture
def ttl_view(store: FeatureStore) -> FeatureView:
    view = FeatureView("p", entity="user", fields=[Field("age", t.Int)], ttl="30d", history=5)
    store.apply(view)
    return view


def test_a_write_past_the_ttl_says_it_is_expired(
    store: FeatureStore, ttl_view: FeatureView
) -> None:
    old = datetime.now(UTC) - timedelta(days=31)
    v = store.write("p", "u1", {"age": 41}, event_time=old)
    assert v.expired
    assert store.get("p", "u1") is None  # what the flag warns about
    assert store.history("p", "u1")[0].values == {"age": 41}  # kept in history
    fresh = store.write("p", "u2", {"age": 41})
    assert not fresh.expired
    assert store.get("p", "u2") == {"age": 41}
    # the flag is not part of the version's identity
    assert store.history("p", "u1")[0] == v


def test_update_and_increment_report_expired_too(
    store: FeatureStore, ttl_view: FeatureView
) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    assert store.update("p", "u1", {"age": 3}, event_time=old).expired
    assert store.increment("p", "u1", {"age": 1}, event_time=old).expired
    assert not store.increment("p", "u1", {"age": 1}).expired


def test_write_many_counts_rows_past_the_ttl(store: FeatureStore, ttl_view: FeatureView) -> None:
    now = datetime.now(UTC)
    rows = [
        {"entity_id": "a", "age": 1, "event_time": now - timedelta(days=31)},
        {"entity_id": "b", "age": 2, "event_time": now},
        {"entity_id": "c", "age": "bad", "event_time": now - timedelta(days=60)},  # refused
        {"entity_id": "d", "age": 4, "event_time": now - timedelta(days=90)},
    ]
    report = store.write_many("p", rows, event_time_column="event_time", on_error="skip")
    assert (report.written, report.expired, len(report.refused)) == (3, 2, 1)
    again = store.write_many("p", rows[:2], event_time_column="event_time")
    assert (again.duplicates, again.expired) == (2, 0)  # retries store nothing new
    assert store.write_many("p", [{"entity_id": "e", "age": 1}]).expired == 0


def test_views_without_ttl_never_report_expired(store: FeatureStore) -> None:
    store.apply(FeatureView("q", entity="user", fields=[Field("age", t.Int)]))
    assert not store.write("q", "u", {"age": 1}, event_time=datetime(2000, 1, 1)).expired
    rows = [{"entity_id": "a", "age": 1, "event_time": datetime(2000, 1, 1)}]
    assert store.write_many("q", rows, event_time_column="event_time").expired == 0


# -- item 16: the near cache: a per-call bypass, and get_features from the cache -------------


def _cached_store(client: redis.Redis, project: str) -> FeatureStore:
    store = FeatureStore(client=client, project=project, cache=Cache(max_entries=1000))
    store.apply(
        FeatureView("cv", entity="user", fields=[Field("x", t.Int), Field("y", t.Float)], ttl="1h"),
        FeatureView("cw", entity="user", fields=[Field("z", t.String)]),
    )
    return store


def _behind_its_back(client: redis.Redis, project: str, view: str, entity: str, x: int) -> None:
    """Change a cached value without telling the cache (no change event reaches it): only a
    read that bypasses the cache can see it."""
    other = FeatureStore(client=client, project=project, feed_cap=0)
    try:
        other.write(view, entity, {"x": x, "y": 0.5})
    finally:
        other.close()


def test_get_with_cache_false_reads_redis(client: redis.Redis, project: str) -> None:
    store = _cached_store(client, project)
    try:
        store.write("cv", "a", {"x": 1, "y": 0.5})
        time.sleep(0.2)  # our write's own event comes back (and invalidates) first
        assert store.get("cv", "a") == {"x": 1, "y": 0.5}  # now cached
        _behind_its_back(client, project, "cv", "a", 2)
        assert store.get("cv", "a") == {"x": 1, "y": 0.5}  # the cache answers
        assert store.get("cv", "a", cache=False) == {"x": 2, "y": 0.5}
        assert store.get_many("cv", ["a"], cache=False) == [{"x": 2, "y": 0.5}]
        assert store.get_many("cv", ["a"]) == [{"x": 1, "y": 0.5}]  # left as it was
        assert store.get_features(["a"], ["cv:x"], cache=False) == [{"x": 2}]
        with pytest.raises(ConfigurationError, match="cache"):
            store.get("cv", "a", cache="no")  # type: ignore[arg-type]
    finally:
        store.close()


def test_get_features_is_served_from_the_cache(client: redis.Redis, project: str) -> None:
    store = _cached_store(client, project)
    try:
        store.write("cv", "a", {"x": 1, "y": 0.5})
        store.write("cw", "a", {"z": "hi"})
        time.sleep(0.2)  # our writes' own events come back (and invalidate) first
        cache = store.cache
        assert cache is not None
        first = store.get_features(["a", "nobody"], ["cv:x", "cw:z", "cv:y"])
        assert first == [{"x": 1, "z": "hi", "y": 0.5}, {"x": None, "z": None, "y": None}]
        hits = cache.stats()["hits"]
        _behind_its_back(client, project, "cv", "a", 2)
        again = store.get_features(["a", "nobody"], ["cv:x", "cw:z", "cv:y"])
        assert again == first  # every row from memory: the cache never heard of x=2
        assert cache.stats()["hits"] == hits + 4
        # rows get_many cached serve get_features, and the other way round
        store.write("cv", "b", {"x": 5, "y": 1.5})
        time.sleep(0.2)
        assert store.get_many("cv", ["b"]) == [{"x": 5, "y": 1.5}]
        before = cache.stats()["hits"]
        assert store.get_features(["b"], ["cv:y"]) == [{"y": 1.5}]
        assert cache.stats()["hits"] == before + 1
        # a write through the store invalidates what get_features serves
        store.write("cv", "a", {"x": 3, "y": 0.5})
        assert store.get_features(["a"], ["cv:x"]) == [{"x": 3}]
        frame = store.get_features(["a", "b"], ["cv:x"], as_frame=True)
        assert frame["x"].tolist() == [3, 5]
    finally:
        store.close()
