"""Rollup tiles against a pandas resample of the same final raw data, for every agg,
with out-of-order points and duplicates; the tile path and the raw path agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from redfeat import FeatureStore
from redfeat.timeseries import Series
from redfeat.timeseries.chunks import CHUNK_POINTS
from redfeat.timeseries.tiles import AGGS

T0_MS = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000 + 3_333  # mid-day offsets below
MIN = 60_000


def reference(ts: np.ndarray, vs: np.ndarray, bucket_ms: int, agg: str) -> pd.Series:
    s = pd.Series(vs, index=pd.to_datetime(ts, unit="ms"))
    r = s.resample(f"{bucket_ms}ms", origin="epoch", closed="left", label="left")
    out = {
        "avg": r.mean,
        "sum": r.sum,
        "min": r.min,
        "max": r.max,
        "count": r.count,
        "first": r.first,
        "last": r.last,
        "std": r.std,
        "var": r.var,
    }
    x = r.max() - r.min() if agg == "range" else out[agg]()
    return x[r.count() > 0].astype(float)


def _combine(policy: str, old: float, new: float) -> float:
    return {
        "first": old,
        "last": new,
        "min": min(old, new),
        "max": max(old, new),
        "sum": old + new,
    }[policy]


def _write_randomly(
    stores: list[Series], rng: np.random.Generator, policy: str
) -> tuple[np.ndarray, np.ndarray]:
    """Write the same random batches (bulk, out of order, duplicates, singles) to every
    series in ``stores``; return the final raw data the policy implies."""
    n = 3 * CHUNK_POINTS
    base = T0_MS + np.sort(rng.choice(8 * 3600 * 1000, n, replace=False)).astype(np.int64)
    vals = np.round(rng.normal(50, 10, n), 3)
    truth: dict[int, float] = {}

    def write(ts: np.ndarray, vs: np.ndarray) -> None:
        for s in stores:
            if len(ts) == 1 and rng.random() < 0.5:
                s.add(float(vs[0]), int(ts[0]) / 1000)
            else:
                s.add_many(ts / 1000, vs)
        for t, v in zip(ts.tolist(), vs.tolist(), strict=True):
            truth[t] = _combine(policy, truth[t], v) if t in truth else v

    # 1. the middle part in order, in bulk (sealed chunks built client-side)
    mid = slice(n // 3, 2 * n // 3)
    write(base[mid], vals[mid])
    # 2. the first third shuffled, in batches: out of order, landing before every chunk
    first = rng.permutation(n // 3)
    for part in np.array_split(first, 5):
        write(base[part], vals[part])
    # 3. the last third, some in order singly, the rest in one bulk
    last = np.arange(2 * n // 3, n)
    for i in last[:40]:
        write(base[i : i + 1], vals[i : i + 1])
    write(base[last[40:]], vals[last[40:]])
    # 4. duplicates with new values all over, in a batch and singly (inside the head too)
    dup = rng.choice(n, 300, replace=False)
    write(base[dup], np.round(rng.normal(50, 30, len(dup)), 3))
    for i in rng.choice(n, 10, replace=False).tolist() + [n - 1, n - 2]:
        write(base[i : i + 1], np.array([float(rng.integers(-100, 100))]))
    # 5. new points between existing ones, out of order
    extra = base[rng.choice(n - 1, 200, replace=False)] + 1
    extra = np.setdiff1d(extra, base)
    write(rng.permutation(extra), np.round(rng.normal(50, 10, len(extra)), 3))
    ts = np.array(sorted(truth), np.int64)
    return ts, np.array([truth[t] for t in ts.tolist()])


@pytest.mark.parametrize(
    ("policy", "seed"), [("last", 1), ("first", 2), ("min", 3), ("max", 4), ("sum", 5)]
)
def test_rollups_equal_pandas_resample(store: FeatureStore, policy: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    tiled = store.series("tiled", rollups=("1m", "5m", "1h"), duplicate_policy=policy)
    raw = store.series("raw", rollups=(), duplicate_policy=policy)
    ts, vs = _write_randomly([tiled, raw], rng, policy)

    for s in (tiled, raw):
        got_ts, got_vs = s.range(None, None)
        assert np.array_equal(got_ts.astype(np.int64), ts)
        if policy == "sum":
            np.testing.assert_allclose(got_vs, vs, rtol=1e-12)
        else:
            assert np.array_equal(got_vs, vs)

    lo, hi = int(ts[0]) / 1000, int(ts[-1]) / 1000
    expected_source = {
        "1m": "tiles:1m",
        "5m": "tiles:5m",
        "15m": "tiles:5m",
        "1h": "tiles:1h",
        "2h": "tiles:1h",
        "7m": "tiles:1m",
        "90s": "raw",
    }
    for bucket, src in expected_source.items():
        bucket_ms = pd.Timedelta(bucket.replace("m", "min")).value // 1_000_000
        assert tiled.source(lo, hi, bucket=bucket) == src
        assert raw.source(lo, hi, bucket=bucket) == "raw"
        for agg in AGGS:
            ref = reference(ts, vs, bucket_ms, agg)
            for s in (tiled, raw):
                got_ts, got_vs = s.range(lo, hi, bucket=bucket, agg=agg)
                want_ts = pd.DatetimeIndex(ref.index).as_unit("ms").asi8
                assert np.array_equal(got_ts.astype(np.int64), want_ts)
                np.testing.assert_allclose(
                    got_vs, ref.to_numpy(), rtol=1e-9, atol=1e-9, err_msg=f"{bucket} {agg}"
                )


def test_partial_range_returns_whole_overlapping_buckets(store: FeatureStore) -> None:
    s = store.series("w", rollups=("1m",))
    ts = T0_MS - T0_MS % MIN + np.arange(0, 600_000, 10_000)  # 10 minutes, 6 per minute
    s.add_many(ts / 1000, np.arange(len(ts), dtype=float))
    # start and end fall inside buckets: both buckets come back whole, on both paths
    start, end = (ts[0] + 65_000) / 1000, (ts[0] + 185_000) / 1000
    t1, c1 = s.range(start, end, bucket="1m", agg="count")
    t2, c2 = s.range(start, end, bucket="2m", agg="count")
    assert c1.tolist() == [6.0, 6.0, 6.0]
    assert t1[0].astype(np.int64) == ts[0] + MIN
    assert np.array_equal(t2.astype(np.int64) % (2 * MIN), np.zeros(len(t2), np.int64))
    raw = store.series("w_raw", rollups=())
    raw.add_many(ts / 1000, np.arange(len(ts), dtype=float))
    assert raw.range(start, end, bucket="1m", agg="count")[1].tolist() == c1.tolist()
    assert np.array_equal(
        raw.range(start, end, bucket="2m", agg="sum")[1],
        s.range(start, end, bucket="2m", agg="sum")[1],
    )


def test_single_point_bucket_std_is_nan_like_pandas(store: FeatureStore) -> None:
    s = store.series("one", rollups=("1m",))
    s.add(5.0, T0_MS / 1000)
    s.add(7.0, T0_MS / 1000 + 600)
    _, std = s.range(T0_MS / 1000, T0_MS / 1000 + 600, bucket="1m", agg="std")
    assert np.isnan(std).all() and len(std) == 2
    _, first = s.range(T0_MS / 1000, T0_MS / 1000 + 600, bucket="10m", agg="first")
    assert first.tolist() == [5.0, 7.0] or first.tolist() == [5.0]


def test_negative_timestamps_align_to_epoch(store: FeatureStore) -> None:
    s = store.series("neg", rollups=("1m",), retention="36500d")
    ts = np.array([-90_000, -30_000, -1, 0, 59_999], np.int64)
    s.add_many(ts / 1000, [1.0, 2.0, 3.0, 4.0, 5.0])
    got_ts, got = s.range(None, None, bucket="1m", agg="sum")
    assert got_ts.astype(np.int64).tolist() == [-120_000, -60_000, 0]
    assert got.tolist() == [1.0, 5.0, 9.0]
