"""Derived views: transforms of a source view, materialised on write or computed on read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
import redis

from redfeat import ConfigurationError, FeatureStore, FeatureView, Field, NotFoundError
from redfeat import types as t
from redfeat.transforms.builtins import bucketize, seed_scenario

T0 = datetime(2026, 1, 1, tzinfo=UTC)

SEED = seed_scenario()

PROFILE = FeatureView(
    "user_profile",
    entity="user",
    fields=[
        Field("age", t.Int),
        Field("income", t.Float),
        Field("credit_score", t.Int),
        Field("purchase_history_length", t.Int),
        Field("avg_order_value", t.Float),
    ],
)


def setup(store: FeatureStore, on_read: bool = False) -> None:
    store.apply(
        PROFILE,
        FeatureView(
            "user_derived", entity="user", source="user_profile", transforms=SEED, on_read=on_read
        ),
    )


ROW: dict[str, Any] = {
    "age": 25,
    "income": 30000.0,
    "credit_score": 740,
    "purchase_history_length": 24,
    "avg_order_value": 100.01,
}
EXPECTED = {
    "age_group": "young_adult",
    "income_category": "medium",
    "credit_category": "excellent",
    "purchase_frequency": "regular",
    "spending_level": "high",
    "normalized_income": 0.0,
}


@pytest.mark.parametrize("on_read", [False, True])
def test_seed_scenario_on_write_and_on_read(store: FeatureStore, on_read: bool) -> None:
    setup(store, on_read)
    v = store.write("user_profile", "u1", ROW, event_time=T0)
    assert store.get("user_derived", "u1") == EXPECTED
    assert store.get("user_derived", "u1", features=["age_group"]) == {"age_group": "young_adult"}
    if not on_read:
        (d,) = store.history("user_derived", "u1")
        assert d.event_time == v.event_time == T0  # versioned with the source's event time
    store.update("user_profile", "u1", {"age": 55, "purchase_history_length": 25})
    got = store.get("user_derived", "u1")
    assert got is not None
    assert got["age_group"] == "senior" and got["purchase_frequency"] == "frequent"
    store.increment("user_profile", "u1", {"income": 170000.0})
    got = store.get("user_derived", "u1")
    assert got is not None and got["normalized_income"] == 1.0
    assert got["income_category"] == "high"
    store.delete("user_profile", "u1")
    assert store.get("user_derived", "u1") is None


def test_write_many_materialises_with_the_same_event_times(store: FeatureStore) -> None:
    setup(store)
    rows = [
        {"entity_id": f"u{i}", **ROW, "age": 20 + i, "ts": T0 + timedelta(hours=i)}
        for i in range(40)
    ]
    store.write_many("user_profile", rows, event_time_column="ts")
    got = store.get_many("user_derived", ["u0", "u5", "u15", "u35"], features=["age_group"])
    assert [g["age_group"] for g in got if g] == ["young", "young_adult", "adult", "senior"]
    assert store.history("user_derived", "u7")[0].event_time == T0 + timedelta(hours=7)
    frame = pd.DataFrame([{"entity_id": "p1", **ROW}])
    store.write_many("user_profile", frame)  # no event time column: now, for both views
    src, der = store.history("user_profile", "p1")[0], store.history("user_derived", "p1")[0]
    assert src.event_time == der.event_time
    out = store.training_frame(
        pd.DataFrame({"entity_id": ["u3"], "event_time": [T0 + timedelta(hours=3)]}),
        ["user_derived:age_group", "user_profile:age"],
    )
    assert out["age_group"].tolist() == ["young"] and out["age"].tolist() == [23]


def test_custom_transform_and_registry_record(store: FeatureStore, client: redis.Redis) -> None:
    @store.transform(
        "spend_per_purchase",
        inputs=["avg_order_value", "purchase_history_length"],
        outputs=[Field("total_spend", t.Float)],
    )
    def total(row: dict[str, Any]) -> dict[str, Any]:
        return {"total_spend": row["avg_order_value"] * row["purchase_history_length"]}

    store.apply(
        PROFILE,
        FeatureView(
            "spend",
            entity="user",
            source="user_profile",
            transforms=[store.transforms.get("spend_per_purchase")],
        ),
    )
    store.write("user_profile", "u", ROW)
    assert store.get("spend", "u") == {"total_spend": pytest.approx(100.01 * 24)}
    recorded = client.hget(store.keys.registry, "transform:spend_per_purchase")
    assert recorded is not None and b"code_hash" in recorded and b"created_at" in recorded
    other = FeatureStore(client=client, project=store.project)  # a process without it
    with pytest.raises(NotFoundError, match="spend_per_purchase"):
        other.write("user_profile", "u", ROW)


def test_bad_derived_views_are_refused(store: FeatureStore) -> None:
    store.apply(PROFILE)
    with pytest.raises(ConfigurationError, match="reads"):
        store.apply(
            FeatureView(
                "d",
                entity="user",
                source="user_profile",
                transforms=[bucketize("nope", [1], ["a", "b"])],
            )
        )
    with pytest.raises(NotFoundError, match="not defined"):
        store.apply(FeatureView("d", entity="user", source="ghost", transforms=SEED))
    with pytest.raises(ConfigurationError):
        FeatureView("d", entity="user", source="user_profile")
    with pytest.raises(ConfigurationError):
        FeatureView("d", entity="user", fields=[Field("x", t.Int)], on_read=True)


def test_missing_custom_transform_fails_before_writing(
    store: FeatureStore, client: redis.Redis
) -> None:
    @store.transform("double_age", inputs=["age"], outputs=[Field("age2", t.Int)])
    def double(row: dict[str, Any]) -> dict[str, Any]:
        return {"age2": row["age"] * 2}

    store.apply(
        PROFILE,
        FeatureView(
            "d",
            entity="user",
            source="user_profile",
            transforms=[store.transforms.get("double_age")],
        ),
    )
    other = FeatureStore(client=client, project=store.project)
    with pytest.raises(NotFoundError, match="double_age"):
        other.write("user_profile", "u", ROW)
    assert store.get("user_profile", "u") is None
    with pytest.raises(ConfigurationError, match="computed on read"):
        setup(store, on_read=True)
        store.write("user_derived", "u", {"age_group": "young"})


def test_on_read_views_in_get_features_and_training_frames(store: FeatureStore) -> None:
    setup(store, on_read=True)
    store.write("user_profile", "u1", ROW, event_time=T0)
    rows = store.get_features(["u1", "u2"], ["user_derived:age_group", "user_profile:age"])
    assert rows == [{"age_group": "young_adult", "age": 25}, {"age_group": None, "age": None}]
    with pytest.raises(ConfigurationError, match="computed on read"):
        store.training_frame(
            pd.DataFrame({"entity_id": ["u1"], "event_time": [T0]}), ["user_derived:age_group"]
        )
