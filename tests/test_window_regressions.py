"""Regressions of the window-features review: connection state after errors, replays after
a read timeout, future event times, and the cost of a read."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest
import redis

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.errors import BackendError, ConfigurationError, ValidationError
from redfeat.windows.spec import WindowFeatures

T0 = 1_767_225_600  # 2026-01-01 in epoch seconds


def _define(store: FeatureStore) -> None:
    store.apply(
        WindowFeatures("w", entity="u", source="x", aggs=["count", "sum"], windows=["1h"], hop="1m")
    )


def _batch(ids: list[str], t: float = T0) -> pd.DataFrame:
    return pd.DataFrame({"entity_id": ids, "x": np.ones(len(ids)), "event_time": [t] * len(ids)})


def _reads_are_in_step(store: FeatureStore) -> None:
    """Reads on this thread answer for the entity asked, many times over."""
    for _ in range(50):
        assert store.get("w", "a", as_of=T0 + 1) == {"x_count_1h": 1, "x_sum_1h": 5.0}
        assert store.get("w", "nobody", as_of=T0 + 1) == {"x_count_1h": 0, "x_sum_1h": 0.0}
    assert store.get_many("w", ["nobody", "a"], as_of=T0 + 1)[1]["x_sum_1h"] == 5.0


def test_error_reply_in_record_many_leaves_the_connection_in_step(store: FeatureStore) -> None:
    _define(store)
    store.record("w", "a", 5.0, ts=T0)
    store.client.set(store.keys.window_tiles("w", "bad"), "not a hash")  # WRONGTYPE
    ids = ["bad"] + [f"e{i}" for i in range(200)]
    with pytest.raises(BackendError, match="WRONGTYPE"):
        store.record_many("w", _batch(ids))
    _reads_are_in_step(store)
    # the other entities' events were recorded, the broken one only refused
    assert store.get("w", "e199", as_of=T0 + 1) == {"x_count_1h": 1, "x_sum_1h": 1.0}
    with pytest.raises(BackendError, match="'bad'"):
        store.get("w", "bad", as_of=T0 + 1)
    _reads_are_in_step(store)


def test_raising_progress_callback_leaves_the_connection_in_step(store: FeatureStore) -> None:
    _define(store)
    store.record("w", "a", 5.0, ts=T0)

    def boom(done: int, total: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        store.record_many("w", _batch([f"e{i}" for i in range(3000)]), progress=boom)
    _reads_are_in_step(store)


def test_malformed_tile_hash_is_named_and_reads_go_on(store: FeatureStore) -> None:
    _define(store)
    store.record("w", "a", 5.0, ts=T0)
    store.client.hset(store.keys.window_tiles("w", "odd"), "abc", "x")
    with pytest.raises(BackendError, match="'odd'"):
        store.get_many("w", ["odd", "a"], as_of=T0 + 1)
    _reads_are_in_step(store)


# -- a read timeout: the server may have run the call, so an additive one is not replayed --

# Busy for ARGV[1] seconds by a clock the script can see: Valkey freezes TIME inside a
# script but has os.clock() (the server's CPU time: on a loaded machine the loop lasts
# longer, never shorter); Redis 7.0 has no os library but a TIME that moves.
LOOP = """local ok, clock = pcall(function() return os.clock end)
local now = ok and clock or function() local t = redis.call('TIME') return t[1] + t[2] / 1e6 end
local t0 = now()
while now() - t0 < tonumber(ARGV[1]) do end
return 1"""


@contextmanager
def _server_busy(client: redis.Redis, seconds: float) -> Iterator[None]:
    """Another connection keeps the server busy (one Lua loop) for at least ``seconds``. The
    loop is sent from this thread before anything else (a thread of its own might start
    after the call it should hold up, on a loaded machine)."""
    conn = client.connection_pool.get_connection()
    try:
        conn.send_command("EVAL", LOOP, 0, seconds)  # type: ignore[no-untyped-call]
        time.sleep(0.3)  # the loop is running (the server read it): later commands queue behind
        yield
    finally:
        conn.read_response()
        client.connection_pool.release(conn)


def _slow_store(client: redis.Redis, project: str) -> FeatureStore:
    kwargs = client.connection_pool.connection_kwargs
    sock = kwargs.get("path")
    c = (
        redis.Redis(unix_socket_path=sock, socket_timeout=0.2)
        if sock
        else redis.Redis(
            host=kwargs["host"],
            port=kwargs["port"],
            db=kwargs.get("db", 0),
            password=kwargs.get("password"),
            socket_timeout=0.2,
        )
    )
    return FeatureStore(client=c, project=project)


def test_read_timeout_does_not_count_a_window_event_twice(
    store: FeatureStore, client: redis.Redis, project: str
) -> None:
    _define(store)
    slow = _slow_store(client, project)
    try:
        slow.record("w", "a", 1.0, ts=T0)  # the script is loaded on this connection
        # record_many's first call imports and builds what it needs; done here, so that the
        # call below reaches the server while it is still busy (the loop's length is an
        # estimate, shorter on a machine that was busy while it was measured)
        slow.record_many("w", _batch(["c"], T0))
        batch = _batch(["a", "b"], T0 + 3)
        with _server_busy(client, 2.5), pytest.raises(BackendError, match="unknown"):
            slow.record("w", "a", 10.0, ts=T0 + 1)
        # the server ran the queued call once; it was not sent again
        assert slow.get("w", "a", as_of=T0 + 2) == {"x_count_1h": 2, "x_sum_1h": 11.0}
        with _server_busy(client, 2.5), pytest.raises(BackendError, match="unknown"):
            slow.record_many("w", batch)
        assert slow.get_many("w", ["a", "b"], as_of=T0 + 4) == [
            {"x_count_1h": 3, "x_sum_1h": 12.0},
            {"x_count_1h": 1, "x_sum_1h": 1.0},
        ]
    finally:
        slow.close()
        slow.client.close()


def test_read_timeout_does_not_apply_a_compare_and_set_twice(
    store: FeatureStore, client: redis.Redis, project: str
) -> None:
    """A compare-and-set replayed after it ran fails its own check; the caller would then
    merge (increment) again. So it is not replayed either."""
    store.apply(FeatureView("v", entity="u", fields=[Field("x", t.Int)]))
    slow = _slow_store(client, project)
    busy: list[Any] = []

    def merge(current: dict[str, object] | None) -> dict[str, object]:
        if not busy:  # the server turns busy between the read and the write
            ctx = _server_busy(client, 1.5)
            ctx.__enter__()
            busy.append(ctx)
        return {"x": cast(int, (current or {}).get("x") or 0) + 1}

    try:
        slow.write("v", "a", {"x": 1})
        res = slow._ctx.registry.get("v")
        with pytest.raises(BackendError, match="unknown"):
            slow._online._cas(res, "a", None, merge, ["x"])
        busy.pop().__exit__(None, None, None)
        assert slow.get("v", "a") == {"x": 2}
    finally:
        for ctx in busy:  # the check failed early: still wait for the loop to end
            ctx.__exit__(None, None, None)
        slow.close()
        slow.client.close()


def test_record_survives_a_dropped_idle_connection(
    store: FeatureStore, client: redis.Redis
) -> None:
    _define(store)
    store.record("w", "a", 1.0, ts=T0)
    conn = store._online.direct.conn()
    conn.send_command("CLIENT", "ID")
    client.client_kill_filter(_id=str(conn.read_response()))
    assert store.record("w", "a", 1.0, ts=T0 + 1)
    assert store.get("w", "a", as_of=T0 + 2) == {"x_count_1h": 2, "x_sum_1h": 2.0}


# -- event times ahead of now ---------------------------------------------------------------


def test_events_more_than_one_hop_ahead_are_refused(store: FeatureStore) -> None:
    store.apply(
        WindowFeatures("f", entity="u", source="x", aggs=["count"], windows=["1h"], hop="5m")
    )
    now = time.time()
    for i in range(0, 7200, 60):
        store.record("f", "a", 1.0, ts=now - i)
        store.record("f", "b", 1.0, ts=now - i)
    before = store.get_many("f", ["a", "b"])
    with pytest.raises(ValidationError, match="future_event_time") as err:
        store.record("f", "a", 1.0, ts=now + 900)
    assert err.value.problems[0].entity == "a"
    with pytest.raises(ValidationError, match="'f'"):
        store.record("f", "b", 1.0, ts=7_258_000_000)  # 2199
    rows = _batch(["a", "b", "c"], now)
    rows.loc[2, "event_time"] = now + 3600
    with pytest.raises(ValidationError, match="1 event") as err:
        store.record_many("f", rows)
    assert (err.value.problems[0].entity, err.value.problems[0].row) == ("c", 2)
    assert store.get_many("f", ["a", "b", "c"]) == [*before, {"x_count_1h": 0}]
    # one hop ahead (a producer's clock a little fast) is taken, and reads at now still work
    assert store.record("f", "a", 1.0, ts=now + 290)
    assert store.record("f", "b", 1.0, ts=time.time())
    got = store.get_many("f", ["a", "b"])
    assert got[1] is not None and got[1]["x_count_1h"] >= 60


def test_get_many_gives_none_for_an_entity_whose_window_lost_tiles(store: FeatureStore) -> None:
    _define(store)
    store.record("w", "a", 1.0, ts=T0)
    store.record("w", "a", 1.0, ts=T0 + 3 * 3600)  # the tile at T0 is dropped
    store.record("w", "b", 2.0, ts=T0 + 1200)
    assert store.get_many("w", ["a", "b"], as_of=T0 + 1800) == [
        None,
        {"x_count_1h": 1, "x_sum_1h": 2.0},
    ]
    with pytest.raises(ConfigurationError, match="retention dropped"):
        store.get("w", "a", as_of=T0 + 1800)
    assert store.get_many("w", ["a"]) == [{"x_count_1h": 0, "x_sum_1h": 0.0}]


# -- a read costs what the asked windows cover, not the largest window ----------------------


def test_short_window_reads_only_its_buckets(store: FeatureStore) -> None:
    store.apply(
        WindowFeatures(
            "r", entity="u", source="x", aggs=["count", "sum"], windows=["5m", "1d"], hop="1m"
        )
    )
    ev = pd.DataFrame(
        {
            "entity_id": ["a"] * 1440,
            "x": np.arange(1440.0),
            "event_time": T0 - 60.0 * np.arange(1440),
        }
    )
    store.record_many("r", ev)
    short = store.get("r", "a", as_of=T0, features=["x_count_5m", "x_sum_5m"])
    assert short == {"x_count_5m": 6, "x_sum_5m": float(sum(range(6)))}
    # a tile outside the short window is malformed: only reads that cover it see it
    key = store.keys.window_tiles("r", "a")
    store.client.hset(key, str(T0 * 1000 // 60_000 - 600), b"short")
    assert store.get("r", "a", as_of=T0, features=["x_sum_5m"]) == {"x_sum_5m": 15.0}
    assert store.get_many("r", ["a", "b"], as_of=T0, features=["x_count_5m"]) == [
        {"x_count_5m": 6},
        {"x_count_5m": 0},
    ]
    with pytest.raises(BackendError, match="malformed"):
        store.get("r", "a", as_of=T0, features=["x_sum_1d"])
    store.client.hdel(key, str(T0 * 1000 // 60_000 - 600))
    # the retention mark is read too: a short window reaching into dropped tiles is None
    store.record("r", "a", 1.0, ts=T0 + 2 * 86_400)
    assert store.get_many("r", ["a"], as_of=T0 + 120, features=["x_count_5m"]) == [None]
    assert store.get_many("r", ["a"], as_of=T0 + 86_400, features=["x_count_5m"]) == [
        {"x_count_5m": 0}
    ]
    assert store.get_many("r", ["a"], as_of=T0 + 2 * 86_400, features=["x_count_5m"]) == [
        {"x_count_5m": 1}
    ]


def test_get_features_reads_only_the_asked_buckets(store: FeatureStore) -> None:
    store.apply(
        WindowFeatures("r", entity="u", source="x", aggs=["count"], windows=["5m", "1d"], hop="1m")
    )
    now = time.time()
    store.record("r", "c", 1.0, ts=now - 30)
    store.record("r", "c", 1.0, ts=now - 3600)
    key = store.keys.window_tiles("r", "c")
    store.client.hset(key, str(int(now) // 60 - 600), b"short")  # outside the 5m window
    assert store.get_features(["c"], ["r:x_count_5m"]) == [{"x_count_5m": 1}]
    store.client.hdel(key, str(int(now) // 60 - 600))
    assert store.get_features(["c"], ["r:x_count_5m", "r:x_count_1d"]) == [
        {"x_count_5m": 1, "x_count_1d": 2}
    ]


# -- no leakage: a window at t counts only events at or before t ----------------------------


def test_a_window_at_a_past_time_counts_no_event_after_it(store: FeatureStore) -> None:
    store.apply(
        WindowFeatures(
            "k",
            entity="u",
            source="x",
            aggs=["count", "sum", "max", "last"],
            windows=["10m"],
            hop="5m",
        )
    )
    base = T0 - T0 % 300  # the start of a hop: every event below falls in one tile
    store.record("k", "a", 1.0, ts=base + 10)
    store.record_many("k", _batch(["a", "a"], base + 20).assign(x=[2.0, 3.0]))
    store.record("k", "a", 100.0, ts=base + 200)  # after every time asked below
    store.record("k", "a", 7.0, ts=base + 15)  # late, within the same tile
    want = {"x_count_10m": 4, "x_sum_10m": 13.0, "x_max_10m": 7.0, "x_last_10m": 3.0}
    assert store.get("k", "a", as_of=base + 20) == want
    assert store.get_many("k", ["a"], as_of=base + 20) == [want]
    assert store.get("k", "a", as_of=base + 12, features=["x_count_10m"]) == {"x_count_10m": 1}
    assert store.get("k", "a", as_of=base + 200, features=["x_sum_10m"]) == {"x_sum_10m": 113.0}
    rows = pd.DataFrame(
        {
            "entity_id": ["a", "a", "a"],
            "event_time": pd.to_datetime([base + 20, base + 12, base + 5], unit="s"),
        }
    )
    frame = store.training_frame(rows, ["k:x_count_10m", "k:x_sum_10m", "k:x_last_10m"])
    assert frame.x_count_10m.tolist() == [4, 1, 0]
    assert frame.x_sum_10m.tolist() == [13.0, 1.0, 0.0]
    assert frame.x_last_10m.iloc[0] == 3.0 and frame.x_last_10m.iloc[1] == 1.0
    # at now too: an event a little ahead (a fast producer clock) is not counted yet
    now = time.time()
    store.record("k", "b", 1.0, ts=now - 1)
    store.record("k", "b", 5.0, ts=now + 120)
    assert store.get("k", "b") == {
        "x_count_10m": 1,
        "x_sum_10m": 1.0,
        "x_max_10m": 1.0,
        "x_last_10m": 1.0,
    }
    assert store.get_features(["b"], ["k:x_sum_10m"]) == [{"x_sum_10m": 1.0}]


def test_a_tile_without_raw_events_is_not_cut_but_not_answered(store: FeatureStore) -> None:
    store.apply(
        WindowFeatures("k", entity="u", source="x", aggs=["count"], windows=["10m"], hop="5m")
    )
    base = T0 - T0 % 300
    store.record("k", "a", 1.0, ts=base + 10)
    store.record("k", "a", 1.0, ts=base + 100)
    key = store.keys.window_events("k", "a")
    store.client.hdel(key, str(base // 300))  # as stored before raw events were kept
    store.record("k", "a", 1.0, ts=base + 50)  # merged into the tile, no raw kept
    assert store.client.hget(key, str(base // 300)) is None
    assert store.get("k", "a", as_of=base + 200) == {"x_count_10m": 3}  # the whole tile
    assert store.get("k", "a", as_of=base + 5) == {"x_count_10m": 0}  # before all of it
    assert store.get_many("k", ["a"], as_of=base + 60) == [None]  # it would need a cut
    with pytest.raises(ConfigurationError, match="raw events"):
        store.get("k", "a", as_of=base + 60)
    rows = pd.DataFrame({"entity_id": ["a"], "event_time": pd.to_datetime([base + 60], unit="s")})
    assert np.isnan(store.training_frame(rows, ["k:x_count_10m"]).x_count_10m.iloc[0])


def test_retention_drops_raw_events_with_their_tiles(store: FeatureStore) -> None:
    store.apply(
        WindowFeatures("k", entity="u", source="x", aggs=["count"], windows=["10m"], hop="5m")
    )
    base = T0 - T0 % 300
    times = [base, base + 300, base + 600]
    store.record_many("k", _batch(["a"] * 3, base).assign(event_time=times))
    key = store.keys.window_events("k", "a")
    assert len(store.client.hkeys(key)) == 3
    store.record("k", "a", 1.0, ts=base + 3600)
    assert store.client.hkeys(key) == [str((base + 3600) // 300).encode()]
    assert store.get("k", "a", as_of=base + 3600) == {"x_count_10m": 1}
    # malformed raw events are named, like a malformed tile
    store.record("k", "a", 1.0, ts=base + 3700)
    store.client.hset(key, str((base + 3600) // 300), b"odd")
    with pytest.raises(BackendError, match="malformed"):
        store.get("k", "a", as_of=base + 3650)
