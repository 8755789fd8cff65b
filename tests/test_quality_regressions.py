"""Defects a review found in the quality code, each reproduced first, then fixed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.embedded import ServerInfo
from redfeat.errors import ValidationError

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _view(store: FeatureStore, **kw: Any) -> None:
    store.apply(
        FeatureView(
            "v",
            entity="user",
            fields=[Field("x", t.Float), Field("n", t.Int), Field("ts", t.Timestamp)],
            **kw,
        )
    )


def _rows_profiled(store: FeatureStore) -> int:
    return store.quality.profile("v", start=T0 - timedelta(days=1), end=T0 + timedelta(days=1)).rows


def test_retries_and_dropped_late_rows_are_not_profiled(store: FeatureStore) -> None:
    _view(store, history=10)
    rows = [{"entity_id": f"u{i}", "x": 1.0, "et": T0} for i in range(100)]
    store.write_many("v", rows, event_time_column="et")
    again = store.write_many("v", rows, event_time_column="et")  # an idempotent retry
    assert (again.written, again.duplicates) == (0, 100)
    assert _rows_profiled(store) == 100
    assert store.quality.recorder.counters("v", 0, 2**62)["writes"] == 100

    store.apply(FeatureView("latest", entity="user", fields=[Field("x", t.Float)], history=0))
    store.write("latest", "a", {"x": 1.0}, event_time=T0)
    late = store.write("latest", "a", {"x": 999.0}, event_time=T0 - timedelta(hours=1))
    assert late.id == 0  # dropped: nothing keeps it
    prof = store.quality.profile("latest", start=T0 - timedelta(days=1), end=T0 + timedelta(days=1))
    assert prof.features["x"].max == 1.0 and prof.rows == 1


def test_derived_writes_and_backfills_are_profiled_and_validated(store: FeatureStore) -> None:
    _view(store, history=10)
    from redfeat.transforms.builtins import log1p

    store.apply(FeatureView("der", entity="user", source="v", transforms=[log1p("x")]))
    store.write("v", "a", {"x": 1.0}, event_time=T0)
    counts = store.quality.recorder.counters("der", 0, 2**62)
    assert counts["writes"] == 1

    @store.validator("v")
    def small(row: dict[str, Any]) -> str | None:
        return "too big" if (row["x"] or 0) > 100 else None

    frame = pd.DataFrame({"entity_id": ["b"], "event_time": [T0], "x": [500.0]})
    with pytest.raises(ValidationError, match="too big"):
        store.import_frame("v", frame)
    assert store.get("v", "b") is None
    frame["x"] = [5.0]
    store.import_frame("v", frame)
    assert _rows_profiled(store) == 2  # the write and the backfill, in their hour


def test_a_monitoring_failure_never_fails_a_write(store: FeatureStore) -> None:
    _view(store)
    store._monitor._config_at = float("-inf")
    real = store._monitor.load_config

    def broken() -> None:
        raise redis.ConnectionError("blip") from None

    store._monitor.load_config = broken  # type: ignore[method-assign]
    try:
        v = store.write("v", "a", {"x": 42.0})  # the settings cannot be read
        rows = [{"entity_id": f"u{i}", "x": 1.0} for i in range(1500)]
        assert store.write_many("v", rows).written == 1500
    finally:
        store._monitor.load_config = real  # type: ignore[method-assign]
    assert v.values["x"] == 42.0 and store.get("v", "a") == v.values
    assert store.quality.failures >= 1


def test_profiling_off_keeps_freshness(store: FeatureStore) -> None:
    _view(store, ttl="1h")
    store.quality.configure("v", profile=False)
    store.write("v", "a", {"x": 1.0}, event_time=datetime.now(UTC) - timedelta(hours=3))
    health = store.quality.health().views["v"]
    assert health.newest_event is not None and health.status == "critical"
    assert any("stale" in r for r in health.reasons)


def test_future_event_times_cannot_keep_a_view_fresh(store: FeatureStore) -> None:
    _view(store)
    store.quality.configure("v", max_age="1h")
    store.write("v", "a", {"x": 1.0}, event_time=datetime(2100, 1, 1, tzinfo=UTC))
    later = store.quality.health(now=datetime.now(UTC) + timedelta(hours=2)).views["v"]
    assert later.status == "critical"


def test_delete_view_leaves_no_quality_data(store: FeatureStore) -> None:
    _view(store)
    store.quality.configure("v", sample_rate=0.0, max_age="1h")
    store.write("v", "a", {"x": 1.0}, event_time=T0)
    store.quality.set_baseline("v", T0, T0 + timedelta(hours=1))
    store.delete_view("v")
    store.quality.flush()
    assert list(store.client.scan_iter(match=f"rf:{store.project}:q:*")) == []
    _view(store)
    assert store.quality.config("v").sample_rate == 0.01  # the defaults again
    assert store.quality.health().views["v"].newest_event is None


def test_read_sampling_per_view_and_only_the_features_read(store: FeatureStore) -> None:
    _view(store)
    store.quality.configure("v", sample_rate=1.0)
    store.write_many("v", [{"entity_id": f"u{i}", "x": 1.0, "n": 2} for i in range(20)])
    store.get_many("v", [f"u{i}" for i in range(20)], features=["x"])
    store.get_many("v", ["u1"], with_meta=True)
    store.get_features(["u1", "u2"], ["v:n"])
    served = store.quality.profile("v", source="read")
    assert served.features["x"].count == 21 and served.features["x"].nulls == 0
    assert served.features["n"].count == 3 and served.features["n"].nulls == 0
    assert store.quality.recorder.counters("v", 0, 2**62)["reads"] == 3


def test_validators_see_the_same_types_on_every_path(store: FeatureStore) -> None:
    _view(store)
    seen: list[dict[str, str]] = []

    @store.validator("v")
    def record(row: dict[str, Any]) -> None:
        seen.append({k: type(v).__name__ for k, v in row.items() if v is not None})

    when = datetime(2026, 1, 2, tzinfo=UTC)
    store.write("v", "a", {"x": 1, "n": 2, "ts": when})
    store.write_many("v", [{"entity_id": "b", "x": 1, "n": 2, "ts": when}])
    store.update("v", "a", {"x": 3})
    assert seen[0] == seen[1] == seen[2] == {"x": "float", "n": "int", "ts": "datetime"}

    @store.validator("v", name="np")
    def numpy_bool(row: dict[str, Any]) -> Any:
        return np.isfinite(row["x"] or 0.0)  # a numpy bool is a fine answer

    store.write("v", "c", {"x": 1.0})


def test_baseline_from_a_frame_goes_through_the_schema(store: FeatureStore) -> None:
    _view(store)
    frame = pd.DataFrame({"v:ts": [1_700_000_000, 1_700_000_100], "x": [1.0, float("nan")]})
    prof = store.quality.set_baseline_from("v", frame)
    assert prof.features["ts"].min == pytest.approx(1_700_000_000)  # epoch seconds, as written
    assert (prof.features["x"].count, prof.features["x"].nulls) == (1, 1)
    with pytest.raises(ValidationError, match=r"(?s)no baseline was set.*field 'x'"):
        store.quality.set_baseline_from("v", pd.DataFrame({"x": ["n/a"]}))
    with pytest.raises(Exception, match="no rows"):
        store.quality.set_baseline_from("v", pd.DataFrame({"x": pd.Series([], dtype=float)}))


def test_on_read_views_are_healthy_and_nested_calls_count_once(store: FeatureStore) -> None:
    _view(store)
    from redfeat.transforms.builtins import log1p

    store.apply(
        FeatureView("twice", entity="user", source="v", transforms=[log1p("x")], on_read=True)
    )
    store.write("v", "a", {"x": 1.0})
    store.metrics.reset()
    for _ in range(3):
        store.get("twice", "a")
    ops = store.stats(storage=False)["operations"]
    assert ops["get"]["count"] == 3 and "get_many" not in ops
    assert store.quality.health().views["twice"].status == "ok"


def test_a_forked_child_does_not_send_the_parents_data_again(
    store: FeatureStore,
) -> None:
    _view(store)
    store.write("v", "a", {"x": 1.0}, event_time=T0)  # buffered, not flushed yet
    pid = os.fork()
    if pid == 0:  # the child writes once and flushes its own data only
        try:
            store.write("v", "b", {"x": 2.0}, event_time=T0)
            store.quality.flush()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert _rows_profiled(store) == 2


def test_a_script_that_exits_without_close_still_records(
    embedded: ServerInfo, project: str, tmp_path: Path
) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import redis
            from redfeat import FeatureStore, FeatureView, Field, types as t
            client = redis.Redis.from_url({embedded.url()!r})
            store = FeatureStore(client=client, project={project!r})
            store.apply(FeatureView("v", entity="user", fields=[Field("x", t.Float)]))
            for i in range(50):
                store.write("v", f"u{{i}}", {{"x": 1.0}})
            """
        )
    )
    subprocess.run([sys.executable, str(script)], check=True, timeout=60)
    client = redis.Redis.from_url(embedded.url())
    with FeatureStore(client=client, project=project) as store:
        assert store.quality.recorder.counters("v", 0, 2**62)["writes"] == 50
        assert store.quality.profile("v").rows == 50
    client.close()
