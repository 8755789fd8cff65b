"""A retried write_many adds no versions (issue 17 item 3), even with two rows of one
entity at one event time: retried by the caller, or resent by the library itself after the
server dropped the connection (a real CLIENT KILL)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.codec import encode
from redfeat.core.keys import escape_id
from redfeat.core.time import to_us
from redfeat.online.writer import CHUNK, Item

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _apply(store: FeatureStore, **kw: Any) -> None:
    store.apply(FeatureView("v", entity="user", fields=[Field("x", t.Int)], **kw))


def _xs(store: FeatureStore, entity: str) -> list[int]:
    return [v.values["x"] for v in store.history("v", entity)]


def test_write_many_twice_at_one_event_time_retried_three_times(store: FeatureStore) -> None:
    _apply(store)
    rows = [
        {"entity_id": "a", "x": 1, "ts": T0},
        {"entity_id": "b", "x": 7, "ts": T0},
        {"entity_id": "a", "x": 2, "ts": T0},  # same entity, same event time: wins
    ]
    reports = [store.write_many("v", rows, event_time_column="ts") for _ in range(3)]
    assert _xs(store, "a") == [2] and _xs(store, "b") == [7]
    assert (reports[0].written, reports[0].duplicates) == (2, 1)
    assert [(r.written, r.duplicates) for r in reports[1:]] == [(0, 3), (0, 3)]
    events, _ = store.changes("v")
    assert sorted(e.entity_id for e in events) == ["a", "b"]


def test_rows_of_one_entity_and_time_in_different_chunks(store: FeatureStore) -> None:
    _apply(store)
    rows = [{"entity_id": "a", "x": -1, "ts": T0}]
    rows += [{"entity_id": f"f{i}", "x": i, "ts": T0} for i in range(CHUNK + 10)]
    rows += [{"entity_id": "a", "x": -2, "ts": T0}]
    for _ in range(3):
        store.write_many("v", rows, event_time_column="ts")
    assert _xs(store, "a") == [-2]
    # other times of one entity stay distinct versions, and retries leave them be
    more = [{"entity_id": "c", "x": k, "ts": T0 + timedelta(hours=k)} for k in range(3)]
    for _ in range(3):
        store.write_many("v", more + more[:1], event_time_column="ts")
    assert _xs(store, "c") == [2, 1, 0]


def test_separate_writes_at_one_event_time_stay_last_written_wins(store: FeatureStore) -> None:
    _apply(store)
    for x in (1, 2, 1):
        store.write_many("v", [{"entity_id": "a", "x": x, "ts": T0}], event_time_column="ts")
    assert _xs(store, "a") == [1, 2, 1]  # A, B, A as three calls: three versions, ends on A


def test_backfill_retried_adds_nothing(store: FeatureStore) -> None:
    _apply(store)
    w = datetime(2026, 2, 1, tzinfo=UTC)
    frame = [
        {"entity_id": "a", "x": 1, "event_time": T0, "written_at": w},
        {"entity_id": "a", "x": 2, "event_time": T0, "written_at": w + timedelta(seconds=1)},
    ]
    reports = [store.import_frame("v", frame, written_at_column="written_at") for _ in range(3)]
    assert _xs(store, "a") == [2, 1]
    assert store.get("v", "a") == {"x": 2}
    assert [(r.written, r.duplicates) for r in reports] == [(2, 0), (0, 2), (0, 2)]


def test_the_librarys_resend_after_a_killed_connection(
    store: FeatureStore, client: redis.Redis
) -> None:
    """The first chunk runs on the server, then the server kills the writer's connection
    before its reply is read: the writer reconnects and sends the chunk again."""
    _apply(store)
    res = store._ctx.registry.get("v")
    writer = store._online.writer
    conn = store._online.direct.conn()
    conn.send_command("CLIENT", "ID")
    before = int(conn.read_response())
    et = to_us(T0)

    def item(entity: str, x: int) -> Item:
        arr, problems = res.codec.problems_for(entity, {"x": x})
        assert arr is not None and not problems
        return escape_id(entity), et, encode(arr), None

    killed: list[int] = []

    def items() -> Iterator[Item]:
        yield item("a", 1)
        yield item("a", 2)  # same entity and event time in the same chunk
        for i in range(CHUNK - 2):
            yield item(f"f{i}", i)
        # asked for the next chunk's first item: the first chunk was sent; once the
        # server ran it, kill the connection its reply is waiting on
        deadline = time.monotonic() + 10
        while client.get(store.keys.latest("v", "f0")) is None:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        killed.append(client.client_kill_filter(_id=str(before)))
        yield item("g", 9)

    flat = writer.run(res, items(), fields=["x"])
    assert killed == [1]
    conn.send_command("CLIENT", "ID")
    assert int(conn.read_response()) != before  # it did reconnect and resend
    assert len(flat) == 2 * (CHUNK + 1)
    statuses = flat[1::2]
    # Whether the first chunk's reply was lost with the connection depends on the server
    # and the socket (the embedded Valkey drops it; Redis 7.0 over TCP had already sent it):
    # lost, the chunk was sent again and its replies are the duplicates it found; read, only
    # the second chunk was sent again. Either way: the versions of one write.
    assert statuses in ([2] * CHUNK + [0], [2] + [0] * (CHUNK - 1) + [0])
    assert flat[0] == flat[2]  # the superseded row reports the version of the row that won
    assert _xs(store, "a") == [2]
    assert _xs(store, "f0") == [0] and _xs(store, "g") == [9]
