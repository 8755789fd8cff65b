"""Time series: the verbs, storage round trips, retention, label queries, bad input."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from redfeat import ConfigurationError, ConflictError, FeatureStore, NotFoundError
from redfeat.timeseries.chunks import CHUNK_POINTS, SLACK_POINTS, decode_chunk, encode_chunk

T0 = 1_700_000_040  # epoch seconds, on a minute boundary


def _keys(store: FeatureStore) -> list[bytes]:
    return list(store.client.scan_iter(match=f"rf:{store.project}:ts:*", count=1000))


def test_add_range_latest_stats(store: FeatureStore) -> None:
    s = store.series("cpu", labels={"host": "a"})
    assert s.latest() is None
    assert s.stats() == {"count": 0}
    for i in range(5):
        s.add(float(i), T0 + 10 * i)
    ts, vs = s.range(T0, T0 + 40)
    assert vs.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert ts.dtype == np.dtype("datetime64[ms]")
    assert ts[1] == np.datetime64(T0 * 1000 + 10_000, "ms")
    assert s.range(T0 + 10, T0 + 30)[1].tolist() == [1.0, 2.0, 3.0]
    assert s.range(T0, T0 + 40, limit=2)[1].tolist() == [0.0, 1.0]
    last = s.latest()
    assert last == (datetime.fromtimestamp(T0 + 40, UTC), 4.0)
    st = s.stats()
    assert st["count"] == 5 and st["min"] == 0.0 and st["max"] == 4.0 and st["mean"] == 2.0
    assert st["std"] == pytest.approx(np.std([0, 1, 2, 3, 4], ddof=1))
    assert st["first"] == 0.0 and st["last"] == 4.0
    df = s.range(T0, T0 + 40, as_frame=True)
    assert list(df.columns) == ["value"] and str(df.index.tz) == "UTC"
    assert df.index[0] == pd.Timestamp(T0, unit="s", tz="UTC")


def test_timestamps_datetime_naive_is_utc_and_ms_precision(store: FeatureStore) -> None:
    s = store.series("t")
    s.add(1.0, datetime(2026, 1, 1, 12, 0, 0, 123456))  # naive: UTC; microseconds floored
    s.add(2.0, datetime(2026, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1))))  # 12:00 UTC
    s.add(3.0, 1767268800.5)  # epoch seconds: 2026-01-01T12:00:00.500
    ts, vs = s.range(None, None)
    assert ts.tolist() == [
        datetime(2026, 1, 1, 12, 0, 0),
        datetime(2026, 1, 1, 12, 0, 0, 123000),
        datetime(2026, 1, 1, 12, 0, 0, 500000),
    ]
    assert vs.tolist() == [2.0, 1.0, 3.0]


def test_add_many_inputs_and_pandas_series(store: FeatureStore) -> None:
    s = store.series("m")
    idx = pd.date_range("2026-01-01", periods=100, freq="10s", tz="UTC")
    assert s.add_many(pd.Series(np.arange(100.0), index=idx)) == 100
    ts, vs = s.range(None, None)
    assert len(ts) == 100 and vs[-1] == 99.0
    assert ts[0] == np.datetime64("2026-01-01T00:00:00", "ms")
    s2 = store.series("m2")
    s2.add_many([datetime(2026, 1, 1), datetime(2026, 1, 2)], [1, 2])
    s2.add_many(np.array([1767225601, 1767225602]), np.array([3.0, 4.0]))  # epoch s
    assert len(s2.range()[0]) == 4


def test_series_is_kept_in_registry_and_views_unaffected(store: FeatureStore) -> None:
    store.series("cpu", labels={"host": "a"}, retention="2d", rollups=["5m", "1m"])
    assert store.views() == []
    again = store.series("cpu")
    assert again.labels == {"host": "a"}
    assert again.spec.retention_ms == 2 * 86_400_000
    assert [r.label for r in again.spec.rollups] == ["1m", "5m"]
    updated = store.series("cpu", labels={"host": "b"}, retention="3d")
    assert updated.labels == {"host": "b"}
    assert store.series("cpu").spec.retention_ms == 3 * 86_400_000
    with pytest.raises(ConflictError, match="rollups"):
        store.series("cpu", rollups=["1h"])


def test_compression_round_trip_bit_exact() -> None:
    rng = np.random.default_rng(3)
    ts = np.sort(rng.choice(10**12, 5000, replace=False)).astype(np.int64)
    vs = rng.normal(0, 1e6, 5000)
    vs[:6] = [-0.0, 0.0, 5e-324, -1.7976931348623157e308, 1e-300, 2.0**-1074]
    out_ts, out_vs = decode_chunk(encode_chunk(ts, vs))
    assert np.array_equal(out_ts, ts)
    assert np.array_equal(out_vs.view(np.int64), vs.view(np.int64))


def test_store_round_trip_bit_exact_through_chunks(store: FeatureStore) -> None:
    s = store.series("exact", retention="3650d")
    rng = np.random.default_rng(5)
    n = CHUNK_POINTS * 3 + SLACK_POINTS + 17
    ts = (T0 * 1000 + np.arange(n) * 1000).astype(np.int64)
    vs = rng.standard_normal(n) * 10.0 ** rng.integers(-300, 300, n)
    vs[::97] = -0.0
    s.add_many(ts / 1000, vs)
    for i in range(50):  # single adds fill and seal the head too
        s.add(float(i) / 3, (ts[-1] + 1000 * (i + 1)) / 1000)
    out_ts, out_vs = s.range(None, None)
    exp_vs = np.concatenate((vs, np.arange(50) / 3))
    assert len(out_ts) == n + 50
    assert np.array_equal(out_vs.view(np.int64), exp_vs.view(np.int64))
    assert store.client.zcard(store.keys.series_chunk_index("exact")) >= 3


def test_single_adds_seal_chunks(store: FeatureStore) -> None:
    s = store.series("seal", rollups=[])
    pipe_ts = T0 * 1000
    n = CHUNK_POINTS + SLACK_POINTS + 10
    for i in range(n):
        s.add(float(i), (pipe_ts + 10 * i) / 1000)
    assert store.client.zcard(store.keys.series_chunk_index("seal")) == 1
    # the newest points stay in the head, so slightly late ones still land there
    assert store.client.strlen(store.keys.series_head("seal")) == (SLACK_POINTS + 10) * 16
    assert s.range()[1].tolist() == [float(i) for i in range(n)]
    late = pipe_ts + 10 * CHUNK_POINTS + 5
    s.add(-1.0, late / 1000)  # late, into the head
    got = s.range((late - 5) / 1000, (late + 5) / 1000)[1].tolist()
    assert got == [float(CHUNK_POINTS), -1.0, float(CHUNK_POINTS + 1)]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("first", 1.0), ("last", 5.0), ("min", 1.0), ("max", 5.0), ("sum", 6.0)],
)
def test_duplicate_policies(store: FeatureStore, policy: str, expected: float) -> None:
    s = store.series(f"dup_{policy}", duplicate_policy=policy)
    s.add(1.0, T0)
    s.add(2.0, T0 + 10)
    s.add(5.0, T0)
    assert s.range(T0, T0)[1].tolist() == [expected]
    assert s.range(T0, T0 + 59, bucket="1m", agg="count")[1].tolist() == [2.0]
    assert s.range(T0, T0 + 59, bucket="1m", agg="sum")[1].tolist() == [expected + 2.0]


def test_duplicate_policy_block_refuses_and_changes_nothing(store: FeatureStore) -> None:
    s = store.series("blk", duplicate_policy="block")
    s.add(1.0, T0)
    with pytest.raises(ConflictError, match="block"):
        s.add(2.0, T0)
    with pytest.raises(ConflictError, match="twice"):
        s.add_many([T0 + 5, T0 + 5], [1.0, 2.0])
    with pytest.raises(ConflictError):
        s.add_many([T0 + 1, T0], [3.0, 4.0])
    assert s.range()[1].tolist() == [1.0]


def test_duplicates_inside_a_batch_follow_policy_in_input_order(store: FeatureStore) -> None:
    s = store.series("inb", duplicate_policy="last")
    s.add_many([T0, T0 + 1, T0], [1.0, 2.0, 3.0])
    assert s.range()[1].tolist() == [3.0, 2.0]
    f = store.series("inb_first", duplicate_policy="first")
    f.add_many([T0, T0 + 1, T0], [1.0, 2.0, 3.0])
    assert f.range()[1].tolist() == [1.0, 2.0]


def test_raw_retention_counts_back_from_newest(store: FeatureStore) -> None:
    s = store.series("ret", retention="1h", rollups=["1m"], rollup_retention="2h")
    s.add(1.0, T0)
    s.add(2.0, T0 + 3600)  # exactly at the boundary: T0 is newest - retention, kept
    assert s.range()[1].tolist() == [1.0, 2.0]
    s.add(3.0, T0 + 3601)
    assert s.range()[1].tolist() == [2.0, 3.0]
    with pytest.raises(ConfigurationError, match="older than the retention"):
        s.add(9.0, T0)
    s.add(4.0, T0 + 1)  # out of order but inside retention: accepted
    assert s.range()[1].tolist() == [4.0, 2.0, 3.0]
    # the rollup keeps its own, longer retention
    assert s.range(T0, T0 + 59, bucket="1m", agg="count")[1].tolist() == [2.0]


def test_retention_drops_whole_chunks_and_tile_pages(store: FeatureStore) -> None:
    s = store.series("old", retention="1d", rollups=["1m"], rollup_retention="1d")
    n = CHUNK_POINTS * 4
    ts = T0 + np.arange(n) * 60.0  # one per minute: ~11 days
    s.add_many(ts[: n // 2], np.ones(n // 2))
    s.add_many(ts[n // 2 :], np.ones(n - n // 2))
    store.timeseries.cleanup()
    out_ts, _ = s.range()
    newest = int(ts[-1] * 1000)
    assert out_ts.astype(np.int64).min() >= newest - 86_400_000
    assert len(out_ts) == 1441  # one per minute over exactly a day, both ends included
    chunks = store.client.zcard(store.keys.series_chunk_index("old"))
    assert chunks <= 2  # ~1440 points: one chunk and a straddling one at most
    pages = store.client.zrange(store.keys.series_pages("old"), 0, -1)
    assert 1 <= len(pages) <= 13  # 128-minute pages covering one day
    tiles_ts, counts = s.range(None, None, bucket="1m", agg="count")
    assert counts.sum() == 1440 or counts.sum() == 1441


def test_cleanup_walks_registry(store: FeatureStore) -> None:
    a = store.series("a", retention="10m", rollups=[])
    b = store.series("b", retention="10m", rollups=[])
    for s in (a, b):
        s.add_many(T0 + np.arange(CHUNK_POINTS * 3) * 1.0, np.zeros(CHUNK_POINTS * 3))
    removed = store.timeseries.cleanup()
    assert removed >= 0
    for name in ("a", "b"):
        assert store.client.zcard(store.keys.series_chunk_index(name)) <= 1


def test_delete_removes_every_key(store: FeatureStore) -> None:
    s = store.series("gone", labels={"x": "1"})
    s.add_many(T0 + np.arange(CHUNK_POINTS + 5) * 10.0, np.ones(CHUNK_POINTS + 5))
    assert _keys(store)
    s.delete()
    assert _keys(store) == []
    assert store.series_list(["x=1"]) == []


def test_series_list_and_mrange_filters(store: FeatureStore) -> None:
    store.series("a", labels={"host": "a", "region": "eu"}).add(1.0, T0)
    store.series("b", labels={"host": "b", "region": "us"}).add(2.0, T0)
    store.series("c", labels={"host": "c"}).add(3.0, T0)
    assert store.series_list(["host=a"]) == ["a"]
    assert store.series_list(["region!=eu"]) == ["b", "c"]
    assert store.series_list(["host=(a,c)"]) == ["a", "c"]
    assert store.series_list(["region="]) == ["c"]
    assert store.series_list(["region!="]) == ["a", "b"]
    assert store.series_list(["host!=(a,b)", "region="]) == ["c"]
    out = store.mrange(["region!="], T0, T0 + 10)
    assert list(out) == ["a", "b"]
    assert out["b"][1].tolist() == [2.0]
    with pytest.raises(ConfigurationError, match="label filter"):
        store.series_list(["nonsense"])


def test_mrange_group_by_reduce(store: FeatureStore) -> None:
    for name, region, vals in [("a", "eu", [1, 2]), ("b", "eu", [3, 4]), ("c", "us", [5, 7])]:
        store.series(name, labels={"region": region}).add_many([T0, T0 + 60], vals)
    out = store.mrange(["region!="], T0, T0 + 60, group_by="region", reduce="sum")
    assert list(out) == ["region=eu", "region=us"]
    assert out["region=eu"][1].tolist() == [4.0, 6.0]
    mx = store.mrange(
        ["region=eu"], T0, T0 + 60, bucket="1m", agg="max", group_by="region", reduce="max"
    )
    assert mx["region=eu"][1].tolist() == [3.0, 4.0]
    with pytest.raises(ConfigurationError, match="together"):
        store.mrange(["region=eu"], group_by="region")


@pytest.mark.parametrize("name", ["{a}", "x:y", "naïve ☃", "a|b*?[", " spaced ", "{ts|cpu}"])
def test_hostile_names_and_labels_stay_apart(store: FeatureStore, name: str) -> None:
    s = store.series(name, labels={"k": name})
    s.add(1.0, T0)
    other = store.series(name + "x")
    other.add(2.0, T0)
    assert store.series(name).range()[1].tolist() == [1.0]
    assert store.series_list([f"k={name}"]) == [name]
    s.delete()
    assert other.range()[1].tolist() == [2.0]


def test_bad_input_is_refused_and_changes_nothing(store: FeatureStore) -> None:
    s = store.series("bad")
    s.add(1.0, T0)
    before = s.range()
    with pytest.raises(ConfigurationError, match="non-empty"):
        store.series("")
    with pytest.raises(ConfigurationError, match="label"):
        store.series("lbl", labels={"a": ""})
    with pytest.raises(ConfigurationError, match="label name"):
        store.series("lbl", labels={"a=b": "1"})
    with pytest.raises(ConfigurationError, match="duplicate_policy"):
        store.series("p", duplicate_policy="newest")
    with pytest.raises(ConfigurationError, match="non-empty string"):
        store.series(123)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="labels must be a dict"):
        store.series("lbl", labels="host=a")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="retention"):
        store.series("r", retention="forever")
    with pytest.raises(ConfigurationError, match="rollup"):
        store.series("r", rollups=["1x"])
    with pytest.raises(ConfigurationError, match="longer than 30d"):
        store.series("r", rollups=["60d"])
    with pytest.raises(ConfigurationError, match="not a rollup"):
        store.series("r", rollups=["1m"], rollup_retention={"5m": "1d"})
    with pytest.raises(ConfigurationError, match="one-dimensional"):
        s.add_many("abc", [1.0])
    with pytest.raises(ConfigurationError, match="needs values"):
        s.add_many([T0 + 1])
    with pytest.raises(ConfigurationError, match="DatetimeIndex"):
        s.add_many(pd.Series([1.0, 2.0]))
    with pytest.raises(ConfigurationError, match="limit"):
        s.range(limit=-1)
    with pytest.raises(ConfigurationError, match="not finite"):
        s.add(float("nan"), T0 + 1)
    with pytest.raises(ConfigurationError, match="not finite"):
        s.add(float("inf"))
    with pytest.raises(ConfigurationError, match="must be a number"):
        s.add("1.0", T0 + 1)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="must be a number"):
        s.add(True, T0 + 1)
    with pytest.raises(ConfigurationError, match="must match"):
        s.add_many([T0 + 1, T0 + 2], [1.0])
    with pytest.raises(ConfigurationError, match="not finite"):
        s.add_many([T0 + 1, T0 + 2], [1.0, float("nan")])
    with pytest.raises(ConfigurationError, match="values must be numbers"):
        s.add_many([T0 + 1], ["x"])
    with pytest.raises(ConfigurationError, match="timestamp"):
        s.add(1.0, "yesterday")
    with pytest.raises(ConfigurationError, match="1900"):
        s.add_many([1e12], [1.0])
    with pytest.raises(ConfigurationError, match="agg"):
        s.range(T0, T0, bucket="1m", agg="median")
    with pytest.raises(ConfigurationError, match="bucket"):
        s.range(T0, T0, bucket="soon")
    with pytest.raises(NotFoundError):
        store.correlate(["bad", "missing"], T0, T0 + 1)
    after = s.range()
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert store.series_list() == ["bad"]


def test_huge_batch_goes_in_steps(store: FeatureStore) -> None:
    s = store.series("huge", retention="3650d", rollups=["1h"])
    n = (1 << 20) + 1000
    s.add_many(T0 + np.arange(n, dtype=np.float64), np.ones(n))
    assert s.range(None, None, bucket="1h", agg="count")[1].sum() == n
    assert len(s.range()[0]) == n


def test_bulk_tiles_at_the_rollup_retention_edge_are_whole(store: FeatureStore) -> None:
    s = store.series("edge", retention="1d", rollups=["1h"], rollup_retention="5h")
    h0 = T0 - T0 % 3600
    s.add_many(h0 + np.arange(600) * 60.0, np.ones(600))  # 10 hours, one per minute
    # newest is 9:59; the rollup keeps buckets ending after 4:59, i.e. from 4:00, whole
    assert s.source(h0 + 4 * 3600, None, bucket="1h") == "tiles:1h"
    ts, counts = s.range(h0 + 4 * 3600, None, bucket="1h", agg="count")
    assert counts.tolist() == [60.0] * 6
    assert s.source(h0 + 3 * 3600, None, bucket="1h") == "raw"  # past the rollup: raw


def test_a_batch_longer_than_the_retention_keeps_its_tail_raw_and_all_in_tiles(
    store: FeatureStore,
) -> None:
    s = store.series("long", retention="1h", rollups=["1h"], rollup_retention="1d")
    h0 = T0 - T0 % 3600
    s.add_many(h0 + np.arange(180) * 60.0, np.ones(180))  # 3 hours in one call
    ts, _ = s.range()
    assert len(ts) == 61  # 1:59 .. 2:59, both ends: newest - retention is kept
    _, counts = s.range(h0, None, bucket="1h", agg="count")
    assert counts.tolist() == [60.0, 60.0, 60.0]  # the rollup saw every point


def test_appends_wait_for_a_careful_writers_lock(store: FeatureStore) -> None:
    s = store.series("locked")
    s.add(1.0, T0)
    store.client.set(store.keys.series_lock("locked"), "someone", px=300)
    started = time.monotonic()
    s.add(2.0, T0 + 1)
    assert time.monotonic() - started >= 0.2  # waited for the lock to go
    assert s.range()[1].tolist() == [1.0, 2.0]
