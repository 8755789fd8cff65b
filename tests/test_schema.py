"""Definitions, durations and the registry kept in Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis

from redfeat import (
    ConfigurationError,
    ConflictError,
    Entity,
    FeatureStore,
    FeatureView,
    Field,
    NotFoundError,
)
from redfeat import types as t
from redfeat.core.time import duration_us

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "us"),
    [
        ("90s", 90_000_000),
        ("5m", 300_000_000),
        ("24h", 86_400_000_000),
        ("7d", 604_800_000_000),
        ("1.5h", 5_400_000_000),
        (timedelta(minutes=2), 120_000_000),
        (30, 30_000_000),
    ],
)
def test_durations(text: object, us: int) -> None:
    assert duration_us(text) == us  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "5", "5 parsecs", "-1h", "0s", True, None, float("inf")])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        duration_us(bad)  # type: ignore[arg-type]


def test_types_describe_themselves() -> None:
    assert repr(t.Vector(8)) == "t.Vector(8, metric='cosine')"
    assert t.from_spec(t.List(t.Float).spec()) == t.List(t.Float)
    assert t.from_spec(t.Category(["a", "b"]).spec()) == t.Category(["a", "b"])
    for bad in (
        lambda: t.Vector(0),
        lambda: t.Vector(4, metric="dot"),
        lambda: t.Category([]),
        lambda: t.List(t.Bool),
        lambda: t.Category(["a", "a"]),
    ):
        with pytest.raises(ConfigurationError):
            bad()


@pytest.mark.parametrize(
    "make",
    [
        lambda: Field("bad name", t.Int),
        lambda: Field("x", t.String, min=1),
        lambda: Field("x", t.Int, min=5, max=1),
        lambda: Field("x", t.Int, min=float("nan")),
        lambda: Field("x", t.Int, pattern="a"),
        lambda: Field("x", t.String, pattern="("),
        lambda: Field("x", t.Int, max_length=3),
        lambda: Field("x", t.Int, categories=["a"]),
        lambda: Field("x", "int"),  # type: ignore[arg-type]
        lambda: FeatureView("v", entity="user", fields=[]),
        lambda: FeatureView("v", entity="user", fields=[Field("a", t.Int), Field("a", t.Int)]),
        lambda: FeatureView("v:x", entity="user", fields=[Field("a", t.Int)]),
        lambda: FeatureView("v", entity="us{er", fields=[Field("a", t.Int)]),
        lambda: FeatureView("v", entity="user", fields=[Field("a", t.Int)], history=-1),
        lambda: FeatureView("v", entity="user", fields=[Field("a", t.Int)], ttl="forever"),
        lambda: Entity("a b"),
    ],
)
def test_bad_definitions_are_refused(make: object) -> None:
    with pytest.raises(ConfigurationError):
        make()  # type: ignore[operator]


def test_view_spec_round_trips() -> None:
    view = FeatureView(
        "v",
        entity=Entity("user"),
        fields=[Field("a", t.Int, min=0, description="age"), Field("e", t.Vector(3, "l2"))],
        ttl="24h",
        history="30d",
        tags={"team": "risk"},
    )
    again = FeatureView.from_spec(view.spec())
    assert again.spec() == view.spec()
    assert again.ttl == timedelta(hours=24)
    assert again.history.duration_us == 30 * 86_400_000_000


def test_apply_is_idempotent_and_visible_to_other_processes(
    store: FeatureStore, client: redis.Redis
) -> None:
    user = Entity("user")
    view = FeatureView("v", entity=user, fields=[Field("a", t.Int)], description="d")
    assert store.apply(user, view) == {"user": "created", "v": "created"}
    assert store.apply(user, view) == {"user": "unchanged", "v": "unchanged"}
    other = FeatureStore(client=client, project=store.project)
    assert [v.name for v in other.views()] == ["v"]
    assert other.view("v").description == "d"
    assert [e.name for e in other.entities()] == ["user"]
    with pytest.raises(NotFoundError, match="apply"):
        other.view("nope")


def test_views_applied_elsewhere_are_found_on_first_use(
    store: FeatureStore, client: redis.Redis
) -> None:
    other = FeatureStore(client=client, project=store.project)
    other.views()  # other caches an empty registry
    store.apply(FeatureView("late", entity="user", fields=[Field("a", t.Int)]))
    other.write("late", "u", {"a": 1})
    assert store.get("late", "u") == {"a": 1}


def test_adding_a_field_is_compatible_and_old_rows_stay_readable(store: FeatureStore) -> None:
    store.apply(FeatureView("v", entity="user", fields=[Field("a", t.Int)]))
    store.write("v", "u", {"a": 1}, event_time=T0)
    result = store.apply(
        FeatureView("v", entity="user", fields=[Field("a", t.Int), Field("b", t.String)])
    )
    assert result == {"v": "updated"}
    assert store.view("v").schema_version == 1
    assert store.get("v", "u") == {"a": 1, "b": None}
    store.write("v", "u2", {"a": 2, "b": "x"})
    assert store.get("v", "u2") == {"a": 2, "b": "x"}


def test_breaking_changes_need_allow_breaking(store: FeatureStore) -> None:
    store.apply(FeatureView("v", entity="user", fields=[Field("a", t.Int), Field("b", t.Int)]))
    store.write("v", "u", {"a": 1, "b": 2}, event_time=T0)
    retyped = FeatureView("v", entity="user", fields=[Field("a", t.String), Field("b", t.Int)])
    with pytest.raises(ConflictError, match="allow_breaking"):
        store.apply(retyped)
    removed = FeatureView("v", entity="user", fields=[Field("b", t.Int)])
    with pytest.raises(ConflictError, match="removes"):
        store.apply(removed)
    assert store.view("v").schema_version == 1
    store.apply(retyped, allow_breaking=True)
    assert store.view("v").schema_version == 2
    # the retyped field reads as null in old rows; the untouched one keeps its value
    assert store.get("v", "u") == {"a": None, "b": 2}
    store.write("v", "u", {"a": "now a string", "b": 3})
    assert store.get("v", "u") == {"a": "now a string", "b": 3}
    hist = store.history("v", "u")
    assert [h.values for h in hist] == [{"a": "now a string", "b": 3}, {"a": None, "b": 2}]


def test_constraint_changes_are_compatible(store: FeatureStore) -> None:
    store.apply(FeatureView("v", entity="user", fields=[Field("a", t.Int)]))
    store.apply(FeatureView("v", entity="user", fields=[Field("a", t.Int, max=3)], ttl="1h"))
    view = store.view("v")
    assert view.field("a").max == 3 and view.ttl == timedelta(hours=1)
    assert view.schema_version == 1


def test_apply_rejects_other_objects(store: FeatureStore) -> None:
    with pytest.raises(ConfigurationError):
        store.apply("v")  # type: ignore[arg-type]
    view = FeatureView("v", entity="user", fields=[Field("a", t.Int)])
    with pytest.raises(ConfigurationError):
        store.apply(view, view)


def test_projects_are_isolated(client: redis.Redis, project: str) -> None:
    a = FeatureStore(client=client, project=project + "a")
    b = FeatureStore(client=client, project=project + "b")
    try:
        for s in (a, b):
            s.apply(FeatureView("v", entity="user", fields=[Field("x", t.Int)]))
        a.write("v", "u", {"x": 1})
        assert b.get("v", "u") is None
    finally:
        for s in (a, b):
            s.delete_view("v")
            s.client.delete(s.keys.registry)
    with pytest.raises(ConfigurationError):
        FeatureStore(client=client, project="bad project")
