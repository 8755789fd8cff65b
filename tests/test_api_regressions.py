"""Regressions of issue 17 (items 9-16): each test failed before its fix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t

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
