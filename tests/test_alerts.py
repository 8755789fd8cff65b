"""Alerts: the state machine on an injected clock, persistence, concurrency, events, CLI."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from redfeat import ConfigurationError, ConflictError, FeatureStore, NotFoundError
from redfeat.timeseries import AlertTransition, Series

T0 = 1_700_006_400  # a multiple of 1h


def feed(s: Series, start: int, end: int, value: float, step: int = 10) -> None:
    """One point every ``step`` seconds in [start, end)."""
    ts = np.arange(start, end, step)
    s.add_many(ts, np.full(len(ts), value))


def moves(ts: list[AlertTransition]) -> list[tuple[str, str]]:
    return [(t.from_state, t.to_state) for t in ts]


def test_full_cycle_ok_pending_firing_resolved_ok(store: FeatureStore) -> None:
    s = store.series("cpu")
    feed(s, T0, T0 + 600, 50.0)
    rule = store.alerts.add("hot", "cpu", threshold=90, window="1m", for_="2m", cooldown=0)
    assert rule.condition == "above" and rule.window_ms == 60_000 and rule.for_ms == 120_000
    seen: list[AlertTransition] = []
    store.alerts.on_transition(seen.append)

    assert store.alerts.evaluate(T0 + 599) == []
    assert store.alerts.get("hot").state == "ok"
    feed(s, T0 + 600, T0 + 1200, 99.0)
    got = store.alerts.evaluate(T0 + 660)
    assert moves(got) == [("ok", "pending")]
    assert got[0].value == 99.0 and got[0].threshold == 90.0 and got[0].series == "cpu"
    assert got[0].at.timestamp() == T0 + 660
    assert store.alerts.evaluate(T0 + 720) == []  # pending for 1m of the 2m
    assert store.alerts.get("hot").state == "pending"
    assert moves(store.alerts.evaluate(T0 + 780)) == [("pending", "firing")]
    assert store.alerts.evaluate(T0 + 840) == []  # still firing: no new transition
    status = store.alerts.get("hot")
    assert status.state == "firing" and status.since is not None
    assert status.since.timestamp() == T0 + 780 and status.value == 99.0

    feed(s, T0 + 1200, T0 + 1800, 10.0)
    got = store.alerts.evaluate(T0 + 1300)
    assert moves(got) == [("firing", "resolved")] and got[0].value == 10.0
    assert moves(store.alerts.evaluate(T0 + 1360)) == [("resolved", "ok")]
    assert store.alerts.evaluate(T0 + 1420) == []

    want = [("ok", "pending"), ("pending", "firing"), ("firing", "resolved"), ("resolved", "ok")]
    assert moves(seen) == want
    hist = store.alerts.history("hot")
    assert moves(hist) == want
    assert [t.at.timestamp() for t in hist] == [T0 + 660, T0 + 780, T0 + 1300, T0 + 1360]
    assert [t.value for t in hist] == [99.0, 99.0, 10.0, 10.0]
    assert all(t.threshold == 90.0 and t.id for t in hist)
    assert [t.id for t in hist] == [t.id for t in seen]
    assert moves(store.alerts.history("hot", limit=2)) == want[2:]


def test_pending_goes_back_to_ok_without_firing(store: FeatureStore) -> None:
    s = store.series("cpu")
    feed(s, T0, T0 + 60, 95.0)
    feed(s, T0 + 60, T0 + 300, 20.0)
    store.alerts.add("hot", "cpu", threshold=90, window="30s", for_="5m")
    assert moves(store.alerts.evaluate(T0 + 50)) == [("ok", "pending")]
    assert moves(store.alerts.evaluate(T0 + 120)) == [("pending", "ok")]
    assert [t.to_state for t in store.alerts.history("hot")] == ["pending", "ok"]


def test_for_zero_fires_at_once(store: FeatureStore) -> None:
    name = "cpu:{web}|1 *ü%"  # series names may hold anything; alert names may not
    s = store.series(name)
    feed(s, T0, T0 + 60, 95.0)
    store.alerts.add("hot", name, threshold=90, window="1m", for_=0)
    got = store.alerts.evaluate(T0 + 59)
    assert moves(got) == [("ok", "firing")] and got[0].series == name
    assert store.alerts.list()[0].rule.series == name


def test_cooldown_holds_the_rule_in_pending(store: FeatureStore) -> None:
    s = store.series("cpu")
    store.alerts.add("hot", "cpu", threshold=90, window="30s", for_=0, cooldown="10m")
    feed(s, T0, T0 + 60, 95.0)
    assert moves(store.alerts.evaluate(T0 + 50)) == [("ok", "firing")]
    feed(s, T0 + 60, T0 + 120, 20.0)
    assert moves(store.alerts.evaluate(T0 + 110)) == [("firing", "resolved")]  # cooldown from here
    feed(s, T0 + 120, T0 + 1200, 95.0)
    assert moves(store.alerts.evaluate(T0 + 170)) == [("resolved", "pending")]
    assert store.alerts.evaluate(T0 + 600) == []  # true for 7 min, still cooling down
    assert store.alerts.get("hot").state == "pending"
    assert moves(store.alerts.evaluate(T0 + 110 + 600)) == [("pending", "firing")]


def test_no_data_keeps_the_state_by_default(store: FeatureStore) -> None:
    s = store.series("cpu")
    feed(s, T0, T0 + 60, 95.0)
    store.alerts.add("keep", "cpu", threshold=90, window="30s", for_=0)
    store.alerts.add("to_ok", "cpu", threshold=90, window="30s", for_=0, no_data="ok")
    store.alerts.add("to_alert", "cpu", threshold=1000, window="30s", for_=0, no_data="alerting")
    assert moves(store.alerts.evaluate(T0 + 50)) == [("ok", "firing"), ("ok", "firing")]
    got = store.alerts.evaluate(T0 + 600)  # nothing in (T0 + 570, T0 + 600]
    assert [(t.rule, t.to_state, t.value) for t in got] == [
        ("to_alert", "firing", None),
        ("to_ok", "resolved", None),
    ]
    keep = store.alerts.get("keep")
    assert keep.state == "firing" and keep.no_data and keep.value is None
    feed(s, T0 + 600, T0 + 660, 95.0)
    got = store.alerts.evaluate(T0 + 650)
    # to_ok resolved at T0 + 600: its 10m cooldown holds it in pending
    assert [(t.rule, t.to_state) for t in got] == [("to_alert", "resolved"), ("to_ok", "pending")]
    keep = store.alerts.get("keep")
    assert keep.state == "firing" and not keep.no_data and keep.value == 95.0


def test_no_data_on_a_deleted_series(store: FeatureStore) -> None:
    s = store.series("gone")
    feed(s, T0, T0 + 60, 95.0)
    store.alerts.add("g", "gone", threshold=90, window="1m", for_=0)
    assert moves(store.alerts.evaluate(T0 + 59)) == [("ok", "firing")]
    s.delete()
    assert store.alerts.evaluate(T0 + 120) == []
    assert store.alerts.get("g").no_data


@pytest.mark.parametrize(
    ("condition", "threshold", "tolerance", "fires_at"),
    [
        ("below", 30.0, 0.0, [10.0]),
        ("outside", (40.0, 60.0), 0.0, [10.0, 70.0]),
        ("equals", 50.0, 0.5, [50.0, 50.4]),
    ],
)
def test_conditions(
    store: FeatureStore,
    condition: str,
    threshold: Any,
    tolerance: float,
    fires_at: list[float],
) -> None:
    s = store.series("m")
    store.alerts.add(
        "r",
        "m",
        condition=condition,
        threshold=threshold,
        tolerance=tolerance,
        window="10s",
        for_=0,
        cooldown=0,
    )
    firing = []
    for i, v in enumerate([10.0, 40.0, 50.0, 50.4, 51.0, 60.0, 70.0]):
        t = T0 + 100 * i
        s.add(v, t)
        store.alerts.evaluate(t)
        if store.alerts.get("r").state == "firing":
            firing.append(v)
    assert firing == fires_at


def test_window_aggregate(store: FeatureStore) -> None:
    s = store.series("m")
    s.add_many([T0, T0 + 10, T0 + 20], [1.0, 2.0, 9.0])
    store.alerts.add("mx", "m", threshold=8, agg="max", window="1m", for_=0)
    store.alerts.add("cnt", "m", threshold=2, agg="count", window="15s", for_=0)
    got = store.alerts.evaluate(T0 + 20)  # the count window (T0 + 5, T0 + 20] holds 2 points
    assert [(t.rule, t.value) for t in got] == [("mx", 9.0)]
    assert store.alerts.get("cnt").value == 2.0


def test_window_past_raw_retention_reads_tiles(store: FeatureStore) -> None:
    s = store.series("short", retention="1h", rollups=("1m",))
    feed(s, T0, T0 + 3 * 3600, 1.0)  # one point / 10 s for 3 h; raw keeps the last hour
    store.alerts.add("n", "short", threshold=1000, agg="count", window="2h", for_=0)
    now = T0 + 3 * 3600 - 1
    store.alerts.evaluate(now)
    # whole 1m buckets inside (now - 2h, now]: 119 of them, 6 points each
    assert store.alerts.get("n").value == 119 * 6


def _spiky(s: Series, spike: bool) -> int:
    """A day of noise in [49, 51] every 10 s, then (optionally) a spike; returns now."""
    ts = T0 + np.arange(0, 86_400 + 300, 10)
    vs = 50 + np.random.default_rng(3).uniform(-1, 1, len(ts))
    if spike:
        vs[-5] = 70.0
    s.add_many(ts, vs)
    return int(ts[-1])


@pytest.mark.parametrize("method", ["zscore", "ewma", "mad"])
def test_anomaly_rule(store: FeatureStore, method: str) -> None:
    spiky, clean = store.series("spiky"), store.series("clean")
    now = _spiky(spiky, True)
    _spiky(clean, False)
    for name in ("spiky", "clean"):
        store.alerts.add(name, name, rule="anomaly", method=method, window="2m", for_=0)
    got = store.alerts.evaluate(now)
    assert [(t.rule, t.to_state) for t in got] == [("spiky", "firing")]
    assert got[0].value is not None and got[0].value > got[0].threshold  # type: ignore[operator]
    assert store.alerts.get("clean").state == "ok"
    assert store.alerts.get("clean").value is not None


def test_anomaly_rule_without_baseline_is_no_data(store: FeatureStore) -> None:
    s = store.series("young")
    feed(s, T0, T0 + 60, 50.0)
    s.add(500.0, T0 + 60)
    store.alerts.add("a", "young", rule="anomaly", window="1m", for_=0)
    assert store.alerts.evaluate(T0 + 60) == []
    st = store.alerts.get("a")
    assert st.state == "ok" and st.no_data


def test_state_survives_across_stores(store: FeatureStore, client: Any, project: str) -> None:
    s = store.series("cpu")
    feed(s, T0, T0 + 600, 95.0)
    store.alerts.add("hot", "cpu", threshold=90, window="1m", for_="2m")
    assert moves(store.alerts.evaluate(T0 + 300)) == [("ok", "pending")]
    other = FeatureStore(client=client, project=project)
    try:
        status = other.alerts.get("hot")
        assert status.state == "pending" and status.rule.for_ms == 120_000
        assert moves(other.alerts.evaluate(T0 + 420)) == [("pending", "firing")]
    finally:
        other.close()
    assert store.alerts.get("hot").state == "firing"
    assert moves(store.alerts.history("hot")) == [("ok", "pending"), ("pending", "firing")]


def test_two_evaluators_make_each_transition_once(
    store: FeatureStore, client: Any, project: str
) -> None:
    s = store.series("cpu")
    feed(s, T0, T0 + 300, 95.0)
    feed(s, T0 + 300, T0 + 600, 10.0)
    names = [f"r{i}" for i in range(8)]
    for n in names:
        store.alerts.add(n, "cpu", threshold=90, window="30s", for_="1m", cooldown=0)
    stores = [FeatureStore(client=client, project=project) for _ in range(2)]
    clock = [T0 + 30 * k for k in range(1, 20)]
    results: list[list[AlertTransition]] = [[], []]
    seen: list[list[AlertTransition]] = [[], []]
    barrier = threading.Barrier(2)

    def run(i: int) -> None:
        stores[i].alerts.on_transition(seen[i].append)
        for now in clock:
            barrier.wait()
            results[i].extend(stores[i].alerts.evaluate(now))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for st in stores:
        st.close()
    every = results[0] + results[1]
    assert len(seen[0]) + len(seen[1]) == len(every)
    want = [("ok", "pending"), ("pending", "firing"), ("firing", "resolved"), ("resolved", "ok")]
    for n in names:
        mine = sorted((t for t in every if t.rule == n), key=lambda t: t.at)
        assert moves(mine) == want
        assert moves(store.alerts.history(n)) == want


def test_events_are_published(store: FeatureStore) -> None:
    s = store.series("cpu")
    feed(s, T0, T0 + 60, 95.0)
    store.alerts.add("hot", "cpu", threshold=90, window="1m", for_=0)
    sub = store.client.pubsub()
    try:
        sub.subscribe(store.alerts.channel)
        deadline = time.monotonic() + 5
        while sub.get_message(timeout=0.1) is None and time.monotonic() < deadline:
            pass  # the subscribe confirmation
        store.alerts.evaluate(T0 + 59)
        msg = None
        while msg is None and time.monotonic() < deadline:
            msg = sub.get_message(timeout=0.1)
        assert msg is not None and msg["type"] == "message"
        t = AlertTransition.from_json(msg["data"])
        assert (t.rule, t.series, t.from_state, t.to_state, t.value) == (
            "hot",
            "cpu",
            "ok",
            "firing",
            95.0,
        )
        assert t.at.timestamp() == T0 + 59 and t.threshold == 90.0
    finally:
        sub.close()


def test_a_failing_callback_stops_nothing(store: FeatureStore) -> None:
    s = store.series("cpu")
    feed(s, T0, T0 + 60, 95.0)
    store.alerts.add("hot", "cpu", threshold=90, window="1m", for_=0)
    got: list[str] = []

    @store.alerts.on_transition
    def bad(t: AlertTransition) -> None:
        raise RuntimeError("boom")

    store.alerts.on_transition(lambda t: got.append(t.to_state))
    assert len(store.alerts.evaluate(T0 + 59)) == 1
    assert got == ["firing"] and store.alerts.errors[0][0] == "hot"
    assert isinstance(store.alerts.errors[0][1], RuntimeError)


def test_remove_and_replace(store: FeatureStore) -> None:
    s = store.series("cpu")
    feed(s, T0, T0 + 60, 95.0)
    store.alerts.add("hot", "cpu", threshold=90, window="1m", for_=0)
    with pytest.raises(ConflictError, match="replace=True"):
        store.alerts.add("hot", "cpu", threshold=10)
    store.alerts.evaluate(T0 + 59)
    assert store.alerts.get("hot").state == "firing"
    store.alerts.add("hot", "cpu", threshold=99, window="1m", for_=0, replace=True)
    st = store.alerts.get("hot")
    assert st.state == "ok" and st.rule.threshold == 99.0  # a replaced rule restarts
    store.alerts.remove("hot")
    assert store.alerts.list() == []
    assert store.alerts.history("hot") == []
    with pytest.raises(NotFoundError, match="hot"):
        store.alerts.remove("hot")
    with pytest.raises(NotFoundError):
        store.alerts.get("hot")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"series": "nope", "threshold": 1}, "not in the registry"),
        ({"condition": "sideways", "threshold": 1}, "condition 'sideways'"),
        ({"threshold": float("nan")}, "finite"),
        ({"threshold": float("inf")}, "finite"),
        ({"threshold": True}, "finite"),
        ({}, "needs a threshold"),
        ({"condition": "outside", "threshold": 5}, r"threshold=\(lo, hi\)"),
        ({"condition": "outside", "threshold": (9, 1)}, "lo 9 > hi 1"),
        ({"threshold": 1, "window": "5 parsecs"}, "window"),
        ({"threshold": 1, "window": 0}, "window"),
        ({"threshold": 1, "for_": "-1m"}, "for_"),
        ({"threshold": 1, "cooldown": "soon"}, "cooldown"),
        ({"threshold": 1, "agg": "median"}, "agg 'median'"),
        ({"threshold": 1, "tolerance": 1}, "equals"),
        ({"threshold": 1, "no_data": "panic"}, "no_data"),
        ({"rule": "magic", "threshold": 1}, "rule 'magic'"),
        ({"rule": "anomaly", "condition": "above"}, "no condition"),
        ({"rule": "anomaly", "method": "vibes"}, "method 'vibes'"),
        ({"rule": "anomaly", "threshold": -1}, "> 0"),
        ({"name": "a{b}", "threshold": 1}, "not allowed"),
        ({"name": "a:b", "threshold": 1}, "not allowed"),
        ({"name": "température", "threshold": 1}, "not allowed"),
        ({"name": "", "threshold": 1}, "not allowed"),
    ],
)
def test_bad_rules_change_nothing(store: FeatureStore, kwargs: dict[str, Any], match: str) -> None:
    store.series("cpu")
    args = {"name": "r", "series": "cpu", **kwargs}
    error = NotFoundError if "registry" in match else ConfigurationError
    with pytest.raises(error, match=match):
        store.alerts.add(args.pop("name"), args.pop("series"), **args)
    assert store.alerts.list() == []


def test_anomaly_rule_needs_rollups(store: FeatureStore) -> None:
    store.series("bare", rollups=())
    with pytest.raises(ConfigurationError, match="no rollups"):
        store.alerts.add("a", "bare", rule="anomaly")
    assert store.alerts.list() == []


def test_an_instant_is_evaluated_once(store: FeatureStore) -> None:
    s = store.series("cpu")
    feed(s, T0, T0 + 60, 95.0)
    feed(s, T0 + 60, T0 + 300, 10.0)
    store.alerts.add("hot", "cpu", threshold=90, window="30s", for_=0)
    assert moves(store.alerts.evaluate(T0 + 50)) == [("ok", "firing")]
    assert moves(store.alerts.evaluate(T0 + 120)) == [("firing", "resolved")]
    assert store.alerts.evaluate(T0 + 120) == []  # same instant: resolved stays resolved
    assert store.alerts.evaluate(T0 + 100) == []  # a clock behind changes nothing
    assert store.alerts.get("hot").state == "resolved"
    assert moves(store.alerts.evaluate(T0 + 130)) == [("resolved", "ok")]


def test_evaluate_refuses_a_bad_clock(store: FeatureStore) -> None:
    with pytest.raises(ConfigurationError, match="now"):
        store.alerts.evaluate("yesterday")


def test_cli_alerts(data_dir: Path) -> None:
    from typer.testing import CliRunner

    from redfeat.serve.cli import app

    with FeatureStore(data_dir=data_dir) as store:
        now = int(time.time())
        s = store.series("cpu:web-1")
        feed(s, now - 120, now, 95.0)
        store.alerts.add("hot_cpu", "cpu:web-1", threshold=90, window="1m", for_=0)
        runner = CliRunner()
        env = {"REDFEAT_HOME": str(data_dir), "COLUMNS": "200"}
        res = runner.invoke(app, ["alerts", "run", "--interval", "1s", "--once"], env=env)
        assert res.exit_code == 0, res.output
        assert "hot_cpu" in res.output and "firing" in res.output
        res = runner.invoke(app, ["alerts", "list"], env=env)
        assert res.exit_code == 0, res.output
        assert "hot_cpu" in res.output and "cpu:web-1" in res.output and "firing" in res.output
        assert "avg(1m) > 90" in res.output
        res = runner.invoke(app, ["alerts", "history", "hot_cpu"], env=env)
        assert res.exit_code == 0, res.output
        assert "ok" in res.output and "firing" in res.output and "95" in res.output
        res = runner.invoke(app, ["alerts", "run", "--interval", "soon", "--once"], env=env)
        assert res.exit_code == 2 and "soon" in res.output
        assert store.alerts.get("hot_cpu").state == "firing"


def test_cli_alerts_run_stops_cleanly_on_ctrl_c(data_dir: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    with FeatureStore(data_dir=data_dir) as store:
        now = int(time.time())
        feed(store.series("cpu"), now - 120, now + 600, 95.0)
        store.alerts.add("hot", "cpu", threshold=90, window="1m", for_=0)
        env = {**os.environ, "REDFEAT_HOME": str(data_dir), "COLUMNS": "200"}
        cmd = [sys.executable, "-m", "redfeat.serve.cli", "alerts", "run", "--interval", "200ms"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while store.alerts.get("hot").state != "firing" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert store.alerts.get("hot").state == "firing"
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, out
        assert "ok -> firing" in out and out.rstrip().endswith("stopped")
        assert len(store.alerts.history("hot")) == 1  # evaluated many times, fired once
