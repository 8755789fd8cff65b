"""Stream ingestion: push, consumer-group workers, dead letters, crash recovery."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.embedded import EmbeddedServer


def setup(store: FeatureStore) -> None:
    store.apply(FeatureView("v", entity="user", fields=[Field("x", t.Int, min=0)], history=10))


def test_push_then_worker_writes_and_dead_letters(store: FeatureStore) -> None:
    setup(store)
    rows: list[dict[str, Any]] = [{"entity_id": f"e{i}", "x": i} for i in range(1200)]
    rows.append({"entity_id": "bad", "x": -1})
    assert store.push("v", rows) == 1201
    stats = store.run_worker(["v"], until_idle=True)
    assert (stats.rows, stats.dead) == (1200, 1)
    assert stats.lag == {"v": 0}
    assert store.get("v", "e1199") == {"x": 1199}
    assert store.get("v", "bad") is None
    (dead,) = store.dead_letters("v")
    assert dead["row"] == {"entity_id": "bad", "x": -1} and "minimum" in dead["error"]
    # a second pass finds nothing left: every batch was acknowledged
    assert store.run_worker(["v"], until_idle=True).rows == 0


def _crash_mid_batch(url: str, project: str, upto: int) -> None:
    """Read the batch of e0's partition (all of them on one node), write its rows up to
    x == ``upto``, die without acknowledging (kill -9 mid-batch)."""
    store = FeatureStore.from_url(url, project=project)
    worker = store.worker(["v"], consumer="doomed")
    client: Any = store.client
    stream = store.keys.ingest("v", store.keys.partition("e0"))
    reply = client.xreadgroup("redfeat", "doomed", {stream: ">"}, count=1)
    (_stream, ((_entry, data),)) = reply[0]
    import msgspec

    rows = [r for r in msgspec.msgpack.decode(data[b"rows"]) if r["x"] <= upto]
    from datetime import UTC, datetime

    for row in rows:
        row["__event_time_us"] = datetime.fromtimestamp(row["__event_time_us"] / 1e6, UTC)
    store.write_many("v", rows, event_time_column="__event_time_us")
    assert worker.consumer == "doomed"
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_worker_loses_nothing_and_duplicates_nothing(
    store: FeatureStore, backend_url: str
) -> None:
    setup(store)
    store.push("v", [{"entity_id": f"e{i}", "x": i} for i in range(400)])
    store.worker(["v"])  # creates the group before the crash
    # the rows of e0's batch (e0's partition's on a cluster; all of them on one node)
    mine = [i for i in range(400) if store.keys.partition(f"e{i}") == store.keys.partition("e0")]
    upto = mine[len(mine) // 2]
    proc = mp.get_context("spawn").Process(
        target=_crash_mid_batch, args=(backend_url, store.project, upto)
    )
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    assert store.get("v", f"e{upto}") == {"x": upto}  # part of the batch was written
    assert store.get("v", f"e{mine[-1]}") is None  # the rest was not
    stats = store.run_worker(["v"], until_idle=True, claim_idle=0.0)
    assert stats.claimed == 1
    for i in {0, upto, mine[-1], 150, 399}:
        assert store.get("v", f"e{i}") == {"x": i}
        assert len(store.history("v", f"e{i}")) == 1  # the replay made no second version
    got = store.get_many("v", [f"e{i}" for i in range(400)])
    assert got == [{"x": i} for i in range(400)]


def _wait_for(check: Any, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_worker_waits_out_a_server_outage(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 17.7: an outage longer than the client's retries must not end the worker.
    store = FeatureStore(data_dir=data_dir)
    try:
        setup(store)
        store.push("v", [{"entity_id": f"e{i}", "x": i} for i in range(100)])
        worker = store.worker(["v"], max_backoff=1.0, block=0.2)
        result: list[Any] = []
        thread = threading.Thread(target=lambda: result.append(worker.run()), daemon=True)
        with caplog.at_level("WARNING", logger="redfeat.worker"):
            thread.start()
            _wait_for(lambda: store.get("v", "e99") is not None)
            EmbeddedServer(data_dir).stop(force=True)
            time.sleep(6.0)  # longer than any client retry
            assert thread.is_alive() and not result
            EmbeddedServer(data_dir).ensure(keep_running=True)
            store.push("v", [{"entity_id": f"e{i}", "x": i} for i in range(100, 200)])
            _wait_for(lambda: store.get("v", "e199") == {"x": 199})
            worker.stop()
            thread.join(10)
        assert result and result[0].outages == 1 and result[0].rows == 200
        assert "cannot be reached" in caplog.text and "answers again" in caplog.text
    finally:
        store.close()
        EmbeddedServer(data_dir).stop(force=True)


def test_a_waiting_worker_takes_a_push_at_once_and_stats_count_every_partition(
    store: FeatureStore,
) -> None:
    # On one node the worker blocks in XREADGROUP; on a cluster (streams on many slots) it
    # waits on the push channel: either way a push is taken long before ``block`` ends.
    setup(store)
    rows: list[dict[str, Any]] = [{"entity_id": f"e{i}", "x": i} for i in range(100)]
    rows.append({"entity_id": "bad", "x": -1})
    parts = {store.keys.partition(str(r["entity_id"])) for r in rows}
    store.push("v", rows)
    ingest = store.stats(storage=False)["realtime"]["v"]["ingest"]
    assert ingest["backlog"] == len(parts)  # one batch per partition the push touched
    assert ingest["lag_s"] >= 0
    store.run_worker(["v"], until_idle=True)
    worker = store.worker(["v"], block=10.0)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)  # the worker found nothing and waits
        started = time.monotonic()
        store.push("v", [{"entity_id": f"e{i}", "x": i + 1} for i in range(100)])
        _wait_for(lambda: store.get_many("v", ["e0", "e99"]) == [{"x": 1}, {"x": 100}])
        assert time.monotonic() - started < 5.0
    finally:
        worker.stop()
        thread.join(15)
    assert not thread.is_alive()
    ingest = store.stats(storage=False)["realtime"]["v"]["ingest"]
    assert (ingest["backlog"], ingest["pending"], ingest["dead_letters"]) == (0, 0, 1)
    assert [d["row"] for d in store.dead_letters("v")] == [{"entity_id": "bad", "x": -1}]
