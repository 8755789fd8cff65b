"""Stream ingestion: push, consumer-group workers, dead letters, crash recovery."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from typing import Any

import redis

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t


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
