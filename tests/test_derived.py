"""Derived views: transforms of a source view, materialised on write or computed on read."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redfeat import (
    ConfigurationError,
    FeatureStore,
    FeatureView,
    Field,
    NotFoundError,
    ValidationError,
)
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


# -- issue 17.5: a row a derived view refuses is refused before anything is written ------


def _refusing(store: FeatureStore) -> None:
    """user_profile -> "logs": a custom transform that fails on a negative income, and
    an output the derived view bounds (a huge income gives a value above its maximum)."""

    @store.transform(
        "log_income", inputs=["income"], outputs=[Field("log_income", t.Float, max=12)]
    )
    def log_income(row: dict[str, Any]) -> dict[str, Any]:
        income = row["income"]
        if income is not None and income < 0:
            raise ValueError(f"negative income {income}")
        return {"log_income": None if income is None else math.log1p(income)}

    store.apply(
        PROFILE,
        FeatureView(
            "logs",
            entity="user",
            source="user_profile",
            transforms=[store.transforms.get("log_income")],
        ),
    )


GOOD: dict[str, Any] = {"entity_id": "good", **ROW, "income": 100.0}
NEGATIVE: dict[str, Any] = {"entity_id": "neg", **ROW, "income": -1.0}
HUGE: dict[str, Any] = {"entity_id": "huge", **ROW, "income": 1e10}


def test_write_many_refuses_what_a_derived_view_refuses_before_writing(
    store: FeatureStore,
) -> None:
    _refusing(store)
    with pytest.raises(ValidationError) as err:
        store.write_many("user_profile", [GOOD, NEGATIVE, HUGE])
    text = str(err.value)
    assert "nothing was written" in text and "'logs'" in text
    assert "negative income -1.0" in text and "maximum" in text
    assert {p.row for p in err.value.problems} == {1, 2}
    assert store.get_many("user_profile", ["good", "neg", "huge"]) == [None, None, None]

    report = store.write_many("user_profile", [GOOD, NEGATIVE, HUGE], on_error="skip")
    assert report.written == 1 and [i for i, _ in report.refused] == [1, 2]
    assert "negative income" in str(report.refused[0][1])
    assert store.get("user_profile", "good") is not None
    assert store.get("logs", "good") == {"log_income": pytest.approx(math.log1p(100.0))}
    assert store.get_many("user_profile", ["neg", "huge"]) == [None, None]
    assert store.get_many("logs", ["neg", "huge"]) == [None, None]
    # a row the source refuses itself is reported with the source's reason
    bad_type = {"entity_id": "typo", **ROW, "income": "lots"}
    report = store.write_many("user_profile", [bad_type], on_error="skip")
    (only,) = report.refused
    assert "income" in str(only[1]) and "'user_profile'" in str(only[1])


def test_single_writes_refuse_what_a_derived_view_refuses(store: FeatureStore) -> None:
    _refusing(store)
    with pytest.raises(ValidationError, match="negative income"):
        store.write("user_profile", "u", {**ROW, "income": -5.0})
    assert store.get("user_profile", "u") is None
    store.write("user_profile", "u", ROW)
    before = store.history("user_profile", "u")
    with pytest.raises(ValidationError, match="maximum"):
        store.update("user_profile", "u", {"income": 1e12})
    with pytest.raises(ValidationError, match="negative income"):
        store.increment("user_profile", "u", {"income": -1e6})
    assert store.history("user_profile", "u") == before  # nothing written
    assert store.get("logs", "u") == {"log_income": pytest.approx(math.log1p(30000.0))}


def test_missing_input_columns_read_as_null_in_both_views(store: FeatureStore) -> None:
    setup(store)
    report = store.write_many("user_profile", [{"entity_id": "a", "age": 30}])
    assert report.written == 1 and not report.refused
    got = store.get("user_derived", "a")
    assert got is not None and got["age_group"] == "young_adult"
    assert got["income_category"] is None  # no income: no income category, and no error


def test_worker_dead_letters_only_refused_rows_with_their_own_error(
    store: FeatureStore,
) -> None:
    _refusing(store)
    store.push("user_profile", [GOOD, NEGATIVE, HUGE])
    stats = store.run_worker(["user_profile"], until_idle=True)
    assert (stats.rows, stats.dead) == (1, 2)
    dead = {d["row"]["entity_id"]: d["error"] for d in store.dead_letters("user_profile")}
    assert set(dead) == {"neg", "huge"}
    assert "negative income" in dead["neg"] and "maximum" in dead["huge"]
    assert store.get_many("user_profile", ["neg", "huge"]) == [None, None]  # not stored
    assert store.get("logs", "good") is not None


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    incomes=st.lists(
        st.one_of(st.floats(-1e3, 1e3), st.just(1e9), st.just(-0.5)), min_size=1, max_size=8
    ),
    on_error=st.sampled_from(["raise", "skip"]),
)
def test_refusals_by_derived_views_never_half_write(
    store: FeatureStore, incomes: list[float], on_error: str
) -> None:
    if "logs" not in {v.name for v in store.views()}:
        _refusing(store)
    tag = uuid.uuid4().hex[:8]
    rows = [{"entity_id": f"{tag}-{i}", **ROW, "income": x} for i, x in enumerate(incomes)]
    bad = {i for i, x in enumerate(incomes) if x < 0 or math.log1p(x) > 12}
    ids = [r["entity_id"] for r in rows]
    if on_error == "raise" and bad:
        with pytest.raises(ValidationError) as err:
            store.write_many("user_profile", rows)
        assert {p.row for p in err.value.problems} == bad
        assert store.get_many("user_profile", ids) == [None] * len(ids)
        return
    report = store.write_many("user_profile", rows, on_error=on_error)
    assert {i for i, _ in report.refused} == bad
    src = store.get_many("user_profile", ids)
    der = store.get_many("logs", ids)
    for i in range(len(rows)):
        assert (src[i] is None) == (i in bad) == (der[i] is None)


# -- issue 17.6: a new derived view is backfilled over what its source holds -----------


def _three_versions(store: FeatureStore, n: int) -> None:
    store.apply(PROFILE)
    for k in range(3):
        rows = [
            {"entity_id": f"u{i}", **ROW, "age": 20 + 10 * k + i % 5, "ts": T0 + timedelta(days=k)}
            for i in range(n)
        ]
        store.write_many("user_profile", rows, event_time_column="ts")


def test_apply_backfills_a_new_derived_view(store: FeatureStore) -> None:
    _three_versions(store, 30)
    seen: list[tuple[str, int, int]] = []
    derived = FeatureView(
        "user_derived", entity="user", source="user_profile", transforms=SEED, history=10
    )
    store.apply(derived, progress=lambda v, done, total: seen.append((v, done, total)))
    assert seen[0] == ("user_derived", 0, 30) and seen[-1] == ("user_derived", 30, 30)
    got = store.get("user_derived", "u1")
    assert got is not None and got["age_group"] == "adult"  # age 41: the latest version
    hist = store.history("user_derived", "u1")
    assert [v.event_time for v in hist] == [T0 + timedelta(days=k) for k in (2, 1, 0)]
    assert hist[-1].values["age_group"] == "young"  # age 21 as of day 0
    out = store.training_frame(
        pd.DataFrame({"entity_id": ["u1"], "event_time": [T0 + timedelta(days=1, hours=1)]}),
        ["user_derived:age_group"],
    )
    assert out["age_group"].tolist() == ["young_adult"]  # age 31: point in time correct
    assert store.apply(derived) == {"user_derived": "unchanged"}  # nothing to do again


def test_backfill_can_wait_and_changed_transforms_derive_again(store: FeatureStore) -> None:
    _three_versions(store, 12)
    later = FeatureView("later", entity="user", source="user_profile", transforms=SEED)
    store.apply(later, backfill=False)
    assert store.get("later", "u0") is None  # as documented: until written or backfilled
    assert store.backfill_derived("later") == 12 * 3
    assert store.backfill_derived("later") == 0  # everything has its derived version
    got = store.get("later", "u0")
    assert got is not None and got["age_group"] == "adult"
    labels = ["young", "young_adult", "adult", "senior"]
    coarse = bucketize("age", [100, 200, 300], labels, output="age_group")  # all "young"
    changed = FeatureView(
        "later", entity="user", source="user_profile", transforms=[coarse, *SEED[1:]]
    )
    assert store.apply(changed) == {"later": "updated"}
    assert store.get("later", "u0", features=["age_group"]) == {"age_group": "young"}
    assert store.history("later", "u0")[0].values["age_group"] == "young"
    with pytest.raises(ConfigurationError, match="not a materialised derived view"):
        store.backfill_derived("user_profile")
