"""The OpenAPI document: valid OpenAPI 3.1, generated from the routes (every route in it,
nothing else), and true: schemathesis sends generated requests to the running app (a real
uvicorn over HTTP) and checks there is no 500 and no answer outside the document."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from served import served
from starlette.routing import Route
from starlette.testclient import TestClient

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.serve import auth
from redfeat.serve.http import create_app

ADMIN = "rf_admin-token-for-schemathesis-00"
TOKENS = auth.parse({"tokens": [{"token": ADMIN, "scopes": ["admin"]}]}, "test")
# generated requests per operation: bounded so that the whole file stays ~20-40 s
EXAMPLES = int(os.environ.get("REDFEAT_SCHEMATHESIS_EXAMPLES", "25"))
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _data(store: FeatureStore) -> None:
    store.apply(
        FeatureView(
            "users",
            entity="user",
            fields=[
                Field("age", t.Int, min=0, max=150),
                Field("spend", t.Float, min=0),
                Field("segment", t.Category(["a", "b"])),
                Field("emb", t.Vector(3)),
                Field("tags", t.List(t.String)),
            ],
            history=5,
        )
    )
    rows = [
        {
            "entity_id": f"u{i}",
            "age": 20 + i,
            "spend": float(i),
            "segment": "ab"[i % 2],
            "emb": [float(i), 1.0, -1.0],
            "tags": ["x"],
            "event_time": T0 + timedelta(minutes=i),
        }
        for i in range(50)
    ]
    store.write_many("users", rows, event_time_column="event_time")
    store.quality.set_baseline("users", T0 - timedelta(hours=1), T0 + timedelta(hours=2))
    cpu = store.series("cpu", labels={"host": "a"})
    cpu.add_many(
        [T0 + timedelta(seconds=10 * i) for i in range(500)], [float(i % 7) for i in range(500)]
    )


@pytest.fixture
def app(store: FeatureStore) -> Any:
    _data(store)
    return create_app(store, tokens=TOKENS)


def test_document_is_valid_openapi_31_and_lists_every_route(app: Any) -> None:
    with TestClient(app, base_url="http://localhost") as http:
        assert http.get("/openapi.json").status_code == 401
        doc = http.get("/openapi.json", headers={"authorization": f"Bearer {ADMIN}"}).json()
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served_routes = set()
    for r in app.routes:
        assert isinstance(r, Route)
        for m in r.methods or ():
            if m != "HEAD":
                served_routes.add((m, r.path))
    # the two raw-path routes stand for the documented paths under them
    raw = {
        ("GET", "/views/{view}/entities/{rest:rf_rest}"): {
            ("GET", "/views/{view}/entities/{entity_id}"),
            ("GET", "/views/{view}/entities/{entity_id}/history"),
            ("GET", "/views/{view}/entities/{entity_id}/stats"),
        },
        ("GET", "/series/{rest:rf_rest}"): {
            ("GET", "/series/{name}/range"),
            ("GET", "/series/{name}/anomalies"),
        },
    }
    expected = set()
    for route in served_routes:
        expected |= raw.get(route, {route})
    undocumented = {
        ("POST", "/login"),
        ("POST", "/logout"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/static/{file}"),
    }
    assert documented == expected - undocumented
    ops = doc["paths"]["/views/{view}/write"]["post"]
    assert ops["security"] == [{"bearer": []}] and "401" in ops["responses"]
    body = ops["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/WriteBody"}
    assert set(doc["components"]["schemas"]["WriteBody"]["required"]) == {"entity_id", "values"}
    assert doc["paths"]["/livez"]["get"]["security"] == []
    params = {p["name"] for p in doc["paths"]["/series/{name}/range"]["get"]["parameters"]}
    assert params == {"name", "start", "end", "bucket", "agg", "limit", "time_format"}


def test_docs_page_serves_swagger_ui_without_a_cdn(app: Any) -> None:
    auth_h = {"authorization": f"Bearer {ADMIN}"}
    with TestClient(app, base_url="http://localhost") as http:
        page = http.get("/docs", headers=auth_h)
        assert page.status_code == 200 and "swagger-ui" in page.text
        assert "//" not in page.text.replace("<!--", "").split("<body>")[1].replace("</", "")
        js = http.get("/docs/static/swagger-ui-bundle.js", headers=auth_h)
        assert js.status_code == 200 and len(js.content) > 100_000
        assert http.get("/docs/static/init.js", headers=auth_h).text.count("openapi.json") == 1
        assert http.get("/docs/static/../../etc/passwd", headers=auth_h).status_code == 404
        assert http.get("/docs/static/swagger-ui.css").status_code == 401


@pytest.fixture
def running(app: Any) -> Iterator[str]:
    with served(app) as url:
        yield url


def test_schemathesis_finds_no_500_and_no_answer_outside_the_document(running: str) -> None:
    headers = {"authorization": f"Bearer {ADMIN}"}
    doc = httpx2.get(f"{running}/openapi.json", headers=headers).json()
    schema = schemathesis.openapi.from_dict(doc)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    ran: dict[str, int] = {}
    for result in schema.get_all_operations():
        op = result.ok()  # type: ignore[union-attr]  # an Err raises here: a broken document
        check = _checker(op, running, headers, checks, ran)
        check()
    assert len(ran) == len(doc_ops(doc)) and all(n >= 1 for n in ran.values()), ran


def _checker(
    op: Any, base: str, headers: dict[str, str], checks: list[Any], ran: dict[str, int]
) -> Any:
    label = f"{op.method.upper()} {op.path}"

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy())
    def check(case: Any) -> None:
        resp = case.call(base_url=base, headers=headers, timeout=30)
        case.validate_response(resp, checks=checks)
        ran[label] = ran.get(label, 0) + 1

    return check


def doc_ops(doc: dict[str, Any]) -> list[str]:
    return [f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops]
