"""Anomalies (planted spikes found, clean data quiet), outliers by IQR, correlation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from redfeat import ConfigurationError, FeatureStore
from redfeat.timeseries import InsufficientDataError, Series

DAY = 86_400
T0 = 1_700_006_400  # a multiple of 1h (and 1m)


def _fill(s: Series, rng: np.random.Generator, spikes: list[int]) -> tuple[np.ndarray, int]:
    """A day of baseline then an hour to judge, one point per 10 s, uniform noise in
    [49, 51] (bounded: a clean point is never 3 std away); spikes at the given offsets
    into the judged hour. Returns the timestamps (s) and the judged hour's start."""
    ts = T0 + np.arange(0, DAY + 3600, 10)
    vs = 50 + rng.uniform(-1, 1, len(ts))
    start = T0 + DAY
    for k in spikes:
        vs[np.searchsorted(ts, start) + k] = 65.0
    s.add_many(ts, vs)
    return ts, start


@pytest.mark.parametrize("method", ["zscore", "ewma"])
def test_point_anomalies_found_at_planted_spikes_only(store: FeatureStore, method: str) -> None:
    rng = np.random.default_rng(11)
    spiky = store.series("spiky")
    ts, start = _fill(spiky, rng, [30, 150, 300])
    found = spiky.anomalies(start, start + 3599, method=method)
    want = [pd.Timestamp(start + 10 * k, unit="s", tz="UTC") for k in (30, 150, 300)]
    assert list(found.index) == want
    assert (found["value"] == 65.0).all() and (found["score"] > 3).all()

    clean = store.series("clean")
    _, start = _fill(clean, np.random.default_rng(12), [])
    assert clean.anomalies(start, start + 3599, method=method).empty


def test_mad_flags_the_buckets_holding_spikes(store: FeatureStore) -> None:
    s = store.series("mad")
    _, start = _fill(s, np.random.default_rng(13), [30, 300])
    found = s.anomalies(start, start + 3599, method="mad")
    assert [t.timestamp() - start for t in found.index] == [300.0, 3000.0]  # their minutes
    clean = store.series("mad_clean")
    _, start = _fill(clean, np.random.default_rng(14), [])
    assert clean.anomalies(start, start + 3599, method="mad").empty


def test_is_anomalous(store: FeatureStore) -> None:
    s = store.series("live")
    _, start = _fill(s, np.random.default_rng(15), [])
    assert s.is_anomalous(70.0, start + 3600)
    assert not s.is_anomalous(50.3, start + 3600)
    assert s.is_anomalous(30.0, start + 3600, method="ewma")
    assert not s.is_anomalous(50.3, start + 3600, method="mad")


def test_baseline_comes_from_tiles(store: FeatureStore) -> None:
    s = store.series("base", rollups=("1m", "1h"))
    ts, start = _fill(s, np.random.default_rng(16), [])
    b = s.baseline(int(start * 1000), "1d")
    raw = s.range(start - DAY, start - 1)[1]
    assert b.rollup == "1m" and b.count == len(raw)
    assert b.mean == pytest.approx(raw.mean(), rel=1e-12)
    assert b.std == pytest.approx(raw.std(ddof=1), rel=1e-9)


def test_too_little_baseline_is_an_explicit_answer(store: FeatureStore) -> None:
    s = store.series("young")
    s.add_many(T0 + np.arange(10) * 10, np.ones(10))
    with pytest.raises(InsufficientDataError, match="needs at least 30") as exc:
        s.anomalies(T0 + 100, T0 + 200)
    assert exc.value.needed == 30 and exc.value.found == 6  # the one whole minute before
    with pytest.raises(InsufficientDataError, match="bucket"):
        s.anomalies(T0 + 100, T0 + 200, method="mad")
    with pytest.raises(InsufficientDataError):
        s.is_anomalous(5.0, T0 + 100)


def test_anomalies_need_rollups_and_a_known_method(store: FeatureStore) -> None:
    s = store.series("bare", rollups=())
    s.add_many(T0 + np.arange(100) * 10, np.ones(100))
    with pytest.raises(ConfigurationError, match="no rollups"):
        s.anomalies(T0 + 500, T0 + 990)
    t = store.series("t")
    with pytest.raises(ConfigurationError, match="method"):
        t.anomalies(T0, T0 + 10, method="prophet")
    with pytest.raises(ConfigurationError, match="start and end"):
        t.anomalies(None, T0)


def test_outliers_by_iqr(store: FeatureStore) -> None:
    s = store.series("iqr")
    rng = np.random.default_rng(17)
    vs = rng.normal(0, 1, 500)
    vs[[10, 200, 450]] = [9.0, -8.0, 12.0]
    ts = T0 + np.arange(500) * 10
    s.add_many(ts, vs)
    q1, q3 = np.percentile(vs, [25, 75])
    want = ts[(vs < q1 - 1.5 * (q3 - q1)) | (vs > q3 + 1.5 * (q3 - q1))]
    got = s.outliers(T0, T0 + 5000)
    assert [int(t.timestamp()) for t in got.index] == want.tolist()
    assert {10, 200, 450} <= {int((t.timestamp() - T0) // 10) for t in got.index}
    assert len(s.outliers(T0, T0 + 5000, k=100)) == 0


def test_correlate_matches_numpy_corrcoef(store: FeatureStore) -> None:
    rng = np.random.default_rng(18)
    ts = T0 + np.arange(0, 7200, 10)
    a = np.cumsum(rng.normal(0, 1, len(ts)))
    b = 2 * a + rng.normal(0, 5, len(ts))
    c = -a + rng.normal(0, 20, len(ts))
    keep = rng.random(len(ts)) > 0.2  # c misses some points, and two whole minutes
    keep[(ts >= T0 + 600) & (ts < T0 + 720)] = False
    for name, vs, m in [("a", a, None), ("b", b, None), ("c", c, keep)]:
        store.series(name).add_many(ts if m is None else ts[m], vs if m is None else vs[m])
    got = store.correlate(["a", "b", "c"], T0, T0 + 7199, bucket="1m")

    def means(vs: np.ndarray, m: np.ndarray | None) -> pd.Series:
        idx = pd.to_datetime(ts if m is None else ts[m], unit="s")
        return pd.Series(vs if m is None else vs[m], index=idx).resample("1min").mean()

    frame = pd.concat([means(a, None), means(b, None), means(c, keep)], axis=1).dropna()
    want = np.corrcoef(frame.to_numpy().T)
    assert len(frame) == 118
    np.testing.assert_allclose(got.to_numpy(), want, rtol=1e-9)
    assert list(got.columns) == ["a", "b", "c"]
    with pytest.raises(InsufficientDataError):
        store.correlate(["a", "b"], T0, T0 + 60, bucket="1m")
