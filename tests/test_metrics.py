"""store.stats(): operation counters and latency histograms, storage from the server."""

from __future__ import annotations

import pytest

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.metrics import Metrics, OpStats
from redfeat.errors import ValidationError


def test_histogram_quantiles_within_bucket_error() -> None:
    m = Metrics()
    for us in range(1, 1001):  # 1 us .. 1 ms, uniform
        m.record("op", us * 1_000, failed=us % 100 == 0)
    s = m.snapshot()["op"]
    assert (s["count"], s["errors"]) == (1000, 10)
    assert s["p50_ms"] == pytest.approx(0.5, rel=0.13)  # 20 buckets a decade: <= 12 % wide
    assert s["p99_ms"] == pytest.approx(0.99, rel=0.13)
    assert s["mean_ms"] == pytest.approx(0.5005)
    assert OpStats().quantile(0.5) is None


def test_stats_counts_operations_and_storage(store: FeatureStore) -> None:
    store.apply(FeatureView("v", entity="user", fields=[Field("x", t.Float)], history=5))
    store.write_many("v", [{"entity_id": f"u{i}", "x": float(i)} for i in range(300)])
    for i in range(20):
        store.get("v", f"u{i}")
    store.get_many("v", ["u1", "u2"])
    with pytest.raises(ValidationError):
        store.write("v", "bad", {"x": "nope"})
    cpu = store.series("cpu", labels={"host": "a"})
    cpu.add_many([1_700_000_000 + i for i in range(100)], [float(i) for i in range(100)])
    cpu.range(None, None)
    stats = store.stats()
    ops = stats["operations"]
    assert ops["get"]["count"] == 20 and ops["get_many"]["count"] == 1
    assert ops["write"] == {**ops["write"], "count": 1, "errors": 1}
    assert ops["write_many"]["count"] == 1 and ops["series.add_many"]["count"] == 1
    assert ops["series.range"]["count"] == 1
    assert 0 < ops["get"]["p50_ms"] <= ops["get"]["p99_ms"]
    storage = stats["storage"]
    assert storage["server"]["used_memory"] > 0
    v = storage["views"]["v"]
    # one version per entity: its latest key only (history holds the older versions)
    assert v["keys"] == 300 and v["bytes"] > 300 * 40
    assert storage["series"]["cpu"]["keys"] >= 2
    assert "v" in storage["quality"]
    assert "storage" not in store.stats(storage=False)
