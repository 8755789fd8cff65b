"""The sizing model (store.estimate_memory) against a real load: within 10 %."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import redis

from redfeat import ConfigurationError, FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.embedded import EmbeddedServer
from redfeat.core.sizing import REDIS_7, estimate


def _used(r: redis.Redis) -> int:
    time.sleep(0.05)
    return int(r.info("memory")["used_memory"])


@pytest.mark.parametrize("versions", [1, 3])
def test_estimate_is_within_ten_percent_of_a_real_load(tmp_path: Path, versions: int) -> None:
    # a fresh private server, as bench/memory.py measures: used_memory moves only with us
    server = EmbeddedServer(tmp_path)
    client = server.ensure(keep_running=True).client()
    store = FeatureStore(client=client, project="benchmem", feed_cap=10_000)
    try:
        store.apply(
            FeatureView("m", entity="user", fields=[Field(f"f{j}", t.Float) for j in range(3)])
        )
        rng = random.Random(5)
        n = 20_000
        before = _used(client)
        for _ in range(versions):
            store.write_many(
                "m",
                [
                    {"entity_id": f"user{i:09d}", **{f"f{j}": rng.random() for j in range(3)}}
                    for i in range(n)
                ],
            )
        store.quality.flush()
        got = _used(client) - before
        est = store.estimate_memory(entities=n, features=3, history=versions)
        assert abs(est - got) / got < 0.10, (est, got)
    finally:
        store.close()
        client.close()
        server.stop()


def test_estimate_grows_as_it_should_and_checks_its_arguments() -> None:
    one = estimate(REDIS_7, entities=1_000_000, features=3, history=1)
    ten = estimate(REDIS_7, entities=1_000_000, features=3, history=10)
    wide = estimate(REDIS_7, entities=1_000_000, features=20, history=10)
    assert 100e6 < one < 186e6  # within Feast's 186 B per entity
    assert one < ten < wide
    with pytest.raises(ConfigurationError, match="history"):
        estimate(REDIS_7, entities=1, features=3, history=0)
    with pytest.raises(ConfigurationError, match="entities"):
        estimate(REDIS_7, entities=-1, features=3, history=1)
