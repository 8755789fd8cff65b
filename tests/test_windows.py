"""Window features against a brute-force computation over the raw events."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from redfeat import (
    ConfigurationError,
    ConflictError,
    FeatureStore,
    FeatureView,
    Field,
    NotFoundError,
)
from redfeat import types as t
from redfeat.windows.spec import WindowFeatures

HOP = 300_000  # 5m in ms
WINDOWS = {"15m": 900_000, "1h": 3_600_000, "6h": 21_600_000, "2d": 172_800_000}
AGGS = ["count", "sum", "avg", "min", "max", "std", "var", "first", "last"]
IDS = ["u1", "we{ir}d:|%*", "ünï còdé"]
T0 = 1_767_225_600_000  # 2026-01-01 in ms


def _brute(ev: pd.DataFrame, ent: str, t_ms: int, w_ms: int) -> dict[str, float | None]:
    """Every event at or before t whose bucket starts in [round_down(t - W, hop), t]."""
    lo = (t_ms - w_ms) // HOP * HOP
    sel = ev[(ev.ent == ent) & (ev.ts >= lo) & (ev.ts <= t_ms)].sort_values("ts")
    v = sel.v.to_numpy()
    n = len(v)
    return {
        "count": n,
        "sum": float(v.sum()),
        "avg": float(v.mean()) if n else None,
        "min": float(v.min()) if n else None,
        "max": float(v.max()) if n else None,
        "std": float(v.std(ddof=1)) if n > 1 else None,
        "var": float(v.var(ddof=1)) if n > 1 else None,
        "first": float(v[0]) if n else None,
        "last": float(v[-1]) if n else None,
    }


def _close(got: object, want: float | None) -> bool:
    if want is None:
        return got is None or (isinstance(got, float) and np.isnan(got))
    return got is not None and bool(np.isclose(float(got), want, rtol=1e-9, atol=1e-6))  # type: ignore[arg-type]


@pytest.fixture
def events() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 900
    ts = T0 + rng.choice(30 * 3_600_000, size=n, replace=False)  # distinct, 30 hours
    return pd.DataFrame(
        {
            "ent": rng.choice(IDS, size=n),
            "ts": ts,
            "v": np.round(rng.normal(100.0, 40.0, size=n), 3),
        }
    )


def _define(store: FeatureStore) -> WindowFeatures:
    wf = WindowFeatures(
        "txn_stats",
        entity="user",
        source="amount",
        aggs=AGGS,
        windows=list(WINDOWS),
        hop="5m",
    )
    store.apply(wf)
    return wf


def _feed(store: FeatureStore, ev: pd.DataFrame) -> None:
    """Out of order: single records, then bulk chunks as pandas, dicts and Arrow."""
    head = ev.iloc[:120]
    for ent, ts, v in zip(head.ent.tolist(), head.ts.tolist(), head.v.tolist(), strict=True):
        assert store.record("txn_stats", ent, v, ts=ts / 1000)
    rest = ev.iloc[120:].rename(columns={"ent": "entity_id", "v": "amount"})
    rest = rest.assign(event_time=pd.to_datetime(rest.ts, unit="ms")).drop(columns="ts")
    a, b, c = np.array_split(np.arange(len(rest)), 3)
    r1 = store.record_many("txn_stats", rest.iloc[a])
    r2 = store.record_many("txn_stats", rest.iloc[b].to_dict("records"))
    r3 = store.record_many("txn_stats", pa.Table.from_pandas(rest.iloc[c], preserve_index=False))
    assert r1.events + r2.events + r3.events == len(rest)
    assert r1.dropped_late == r2.dropped_late == r3.dropped_late == 0


def test_get_as_of_matches_brute_force(store: FeatureStore, events: pd.DataFrame) -> None:
    _define(store)
    _feed(store, events)
    rng = np.random.default_rng(11)
    times = rng.integers(T0 - 3_600_000, T0 + 32 * 3_600_000, size=25)
    for ent in IDS:
        for t_ms in times.tolist():
            got = store.get("txn_stats", ent, as_of=t_ms / 1000)
            assert got is not None
            for label, w in WINDOWS.items():
                want = _brute(events, ent, t_ms, w)
                for agg in AGGS:
                    g = got[f"amount_{agg}_{label}"]
                    assert _close(g, want[agg]), (ent, t_ms, label, agg, g, want[agg])


def test_training_frame_matches_brute_force(store: FeatureStore, events: pd.DataFrame) -> None:
    _define(store)
    _feed(store, events)
    rng = np.random.default_rng(5)
    n = 300
    rows = pd.DataFrame(
        {
            "entity_id": rng.choice([*IDS, "never_seen"], size=n),
            "event_time": pd.to_datetime(
                rng.integers(T0 - 3_600_000, T0 + 32 * 3_600_000, size=n), unit="ms"
            ),
        }
    )
    feats = [f"txn_stats:amount_{a}_{w}" for w in WINDOWS for a in AGGS]
    frame = store.training_frame(rows, feats)
    assert list(frame.columns) == ["entity_id", "event_time", *[f.split(":")[1] for f in feats]]
    row_ms = (rows.event_time.dt.as_unit("ms").astype("int64")).tolist()
    for i, (ent, t_ms) in enumerate(zip(rows.entity_id.tolist(), row_ms, strict=True)):
        for label, w in WINDOWS.items():
            want = _brute(events, ent, t_ms, w)
            for agg in AGGS:
                g = frame[f"amount_{agg}_{label}"].iloc[i]
                assert _close(g, want[agg]), (ent, t_ms, label, agg, g, want[agg])
    arrow = store.training_frame(pa.Table.from_pandas(rows), feats[:4], as_arrow=True)
    assert arrow.column_names[2:] == [f.split(":")[1] for f in feats[:4]]


def test_get_features_mixes_views_and_windows(store: FeatureStore) -> None:
    store.apply(FeatureView("user_profile", entity="user", fields=[Field("age", t.Int)]))
    _define(store)
    store.write("user_profile", "u1", {"age": 41})
    store.record("txn_stats", "u1", 12.5)
    store.record("txn_stats", "u1", 7.5)
    store.record("txn_stats", "u2", 1.0)
    rows = store.get_features(
        ["u1", "u2", "u3"],
        ["txn_stats:amount_sum_1h", "user_profile:age", "txn_stats:amount_max_2d"],
    )
    assert rows == [
        {"amount_sum_1h": 20.0, "age": 41, "amount_max_2d": 12.5},
        {"amount_sum_1h": 1.0, "age": None, "amount_max_2d": 1.0},
        {"amount_sum_1h": 0.0, "age": None, "amount_max_2d": None},
    ]
    full = store.get_features(["u1"], ["txn_stats:amount_count_15m"], full_feature_names=True)
    assert full == [{"txn_stats__amount_count_15m": 2}]
    assert store.get("txn_stats", "u1", features=["amount_avg_1h"]) == {"amount_avg_1h": 10.0}
    assert store.get_many("txn_stats", ["u1", "u3"], features=["amount_count_1h"]) == [
        {"amount_count_1h": 2},
        {"amount_count_1h": 0},
    ]


def test_retention_drops_old_tiles(store: FeatureStore) -> None:
    store.apply(
        WindowFeatures(
            "clicks", entity="user", source="n", aggs=["count"], windows=["1h"], hop="5m"
        )
    )
    t0 = T0 / 1000
    for k in range(6):
        store.record("clicks", "u1", 1.0, ts=t0 + k * 300)
    key = store.keys.window_tiles("clicks", "u1")

    def tiles() -> list[bytes]:
        return [f for f in cast("list[bytes]", store.client.hkeys(key)) if f[:1] != b"_"]

    assert len(tiles()) == 6
    assert store.get("clicks", "u1", as_of=t0 + 1800) == {"n_count_1h": 6}
    store.record("clicks", "u1", 1.0, ts=t0 + 5 * 3600)  # five hours on: the old tiles go
    assert tiles() == [str(int((T0 + 5 * 3_600_000) // HOP)).encode()]
    assert store.get("clicks", "u1", as_of=t0 + 5 * 3600) == {"n_count_1h": 1}
    with pytest.raises(ConfigurationError, match="retention dropped"):
        store.get("clicks", "u1", as_of=t0 + 1800)
    assert store.record("clicks", "u1", 1.0, ts=t0) is False  # too late: refused, counted
    report = store.record_many(
        "clicks",
        [{"entity_id": "u1", "n": 1.0, "event_time": t0}, {"entity_id": "u1", "n": 2.0}],
        event_time_column=None,
    )
    assert report.dropped_late == 0 and report.events == 2
    late = store.record_many("clicks", [{"entity_id": "u1", "n": 1.0, "event_time": t0}])
    assert late.dropped_late == 1
    frame = store.training_frame(
        pd.DataFrame(
            {"entity_id": ["u1"], "event_time": [pd.Timestamp(T0 + 1_800_000, unit="ms")]}
        ),
        ["clicks:n_count_1h"],
    )
    assert np.isnan(frame["n_count_1h"].iloc[0])  # not answered rather than wrong


def test_two_threads_lose_nothing(store: FeatureStore) -> None:
    _define(store)
    now = datetime.now(UTC).timestamp()

    def work(k: int) -> None:
        for i in range(300):
            store.record("txn_stats", "shared", float(k * 1000 + i), ts=now - i)

    threads = [threading.Thread(target=work, args=(k,)) for k in (1, 2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    got = store.get("txn_stats", "shared", features=["amount_count_1h", "amount_sum_1h"])
    assert got == {
        "amount_count_1h": 600,
        "amount_sum_1h": float(sum(k * 1000 + i for k in (1, 2) for i in range(300))),
    }

    def bulk(k: int) -> None:
        for j in range(5):
            rows = [
                {"entity_id": "bulk", "amount": 1.0, "event_time": now - 3000 + k * 7 + j * 60 + i}
                for i in range(100)
            ]
            store.record_many("txn_stats", rows)

    threads = [threading.Thread(target=bulk, args=(k,)) for k in (1, 2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert store.get("txn_stats", "bulk", features=["amount_count_2d"]) == {"amount_count_2d": 1000}


def test_hostile_input_changes_nothing(store: FeatureStore) -> None:
    _define(store)
    odd = "a{b}:c|d ü"
    store.record("txn_stats", odd, 3.0)
    assert store.get("txn_stats", odd, features=["amount_sum_1h"]) == {"amount_sum_1h": 3.0}
    assert store.get("txn_stats", "a{b}:c|d", features=["amount_sum_1h"]) == {"amount_sum_1h": 0.0}
    for bad in (float("nan"), float("inf"), True, "3", None):
        with pytest.raises(ConfigurationError, match="txn_stats"):
            store.record("txn_stats", "h", bad)  # type: ignore[arg-type]
    for ts in (-5.0, datetime(2300, 1, 1), float("nan"), "yesterday"):
        with pytest.raises(ConfigurationError, match="nothing was recorded"):
            store.record("txn_stats", "h", 1.0, ts=ts)
    with pytest.raises(NotFoundError, match="nope"):
        store.record("nope", "h", 1.0)
    with pytest.raises(NotFoundError, match="amount_sum_3h"):
        store.get("txn_stats", "h", features=["amount_sum_3h"])
    good = {"entity_id": "h", "amount": 1.0, "event_time": T0 / 1000}
    for rows in (
        [good, {**good, "amount": float("nan")}],
        [good, {**good, "amount": True}],
        [good, {**good, "amount": "x"}],
        [good, {**good, "entity_id": None}],
        [good, {**good, "event_time": -1.0}],
        [good, {"entity_id": "h", "event_time": 1.0}],
        pd.DataFrame({"entity_id": ["h"], "amount": [1.0]}),
        pd.DataFrame({"entity_id": [1.5], "amount": [1.0], "event_time": [1.0]}),
        "not rows",
    ):
        with pytest.raises(ConfigurationError, match="txn_stats"):
            store.record_many("txn_stats", rows)
    got = store.get("txn_stats", "h", as_of=T0 / 1000, features=["amount_count_2d"])
    assert got == {"amount_count_2d": 0}
    with pytest.raises(ConfigurationError, match="with_meta"):
        store.get_many("txn_stats", ["h"], with_meta=True)


def test_definitions_are_checked(store: FeatureStore) -> None:
    def wf(**kw: object) -> WindowFeatures:
        args: dict[str, object] = {
            "entity": "user",
            "source": "amount",
            "aggs": ["sum"],
            "windows": ["1h"],
            "hop": "5m",
        }
        args.update(kw)
        return WindowFeatures("w", **args)  # type: ignore[arg-type]

    for kw, msg in (
        ({"windows": ["7m"]}, "multiple of the hop"),
        ({"hop": "500ms"}, "minimum"),
        ({"windows": ["365d"], "hop": "1s"}, "limit"),
        ({"aggs": ["median"]}, "aggs"),
        ({"aggs": "sum"}, "aggs"),
        ({"windows": ["1h", "60m"]}, "repeat"),
        ({"windows": ["1.5h"]}, "cannot name"),
    ):
        with pytest.raises(ConfigurationError, match=msg):
            wf(**kw)
    with pytest.raises(ConfigurationError, match="window features name"):
        WindowFeatures("bad name", entity="user", source="x", aggs=["sum"], windows=["1h"])
    assert store.apply(wf()) == {"user": "created", "w": "created"}
    assert store.apply(wf()) == {"w": "unchanged"}
    assert store.apply(wf(windows=["1h", "2h"])) == {"w": "updated"}
    with pytest.raises(ConflictError, match="hop"):
        store.apply(wf(hop="10m"))
    with pytest.raises(ConflictError, match="window features"):
        store.apply(FeatureView("w", entity="user", fields=[Field("a", t.Int)]))
    store.apply(FeatureView("v", entity="user", fields=[Field("a", t.Int)]))
    with pytest.raises(ConflictError, match="a view has that name"):
        store.apply(WindowFeatures("v", entity="user", source="x", aggs=["sum"], windows=["1h"]))
    assert [w.name for w in store.window_features()] == ["w"]
    assert [v.name for v in store.views()] == ["v"]
    assert store.window("w") == wf(windows=["1h", "2h"])
    with pytest.raises(NotFoundError, match="window features, not a view"):
        store.view("w")
    store.record("w", "u1", 1.0)
    assert store.delete_window("w") == 2  # the tile hash and the event hash
    assert store.window_features() == []


def test_record_many_reports_progress_and_merges_batches(store: FeatureStore) -> None:
    _define(store)
    rng = np.random.default_rng(3)
    n = 6000
    ents = rng.integers(0, 2500, n).astype(str)
    ts = T0 + rng.integers(0, 3_600_000, n)
    vs = rng.normal(size=n)
    frame = pd.DataFrame({"entity_id": ents, "amount": vs, "event_time": ts / 1000})
    seen: list[tuple[int, int]] = []
    half = n // 2
    # the second half overlaps the first's buckets: merged into existing tiles
    store.record_many("txn_stats", frame.iloc[:half])
    report = store.record_many(
        "txn_stats", frame.iloc[half:], progress=lambda d, t: seen.append((d, t))
    )
    assert report.events == n - half and seen[-1] == (n - half, n - half)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    at = (T0 + 3_600_000) / 1000
    got = store.get_many("txn_stats", ["7", "42"], as_of=at, features=["amount_sum_2d"])
    for ent, g in zip(["7", "42"], got, strict=True):
        assert g["amount_sum_2d"] == pytest.approx(float(vs[ents == ent].sum()), abs=1e-9)


def test_events_at_one_millisecond_keep_the_order_they_were_recorded_in(
    store: FeatureStore,
) -> None:
    # The tile-merge tie rule shared with series rollups (timeseries/lua.py TILE_MERGE):
    # the first recorded is first, the last recorded is last, across separate steps too.
    store.apply(WindowFeatures("w", entity="user", source="x", aggs=["first", "last"],
                               windows=["1h"], hop="5m"))  # fmt: skip
    at = datetime(2026, 1, 1, 0, 1, 0, 500_000, tzinfo=UTC)
    for value in (1.0, 2.0, 3.0):
        store.record("w", "u", value, ts=at)
    store.record_many("w", [{"entity_id": "u", "x": 4.0, "event_time": at}])
    got = store.get("w", "u", as_of=at)
    assert got == {"x_first_1h": 1.0, "x_last_1h": 4.0}
