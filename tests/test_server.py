"""The HTTP API and the web page, through Starlette's TestClient against a real store, and
``redfeat serve`` as a real process over real HTTP."""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.quality.profiles import Profile, add_column
from redfeat.serve.http import create_app
from redfeat.serve.web import bins, svg
from redfeat.vectors.index import VectorIndex

Json = dict[str, Any]
JSON_TYPE = {"content-type": "application/json"}
T0 = datetime(2026, 11, 2, tzinfo=UTC)
SEG = ["basic", "premium", "gold"]


def _view(store: FeatureStore, **kw: Any) -> None:
    store.apply(
        FeatureView(
            "users",
            entity="user",
            fields=[
                Field("spend", t.Float, min=0),
                Field("age", t.Int, min=0, max=150),
                Field("segment", t.Category(SEG)),
                Field("note", t.String),
            ],
            **kw,
        )
    )


def _rows(
    rng: np.random.Generator, start: datetime, hours: int, per_hour: int, **shift: float
) -> pd.DataFrame:
    """Rows spread over hours; ``spend=`` moves the spend distribution, ``segment=1`` the
    segment shares."""
    n = hours * per_hour
    ets = [start + timedelta(hours=i // per_hour, seconds=i % per_hour) for i in range(n)]
    seg_p = [0.6, 0.3, 0.1] if not shift.get("segment") else [0.2, 0.3, 0.5]
    return pd.DataFrame(
        {
            "entity_id": [f"u{i % 500}" for i in range(n)],
            "event_time": ets,
            "spend": rng.lognormal(3 + shift.get("spend", 0.0), 0.5, n),
            "age": rng.integers(18, 70, n),
            "segment": rng.choice(SEG, n, p=seg_p),
            "note": rng.choice(np.array(["x", "y", None], dtype=object), n),
        }
    )


@pytest.fixture
def http(store: FeatureStore) -> Iterator[TestClient]:
    with TestClient(create_app(store)) as client:
        yield client


def _ok(resp: Any, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


def _err(resp: Any, status: int) -> Json:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body: Json = resp.json()
    assert body["message"]
    return body


def _path(entity_id: str) -> str:
    return quote(entity_id, safe="")


# -- views, reads and writes -------------------------------------------------------------


def test_views_and_schema(http: TestClient, profile_view: FeatureView) -> None:
    views = _ok(http.get("/views"))["views"]
    assert [v["name"] for v in views] == ["user_profile"]
    one = _ok(http.get("/views/user_profile"))
    assert one["entity"] == "user" and one["schema_version"] == 1
    fields = {f["name"]: f for f in one["fields"]}
    assert fields["age"]["min"] == 0 and fields["segment"]["dtype"]["categories"] == [
        "basic",
        "premium",
    ]
    body = _err(http.get("/views/nope"), 404)
    assert body["error"] == "NotFoundError" and "nope" in body["message"]
    assert _err(http.get("/no/such/route"), 404)["error"] == "HTTPException"


def test_write_then_read_latest_as_of_features_and_history(
    http: TestClient, profile_view: FeatureView
) -> None:
    t1 = datetime(2026, 3, 1, 12, tzinfo=UTC)
    values = {
        "age": 34,
        "income": 72000.0,
        "zip_code": "00123",
        "segment": "premium",
        "signup": "2025-12-24T08:30:00Z",
        "embedding": [0.5, -1.0, 0.25, 2.0],
        "tags": ["a", "b"],
    }
    v1 = _ok(
        http.post(
            "/views/user_profile/write",
            json={"entity_id": "u1", "values": values, "event_time": t1.isoformat()},
        ),
        201,
    )
    assert v1["event_time"] == "2026-03-01T12:00:00Z" and v1["values"]["zip_code"] == "00123"
    v2 = _ok(
        http.post(
            "/views/user_profile/write",
            json={"entity_id": "u1", "values": {**values, "age": 35}, "event_time": 1772370000},
        ),
        201,
    )
    assert v2["id"] > v1["id"]
    got = _ok(http.get("/views/user_profile/entities/u1"))
    row = got["values"]
    assert got["entity_id"] == "u1" and row["age"] == 35 and row["zip_code"] == "00123"
    assert row["embedding"] == [0.5, -1.0, 0.25, 2.0]  # float32 array as a JSON list
    assert row["signup"] == "2025-12-24T08:30:00Z" and row["active"] is None
    past = _ok(
        http.get(
            "/views/user_profile/entities/u1",
            params={"as_of": (t1 + timedelta(minutes=1)).isoformat(), "features": "age,income"},
        )
    )
    assert past["values"] == {"age": 34, "income": 72000.0}
    hist = _ok(http.get("/views/user_profile/entities/u1/history", params={"limit": 1}))
    assert [v["id"] for v in hist["versions"]] == [v2["id"]]
    hist = _ok(http.get("/views/user_profile/entities/u1/history"))
    assert [v["values"]["age"] for v in hist["versions"]] == [35, 34]
    assert "u404" in _err(http.get("/views/user_profile/entities/u404"), 404)["message"]
    body = _err(http.get("/views/user_profile/entities/u1", params={"as_of": "soon"}), 400)
    assert "as_of" in body["message"]
    assert _err(http.get("/views/user_profile/entities/u1/history?limit=x"), 400)["message"]


def test_validation_error_is_422_with_every_problem(
    http: TestClient, profile_view: FeatureView
) -> None:
    bad = {"age": -5, "segment": "gold", "colour": "red", "signup": "not a time"}
    body = _err(
        http.post("/views/user_profile/write", json={"entity_id": "u9", "values": bad}), 422
    )
    assert body["error"] == "ValidationError"
    rules = {(p["field"], p["rule"]) for p in body["problems"]}
    assert {("age", "min"), ("segment", "category"), ("colour", "unknown_field")} <= rules
    assert any(p["field"] == "signup" for p in body["problems"])
    assert all(p["view"] == "user_profile" and p["entity"] == "u9" for p in body["problems"])
    late = {"entity_id": "u9", "values": {"age": 3}, "event_time": "last tuesday"}
    body = _err(http.post("/views/user_profile/write", json=late), 422)
    assert [p["rule"] for p in body["problems"]] == ["event_time"]
    _err(http.get("/views/user_profile/entities/u9"), 404)  # nothing was written
    # a body of the wrong shape is a bad request (400), and says which key
    body = _err(http.post("/views/user_profile/write", json={"entity": "u9", "values": {}}), 400)
    assert "entity" in body["message"]
    sent = http.post("/views/user_profile/write", content=b"{nope", headers=JSON_TYPE)
    assert "JSON" in _err(sent, 400)["message"]


def test_write_many_reports_refused_rows_and_warnings(
    http: TestClient, store: FeatureStore, profile_view: FeatureView
) -> None:
    @store.validator("user_profile", severity="warning")
    def rich(row: dict[str, Any]) -> str | None:
        return "very rich" if (row["income"] or 0) > 1e6 else None

    rows = [
        {"entity_id": "a", "age": 20, "income": 2e6, "event_time": "2026-01-01T00:00:00Z"},
        {"entity_id": "b", "age": 200, "event_time": "2026-01-01T00:00:00"},
        {"entity_id": "c", "age": 30, "segment": "gold", "event_time": 1767225600},
        {"entity_id": "d", "age": 40, "event_time": "yesterday"},
    ]
    body = _err(http.post("/views/user_profile/write_many", json={"rows": rows}), 422)
    assert {p["row"] for p in body["problems"]} == {1, 2, 3}
    assert _ok(http.post("/views/user_profile/get_many", json={"ids": ["a"]}))["rows"] == [None]

    report = _ok(
        http.post("/views/user_profile/write_many", json={"rows": rows, "on_error": "skip"})
    )
    assert report["written"] == 1 and report["duplicates"] == 0
    refused = {r["row"]: r for r in report["refused"]}
    assert sorted(refused) == [1, 2, 3]
    assert refused[1]["problems"][0]["rule"] == "max"
    assert refused[2]["problems"][0]["field"] == "segment"
    assert refused[3]["problems"][0]["rule"] == "event_time"
    assert [w["rule"] for w in report["warnings"]] == ["rich"]
    a = _ok(http.get("/views/user_profile/entities/a"))
    assert a["values"]["income"] == 2e6
    body = _err(
        http.post("/views/user_profile/write_many", json={"rows": rows, "on_error": "maybe"}), 400
    )
    assert "on_error" in body["message"]
    _err(http.post("/views/user_profile/write_many", json={"rows": "a,b"}), 400)


HOSTILE = [
    "a/b",
    "{user}:1",
    "x|y*?[z]",
    "café ☕ 😀",
    "sp ace\nnew line",
    "q?x=1#frag",
    "100%25",
    "a/history",
    "../..",
    "rf:default:{user_profile|u1}",
]


def test_hostile_entity_ids_round_trip(http: TestClient, profile_view: FeatureView) -> None:
    for i, eid in enumerate(HOSTILE):
        _ok(
            http.post("/views/user_profile/write", json={"entity_id": eid, "values": {"age": i}}),
            201,
        )
    for i, eid in enumerate(HOSTILE):
        # dots are unreserved, so quote() leaves them; encode them so no client resolves ".."
        path = _path(eid).replace(".", "%2E")
        got = _ok(http.get(f"/views/user_profile/entities/{path}"))
        assert got["entity_id"] == eid and got["values"]["age"] == i, eid
        hist = _ok(http.get(f"/views/user_profile/entities/{path}/history"))
        assert [v["values"]["age"] for v in hist["versions"]] == [i], eid
    rows = _ok(http.post("/views/user_profile/get_many", json={"ids": HOSTILE}))["rows"]
    assert [r["age"] for r in rows] == list(range(len(HOSTILE)))
    # an unencoded slash still reads, as long as the id is not ambiguous
    assert _ok(http.get("/views/user_profile/entities/a/b"))["values"]["age"] == 0
    _err(http.get("/views/user_profile/entities/%FF"), 400)  # not UTF-8


def test_unexpected_errors_are_json_500(
    store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> list[FeatureView]:
        raise RuntimeError("registry on fire")

    monkeypatch.setattr(store, "views", broken)
    with TestClient(create_app(store), raise_server_exceptions=False) as http:
        body = _err(http.get("/views"), 500)
    assert body == {"error": "InternalError", "message": "RuntimeError: registry on fire"}


def test_mounted_under_a_prefix(store: FeatureStore, profile_view: FeatureView) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/rf/series", app=create_app(store))])
    store.write("user_profile", "x/entities/y", {"age": 7})
    store.series("a/b").add(1.0, NOW)
    with TestClient(outer) as http:
        got = _ok(http.get(f"/rf/series/views/user_profile/entities/{_path('x/entities/y')}"))
        assert got["entity_id"] == "x/entities/y" and got["values"]["age"] == 7
        points = _ok(http.get(f"/rf/series/series/{_path('a/b')}/range"))
        assert points["name"] == "a/b" and points["values"] == [1.0]
        assert "<svg" in http.get("/rf/series/").text


def test_get_many_with_meta_and_features_across_views(
    http: TestClient, store: FeatureStore, profile_view: FeatureView
) -> None:
    store.apply(FeatureView("txn", entity="user", fields=[Field("amount_sum", t.Float)]))
    store.write("user_profile", "u1", {"age": 40, "embedding": [1, 2, 3, 4]})
    store.write("txn", "u1", {"amount_sum": 12.5})
    out = _ok(
        http.post(
            "/views/user_profile/get_many",
            json={"ids": ["u1", "u2", 7], "features": ["age", "embedding"]},
        )
    )
    assert out["rows"] == [{"age": 40, "embedding": [1.0, 2.0, 3.0, 4.0]}, None, None]
    meta = _ok(
        http.post("/views/user_profile/get_many", json={"ids": ["u1", "u2"], "with_meta": True})
    )["rows"]
    assert [r["status"] for r in meta] == ["PRESENT", "MISSING"]
    assert meta[0]["entity_id"] == "u1" and meta[0]["event_time"].endswith("Z")
    feats = _ok(
        http.post(
            "/features",
            json={"ids": ["u1", "u2"], "features": ["user_profile:age", "txn:amount_sum"]},
        )
    )
    assert feats["rows"] == [{"age": 40, "amount_sum": 12.5}, {"age": None, "amount_sum": None}]
    full = _ok(
        http.post(
            "/features",
            json={"ids": ["u1"], "features": ["txn:amount_sum"], "full_feature_names": True},
        )
    )
    assert full["rows"] == [{"txn__amount_sum": 12.5}]
    _err(http.post("/features", json={"ids": ["u1"], "features": ["nope:x"]}), 404)


def test_similar(http: TestClient, store: FeatureStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.apply(
        FeatureView(
            "items",
            entity="item",
            fields=[Field("v", t.Vector(3)), Field("price", t.Float), Field("kind", t.String)],
        )
    )
    rng = np.random.default_rng(5)
    vecs = rng.normal(size=(40, 3))
    rows = [
        {"entity_id": f"i{i}", "v": vecs[i], "price": float(i), "kind": "ab"[i % 2]}
        for i in range(40)
    ]
    store.write_many("items", rows)
    query = vecs[6].tolist()
    res = _ok(http.post("/views/items/similar", json={"field": "v", "query": query, "k": 3}))
    assert res["matches"][0]["entity_id"] == "i6"
    assert res["matches"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    ref = store.similar("items", "v", query, k=3)
    assert [m["entity_id"] for m in res["matches"]] == [m.entity_id for m in ref]
    filtered = _ok(
        http.post(
            "/views/items/similar",
            json={
                "field": "v",
                "query": query,
                "k": 5,
                "where": {"price": {"min": 10, "max": 20}, "kind": ["b"]},
                "include_values": True,
            },
        )
    )["matches"]
    assert filtered and all(10 <= m["values"]["price"] <= 20 for m in filtered)
    assert all(m["values"]["kind"] == "b" for m in filtered)
    # concurrent first searches of another field's index build it once
    store.apply(
        FeatureView(
            "items", entity="item", fields=[*store.view("items").fields, Field("w", t.Vector(3))]
        )
    )
    store.write_many("items", [{"entity_id": f"i{i}", "w": vecs[i]} for i in range(40)])
    app = create_app(store)
    builds: list[str] = []
    real_build = VectorIndex.build

    def counted(self: VectorIndex) -> None:
        builds.append(self.field)
        time.sleep(0.05)  # widen the window two unserialised first searches would share
        real_build(self)

    monkeypatch.setattr(VectorIndex, "build", counted)

    async def burst() -> list[Any]:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://localhost") as client:
            body = {"field": "w", "query": query, "k": 2}
            calls = [client.post("/views/items/similar", json=body) for _ in range(8)]
            return [r.json()["matches"] for r in await asyncio.gather(*calls)]

    answers = asyncio.run(burst())
    assert all(a == answers[0] for a in answers) and answers[0][0]["entity_id"] == "i6"
    assert builds == ["w"]  # one index built; none left orphaned with its listener thread
    body = _err(
        http.post("/views/items/similar", json={"field": "v", "query": [1, 2], "k": 3}), 422
    )
    assert body["problems"]
    _err(http.post("/views/items/similar", json={"field": "v", "query": query, "k": 0}), 400)


# -- quality -----------------------------------------------------------------------------


PER_HOUR = 60  # enough values that sketch noise stays well inside the thresholds


def _drift_data(store: FeatureStore) -> tuple[datetime, datetime]:
    """A baseline week and a shifted day (spend and segment move); returns the day."""
    _view(store, history=0)
    rng = np.random.default_rng(42)
    store.write_many("users", _rows(rng, T0, 24 * 7, PER_HOUR), event_time_column="event_time")
    store.quality.set_baseline("users", T0, T0 + timedelta(days=7))
    day = T0 + timedelta(days=7)
    moved = _rows(rng, day, 24, PER_HOUR, spend=0.5, segment=1)
    store.write_many("users", moved, event_time_column="event_time")
    return day, day + timedelta(days=1)


def test_drift_and_profile_endpoints(http: TestClient, store: FeatureStore) -> None:
    _view(store, history=0)
    body = _err(http.get("/quality/users/drift"), 404)
    assert "baseline" in body["message"]
    start, end = _drift_data(store)
    span = {"start": start.isoformat(), "end": end.isoformat()}
    report = _ok(http.get("/quality/users/drift", params=span))
    ref = store.quality.drift("users", start=start, end=end).to_dict()
    assert report.keys() == ref.keys() and report["thresholds"] == ref["thresholds"]
    for name, f in ref["features"].items():
        got = report["features"][name]
        assert got["verdict"] == f["verdict"] and got["current_count"] == f["current_count"]
        # KLL merges are randomised: two loads of the same hours agree within sketch error
        # (~1,400 values a side here: a PSI near 0 moved by up to 0.031 between loads)
        if f["psi"] is not None:
            assert got["psi"] == pytest.approx(f["psi"], rel=0.15, abs=0.06)
        assert got["js"] == f["js"]  # exact category counts: no sketch error
    assert report["verdict"] == "drift" and report["baseline"]["from"] == "profiles"
    assert report["features"]["spend"]["verdict"] == "drift"
    assert report["features"]["segment"]["js"] > 0.1
    assert "bins" not in report
    with_bins = _ok(http.get("/quality/users/drift", params={**span, "bins": "true"}))
    spend = with_bins["bins"]["spend"]
    # lognormal spend has no tied edges: the 10 decile bins of PSI
    assert spend["kind"] == "numeric" and spend["labels"][-1].endswith("inf)")
    assert len(spend["labels"]) == len(spend["baseline"]) == len(spend["current"]) == 10
    assert sum(spend["baseline"]) == pytest.approx(1.0) and sum(spend["current"]) == 1.0
    assert all(s == pytest.approx(0.1, abs=0.03) for s in spend["baseline"])  # deciles
    assert spend["current"][-1] > 0.3  # spend moved up: the top decile fills
    seg = with_bins["bins"]["segment"]
    assert seg["labels"] == ["basic", "premium", "gold"] and seg["current"][2] > 0.4
    assert "note" in with_bins["bins"] and "age" in with_bins["bins"]
    prof = _ok(http.get("/quality/users/profile", params=span))
    assert prof["rows"] == 24 * PER_HOUR and prof["features"]["spend"]["count"] == 24 * PER_HOUR
    assert _err(http.get("/quality/users/profile", params={"source": "disk"}), 400)
    assert _err(http.get("/quality/users/drift", params={"start": "then"}), 400)
    _err(http.get("/quality/nope/drift"), 404)


def test_plotted_bins_are_the_ones_psi_sums() -> None:
    from redfeat.quality.drift import PSI_FLOOR, psi

    rng = np.random.default_rng(3)
    f = Field("x", t.Float)
    base, cur = Profile("v"), Profile("v")
    # a zero-inflated feature: the tie at 0 gets a bin of its own, and the plot shows it
    add_column(base, f, np.where(rng.random(20_000) < 0.3, 0.0, rng.normal(5, 1, 20_000)).tolist())
    add_column(cur, f, rng.normal(5.4, 1.2, 5_000).tolist())
    d = bins.numeric("x", base.features["x"], cur.features["x"])
    assert d is not None and "[0]" in d.labels
    assert sum(d.baseline) == pytest.approx(1.0) and sum(d.current) == pytest.approx(1.0)
    b = np.maximum(d.baseline, PSI_FLOOR)
    c = np.maximum(d.current, PSI_FLOOR)
    assert float(((c - b) * np.log(c / b)).sum()) == pytest.approx(
        psi(base.features["x"], cur.features["x"]), rel=1e-12
    )
    empty = Profile("v")
    add_column(empty, f, [None, None])
    assert bins.numeric("x", empty.features["x"], cur.features["x"]) is None
    flat = bins.numeric("x", base.features["x"], empty.features["x"])
    assert flat is not None and flat.current == [0.0] * len(flat.labels)
    many = Profile("v")
    g = Field("c", t.String)
    add_column(many, g, [f"v{i % 20}" for i in range(2_000)])
    cats = bins.categorical("c", many.features["c"], many.features["c"])
    assert cats is not None and len(cats.labels) == bins.MAX_CATEGORIES + 1
    assert cats.labels[-1] == "(others)" and sum(cats.baseline) == pytest.approx(1.0)


def test_health_and_stats(http: TestClient, store: FeatureStore) -> None:
    _view(store, history=0)
    store.quality.configure("users", max_age="1h")
    store.write("users", "u1", {"spend": 1.0}, event_time=T0)  # long ago: stale
    health = _ok(http.get("/health"))
    assert health["status"] == "up" and health["project"] == store.project
    users = health["quality"]["views"]["users"]
    assert users["status"] == "critical" and users["writes"] == 1
    assert any("stale" in r for r in users["reasons"])
    _err(http.get("/health", params={"window": "forever"}), 400)
    stats = _ok(http.get("/stats"))
    assert stats["operations"]["write"]["count"] == 1
    assert "users" in stats["storage"]["views"] and stats["storage"]["server"]["dbsize"] >= 1
    assert "storage" not in _ok(http.get("/stats", params={"storage": "false"}))


# -- time series -------------------------------------------------------------------------


NOW = datetime(2026, 5, 4, 12, tzinfo=UTC)


def _series_data(store: FeatureStore, name: str = "cpu:web/1 {eu}") -> datetime:
    cpu = store.series(name, labels={"host": "web-1", "region": "eu"}, retention="7d")
    start = NOW - timedelta(hours=26)
    n = 26 * 360  # every 10 s
    times = [start + timedelta(seconds=10 * i) for i in range(n)]
    cpu.add_many(times, 50 + np.random.default_rng(0).normal(0, 1, n).round(2))
    cpu.add(97.5, NOW)
    store.series("mem:web-1", labels={"host": "web-1", "region": "us"}).add(1.0, NOW)
    return start


def test_series_endpoints(http: TestClient, store: FeatureStore) -> None:
    name = "cpu:web/1 {eu}"
    _series_data(store, name)
    listed = _ok(http.get("/series"))["series"]
    assert [s["name"] for s in listed] == [name, "mem:web-1"]
    assert listed[0]["labels"] == {"host": "web-1", "region": "eu"}
    assert listed[0]["rollups"] == ["1m", "5m", "1h", "1d"]
    eu = _ok(http.get("/series", params={"filter": ["region=eu", "host!=web-3"]}))["series"]
    assert [s["name"] for s in eu] == [name]
    base = f"/series/{_path(name)}"
    start, end = NOW - timedelta(minutes=1), NOW
    raw = _ok(
        http.get(
            f"{base}/range",
            params={"start": start.isoformat(), "end": end.isoformat(), "time_format": "ms"},
        )
    )
    ts, vs = store.series(name).range(start, end)
    assert raw["timestamps"] == ts.astype("int64").tolist() and raw["values"] == vs.tolist()
    assert raw["timestamps"][-1] == int(NOW.timestamp() * 1000) and raw["values"][-1] == 97.5
    hourly = _ok(
        http.get(
            f"{base}/range",
            params={
                "start": (NOW - timedelta(hours=3)).isoformat(),
                "end": NOW.isoformat(),
                "bucket": "1h",
                "agg": "max",
            },
        )
    )
    assert hourly["timestamps"][0] == "2026-05-04T09:00:00.000Z"
    assert hourly["values"][-1] == 97.5 and hourly["agg"] == "max"
    # a bucket of one point has no sample std: NaN goes out as null
    std = _ok(
        http.get(f"{base}/range", params={"start": NOW.timestamp(), "bucket": "1m", "agg": "std"})
    )
    assert std["values"] == [None]
    found = _ok(
        http.get(
            f"{base}/anomalies",
            params={"start": (NOW - timedelta(minutes=30)).isoformat(), "end": NOW.isoformat()},
        )
    )
    # the spike stands out (random noise may add a point a little over 3 sigma)
    assert found["values"][-1] == 97.5 and found["scores"][-1] > 10
    assert found["timestamps"][-1] == "2026-05-04T12:00:00.000Z"
    thin = _err(http.get("/series/mem:web-1/anomalies", params={"start": 0, "end": 1}), 422)
    assert thin["needed"] > thin["found"]
    assert "not in the registry" in _err(http.get("/series/nope/range"), 404)["message"]
    assert "nope" not in store.series_list()  # reading never creates a series
    _err(http.get(f"{base}/range", params={"bucket": "1h", "agg": "median"}), 400)
    _err(http.get(f"{base}/range", params={"time_format": "unix"}), 400)
    _err(http.get(f"{base}/points"), 404)


# -- the page ----------------------------------------------------------------------------


def test_page_shows_views_drift_plots_and_series(http: TestClient, store: FeatureStore) -> None:
    start, end = _drift_data(store)
    store.apply(FeatureView("plain", entity="user", fields=[Field("x", t.Int)]))
    _series_data(store)
    page = http.get(
        "/", params={"view": "users", "start": start.isoformat(), "end": end.isoformat()}
    )
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    for name in ("users", "plain", "cpu:web/1 {eu}", "mem:web-1"):
        assert f">{name}<" in html.replace("&#x27;", "'"), name
    # one bar chart per numeric or categorical feature (spend, age, segment, note)
    assert len(re.findall(r'<svg class="plot drift-plot"', html)) == 4
    assert html.count('class="bar baseline"') == html.count('class="bar current"') > 20
    assert len(re.findall(r'<svg class="plot series-plot"', html)) == 1
    assert 'class="series-line"' in html and 'class="anomaly"' in html
    assert "<td class='drift'>drift</td>" in html  # the verdict column
    # no network: no external script, stylesheet or image; the one inline script runs by
    # its nonce only (the Content-Security-Policy allows nothing else)
    assert not re.search(r"<(link|img)\b", html) and not re.search(r"<script[^>]*src=", html)
    assert not re.search(r'(src|href)="(https?:)?//', html)
    nonce = re.findall(r'<script nonce="([^"]+)">', html)
    assert (
        len(nonce) == 1
        and f"script-src 'nonce-{nonce[0]}'" in page.headers["content-security-policy"]
    )
    # the defaults: the day up to the view's newest event, the series' last day
    auto = http.get("/").text
    assert len(re.findall(r'<svg class="plot drift-plot"', auto)) == 4
    assert "anomalies (z-score" in auto


def test_page_without_data_and_with_bad_parameters(http: TestClient, store: FeatureStore) -> None:
    empty = _ok_html(http.get("/"))
    assert "No views yet" in empty and "No time series yet" in empty
    _view(store, history=0)
    store.series("s").add(1.0, NOW)
    html = _ok_html(http.get("/", params={"start": "when?", "series": "s", "bucket": "7x"}))
    assert "start" in html and 'class="error"' in html  # the section says what is wrong
    assert "no baseline" in _ok_html(http.get("/", params={"view": "users"}))
    assert "not in the registry" in _ok_html(http.get("/", params={"series": "gone"}))


def _ok_html(resp: Any) -> str:
    assert resp.status_code == 200, resp.text
    return str(resp.text)


def test_svg_line_breaks_at_nan_and_handles_empty() -> None:
    ts = np.array([0, 1000, 2000, 3000, 4000], dtype=np.int64)
    vs = np.array([1.0, 2.0, math.nan, 3.0, 4.0])
    out = svg.line(ts, vs, [(4000, 4.0, "spike")])
    assert out.count("<polyline") == 2 and out.count('class="anomaly"') == 1
    assert "no points" in svg.line(ts[:0], vs[:0])
    assert "<svg" in svg.line(ts, np.full(5, math.nan))


# -- redfeat serve -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_redfeat_serve_over_real_http(
    backend_url: str, client: Any, project: str, tmp_path: Path
) -> None:
    # on every backend: `redfeat serve --url redis+cluster://...` on the cluster
    port = _free_port()
    exe = Path(sys.executable).with_name("redfeat")
    env = {**os.environ, "REDFEAT_URL": backend_url, "REDFEAT_PROJECT": project}
    proc = subprocess.Popen(
        [str(exe), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line
        deadline = time.monotonic() + 20
        while True:
            try:
                resp = httpx2.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx2.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "redfeat serve did not answer"
                time.sleep(0.1)
        assert resp.status_code == 200
        assert resp.json()["status"] == "up" and resp.json()["project"] == project
        page = httpx2.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and "redfeat" in page.text
    finally:
        proc.terminate()  # by pid: SIGTERM, uvicorn shuts down and the store closes
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        # the keys the served store wrote (quality counters)
        batch = list(client.scan_iter(match=f"rf:{project}:*", count=1000))
        if batch:
            client.unlink(*batch)
    # uvicorn re-raises the SIGTERM it caught once it has shut down (the store closed first)
    assert proc.returncode in (0, -signal.SIGTERM)


def _start_serve(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    exe = Path(sys.executable).with_name("redfeat")
    return subprocess.Popen(
        [str(exe), "serve", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def _wait_up(proc: subprocess.Popen[str], url: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx2.get(url, headers=headers, timeout=2).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "redfeat serve did not answer"
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str]:
    if proc.poll() is None:
        proc.terminate()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out, err


def test_serve_with_workers_shares_one_embedded_server_and_shuts_down_gracefully(
    tmp_path: Path,
) -> None:
    """Two worker processes on one port, both attached to the one embedded server of the
    data dir; SIGTERM lets a request in flight finish, then everything stops."""
    import http.client
    import json

    from redfeat.core.embedded import EmbeddedServer
    from redfeat.serve import auth

    home = tmp_path / "home"
    token = "rf_workers-test-token-0123456789"
    (tmp_path / "tokens.json").write_text(
        json.dumps({"tokens": [{"token": token, "scopes": ["admin"]}]})
    )
    with FeatureStore(data_dir=home, project="w") as store:
        store.apply(FeatureView("users", entity="user", fields=[Field("spend", t.Float)]))
    port = _free_port()
    proc = _start_serve(
        [
            "--port",
            str(port),
            "--workers",
            "2",
            "--home",
            str(home),
            "--project",
            "w",
            "--token-file",
            str(tmp_path / "tokens.json"),
            "--access-log",
        ],
        {},
        tmp_path,
    )
    auth_h = {"authorization": f"Bearer {token}"}
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(proc, f"{base}/views", auth_h)
        deadline = time.monotonic() + 30
        while len(attached := EmbeddedServer(home).attached()) < 3:  # supervisor + 2 workers
            assert time.monotonic() < deadline, attached
            time.sleep(0.1)
        for i in range(20):
            body = {"entity_id": f"u{i}", "values": {"spend": float(i)}}
            resp = httpx2.post(f"{base}/views/users/write", json=body, headers=auth_h)
            assert resp.status_code == 201, resp.text
        got = httpx2.post(
            f"{base}/views/users/get_many", json={"ids": ["u3", "u19"]}, headers=auth_h
        ).json()
        assert got["rows"] == [{"spend": 3.0}, {"spend": 19.0}]
        metrics = httpx2.get(f"{base}/metrics", headers=auth_h).text
        pids = re.findall(r'redfeat_http_process_resident_bytes\{pid="(\d+)"\}', metrics)
        assert len(set(pids)) == 2, metrics  # each worker reports itself
        writes = re.search(
            r'redfeat_http_requests_total\{method="POST",route="/views/\{view\}/write",'
            r'status="201"\} (\S+)',
            metrics,
        )
        assert writes is not None and float(writes.group(1)) == 20  # summed over both
        # a request in flight when SIGTERM arrives: its body is still on its way
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        payload = json.dumps({"entity_id": "late", "values": {"spend": 7.0}}).encode()
        conn.putrequest("POST", "/views/users/write")
        for k, v in {
            **auth_h,
            "content-type": "application/json",
            "content-length": str(len(payload)),
        }.items():
            conn.putheader(k, v)
        conn.endheaders()
        conn.send(payload[:10])
        time.sleep(0.3)
        proc.terminate()
        time.sleep(0.5)
        conn.send(payload[10:])
        answer = conn.getresponse()
        assert answer.status == 201, answer.read()
        conn.close()
        out, err = _stop(proc)
    finally:
        _stop(proc)
    assert proc.returncode in (0, -signal.SIGTERM), err
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    assert len({x["pid"] for x in lines}) >= 1 and all(x["token"] for x in lines)
    assert EmbeddedServer(home).status() is None  # the last user left: the server stopped
    with FeatureStore(data_dir=home, project="w") as store:
        assert store.get("users", "late") == {"spend": 7.0}  # the in-flight write landed
        assert store.get("users", "u19") == {"spend": 19.0}
    assert auth.digest(token) not in out + err and token not in out + err
