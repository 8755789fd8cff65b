"""Tokens, scopes, the Host allow-list, JSON-only bodies and CORS: what a caller without
the right token or from the wrong place gets (401, 403, 415, 400), and that nothing was
read or written then."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from typer.testing import CliRunner

from redfeat import ConfigurationError, FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.serve import auth
from redfeat.serve.cli import app as cli
from redfeat.serve.http import create_app

READ = "rf_read-token-0123456789abcdef"
WRITE = "rf_write-token-0123456789abcdef"
RW = "rf_rw-token-0123456789abcdef0123"
ADMIN = "rf_admin-token-0123456789abcdef"
TOKENS = auth.parse(
    {
        "tokens": [
            {"token": READ, "scopes": ["read"], "name": "reader"},
            {"token": WRITE, "scopes": ["write"], "name": "writer"},
            {"token": RW, "scopes": ["read", "write"]},
            {"sha256": auth.digest(ADMIN), "scopes": ["admin"], "name": "ops"},
        ]
    },
    "test",
)
JSON_TYPE = {"content-type": "application/json"}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _users(store: FeatureStore) -> None:
    store.apply(FeatureView("users", entity="user", fields=[Field("spend", t.Float)]))


@pytest.fixture
def http(store: FeatureStore) -> Iterator[TestClient]:
    _users(store)
    store.write("users", "u1", {"spend": 1.0})
    app = create_app(store, tokens=TOKENS)
    with TestClient(app, base_url="http://localhost") as client:
        yield client


def _ops(store: FeatureStore) -> dict[str, int]:
    return {op: s["count"] for op, s in store.metrics.snapshot().items()}


# every route of the API (the documented ones), with a body where it takes one
ROUTES: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("GET", "/", None, "read"),
    ("GET", "/health", None, "read"),
    ("GET", "/stats", None, "admin"),
    ("GET", "/metrics", None, "read"),
    ("GET", "/openapi.json", None, "read"),
    ("GET", "/docs", None, "read"),
    ("GET", "/views", None, "read"),
    ("GET", "/views/users", None, "read"),
    ("GET", "/views/users/entities/u1", None, "read"),
    ("GET", "/views/users/entities/u1/history", None, "read"),
    ("GET", "/views/users/entities/u1/stats", None, "read"),
    ("POST", "/views/users/get_many", {"ids": ["u1"]}, "read"),
    ("POST", "/features", {"ids": ["u1"], "features": ["users:spend"]}, "read"),
    ("GET", "/services", None, "read"),
    ("POST", "/views/users/similar", {"field": "spend", "query": [1.0]}, "read"),
    ("POST", "/views/users/write", {"entity_id": "u2", "values": {"spend": 2.0}}, "write"),
    ("POST", "/views/users/write_many", {"rows": [{"entity_id": "u3", "spend": 3.0}]}, "write"),
    ("GET", "/quality/users/drift", None, "read"),
    ("GET", "/quality/users/profile", None, "read"),
    ("GET", "/series", None, "read"),
    ("GET", "/series/cpu/range", None, "read"),
    ("GET", "/series/cpu/anomalies", None, "read"),
]


def test_every_route_but_livez_needs_a_token_and_its_scope(
    http: TestClient, store: FeatureStore
) -> None:
    documented = {
        (m.upper(), p)
        for p, ops in http.get("/openapi.json", headers=bearer(READ)).json()["paths"].items()
        for m in ops
    }
    assert len(documented) == len(ROUTES) - 2 + 1  # + /livez; - /openapi.json, /docs
    before = _ops(store)
    for method, path, body, scope in ROUTES:
        kw: dict[str, Any] = {} if body is None else {"json": body}
        resp = http.request(method, path, **kw)
        assert resp.status_code == 401, (path, resp.text)
        assert resp.headers["www-authenticate"].startswith("Bearer")
        resp = http.request(method, path, headers=bearer("rf_not-a-token-at-all-000000"), **kw)
        assert resp.status_code == 401 and "not accepted" in resp.text, path
        wrong = WRITE if scope in ("read", "admin") else READ
        resp = http.request(method, path, headers=bearer(wrong), **kw)
        assert resp.status_code == 403, (path, resp.text)
        assert f"needs {scope}" in resp.json()["message"]
    # nothing was read or written by any refused request
    assert _ops(store) == before
    assert store.get("users", "u2") is None and store.get("users", "u3") is None
    assert http.get("/livez").json() == {"status": "up"}  # the bare liveness probe
    # the right scope passes; admin passes everywhere
    assert http.get("/views/users/entities/u1", headers=bearer(READ)).status_code == 200
    w = {"entity_id": "u2", "values": {"spend": 2.0}}
    assert http.post("/views/users/write", json=w, headers=bearer(WRITE)).status_code == 201
    assert http.get("/stats", headers=bearer(ADMIN)).status_code == 200
    assert http.get("/stats", headers=bearer(RW)).status_code == 403
    w2 = {"entity_id": "u4", "values": {"spend": 4.0}}
    assert http.post("/views/users/write", json=w2, headers=bearer(ADMIN)).status_code == 201


def test_cross_site_text_plain_post_is_refused_and_writes_nothing(
    http: TestClient, store: FeatureStore
) -> None:
    body = json.dumps({"entity_id": "csrf", "values": {"spend": 9.0}})
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""):
        resp = http.post(
            "/views/users/write",
            content=body,
            headers={**bearer(WRITE), "content-type": ctype, "origin": "https://evil.example"},
        )
        assert resp.status_code == 415, (ctype, resp.text)
        assert "access-control-allow-origin" not in resp.headers  # no CORS by default
    assert store.get("users", "csrf") is None
    ok = http.post(
        "/views/users/write",
        content=body,
        headers={**bearer(WRITE), "content-type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 201 and store.get("users", "csrf") == {"spend": 9.0}


def test_a_browser_session_cookie_reads_but_never_writes(
    http: TestClient, store: FeatureStore
) -> None:
    login = http.get("/")
    assert login.status_code == 401 and '<form method="post" action="login"' in login.text
    huge = http.post("/login", data={"token": "x" * 5000})
    assert huge.status_code == 413  # a sign-in form is never buffered whole
    bad = http.post("/login", data={"token": "wrong"}, follow_redirects=False)
    assert bad.status_code == 401 and "not accepted" in bad.text
    foreign = http.post("/login", data={"token": RW}, headers={"origin": "https://evil.example"})
    assert foreign.status_code == 403
    resp = http.post("/login", data={"token": RW}, follow_redirects=False)
    assert resp.status_code == 303
    cookie = resp.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = http.get("/")
    assert page.status_code == 200 and "redfeat" in page.text
    assert http.get("/views/users/entities/u1").status_code == 200
    # the cookie is never taken for a POST: a page elsewhere cannot write through it
    resp = http.post("/views/users/write", json={"entity_id": "c", "values": {"spend": 1.0}})
    assert resp.status_code == 401 and store.get("users", "c") is None
    http.post("/logout")
    assert http.get("/views").status_code == 401


def test_host_header_must_be_allowed(store: FeatureStore) -> None:
    _users(store)
    app = create_app(store)
    with TestClient(app, base_url="http://localhost:8000") as http:
        assert http.get("/views").status_code == 200
        for host in ("evil.example", "localhost.evil.example", "127.0.0.2", "attacker:8000"):
            resp = http.get("/views", headers={"host": host})
            assert resp.status_code == 400 and host in resp.json()["message"], host
        assert http.get("/views", headers={"host": "[::1]:8000"}).status_code == 200
        assert http.get("/views", headers={"host": "127.0.0.1"}).status_code == 200
    wide = create_app(store, allowed_hosts=["features.example.com", "*.internal"])
    with TestClient(wide, base_url="http://features.example.com") as http:
        assert http.get("/views").status_code == 200
        assert http.get("/views", headers={"host": "a.b.internal"}).status_code == 200
        assert http.get("/views", headers={"host": "localhost"}).status_code == 400
    with pytest.raises(ConfigurationError, match="allowed_hosts"):
        create_app(store, allowed_hosts=[])


def test_cors_only_for_configured_origins(store: FeatureStore) -> None:
    _users(store)
    app = create_app(store, cors_origins=["https://app.example"])
    with TestClient(app, base_url="http://localhost") as http:
        pre = http.options(
            "/views/users/get_many",
            headers={
                "origin": "https://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
        )
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://app.example"
        other = http.get("/views", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.one_of(
        st.text(max_size=80),
        st.builds(lambda s: f"Bearer {s}", st.text(min_size=0, max_size=60)),
        # trailing white space is not part of a header value (RFC 9110 5.5): not a new token
        st.builds(lambda s: f"bearer {READ}{s}", st.text(min_size=1, max_size=5).filter(str.strip)),
        st.sampled_from([f"Basic {READ}", READ, f"Token {READ}", f"Bearer  {READ[:-1]}"]),
    )
)
def test_no_header_but_a_known_token_gets_through(http: TestClient, header: str) -> None:
    try:
        header.encode("ascii")
    except UnicodeEncodeError:
        return  # not a header value an HTTP client can send
    resp = http.get("/views/users/entities/u1", headers={"authorization": header})
    assert resp.status_code == 401, header


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ctype=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40))
def test_only_json_bodies_are_accepted(http: TestClient, store: FeatureStore, ctype: str) -> None:
    mt = ctype.split(";")[0].strip().lower()
    is_json = mt == "application/json" or (mt.startswith("application/") and mt.endswith("+json"))
    body = json.dumps({"entity_id": "p", "values": {"spend": 5.0}})
    resp = http.post(
        "/views/users/write", content=body, headers={**bearer(WRITE), "content-type": ctype}
    )
    if is_json:
        assert resp.status_code == 201
        store.delete("users", "p")
    else:
        assert resp.status_code == 415, ctype
        assert store.get("users", "p") is None


# -- token files, the environment and the CLI -------------------------------------------------


def test_token_sources_and_their_errors(tmp_path: Path) -> None:
    f = tmp_path / "tokens.json"
    f.write_text(json.dumps({"tokens": [{"token": READ, "scopes": ["read", "write"]}]}))
    tokens = auth.from_file(f)
    found = tokens.find(READ)
    assert found is not None and found.scopes == ("read", "write") and found.allows("write")
    assert tokens.find(READ + "x") is None and tokens.find("") is None
    assert READ not in tokens.to_json()  # digests only, for the worker processes
    env = auth.from_env(f"{READ}:read {WRITE}:write,admin")
    assert [t.scopes for t in env.tokens] == [("read",), ("write", "admin")]
    assert auth.from_env(f.read_text()).find(READ) is not None
    bad = [
        ({"tokens": [{"token": "short", "scopes": ["read"]}]}, "16 characters"),
        ({"tokens": [{"token": READ, "scopes": ["root"]}]}, "unknown scope 'root'"),
        ({"tokens": [{"token": READ, "scopes": []}]}, "at least one"),
        ({"tokens": [{"sha256": "abc", "scopes": ["read"]}]}, "64 hex"),
        ({"tokens": [{"scopes": ["read"]}]}, "either 'token' or 'sha256'"),
        ({"tokens": {}}, "expected"),
    ]
    for data, msg in bad:
        with pytest.raises(ConfigurationError, match=msg):
            auth.parse(data, "x")
    with pytest.raises(ConfigurationError, match="does not exist"):
        auth.from_file(tmp_path / "nope.json")


def test_token_cli_create_list_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    f = tmp_path / "t.json"
    res = runner.invoke(
        cli, ["token", "create", "--scopes", "read,write", "--name", "ci", "--file", str(f)]
    )
    assert res.exit_code == 0, res.output
    raw = res.stdout.strip().splitlines()[-1]
    assert raw.startswith("rf_") and len(raw) > 40
    stored = f.read_text()
    assert raw not in stored and auth.digest(raw) in stored  # only the digest is kept
    assert oct(f.stat().st_mode & 0o777) == "0o600"
    assert auth.from_file(f).find(raw) is not None
    again = runner.invoke(cli, ["token", "create", "--name", "ci", "--file", str(f)])
    assert again.exit_code != 0 and "already has a token named 'ci'" in str(again.exception)
    listed = runner.invoke(cli, ["token", "list", "--file", str(f)])
    assert "ci" in listed.stdout and "read, write" in listed.stdout and raw not in listed.stdout
    assert runner.invoke(cli, ["token", "revoke", "ci", "--file", str(f)]).exit_code == 0
    assert auth.from_file(f).find(raw) is None
    assert runner.invoke(cli, ["token", "revoke", "ci", "--file", str(f)]).exit_code == 1


def test_serve_refuses_a_public_address_without_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDFEAT_TOKENS", raising=False)
    monkeypatch.delenv("REDFEAT_TOKEN_FILE", raising=False)
    res = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--home", str(tmp_path)])
    assert res.exit_code != 0
    assert isinstance(res.exception, ConfigurationError)
    assert "without tokens" in str(res.exception)
