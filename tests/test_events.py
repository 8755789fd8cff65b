"""Change events: recorded by every write kind, resumable from the feed, pushed live."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.records import ChangeEvent

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def apply(store: FeatureStore, name: str = "v") -> None:
    store.apply(FeatureView(name, entity="user", fields=[Field("x", t.Int), Field("y", t.Float)]))


def test_every_write_kind_records_an_event(store: FeatureStore) -> None:
    apply(store)
    a = store.write("v", "a", {"x": 1}, event_time=T0)
    store.write("v", "a", {"x": 1}, event_time=T0)  # a retry: no new version, no event
    store.write_many("v", [{"entity_id": "b", "x": 2}, {"entity_id": "c{:}", "x": 3, "y": 1.5}])
    u = store.update("v", "a", {"y": 2.5})
    i = store.increment("v", "a", {"x": 1})
    store.delete("v", "b")
    store.delete("v", "nobody")  # nothing there: no event
    events, cursor = store.changes("v")
    want = [
        ("write", "a"),
        ("write", "b"),
        ("write", "c{:}"),
        ("write", "a"),
        ("write", "a"),
        ("delete", "b"),
    ]
    got = [(e.kind, e.entity_id) for e in events]
    if store.keys.partitions:
        # a cluster: one entity's events are in order; events of entities of different
        # partitions are ordered by their millisecond (README "Scaling out")
        assert sorted(got) == sorted(want)
        for ent in ("a", "b", "c{:}"):
            assert [g for g in got if g[1] == ent] == [w for w in want if w[1] == ent]
    else:
        assert got == want
    of_a = [e for e in events if e.entity_id == "a"]
    assert of_a[0].version_id == a.id and of_a[0].event_time == T0
    assert of_a[0].fields == ("x",)
    (of_b,) = [e for e in events if e.entity_id == "b" and e.kind == "write"]
    assert of_b.fields == ("x", "y")  # write_many: the columns given
    assert of_a[1].version_id == u.id and of_a[1].fields == ("y",)
    assert of_a[2].version_id == i.id and of_a[2].fields == ("x",)
    assert of_a[0].written_at == a.written_at
    assert cursor == events[-1].cursor
    assert store.changes("v", since=cursor) == ([], cursor)
    later, _ = store.changes("v", since=events[2].cursor)
    assert [e.entity_id for e in later] == [e.entity_id for e in events[3:]]


def test_feed_is_capped_and_can_be_off(client: redis.Redis, project: str) -> None:
    capped = FeatureStore(client=client, project=project, feed_cap=10)
    apply(capped)
    for i in range(200):
        capped.write("v", f"e{i}", {"x": i})
    assert client.xlen(capped.keys.feed("v")) < 200
    off = FeatureStore(client=client, project=project + "off", feed_cap=0)
    apply(off)
    off.write("v", "a", {"x": 1})
    assert client.exists(off.keys.feed("v")) == 0
    for s in (capped, off):
        s.delete_view("v")
        client.delete(s.keys.registry)


def test_subscription_receives_live_events(store: FeatureStore) -> None:
    apply(store)
    got: list[ChangeEvent] = []
    with store.subscribe("v", entity_ids=["a"]) as sub:
        sub.on_event(got.append)
        time.sleep(0.1)
        for k in range(5):
            store.write("v", "a", {"x": k})
            store.write("v", "other", {"x": k})
        deadline = time.time() + 5
        while len(got) < 5 and time.time() < deadline:
            time.sleep(0.01)
    assert [e.entity_id for e in got] == ["a"] * 5
    xs = [e.version_id for e in got]
    assert xs == sorted(xs)


def test_subscription_iterates_and_covers_all_views(store: FeatureStore) -> None:
    apply(store, "v1")
    apply(store, "v2")
    sub = store.subscribe()
    timer = threading.Timer(0.2, lambda: store.write("v2", "z", {"x": 9}))
    try:
        timer.start()
        for ev in sub:
            if ev.kind == "gap":
                # a dropped connection says so: on the shared Redis another test kills
                # pub/sub clients (CLIENT KILL TYPE pubsub) while this one waits
                continue
            assert (ev.view, ev.entity_id, ev.kind) == ("v2", "z", "write")
            break
    finally:
        sub.close()
        timer.join(10)  # the write ends in this test (its event can come before it returns)


def test_subscription_reports_a_gap_and_replays_after_reconnect(
    store: FeatureStore, client: redis.Redis, kill_pubsub: Callable[[redis.Redis], None]
) -> None:
    apply(store)
    sub = store.subscribe("v")
    try:
        store.write("v", "a", {"x": 1})
        first = sub.poll(2.0)
        assert [e.entity_id for e in first] == ["a"]
        kill_pubsub(client)
        store.write("v", "b", {"x": 2})  # published while the subscriber is disconnected
        seen: list[ChangeEvent] = []
        deadline = time.time() + 10
        while not any(e.entity_id == "b" for e in seen) and time.time() < deadline:
            seen.extend(sub.poll(0.5))
        kinds = [e.kind for e in seen]
        assert "gap" in kinds
        assert [e.entity_id for e in seen if e.kind == "write"] == ["b"]
    finally:
        sub.close()


def _listen(url: str, project: str, out: Any, ready: Any) -> None:
    store = FeatureStore.from_url(url, project=project)
    sub = store.subscribe("v")
    ready.set()
    got: list[tuple[str, int]] = []
    deadline = time.time() + 20
    while len(got) < 100 and time.time() < deadline:
        got.extend((e.entity_id, e.version_id) for e in sub.poll(0.5) if e.kind == "write")
    out.put(got)
    sub.close()


def test_subscriber_in_another_process_sees_each_entity_in_order(
    store: FeatureStore, backend_url: str
) -> None:
    apply(store)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    ready = ctx.Event()
    proc = ctx.Process(target=_listen, args=(backend_url, store.project, out, ready))
    proc.start()
    assert ready.wait(30)
    time.sleep(0.3)
    written: dict[str, list[int]] = {"a": [], "b": []}
    for k in range(50):
        for ent in ("a", "b"):
            written[ent].append(
                store.write("v", ent, {"x": k}, event_time=T0 + timedelta(seconds=k)).id
            )
    got = out.get(timeout=30)
    proc.join(30)
    for ent in ("a", "b"):
        assert [v for e, v in got if e == ent] == written[ent]


def test_subscription_as_async_iterator(store: FeatureStore) -> None:
    import asyncio

    apply(store)

    async def main() -> ChangeEvent:
        sub = store.subscribe("v")
        timer = threading.Timer(0.2, lambda: store.write("v", "async", {"x": 1}))
        try:
            timer.start()
            async for ev in sub:
                return ev
        finally:
            sub.close()
            # the event can arrive before write() returns: the write ends within this test,
            # not in the next one (after the project's keys are gone)
            timer.join(10)
        raise AssertionError("no event")

    ev = asyncio.run(asyncio.wait_for(main(), timeout=10))
    assert (ev.entity_id, ev.kind) == ("async", "write")
