"""``GET /metrics``: parseable Prometheus text, request counts and latencies per route and
status, and the store's numbers exactly as ``store.stats()`` reports them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.cluster import RedisCluster
from starlette.testclient import TestClient

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.serve import auth
from redfeat.serve.http import create_app

READ = "rf_metrics-reader-0123456789abcdef"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(http: TestClient, **kw: Any) -> Samples:
    resp = http.get("/metrics", **kw)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def http(store: FeatureStore) -> Iterator[TestClient]:
    store.apply(FeatureView("users", entity="user", fields=[Field("spend", t.Float, min=0)]))
    tokens = auth.parse({"tokens": [{"token": READ, "scopes": ["read"]}]}, "test")
    with TestClient(create_app(store, tokens=tokens), base_url="http://localhost") as client:
        client.headers["authorization"] = f"Bearer {READ}"
        yield client


def test_request_counts_and_latency_per_route_and_status(
    http: TestClient, store: FeatureStore
) -> None:
    store.write("users", "u1", {"spend": 1.0})
    for _ in range(3):
        assert http.get("/views/users/entities/u1").status_code == 200
    assert http.get("/views/users/entities/nobody").status_code == 404
    assert http.get("/views", headers={"authorization": "Bearer nope-nope-nope"}).status_code == 401
    assert http.get("/no/such/route").status_code == 404
    m = scrape(http)
    route = "/views/{view}/entities/{entity_id}"
    ok = {"method": "GET", "route": route, "status": "200"}
    assert value(m, "redfeat_http_requests_total", **ok) == 3
    assert value(m, "redfeat_http_requests_total", **{**ok, "status": "404"}) == 1
    assert value(m, "redfeat_http_requests_total", method="GET", route="/views", status="401") == 1
    unmatched = {"method": "GET", "route": "(unmatched)", "status": "404"}
    assert value(m, "redfeat_http_requests_total", **unmatched) == 1
    assert value(m, "redfeat_http_request_duration_seconds_count", **ok) == 3
    assert value(m, "redfeat_http_request_duration_seconds_bucket", **ok, le="+Inf") == 3
    assert 0 < value(m, "redfeat_http_request_duration_seconds_sum", **ok) < 3
    assert value(m, "redfeat_http_process_resident_bytes") > 10e6
    # the raw path never becomes a label (bounded series)
    assert not any("nobody" in str(k) or "u1" in str(k) for k in m)


def test_store_numbers_are_the_ones_stats_reports(http: TestClient, store: FeatureStore) -> None:
    rows = [{"entity_id": f"u{i}", "spend": float(i)} for i in range(20)]
    store.write_many("users", rows)
    store.get_many("users", ["u1", "u2"])
    store.get("users", "u3")
    frame = pd.DataFrame({"entity_id": ["u1", "u2"], "event_time": [datetime.now(UTC)] * 2})
    store.training_frame(frame, ["users:spend"])
    store.push("users", [{"entity_id": "p1", "spend": 1.0}, {"entity_id": "p2", "spend": -1.0}])
    m = scrape(http)
    stats = store.stats(storage=False)
    for op in ("get", "get_many", "write_many", "training_frame"):
        s = stats["operations"][op]
        name = "redfeat_store_operation_seconds"
        assert value(m, f"{name}_count", op=op) == s["count"] >= 1, op
        assert value(m, f"{name}_sum", op=op) == pytest.approx(s["sum_s"]), op
        for le, n in zip(s["buckets"]["le_s"], s["buckets"]["counts"], strict=True):
            assert value(m, f"{name}_bucket", op=op, le=repr(float(le))) == n, (op, le)
        assert value(m, "redfeat_store_operation_errors_total", op=op) == s["errors"] == 0
    ingest = stats["realtime"]["users"]["ingest"]
    # 1 push: one batch (on a cluster one per partition of the rows' entities)
    batches = len({store.keys.partition(e) for e in ("p1", "p2")})
    assert value(m, "redfeat_ingest_backlog", view="users") == ingest["backlog"] == batches
    assert value(m, "redfeat_dead_letters", view="users") == 0
    assert value(m, "redfeat_ingest_lag_seconds", view="users") >= 0
    feed = stats["realtime"]["users"]["feed"]
    assert value(m, "redfeat_change_feed_entries", view="users") == feed["entries"] >= 1
    assert 0 <= value(m, "redfeat_change_feed_age_seconds", view="users") < 60
    assert value(m, "redfeat_server_used_memory_bytes") > 0
    assert value(m, "redfeat_server_keys") >= 1
    assert value(m, "redfeat_profile_flush_age_seconds") >= 0
    # a worker takes the batch: the good row is written, the bad one is a dead letter
    store.run_worker(["users"], until_idle=True)
    m = scrape(http)
    ingest = store.stats(storage=False)["realtime"]["users"]["ingest"]
    assert value(m, "redfeat_ingest_backlog", view="users") == ingest["backlog"] == 0
    assert value(m, "redfeat_ingest_pending", view="users") == ingest["pending"] == 0
    assert value(m, "redfeat_dead_letters", view="users") == ingest["dead_letters"] == 1
    assert value(m, "redfeat_ingest_lag_seconds", view="users") == 0


def test_profile_flush_age_grows_until_a_flush(store: FeatureStore) -> None:
    store.apply(FeatureView("users", entity="user", fields=[Field("spend", t.Float)]))
    store.stats()  # storage=True flushes first
    assert store.stats(storage=False)["profiles"]["flush_age_s"] == 0.0
    store.write("users", "u1", {"spend": 1.0})
    waiting = store.stats(storage=False)["profiles"]
    assert waiting["flush_age_s"] >= 0.0
    store.stats()  # flushed again
    after = store.stats(storage=False)["profiles"]
    assert after["flush_age_s"] == 0.0 and after["last_flush_s"] is not None


def test_server_numbers_count_every_master(store: FeatureStore, client: redis.Redis) -> None:
    # on a cluster: summed over the masters (one node's INFO would show a third of it)
    store.apply(FeatureView("users", entity="user", fields=[Field("spend", t.Float)]))
    store.write_many("users", [{"entity_id": f"u{i}", "spend": 1.0} for i in range(300)])
    server = store.stats(storage=False)["server"]
    mine = sum(1 for _ in client.scan_iter(match=f"rf:{store.project}:*", count=1000))
    assert server["dbsize"] >= mine >= 300
    assert server["used_memory"] > 0
    assert server.get("masters", 1) == (3 if isinstance(client, RedisCluster) else 1)
