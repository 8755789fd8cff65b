"""Reading a view's change feed in pages, by cursor, gives every new version exactly once
and each entity's versions in the order they were written: on one node (one feed) and on a
cluster, where the feed is one stream per partition and the cursor holds every partition's
position. A cursor that fell behind a trim is told so, in any partition."""

from __future__ import annotations

import pytest
import redis

from redfeat import FeatureStore, FeatureView, FeedTrimmedError, Field
from redfeat import types as t


def _view(store: FeatureStore) -> None:
    store.apply(FeatureView("v", entity="user", fields=[Field("x", t.Int)], history=100))


def test_paged_changes_give_every_version_once_in_entity_order(store: FeatureStore) -> None:
    _view(store)
    written: list[tuple[str, int]] = []
    cursor: str | None = None
    seen: list[tuple[str, int]] = []
    for round_ in range(6):
        batch = [(f"e{i}", round_ * 1000 + i) for i in range(round_, 120, 3)]
        store.write_many("v", [{"entity_id": e, "x": x} for e, x in batch])
        written += batch
        store.write("v", "single", {"x": round_})
        written.append(("single", round_))
        while True:  # small pages: resuming from a cursor in the middle of the merge
            events, cursor = store.changes("v", since=cursor, limit=17)
            if not events:
                break
            for ev in events:
                got = store.version("v", ev.entity_id, ev.version_id)
                seen.append((ev.entity_id, got.values["x"]))
    assert sorted(seen) == sorted(written)  # none missed, none repeated
    for entity in {e for e, _ in written}:
        assert [x for e, x in seen if e == entity] == [x for e, x in written if e == entity]
    # any event's cursor resumes right after it
    events, _ = store.changes("v", limit=10_000)
    mid = events[len(events) // 2].cursor
    last = max(j for j, e in enumerate(events) if e.cursor == mid)  # one entry, one cursor
    after, _ = store.changes("v", since=mid, limit=10_000)
    assert [(e.entity_id, e.version_id) for e in after] == [
        (e.entity_id, e.version_id) for e in events[last + 1 :]
    ]


def test_a_cursor_behind_a_trim_in_any_partition_raises(
    store: FeatureStore, client: redis.Redis
) -> None:
    _view(store)
    capped = FeatureStore(client=client, project=store.keys.project, feed_cap=32)
    try:
        capped.write("v", "first", {"x": 0})
        _, cursor = capped.changes("v")
        assert cursor is not None
        for b in range(20):  # entries of up to 256 versions: trimmed whole, oldest first
            capped.write_many("v", [{"entity_id": f"e{i}", "x": b} for i in range(100)])
        with pytest.raises(FeedTrimmedError) as err:
            capped.changes("v", since=cursor)
        events, _ = capped.changes("v", since=err.value.resume, limit=100_000)
        assert events and len(events) < 2000
        assert {e.entity_id for e in events} >= {f"e{i}" for i in range(100)}
    finally:
        capped.close()
