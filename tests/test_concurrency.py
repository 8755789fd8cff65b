"""Two processes writing versions of the same entity at once."""

from __future__ import annotations

import multiprocessing as mp
from datetime import UTC, datetime, timedelta

import redis

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _writer(url_kwargs: dict[str, object], project: str, offset: int, n: int) -> None:
    client = redis.Redis(**url_kwargs)  # type: ignore[arg-type]
    store = FeatureStore(client=client, project=project)
    for i in range(n):
        # interleaved event times: process 0 writes even seconds, process 1 odd ones
        store.write(
            "v",
            "shared",
            {"x": i, "who": offset},
            event_time=T0 + timedelta(seconds=2 * i + offset),
        )
    client.close()


def test_two_processes_write_the_same_entity(store: FeatureStore, client: redis.Redis) -> None:
    store.apply(
        FeatureView(
            "v", entity="user", fields=[Field("x", t.Int), Field("who", t.Int)], history=5000
        )
    )
    kwargs = dict(client.connection_pool.connection_kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k in ("host", "port", "db", "password", "path")}
    if "path" in kwargs:
        kwargs["unix_socket_path"] = kwargs.pop("path")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(kwargs, store.project, k, 1000)) for k in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    hist = store.history("v", "shared", limit=10_000)
    assert len(hist) == 2000
    assert len({h.id for h in hist}) == 2000
    times = [h.event_time for h in hist]
    assert times == sorted(times, reverse=True)
    assert store.get("v", "shared") == {"x": 999, "who": 1}  # the max event time wins
    assert hist[0].event_time == T0 + timedelta(seconds=1999)
