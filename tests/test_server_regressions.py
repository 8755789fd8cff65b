"""The HTTP API and the web page: regressions found in review (bad time parameters,
request size limits, bad numbers in parameters, error wording)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.server import create_app


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
    return str(resp.json()["error"])
