"""Feature services: a named, versioned set of features read as one unit, online and in
training frames; store.plan as a dry run of apply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from redfeat import (
    ConfigurationError,
    ConflictError,
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    Field,
    NotFoundError,
    WindowFeatures,
)
from redfeat import types as t

T0 = datetime(2024, 1, 1, tzinfo=UTC)
USER = Entity("user", join_keys=["user_id"])
PAIR = Entity("user_merchant", join_keys=["user_id", ("merchant_id", t.Int)])
PROFILE = FeatureView("profile", entity=USER, fields=[Field("age", t.Int), Field("city", t.String)])
PAIRS = FeatureView(
    "pair_stats", entity=PAIR, fields=[Field("txn_count", t.Int), Field("amount", t.Float)]
)
SPEND = WindowFeatures(
    "spend", entity=USER, source="amount", aggs=["sum", "count"], windows=["1h"], hop="1m"
)


def test_service_definition_forms() -> None:
    svc = FeatureService(
        "fraud", features=[PAIRS, PROFILE[["age"]], "profile:city", SPEND, "profile:age"]
    )
    assert svc.features == (
        "pair_stats:txn_count",
        "pair_stats:amount",
        "profile:age",
        "profile:city",
        "spend:amount_sum_1h",
        "spend:amount_count_1h",
    )
    assert FeatureService("s", features=["profile"]).unresolved == ["profile"]
    for bad in ([], "profile:age", [1], ["profile:"], [":x"]):
        with pytest.raises(ConfigurationError):
            FeatureService("s", features=bad)
    with pytest.raises(ConfigurationError):
        FeatureService("bad name", features=["a:b"])
    with pytest.raises(ConfigurationError, match="no field"):
        PROFILE[["nope"]]


def test_apply_versions_and_reads_by_service(store: FeatureStore) -> None:
    v1 = FeatureService("fraud", features=[PAIRS, "profile:age"], description="model v1")
    result = store.apply(USER, PAIR, PROFILE, PAIRS, v1)
    assert result["fraud"] == "created"
    assert store.apply(v1) == {"fraud": "unchanged"}
    got = store.feature_service("fraud")
    assert got.version == 1 and got.features == v1.features and got.description == "model v1"
    store.write("profile", "u1", {"age": 30, "city": "Oslo"}, event_time=T0)
    store.write("pair_stats", ("u1", 9), {"txn_count": 2, "amount": 5.0}, event_time=T0)
    rows = [{"user_id": "u1", "merchant_id": 9}]
    assert store.get_features(entity_rows=rows, service="fraud") == [
        {"txn_count": 2, "amount": 5.0, "age": 30}
    ]
    # a new feature list is a new version; earlier versions stay readable
    v2 = FeatureService("fraud", features=[PAIRS, "profile"])  # a bare view: every field
    assert store.plan(v2) == {"fraud": "version 2"}
    assert store.apply(v2) == {"fraud": "version 2"}
    assert store.feature_service("fraud").features[-1] == "profile:city"
    assert store.get_features(entity_rows=rows, service="fraud")[0]["city"] == "Oslo"
    assert "city" not in store.get_features(entity_rows=rows, service="fraud@1")[0]
    assert store.feature_service("fraud", version=1).version == 1
    with pytest.raises(NotFoundError, match="versions"):
        store.feature_service("fraud", version=7)
    # removing features breaks what models read: only on purpose
    v3 = FeatureService("fraud", features=["pair_stats:amount"])
    assert store.plan(v3)["fraud"].startswith("version 3: breaking change")
    with pytest.raises(ConflictError, match="removes feature"):
        store.apply(v3)
    assert store.feature_service("fraud").version == 2
    store.apply(v3, allow_breaking=True)
    assert [s.name for s in store.feature_services()] == ["fraud"]
    # training frame by service, and the object itself
    edf = pd.DataFrame(
        {
            "user_id": ["u1", "u1"],
            "merchant_id": [9, 9],
            "event_time": [T0 - timedelta(hours=1), T0 + timedelta(hours=1)],
        }
    )
    out = store.training_frame(edf, service="fraud@2")
    assert list(out.columns)[3:] == ["txn_count", "amount", "age", "city"]
    assert out["age"].tolist() == [pd.NA, 30]
    out = store.training_frame(edf, service=store.feature_service("fraud"))
    assert list(out.columns)[3:] == ["amount"]
    with pytest.raises(ConfigurationError, match="not both"):
        store.training_frame(edf, ["profile:age"], service="fraud")
    with pytest.raises(ConfigurationError, match="service="):
        store.get_features(entity_rows=rows)
    with pytest.raises(ConfigurationError, match="version"):
        store.get_features(entity_rows=rows, service="fraud@x")
    store.delete_feature_service("fraud")
    with pytest.raises(NotFoundError, match="apply"):
        store.get_features(entity_rows=rows, service="fraud")


def test_services_are_checked_against_views_and_windows(store: FeatureStore) -> None:
    with pytest.raises(NotFoundError, match="neither a view"):
        store.apply(FeatureService("s", features=["profile:age"]))
    with pytest.raises(NotFoundError, match="no feature 'nope'"):
        store.apply(USER, PROFILE, FeatureService("s", features=["profile:nope"]))
    assert store.views() == []  # nothing was applied
    svc = FeatureService("s", features=["profile:age", "spend:amount_sum_1h"])
    assert store.apply(USER, PROFILE, SPEND, svc)["s"] == "created"
    store.write("profile", "u1", {"age": 3})
    store.record("spend", "u1", 4.0)
    assert store.get_features(["u1"], service="s") == [{"age": 3, "amount_sum_1h": 4.0}]
    with pytest.raises(NotFoundError, match="has no feature"):
        store.apply(FeatureService("s2", features=["spend:amount_max_1h"]))


def test_plan_is_a_dry_run(store: FeatureStore) -> None:
    assert store.plan(USER, PROFILE, SPEND) == {
        "user": "created",
        "profile": "created",
        "spend": "created",
    }
    assert store.views() == [] and store.window_features() == []
    store.apply(USER, PROFILE, SPEND)
    narrower = FeatureView("profile", entity=USER, fields=[Field("age", t.Int)])
    wider = FeatureView("profile", entity=USER, fields=[*PROFILE.fields, Field("score", t.Float)])
    other_hop = WindowFeatures(
        "spend", entity=USER, source="amount", aggs=["sum"], windows=["1h"], hop="5m"
    )
    assert store.plan(narrower)["profile"].startswith("breaking change: removes field")
    assert store.plan(wider) == {"user": "unchanged", "profile": "updated"}
    assert store.plan(other_hop)["spend"].startswith("breaking change")
    assert store.plan(USER, PROFILE, SPEND) == {
        "user": "unchanged",
        "profile": "unchanged",
        "spend": "unchanged",
    }
    assert [f.name for f in store.view("profile").fields] == ["age", "city"]


def test_http_features_by_entity_rows_and_service(store: FeatureStore) -> None:
    from starlette.testclient import TestClient

    from redfeat.serve.http import create_app

    store.apply(USER, PAIR, PROFILE, PAIRS, FeatureService("fraud", features=[PAIRS, "profile"]))
    store.write("profile", "u1", {"age": 30, "city": "Oslo"})
    store.write("pair_stats", ("u1", 9), {"txn_count": 2, "amount": 5.0})
    with TestClient(create_app(store)) as http:
        rows = [{"user_id": "u1", "merchant_id": 9}, {"user_id": "u2", "merchant_id": 1}]
        got = http.post("/features", json={"entity_rows": rows, "service": "fraud"})
        assert got.status_code == 200, got.text
        assert got.json()["rows"] == [
            {"txn_count": 2, "amount": 5.0, "age": 30, "city": "Oslo"},
            {"txn_count": None, "amount": None, "age": None, "city": None},
        ]
        got = http.post(
            "/features",
            json={"ids": [["u1", 9], "u1,9"], "features": ["pair_stats:amount"]},
        )
        assert got.json()["rows"] == [{"amount": 5.0}, {"amount": 5.0}]
        got = http.post("/features", json={"ids": ["u1"], "features": ["profile:age"]})
        assert got.json() == {"ids": ["u1"], "rows": [{"age": 30}]}  # as before
        bad = http.post("/features", json={"entity_rows": [{"user_id": "u1"}], "service": "fraud"})
        assert bad.status_code == 422 and "merchant_id" in bad.text
        assert http.post("/features", json={"ids": ["u1"]}).status_code == 400
        services = http.get("/services").json()["services"]
        assert [(s["name"], s["version"]) for s in services] == [("fraud", 1)]
        assert services[0]["features"][-1] == "profile:city"
