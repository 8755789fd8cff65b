"""The HTTP API exposes what the Python API gained in issues 15-17, over real HTTP (uvicorn
in a thread) against the suite's servers: ``expired`` in write answers, ``cache`` on
reads, ``consistent`` on similarity search, several aggregates of a series range, and an
entity's stats."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
import pytest
import redis
from served import served

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.realtime.cache import Cache
from redfeat.serve.http import create_app

ROOT = Path(__file__).resolve().parent.parent
JSON = {"content-type": "application/json"}


def _profile(store: FeatureStore) -> None:
    """The README's view (ttl 30d)."""
    store.apply(
        FeatureView(
            "user_profile",
            entity="user",
            fields=[
                Field("age", t.Int, min=0, max=150),
                Field("income", t.Float, min=0),
                Field("embedding", t.Vector(4)),
            ],
            ttl="30d",
            history=10,
        )
    )


@pytest.fixture
def api(store: FeatureStore) -> Iterator[httpx2.Client]:
    _profile(store)
    with served(create_app(store)) as url, httpx2.Client(base_url=url, timeout=30) as http:
        yield http


def _ok(resp: Any, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


# -- expired writes (issue 17 item 9) --------------------------------------------------------


def test_a_write_past_the_ttl_answers_expired_and_reads_404(api: httpx2.Client) -> None:
    old = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    body = {"entity_id": "u1", "values": {"age": 30}, "event_time": old}
    out = _ok(api.post("/views/user_profile/write", json=body), 201)
    assert out["expired"] is True and out["id"] >= 1
    assert api.get("/views/user_profile/entities/u1").status_code == 404
    fresh = _ok(api.post("/views/user_profile/write", json={**body, "event_time": None}), 201)
    assert fresh["expired"] is False
    assert _ok(api.get("/views/user_profile/entities/u1"))["values"]["age"] == 30
    # history keeps the expired version; a version read back is never "expired" (write answers)
    history = _ok(api.get("/views/user_profile/entities/u1/history"))["versions"]
    assert len(history) == 2 and all(v["expired"] is False for v in history)


def test_write_many_counts_expired_rows(api: httpx2.Client) -> None:
    now = datetime.now(UTC)
    old = (now - timedelta(days=31)).isoformat()
    rows = [
        {"entity_id": "a", "age": 1, "event_time": old},
        {"entity_id": "b", "age": 2, "event_time": old},
        {"entity_id": "c", "age": 3, "event_time": now.isoformat()},
    ]
    report = _ok(api.post("/views/user_profile/write_many", json={"rows": rows}))
    assert (report["written"], report["expired"]) == (3, 2)
    again = _ok(api.post("/views/user_profile/write_many", json={"rows": rows[2:]}))
    assert again["expired"] == 0


def test_the_readmes_curl_write_is_not_expired(api: httpx2.Client) -> None:
    readme = (ROOT / "README.md").read_text()
    posts = re.findall(r"-d '(\{.*?\})'\s*\\\s*\n\s*localhost:8000(/views/[^\s]+/write)\b", readme)
    assert posts, "the README's curl write example moved: update this test"
    for body, path in posts:
        out = _ok(api.post(path, json=json.loads(body)), 201)
        assert out["expired"] is False, body
        entity = quote(str(json.loads(body)["entity_id"]), safe="")
        assert api.get(f"{path.rsplit('/', 1)[0]}/entities/{entity}").status_code == 200


# -- the near cache bypass (issue 17 item 16) ------------------------------------------------


@pytest.fixture
def cached(client: redis.Redis, project: str) -> Iterator[tuple[FeatureStore, httpx2.Client]]:
    """A store with a near cache, served; and a second store (no cache) that writes behind
    its back, the way another process would."""
    store = FeatureStore(client=client, project=project, cache=Cache(ttl=3600))
    _profile(store)
    try:
        with served(create_app(store)) as url, httpx2.Client(base_url=url, timeout=30) as http:
            yield store, http
    finally:
        store.close()


def test_cache_false_reads_redis_on_entity_get_get_many_and_features(
    cached: tuple[FeatureStore, httpx2.Client], client: redis.Redis
) -> None:
    store, http = cached
    store.write("user_profile", "u1", {"age": 30})
    time.sleep(0.2)  # our write's own change event comes back (and invalidates) first
    get = "/views/user_profile/entities/u1"
    assert _ok(http.get(get))["values"]["age"] == 30  # cached now
    # a write the cache cannot hear of: another store that sends no change event
    other = FeatureStore(client=client, project=store.project, feed_cap=0)
    try:
        other.write("user_profile", "u1", {"age": 31})
    finally:
        other.close()
    assert _ok(http.get(get))["values"]["age"] == 30  # from the near cache
    assert _ok(http.get(get, params={"cache": "false"}))["values"]["age"] == 31
    many: dict[str, Any] = {"ids": ["u1"]}  # whole rows: what the near cache holds
    rows = _ok(http.post("/views/user_profile/get_many", json={**many, "cache": False}))["rows"]
    assert rows[0]["age"] == 31
    assert _ok(http.post("/views/user_profile/get_many", json=many))["rows"][0]["age"] == 30
    feats = {"ids": ["u1"], "features": ["user_profile:age"]}
    assert _ok(http.post("/features", json={**feats, "cache": False}))["rows"][0]["age"] == 31
    assert _ok(http.post("/features", json=feats))["rows"][0]["age"] == 30
    bad = http.get(get, params={"cache": "maybe"})
    assert bad.status_code == 400 and "cache" in bad.json()["message"]


# -- similarity search reads every acknowledged write with consistent ---------------------


def test_similar_consistent_sees_another_writers_fresh_vector(
    api: httpx2.Client, store: FeatureStore, client: redis.Redis
) -> None:
    store.write("user_profile", "a", {"embedding": [1.0, 0.0, 0.0, 0.0]})
    q = {"field": "embedding", "query": [0.0, 1.0, 0.0, 0.0], "k": 1}
    first = _ok(api.post("/views/user_profile/similar", json=q))["matches"]
    assert [m["entity_id"] for m in first] == ["a"]  # the index is built now
    other = FeatureStore(client=client, project=store.project)
    try:
        other.write("user_profile", "b", {"embedding": [0.0, 1.0, 0.0, 0.0]})
    finally:
        other.close()
    found = _ok(api.post("/views/user_profile/similar", json={**q, "consistent": True}))
    assert [m["entity_id"] for m in found["matches"]] == ["b"]
    bad = api.post("/views/user_profile/similar", json={**q, "consistent": "yes"})
    assert bad.status_code == 400 and "consistent" in bad.json()["message"]


# -- series: several aggregates of one range -------------------------------------------------


def test_series_range_with_several_aggregates(api: httpx2.Client, store: FeatureStore) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    s = store.series("cpu")
    s.add_many([t0 + timedelta(seconds=10 * i) for i in range(12)], [float(i) for i in range(12)])
    params = {"start": t0.isoformat(), "end": (t0 + timedelta(minutes=2)).isoformat()}
    out = _ok(api.get("/series/cpu/range", params={**params, "bucket": "1m", "agg": "avg,min,max"}))
    assert out["agg"] == ["avg", "min", "max"] and len(out["timestamps"]) == 2
    assert out["values"] == {"avg": [2.5, 8.5], "min": [0.0, 6.0], "max": [5.0, 11.0]}
    ts, cols = s.range(t0, t0 + timedelta(minutes=2), bucket="1m", agg=["avg", "min", "max"])
    assert out["values"] == {a: v.tolist() for a, v in cols.items()}  # the Python API's answer
    one = _ok(api.get("/series/cpu/range", params={**params, "bucket": "1m", "agg": "max"}))
    assert (one["agg"], one["values"]) == ("max", [5.0, 11.0])
    no_bucket = api.get("/series/cpu/range", params={**params, "agg": "avg,max"})
    assert no_bucket.status_code == 400 and "bucket" in no_bucket.json()["message"]
    twice = api.get("/series/cpu/range", params={**params, "bucket": "1m", "agg": "avg,avg"})
    assert twice.status_code == 400 and "distinct" in twice.json()["message"]


# -- one entity's stats ----------------------------------------------------------------------


def test_entity_stats_route(api: httpx2.Client, store: FeatureStore) -> None:
    store.write("user_profile", "u/1", {"age": 30, "income": 1.5})
    store.write("user_profile", "u/1", {"age": 31})
    out = _ok(api.get(f"/views/user_profile/entities/{quote('u/1', safe='')}/stats"))
    expected = store.entity_stats("user_profile", "u/1").to_dict()
    assert out["status"] == "PRESENT" and out["versions"] == 2 and out["present"] == ["age"]
    assert out["fields"] == expected["fields"] and out["bytes"] > 0
    assert 0 < out["expires_in_s"] <= 30 * 86400
    missing = _ok(api.get("/views/user_profile/entities/nobody/stats"))
    assert (missing["status"], missing["versions"]) == ("MISSING", 0)
    # an id that ends in /stats itself, sent as %2F, is an id
    store.write("user_profile", "x/stats", {"age": 5})
    got = _ok(api.get(f"/views/user_profile/entities/{quote('x/stats', safe='')}"))
    assert got["entity_id"] == "x/stats"
    assert api.get("/views/nope/entities/u1/stats").status_code == 404


def test_new_options_are_in_the_openapi_document(api: httpx2.Client) -> None:
    doc = _ok(api.get("/openapi.json"))
    schemas = doc["components"]["schemas"]
    assert "consistent" in schemas["SimilarBody"]["properties"]
    assert "cache" in schemas["GetManyBody"]["properties"]
    assert "cache" in schemas["FeaturesBody"]["properties"]
    assert "expired" in schemas["VersionOut"]["properties"]
    assert "expired" in schemas["WriteReportOut"]["required"]
    latest = doc["paths"]["/views/{view}/entities/{entity_id}"]["get"]["parameters"]
    assert "cache" in {p["name"] for p in latest}
    assert "/views/{view}/entities/{entity_id}/stats" in doc["paths"]


def test_dot_ids_are_reached_percent_encoded(api: httpx2.Client, store: FeatureStore) -> None:
    # "." and ".." are dot-segments a client removes from a path (RFC 3986 5.2.4), so the
    # ids travel as %2E and %2E%2E; the server must read them back as the ids themselves
    for ent, seg in ((".", "%2E"), ("..", "%2E%2E")):
        store.write("user_profile", ent, {"age": 40, "income": 1.0, "embedding": [0, 0, 0, 1]})
        got = _ok(api.get(f"/views/user_profile/entities/{seg}"))
        assert got["entity_id"] == ent and got["values"]["age"] == 40
