"""Named versions and single-version deletes (issue 17 item 13: the seed's
storeFeatures(id, f, "v2") and deleteFeatures(id, version))."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from redfeat import ConfigurationError, FeatureStore, FeatureView, Field, NotFoundError
from redfeat import types as t

T0 = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def _apply(store: FeatureStore, **kw: object) -> None:
    store.apply(FeatureView("v", entity="user", fields=[Field("x", t.Int)], **kw))  # type: ignore[arg-type]


def test_a_tagged_write_is_read_back_by_its_tag(store: FeatureStore) -> None:
    _apply(store)
    v1 = store.write("v", "a", {"x": 1}, event_time=T0, tag="v1")
    v2 = store.write("v", "a", {"x": 2}, event_time=T0 + H, tag="v2")
    store.write("v", "a", {"x": 3}, event_time=T0 + 2 * H)
    assert store.version("v", "a", tag="v1") == v1
    assert store.version("v", "a", tag="v2").values == {"x": 2}
    assert store.version("v", "a", v2.id) == v2
    v4 = store.write("v", "a", {"x": 4}, event_time=T0 + 3 * H, tag="v1")  # the name moves
    assert store.version("v", "a", tag="v1") == v4
    with pytest.raises(NotFoundError, match="no version tagged 'nope'"):
        store.version("v", "a", tag="nope")
    with pytest.raises(NotFoundError):
        store.version("v", "b", tag="v1")  # tags are per entity
    with pytest.raises(ConfigurationError, match="one of them"):
        store.version("v", "a", v2.id, tag="v2")
    with pytest.raises(ConfigurationError, match="one of them"):
        store.version("v", "a")


def test_a_bad_tag_writes_nothing(store: FeatureStore) -> None:
    _apply(store)
    for bad in ("", 5, "x" * 300):
        with pytest.raises(ConfigurationError, match="tag"):
            store.write("v", "a", {"x": 1}, tag=bad)  # type: ignore[arg-type]
    assert store.get("v", "a") is None


def test_delete_version_of_history_and_of_the_latest(store: FeatureStore) -> None:
    _apply(store)
    v1 = store.write("v", "a", {"x": 1}, event_time=T0)
    v2 = store.write("v", "a", {"x": 2}, event_time=T0 + H, tag="mid")
    v3 = store.write("v", "a", {"x": 3}, event_time=T0 + 2 * H)
    assert store.delete_version("v", "a", v2.id) is True
    assert store.delete_version("v", "a", v2.id) is False  # gone already
    assert [v.id for v in store.history("v", "a")] == [v3.id, v1.id]
    with pytest.raises(NotFoundError):
        store.version("v", "a", tag="mid")  # the tag went with it
    with pytest.raises(NotFoundError):
        store.version("v", "a", v2.id)
    # the latest: the newest remaining version becomes the latest
    assert store.delete_version("v", "a", v3.id) is True
    assert store.get("v", "a") == {"x": 1}
    assert [v.id for v in store.history("v", "a")] == [v1.id]
    assert store.get("v", "a", as_of=T0 + 3 * H) == {"x": 1}
    # writes go on from there
    v5 = store.write("v", "a", {"x": 5}, event_time=T0 + 4 * H)
    assert [v.id for v in store.history("v", "a")] == [v5.id, v1.id]
    assert store.delete_version("v", "a", v1.id) and store.delete_version("v", "a", v5.id)
    assert store.get("v", "a") is None and store.history("v", "a") == []
    with pytest.raises(ConfigurationError, match="version id"):
        store.delete_version("v", "a", "1")  # type: ignore[arg-type]


def test_delete_version_with_a_ttl_keeps_the_expiry(store: FeatureStore) -> None:
    _apply(store, ttl="1h", history=10)
    now = datetime.now(UTC)
    old = store.write("v", "a", {"x": 1}, event_time=now - 2 * H)  # already past the ttl
    new = store.write("v", "a", {"x": 2}, event_time=now)
    assert store.delete_version("v", "a", new.id) is True
    assert store.get("v", "a") is None  # the one left is past the ttl: reads as missing
    assert [v.id for v in store.history("v", "a")] == [old.id]


def test_delete_removes_the_tags_too(store: FeatureStore) -> None:
    _apply(store)
    store.write("v", "a", {"x": 1}, tag="t")
    assert store.delete("v", "a")
    store.write("v", "a", {"x": 2})
    with pytest.raises(NotFoundError):
        store.version("v", "a", tag="t")


def test_an_int_id_is_tagged_as_its_str(store: FeatureStore) -> None:
    # found by the bad-input property test: write(view, 7, ..., tag=) stored the version,
    # then failed to tag it (TypeError)
    _apply(store)
    v = store.write("v", 7, {"x": 1}, event_time=T0, tag="v1")
    assert store.version("v", 7, tag="v1") == v == store.version("v", "7", tag="v1")
    assert store.delete_version("v", 7, v.id)


def test_a_tag_that_is_not_unicode_is_refused_before_writing(store: FeatureStore) -> None:
    # found by the bad-input property test: a lone surrogate failed after the write
    _apply(store)
    with pytest.raises(ConfigurationError, match="tag"):
        store.write("v", "a", {"x": 1}, event_time=T0, tag="\ud800")
    assert store.get("v", "a") is None
    with pytest.raises(ConfigurationError, match="tag"):
        store.version("v", "a", tag="\ud800")
