"""Regressions from the time-series review: each test is one of the reviewer's repros."""

from __future__ import annotations

import numpy as np
import pytest

from redfeat import ConfigurationError, ConflictError, FeatureStore, NotFoundError

DAY0 = 1_700_006_400  # a UTC midnight, epoch seconds


def test_correction_keeps_trimmed_points_in_coarse_tiles(store: FeatureStore) -> None:
    """A value-changing duplicate updates the 1d tile in place: raw (1h) no longer holds
    most of the day, and a rebuild from raw would drop those points from the tile."""
    s = store.series("m", retention="1h", rollups=("1m", "1d"), duplicate_policy="last")
    t = DAY0 + np.arange(0, 6 * 3600, 1.0)
    s.add_many(t, np.ones(len(t)))
    store.timeseries.cleanup()
    s.add(5.0, float(t[-1]))
    day = (DAY0, DAY0 + 86399)
    assert s.source(*day, bucket="1d") == "tiles:1d"
    assert s.range(*day, bucket="1d", agg="count")[1].tolist() == [21600.0]
    assert s.range(*day, bucket="1d", agg="sum")[1].tolist() == [21604.0]
    assert s.range(*day, bucket="1d", agg="max")[1].tolist() == [5.0]
    assert s.range(*day, bucket="1d", agg="min")[1].tolist() == [1.0]
    assert s.range(*day, bucket="1d", agg="last")[1].tolist() == [5.0]
    assert s.range(*day, bucket="1d", agg="first")[1].tolist() == [1.0]
    want = np.ones(len(t))
    want[-1] = 5.0
    std = s.range(*day, bucket="1d", agg="std")[1]
    np.testing.assert_allclose(std, [want.std(ddof=1)], rtol=1e-9)


def test_correction_with_default_retention_near_its_edge(store: FeatureStore) -> None:
    s = store.series("defaults")
    t = DAY0 + np.arange(0, 7 * 86400 + 6 * 3600, 10.0)
    s.add_many(t, np.ones(len(t)))
    store.timeseries.cleanup()
    s.add(2.0, DAY0 + 12 * 3600)  # still inside the raw retention; its day straddles the cut
    got = s.range(DAY0, DAY0 + 86399, bucket="1d", agg="count")[1]
    assert got.tolist() == [8640.0]
    assert s.range(DAY0, DAY0 + 86399, bucket="1d", agg="sum")[1].tolist() == [8641.0]


@pytest.mark.parametrize("policy", ["last", "min", "max", "sum"])
def test_corrections_match_the_true_data(store: FeatureStore, policy: str) -> None:
    """Random corrections inside a short raw retention: count/sum/avg/std/first/last of the
    1h tiles equal the data the policy implies; min/max are exact or a bound."""
    rng = np.random.default_rng(7)
    s = store.series("r", retention="20m", rollups=("1m", "1h"), duplicate_policy=policy)
    t = DAY0 + np.arange(0, 3600, 2.0)
    v = np.round(rng.normal(50, 10, len(t)), 3)
    s.add_many(t, v)
    store.timeseries.cleanup()
    truth = v.copy()
    for i in rng.choice(np.flatnonzero(t >= t[-1] - 600), 40, replace=False):
        new = float(np.round(rng.normal(50, 20), 3))
        s.add(new, float(t[i]))
        old = truth[i]
        truth[i] = {"last": new, "min": min(old, new), "max": max(old, new), "sum": old + new}[
            policy
        ]
    hour = (DAY0, DAY0 + 3599)

    def agg(a: str) -> float:
        return float(s.range(*hour, bucket="1h", agg=a)[1][0])

    assert agg("count") == len(t)
    assert agg("sum") == pytest.approx(truth.sum(), rel=1e-12)
    assert agg("avg") == pytest.approx(truth.mean(), rel=1e-12)
    assert agg("std") == pytest.approx(truth.std(ddof=1), rel=1e-9)
    assert agg("first") == truth[0] and agg("last") == truth[-1]
    assert agg("min") <= truth.min() and agg("max") >= truth.max()
    # the 1m tiles hold whole buckets of raw: exact everywhere
    b, mins = s.range(t[-1] - 300, t[-1], bucket="1m", agg="min")
    for start, m in zip(b.astype(np.int64) // 1000, mins, strict=True):
        assert m == truth[(t >= start) & (t < start + 60)].min()


def test_reopening_keeps_rollup_retention(store: FeatureStore) -> None:
    a = store.series("cpu", retention="60d", rollups=("1m", "5m"), rollup_retention="60d")
    a.add_many(DAY0 + np.arange(0, 30 * 86400, 60.0), np.ones(30 * 1440))
    store.series("cpu", rollups=("1m", "5m"))  # another process opening it
    store.series("cpu")
    assert [r.retention_ms for r in store.series("cpu").spec.rollups] == [60 * 86_400_000] * 2
    # a partial mapping changes only the rollup it names
    store.series("cpu", rollup_retention={"5m": "90d"})
    got = {r.label: r.retention_ms // 86_400_000 for r in store.series("cpu").spec.rollups}
    assert got == {"1m": 60, "5m": 90}
    store.timeseries.cleanup()
    s = store.series("cpu")
    span = (DAY0, DAY0 + 30 * 86400 - 1)
    assert s.source(*span, bucket="1m") == "tiles:1m"
    assert len(s.range(*span, bucket="1m", agg="count")[0]) == 30 * 1440
    # one value still sets every rollup
    store.series("cpu", rollup_retention="40d")
    assert {r.retention_ms for r in store.series("cpu").spec.rollups} == {40 * 86_400_000}


@pytest.mark.parametrize("value", [0.1, 45.23, 1e9 + 0.7])
def test_constant_metric_is_not_anomalous(store: FeatureStore, value: float) -> None:
    s = store.series("flat", rollups=("1m", "5m"))
    t = DAY0 + np.arange(0, 86400 + 30, 10.0)  # a day, then 3 points into the next minute
    s.add_many(t, np.full(len(t), value))
    at = DAY0 + 86400
    base = s.baseline(at * 1000, "1d")
    assert base.mean == value and base.std == 0.0
    for method in ("zscore", "ewma", "mad"):
        assert not s.is_anomalous(value, at + 5, method=method)
        assert s.is_anomalous(value * 1.01, at + 5, method=method)
        assert len(s.anomalies(at, at + 59, method=method)) == 0


def test_mad_flat_baseline_with_one_spike(store: FeatureStore) -> None:
    """MAD 0 but min != max: bucket means carry rounding; the value itself scores 0."""
    s = store.series("spiky", rollups=("1m",))
    t = DAY0 + np.arange(0, 86400, 10.0)
    v = np.full(len(t), 0.1)
    v[100] = 7.0
    s.add_many(t, v)
    s.add_many(DAY0 + 86400 + np.arange(0, 30, 10.0), np.full(3, 0.1))
    at = DAY0 + 86400
    assert not s.is_anomalous(0.1, at + 5, method="mad")
    assert s.is_anomalous(0.2, at + 5, method="mad")
    assert len(s.anomalies(at, at + 59, method="mad")) == 0


def test_deleted_series_refuses_writes_through_open_handles(store: FeatureStore) -> None:
    d = store.series("del", rollups=("1m",))
    d.add_many(DAY0 + np.arange(10.0), np.ones(10))
    stale = store.series("del")  # e.g. held by a writer process
    d.delete()
    with pytest.raises(NotFoundError, match="deleted"):
        stale.add(5.0, DAY0 + 100.0)
    with pytest.raises(NotFoundError, match="deleted"):
        stale.add_many(DAY0 + np.arange(100.0, 200.0), np.ones(100))
    assert store.series_list() == []
    prefix = store.keys.series(d.spec.escaped)
    assert list(store.client.scan_iter(match=f"{prefix}*", count=1000)) == []
    # recreated under the same name: the old handle writes by the new definition
    d2 = store.series("del", rollups=("1h",), duplicate_policy="sum")
    stale.add(1.0, DAY0)
    stale.add(2.0, DAY0)
    assert stale.spec == d2.spec
    assert d2.range()[1].tolist() == [3.0]
    assert d2.range(DAY0, DAY0 + 3599, bucket="1h", agg="count")[1].tolist() == [1.0]


def test_redefinition_by_another_handle_is_seen_by_live_ones(store: FeatureStore) -> None:
    a = store.series("p", rollups=("1m",), duplicate_policy="last")
    store.series("p", duplicate_policy="sum")  # another process changes the policy
    a.add(1.0, DAY0)
    a.add(2.0, DAY0)
    assert a.spec.duplicate_policy == "sum"
    assert a.range()[1].tolist() == [3.0]


def test_concurrent_creators_share_one_definition(store: FeatureStore) -> None:
    """Two creators race: the first definition wins (HSETNX), the second opens it."""
    from dataclasses import replace

    from redfeat.timeseries.spec import SeriesRegistry, build_spec

    reg = SeriesRegistry(store.client, store.keys)
    first = build_spec("race", None, "7d", ["1m"], None, "sum")
    first = replace(first, gen="g1")
    assert reg.create(first)
    # the second creator read "no such series" before the first wrote: its create fails
    second = build_spec("race", None, "7d", ["1h"], None, "block")
    assert not reg.create(replace(second, gen="g2"))
    assert reg.require("race") == first
    b = store.series("race")
    b.add(1.0, DAY0)
    b.add(2.0, DAY0)
    assert b.range()[1].tolist() == [3.0]


def test_block_batch_over_one_step_writes_nothing(store: FeatureStore) -> None:
    from redfeat.timeseries.series import MAX_BATCH

    s = store.series("blk", duplicate_policy="block", rollups=("1h",), retention="3650d")
    n = MAX_BATCH + 10
    t = DAY0 + np.arange(n, dtype=float)
    t[-1] = t[0]  # the last point duplicates the first, across the step boundary
    with pytest.raises(ConflictError, match="twice in the batch"):
        s.add_many(t, np.ones(n))
    assert s.stats() == {"count": 0}


def test_reversed_window_is_empty_bucketed_too(store: FeatureStore) -> None:
    x = store.series("x", rollups=("1m",))
    x.add(3.0, 60.0)
    assert len(x.range(100, 70)[1]) == 0
    assert len(x.range(100, 70, bucket="1m", agg="count")[1]) == 0
    assert len(x.range(100, 70, bucket="7m", agg="count")[1]) == 0  # the raw path too


def test_numpy_integer_timestamps_are_accepted(store: FeatureStore) -> None:
    x = store.series("x")
    assert x.add(1.0, np.int64(DAY0)) == DAY0 * 1000
    assert x.add(2.0, np.int32(DAY0 + 1)) == (DAY0 + 1) * 1000
    assert x.add(3.0, np.float64(DAY0 + 2)) == (DAY0 + 2) * 1000
    assert x.range()[1][:2].tolist() == [1.0, 2.0]


def test_correlate_with_a_constant_series_names_it(store: FeatureStore) -> None:
    from redfeat.timeseries.analysis import InsufficientDataError

    a = store.series("ca", rollups=("1m",))
    b = store.series("cb", rollups=("1m",))
    t = DAY0 + np.arange(0, 600, 10.0)
    a.add_many(t, np.full(len(t), 5.0))
    b.add_many(t, np.arange(len(t), dtype=float))
    with pytest.raises(InsufficientDataError, match=r"\['ca'\] are constant"):
        store.correlate(["ca", "cb"], t[0], t[-1])


def test_unselectable_labels_and_padded_filters_are_refused(store: FeatureStore) -> None:
    with pytest.raises(ConfigurationError, match="filters"):
        store.series("paren", labels={"k": "(z)"})
    with pytest.raises(ConfigurationError, match="filters"):
        store.series("paren", labels={" k": "z"})
    store.series("ok", labels={"k": "z", "j": " padded "})
    assert store.series_list("k=z") == ["ok"]
    assert store.series_list("j= padded ") == ["ok"]  # values match exactly
    for padded in (" k=z", "k =z", " k=(z)"):
        with pytest.raises(ConfigurationError, match="spaces"):
            store.series_list(padded)


def test_failed_tile_update_writes_no_point(store: FeatureStore) -> None:
    """A damaged stored tile fails the script before its first write (no rollback)."""
    from redfeat import BackendError

    s = store.series("atom", rollups=("1m",))
    s.add(1.0, DAY0)
    bucket = DAY0 * 1000 // 60_000
    page = store.keys.series_page(s.spec.escaped, 60_000, bucket // 128)
    store.client.hset(page, str(bucket % 128), b"x" * 10)
    with pytest.raises(BackendError, match="damaged"):
        s.add(2.0, DAY0 + 1)
    with pytest.raises(BackendError, match="damaged"):
        s.add_many([DAY0 + 2.0, DAY0 + 3.0], [2.0, 3.0])
    assert s.range()[1].tolist() == [1.0]


def test_retention_trims_the_head(store: FeatureStore) -> None:
    s = store.series("sparse", retention="1h", rollups=())
    for day in range(3):
        t = DAY0 + day * 86400 + np.arange(0, 86400, 60.0)
        s.add_many(t, np.ones(len(t)))
    assert store.timeseries.cleanup() >= 1
    head = store.keys.series_head(s.spec.escaped)
    stored = int(store.client.strlen(head)) // 16
    assert stored <= 61  # the last hour of 1 min points (the cut is inclusive)
    assert len(s.range()[0]) == stored
    s.add(2.0, DAY0 + 3 * 86400)  # writes after the cut still land
    assert s.latest() is not None and s.latest()[1] == 2.0  # type: ignore[index]


@pytest.mark.parametrize("n", [2, 5000])  # the append path, and the bulk/careful paths
def test_too_old_is_one_rule_on_every_path(store: FeatureStore, n: int) -> None:
    """Judged against the newest point before the batch: older than it minus retention
    fails the batch; points the batch itself pushes out are accepted (kept in tiles, out of
    the raw window)."""
    a = store.series("a", retention="1h", rollups=("1m",))
    t = np.linspace(DAY0, DAY0 + 7200, n)  # spans 2h into an empty series: accepted
    a.add_many(t, np.ones(n))
    assert a.range()[0].astype(np.int64).min() >= (DAY0 + 3600) * 1000
    span = (DAY0, DAY0 + 7200)
    assert a.range(*span, bucket="1m", agg="count")[1].sum() == n
    newest = DAY0 + 7200
    late = np.linspace(newest - 3700, newest + 10, n)  # the first point is too old
    with pytest.raises(ConfigurationError, match="older than the retention"):
        a.add_many(late, np.full(n, 2.0))
    assert 2.0 not in a.range()[1]
    with pytest.raises(ConfigurationError, match="older than the retention"):
        a.add(2.0, newest - 3700)
    a.add(3.0, newest - 3500)  # inside the window: fine


@pytest.mark.parametrize("rollups", [("1m", "1h", "1d"), ("1d",)])
def test_correcting_the_extreme_keeps_min_max_exact(
    store: FeatureStore, rollups: tuple[str, ...]
) -> None:
    """Raw holds the whole bucket: a correction of the point holding the min (max) gives
    the exact new min (max), from the finer rollup's tiles when one divides the bucket
    (no day of raw decoded), else from raw."""
    rng = np.random.default_rng(3)
    s = store.series("ext", rollups=rollups)
    t = DAY0 + np.arange(0, 86400, 10.0)
    v = np.round(rng.normal(50, 10, len(t)), 2)
    s.add_many(t, v)
    truth = v.copy()
    for _ in range(3):
        i, j = int(np.argmin(truth)), int(np.argmax(truth))
        s.add_many([t[i], t[j]], [50.0, 51.0])  # the extremes move inside the spread
        truth[i], truth[j] = 50.0, 51.0
        day = (DAY0, DAY0 + 86399)
        assert s.range(*day, bucket="1d", agg="min")[1].tolist() == [truth.min()]
        assert s.range(*day, bucket="1d", agg="max")[1].tolist() == [truth.max()]
        assert s.range(*day, bucket="1d", agg="count")[1].tolist() == [len(t)]
        got = s.range(*day, bucket="1d", agg="sum")[1][0]
        assert got == pytest.approx(truth.sum(), rel=1e-12)
