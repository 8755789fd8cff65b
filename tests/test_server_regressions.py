"""The HTTP API and the web page: regressions found in review (bad time parameters,
request size limits, bad numbers in parameters, error wording)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from redfeat import ConfigurationError, FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.serve.http import create_app

JSON_TYPE = {"content-type": "application/json"}


@pytest.fixture
def http(store: FeatureStore) -> Iterator[TestClient]:
    with TestClient(create_app(store)) as client:
        yield client


def _users(store: FeatureStore) -> None:
    store.apply(FeatureView("users", entity="user", fields=[Field("spend", t.Float)]))


@pytest.mark.parametrize(
    "key, value",
    [
        ("start", "1e20"),
        ("s_start", "1e20"),
        ("s_end", "nan"),
        ("end", "-1e15"),
        ("s_start", "9e18"),
        ("end", "inf"),
        ("s_end", "9999-12-31T00:00:00"),
        ("start", "0001-01-01"),
    ],
)
def test_page_says_what_is_wrong_with_a_time_out_of_range(
    http: TestClient, store: FeatureStore, key: str, value: str
) -> None:
    _users(store)
    store.series("cpu").add(1.0, time.time())
    resp = http.get("/", params={key: value, "view": "users", "series": "cpu"})
    assert resp.status_code == 200, resp.text
    errors = re.findall(r'<p class="error">([^<]*)</p>', resp.text)
    assert any(e.startswith(f"{key}") for e in errors), errors
    assert any("1900-01-01 .. 2200-01-01" in e or "finite" in e for e in errors), errors


def _err(resp: Any, status: int) -> str:
    assert resp.status_code == status, resp.text
    return str(resp.json()["message"])


def test_a_body_over_the_limit_is_413(store: FeatureStore) -> None:
    _users(store)
    with TestClient(create_app(store, max_body_bytes=1000)) as http:
        body = '{"ids": [' + ",".join(f'"u{i:08d}"' for i in range(200)) + "]}"
        msg = _err(http.post("/views/users/get_many", content=body, headers=JSON_TYPE), 413)
        assert "at most 1,000 bytes" in msg
        # no Content-Length (chunked): counted as it arrives
        chunks = (body[i : i + 100].encode() for i in range(0, len(body), 100))
        _err(http.post("/views/users/get_many", content=chunks, headers=JSON_TYPE), 413)
        resp = http.post("/views/users/get_many", json={"ids": ["u1"]})
        assert resp.status_code == 200 and resp.json()["rows"] == [None]


def test_too_many_ids_in_one_request_is_400(store: FeatureStore) -> None:
    _users(store)
    with TestClient(create_app(store, max_ids=10)) as http:
        ids = [f"u{i}" for i in range(11)]
        msg = _err(http.post("/views/users/get_many", json={"ids": ids}), 400)
        assert "11 ids" in msg and "at most 10" in msg
        _err(http.post("/features", json={"ids": ids, "features": ["users:spend"]}), 400)
        resp = http.post("/views/users/get_many", json={"ids": ids[:10]})
        assert resp.status_code == 200 and len(resp.json()["rows"]) == 10


def test_default_limits_and_a_large_body_below_them(http: TestClient, store: FeatureStore) -> None:
    from redfeat.serve.http import MAX_BODY_BYTES, MAX_IDS

    assert MAX_BODY_BYTES == 16 << 20 and MAX_IDS == 100_000
    _users(store)
    store.write("users", "u7", {"spend": 1.5})
    ids = [f"user-{i:012d}" for i in range(60_000)] + ["u7"]  # ~1.3 MB: decoded off the loop
    rows = http.post("/views/users/get_many", json={"ids": ids}).json()["rows"]
    assert len(rows) == 60_001 and rows[-1] == {"spend": 1.5} and rows[0] is None
    with pytest.raises(ConfigurationError, match="max_ids"):
        create_app(store, max_ids=0)


def test_history_limit_out_of_range_is_400(http: TestClient, store: FeatureStore) -> None:
    _users(store)
    store.write("users", "u1", {"spend": 1.0})
    for limit in ("99999999999999999999", str(2**31)):
        msg = _err(http.get("/views/users/entities/u1/history", params={"limit": limit}), 400)
        assert "limit: Expected `int` <= 2147483647" in msg
    with pytest.raises(ConfigurationError, match="limit"):
        store.history("users", "u1", limit=2**63)
    resp = http.get("/views/users/entities/u1/history", params={"limit": str(2**31 - 1)})
    assert resp.status_code == 200 and len(resp.json()["versions"]) == 1


@pytest.mark.parametrize("threshold", ["nan", "inf", "-inf", "-1", "0"])
def test_anomalies_refuse_a_threshold_that_is_not_finite_and_positive(
    http: TestClient, store: FeatureStore, threshold: str
) -> None:
    s = store.series("cpu")
    s.add(1.0, time.time())
    q = {"start": "2026-01-01", "end": "2026-01-02", "threshold": threshold}
    msg = _err(http.get("/series/cpu/anomalies", params=q), 400)
    assert "threshold must be a finite number > 0" in msg
    with pytest.raises(ConfigurationError, match="finite number > 0"):
        s.anomalies(time.time() - 60, time.time(), threshold=float(threshold))
    with pytest.raises(ConfigurationError, match="finite number > 0"):
        s.is_anomalous(1.0, threshold=float(threshold))


def test_refused_reads_say_nothing_was_read(store: FeatureStore) -> None:
    from redfeat import ValidationError, WindowFeatures

    _users(store)
    store.apply(WindowFeatures("txn", entity="user", source="amount", aggs=["sum"], windows=["1h"]))
    with pytest.raises(ConfigurationError, match="nothing was read") as bad_as_of:
        store.get("txn", "u1", as_of="yesterday")
    assert "recorded" not in str(bad_as_of.value)
    for read in (
        lambda: store.get("users", ""),
        lambda: store.get_many("users", ["u1", ""]),
        lambda: store.get("txn", ""),
        lambda: store.history("users", ""),
    ):
        with pytest.raises(ValidationError, match="nothing was read"):
            read()
    with pytest.raises(ValidationError, match="nothing was written"):
        store.write("users", "", {"spend": 1.0})
