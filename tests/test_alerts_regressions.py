"""Alerts: regressions found in review (one failing rule, markup in names, stale
evaluators after a remove and re-add, a future ``now``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from redfeat import ConfigurationError, FeatureStore
from redfeat.timeseries import Series

T0 = 1_700_006_400  # a multiple of 1h


def feed(s: Series, start: int, end: int, value: float, step: int = 10) -> None:
    ts = np.arange(start, end, step)
    s.add_many(ts, np.full(len(ts), value))


def test_a_failing_rule_does_not_stop_the_rules_after_it(
    store: FeatureStore, caplog: pytest.LogCaptureFixture
) -> None:
    a = store.series("a_lat")
    feed(a, T0 - 3600, T0 + 60, 1.0)
    store.alerts.add("a_anom", "a_lat", rule="anomaly", window="1m", baseline="1h")
    feed(store.series("b_cpu"), T0, T0 + 60, 100.0)
    store.alerts.add("b_hot", "b_cpu", threshold=50, window="1m", for_=None, cooldown=None)
    a.delete()
    store.series("a_lat", rollups=()).add(1.0, T0)  # re-created without rollups
    got = store.alerts.evaluate(T0 + 59)
    assert [(t.rule, t.to_state) for t in got] == [("b_hot", "firing")]
    assert store.alerts.get("b_hot").state == "firing"
    assert len(store.alerts.errors) == 1
    name, err = store.alerts.errors[0]
    assert name == "a_anom" and isinstance(err, ConfigurationError)
    store.alerts.evaluate(T0 + 60)  # every round: the failure again, the rest evaluated
    assert [n for n, _ in store.alerts.errors] == ["a_anom", "a_anom"]
    failed = [r for r in caplog.records if "evaluation failed" in r.getMessage()]
    assert len(failed) == 2 and all(r.exc_info is None for r in failed)  # no traceback spam
    assert "no rollups" in failed[0].getMessage()


def test_cli_alerts_run_reports_a_failing_rule(data_dir: Path) -> None:
    from typer.testing import CliRunner

    from redfeat.serve.cli import app

    with FeatureStore(data_dir=data_dir) as store:
        now = int(time.time())
        a = store.series("a_lat")
        feed(a, now - 3600, now, 1.0)
        store.alerts.add("a_anom", "a_lat", rule="anomaly", window="1m", baseline="1h")
        feed(store.series("b_cpu"), now - 120, now, 100.0)
        store.alerts.add("b_hot", "b_cpu", threshold=50, window="1m", for_=0)
        a.delete()
        store.series("a_lat", rollups=()).add(1.0, now)
        env = {"REDFEAT_HOME": str(data_dir), "COLUMNS": "200"}
        res = CliRunner().invoke(app, ["alerts", "run", "--once"], env=env)
        assert res.exit_code == 0, res.output
        assert "error: alert 'a_anom'" in res.output and "no rollups" in res.output
        assert "b_hot" in res.output and "firing" in res.output


def test_cli_prints_markup_in_names_and_errors_literally(data_dir: Path) -> None:
    from typer.testing import CliRunner

    from redfeat.serve.cli import app

    with FeatureStore(data_dir=data_dir) as store:
        now = int(time.time())
        feed(store.series("cpu[/x]"), now - 120, now, 100.0)
        store.alerts.add("hot", "cpu[/x]", threshold=50, window="1m", for_=0)
        feed(store.series("lat[bold]"), now - 120, now, 1.0)
        store.alerts.add("a_anom", "lat[bold]", rule="anomaly", window="1m", baseline="1h")
        store.series("lat[bold]").delete()
        store.series("lat[bold]", rollups=()).add(1.0, now)  # its error names the series
        env = {"REDFEAT_HOME": str(data_dir), "COLUMNS": "200"}
        runner = CliRunner()
        res = runner.invoke(app, ["alerts", "run", "--once"], env=env)
        assert res.exit_code == 0, res.output
        assert "hot (cpu[/x]): ok -> firing" in res.output
        assert "'lat[bold]'" in res.output
        res = runner.invoke(app, ["alerts", "list"], env=env)
        assert res.exit_code == 0, res.output
        assert "cpu[/x]" in res.output and "firing" in res.output
        res = runner.invoke(app, ["alerts", "run", "--interval", "[/x]", "--once"], env=env)
        assert res.exit_code == 2 and "[/x]" in res.output


def test_quality_tables_print_brackets_in_reasons_literally() -> None:
    from datetime import UTC, datetime

    from rich.console import Console

    from redfeat.quality import DriftReport, FeatureDrift, Thresholds
    from redfeat.quality.health import HealthReport, ViewHealth
    from redfeat.serve.tables import drift_table, health_table

    f = FeatureDrift("x", "numeric", "drift", reasons=["psi [/red] high", "value [b]"])
    drift = DriftReport("v", None, None, "drift", {"x": f}, Thresholds())
    at = datetime(2026, 1, 1, tzinfo=UTC)
    vh = ViewHealth("v", "warning", None, None, None, None, 1, 0, 0, 0, 0.0, [], ["[/] odd"])
    console = Console(width=200, record=True)
    console.print(drift_table(drift))
    console.print(health_table(HealthReport.of(at, {"v": vh})))
    out = console.export_text()
    assert "psi [/red] high; value [b]" in out and "[/] odd" in out


def test_a_stale_evaluator_cannot_write_over_a_removed_and_re_added_rule(
    store: FeatureStore, request: pytest.FixtureRequest
) -> None:
    feed(store.series("cpu"), T0, T0 + 60, 100.0)
    store.alerts.add("hot", "cpu", threshold=50, window="1m", for_=None, cooldown=None)
    other = FeatureStore(client=store.client, project=store.project)  # another process
    request.addfinalizer(other.close)
    measure = store.alerts._measure

    def slow_measure(rule: Any, now_ms: int) -> Any:
        out = measure(rule, now_ms)
        # meanwhile another process replaces the rule by one that cannot hold
        other.alerts.remove("hot")
        other.alerts.add("hot", "cpu", threshold=1000, window="1m", for_=None, cooldown=None)
        return out

    store.alerts._measure = slow_measure  # type: ignore[method-assign]
    assert store.alerts.evaluate(T0 + 59) == []  # the stale verdict is not written
    st = other.alerts.get("hot")
    assert st.state == "ok" and st.rule.threshold == 1000.0 and st.evaluated_at is None
    assert other.alerts.history("hot") == []
    assert other.alerts.evaluate(T0 + 59) == [] and other.alerts.get("hot").state == "ok"


def test_evaluate_refuses_a_now_far_ahead_of_the_clock(store: FeatureStore) -> None:
    now = time.time()
    feed(store.series("cpu"), int(now) - 120, int(now), 100.0)
    store.alerts.add("hot", "cpu", threshold=50, window="1m", for_=None, cooldown=None)
    with pytest.raises(ConfigurationError, match="ahead of this machine's clock"):
        store.alerts.evaluate(now + 3600)
    assert store.alerts.get("hot").evaluated_at is None  # nothing was stored
    assert [t.to_state for t in store.alerts.evaluate(now + 30)] == ["firing"]  # tolerated
    assert store.alerts.evaluate() == []  # the clock is behind now + 30: skipped, once


def test_a_stored_future_evaluation_does_not_stop_real_time_evaluation(
    store: FeatureStore,
) -> None:
    from redfeat.timeseries.alert_rules import AlertState

    now = time.time()
    feed(store.series("cpu"), int(now) - 120, int(now), 100.0)
    store.alerts.add("hot", "cpu", threshold=50, window="1m", for_=None, cooldown=None)
    # as an evaluate(now=<next year>) before the fix left it
    future = AlertState(evaluated_ms=int((now + 365 * 86400) * 1000))
    store.client.hset(store.keys.alerts("state"), "hot", future.to_json())
    assert [t.to_state for t in store.alerts.evaluate()] == ["firing"]
