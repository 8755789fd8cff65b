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
import redis

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


def _crash_mid_batch(kwargs: dict[str, Any], project: str) -> None:
    """Read a batch, write part of it, die without acknowledging (kill -9 mid-batch)."""
    store = FeatureStore(client=redis.Redis(**kwargs), project=project)
    worker = store.worker(["v"], consumer="doomed")
    client: Any = store.client
    reply = client.xreadgroup("redfeat", "doomed", {store.keys.prefix + "ingest:v": ">"}, count=1)
    (_stream, ((_entry, data),)) = reply[0]
    import msgspec

    rows = msgspec.msgpack.decode(data[b"rows"])[:100]
    from datetime import UTC, datetime

    for row in rows:
        row["__event_time_us"] = datetime.fromtimestamp(row["__event_time_us"] / 1e6, UTC)
    store.write_many("v", rows, event_time_column="__event_time_us")
    assert worker.consumer == "doomed"
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_worker_loses_nothing_and_duplicates_nothing(
    store: FeatureStore, client: redis.Redis
) -> None:
    setup(store)
    store.push("v", [{"entity_id": f"e{i}", "x": i} for i in range(400)])
    store.worker(["v"])  # creates the group before the crash
    kwargs = {
        k: v
        for k, v in client.connection_pool.connection_kwargs.items()
        if k in ("host", "port", "db", "password")
    }
    if "path" in client.connection_pool.connection_kwargs:
        kwargs["unix_socket_path"] = client.connection_pool.connection_kwargs["path"]
    proc = mp.get_context("spawn").Process(target=_crash_mid_batch, args=(kwargs, store.project))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    assert store.get("v", "e50") == {"x": 50}  # part of the batch was written
    assert store.get("v", "e300") is None  # the rest was not
    stats = store.run_worker(["v"], until_idle=True, claim_idle=0.0)
    assert stats.claimed == 1
    for i in (0, 50, 150, 399):
        assert store.get("v", f"e{i}") == {"x": i}
        assert len(store.history("v", f"e{i}")) == 1  # the replay made no second version


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
