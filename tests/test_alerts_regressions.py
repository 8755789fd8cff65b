"""Alerts: regressions found in review (one failing rule, markup in names, stale
evaluators after a remove and re-add, a future ``now``)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from redfeat import ConfigurationError, FeatureStore
from redfeat.timeseries import Series

T0 = 1_700_006_400  # a multiple of 1h


def feed(s: Series, start: int, end: int, value: float, step: int = 10) -> None:
    ts = np.arange(start, end, step)
    s.add_many(ts, np.full(len(ts), value))


def test_a_failing_rule_does_not_stop_the_rules_after_it(store: FeatureStore) -> None:
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


def test_cli_alerts_run_reports_a_failing_rule(data_dir: Path) -> None:
    from typer.testing import CliRunner

    from redfeat.cli import app

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
