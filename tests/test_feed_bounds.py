"""The change feed stays within what it is allowed to hold (versions and age), and a reader
that falls behind the trim is told so, never silently skipped ahead."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import redis

from redfeat import FeatureStore, FeatureView, FeedTrimmedError, Field
from redfeat import types as t
from redfeat.core.records import ChangeEvent


def _store(client: redis.Redis, project: str, **kw: Any) -> FeatureStore:
    store = FeatureStore(client=client, project=project, **kw)
    store.apply(FeatureView("v", entity="user", fields=[Field("x", t.Int)]))
    return store


def _versions_in_feed(client: redis.Redis, key: str) -> int:
    n = 0
    rows: Any = client.xrange(key)
    for _, data in rows:
        pairs = np.frombuffer(data[b"v"], dtype=">i8").reshape(-1, 2)
        n += int((pairs[:, 0] != 0).sum())
    return n


def test_feed_cap_counts_versions_under_a_long_write_run(client: redis.Redis, project: str) -> None:
    cap = 1000
    store = _store(client, project, feed_cap=cap)
    try:
        key = store.keys.feed("v")
        most = 0
        for round_ in range(40):
            # a mix of bulk calls (one feed entry of up to 256 versions) and single writes
            store.write_many("v", [{"entity_id": f"e{i}", "x": round_} for i in range(300)])
            for i in range(20):
                store.write("v", f"s{i}", {"x": round_})
            most = max(most, _versions_in_feed(client, key))
        # the newest `cap` versions, plus at most one trim step and one entry's worth
        assert cap <= most <= cap + 128 + 255
        events, _ = store.changes("v", limit=10_000)
        assert cap <= len(events) <= cap + 128 + 255
        assert events[-1].entity_id == "s19"  # the newest are what is kept
    finally:
        store.delete_view("v")
        client.delete(store.keys.registry)


def test_feed_retention_trims_by_age(client: redis.Redis, project: str) -> None:
    store = _store(client, project, feed_retention="300ms")
    try:
        key = store.keys.feed("v")
        # stream nodes hold up to 100 entries: fill several, then let them age
        for i in range(450):
            store.write("v", f"old{i}", {"x": i})
        time.sleep(0.4)
        store.write("v", "new", {"x": 1})
        # MINID ~ drops whole nodes only: the partly old node may stay
        assert client.xlen(key) <= 101
        events, _ = store.changes("v", limit=10_000)
        assert events[-1].entity_id == "new"
        assert all(e.entity_id != "old0" for e in events)
    finally:
        store.delete_view("v")
        client.delete(store.keys.registry)


def test_a_cursor_behind_the_trim_gets_a_gap_error_with_the_way_on(
    client: redis.Redis, project: str
) -> None:
    store = _store(client, project, feed_cap=50)
    try:
        store.write("v", "first", {"x": 0})
        _, cursor = store.changes("v")
        assert cursor is not None
        for i in range(300):
            store.write("v", f"e{i}", {"x": i})
        with pytest.raises(FeedTrimmedError) as err:
            store.changes("v", since=cursor)
        exc = err.value
        assert exc.view == "v" and exc.since == cursor and exc.resume
        assert "'v'" in str(exc) and "changes(since=" in str(exc)
        events, _ = store.changes("v", since=exc.resume, limit=10_000)
        assert events and events[-1].entity_id == "e299"
        assert 50 <= len(events) <= 50 + 6 + 1
        # a cursor not behind the trim reads on without complaint
        assert store.changes("v", since=events[-1].cursor) == ([], events[-1].cursor)
    finally:
        store.delete_view("v")
        client.delete(store.keys.registry)


def test_a_subscriber_that_fell_behind_the_trim_gets_a_trimmed_event(
    client: redis.Redis, project: str
) -> None:
    store = _store(client, project, feed_cap=20)
    sub = store.subscribe("v")
    try:
        store.write("v", "a", {"x": 1})
        assert [e.entity_id for e in sub.poll(2.0)] == ["a"]
        client.client_kill_filter(_type="pubsub")
        for i in range(200):  # written while the subscriber is away, beyond the cap
            store.write("v", f"e{i}", {"x": i})
        seen: list[ChangeEvent] = []
        deadline = time.time() + 10
        while not any(e.entity_id == "e199" for e in seen) and time.time() < deadline:
            seen.extend(sub.poll(0.5))
        kinds = [e.kind for e in seen]
        assert "gap" in kinds and "trimmed" in kinds
        trimmed = next(e for e in seen if e.kind == "trimmed")
        assert trimmed.view == "v" and trimmed.cursor
        writes = [e.entity_id for e in seen if e.kind == "write"]
        assert writes[-1] == "e199" and len(writes) < 200
    finally:
        sub.close()
        store.delete_view("v")
        client.delete(store.keys.registry)


def test_feed_retention_is_checked(client: redis.Redis, project: str) -> None:
    from redfeat import ConfigurationError

    with pytest.raises(ConfigurationError, match="feed_retention"):
        FeatureStore(client=client, project=project, feed_retention="soon")
