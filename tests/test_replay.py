"""Replay consistency (issue 14): live reads, get(as_of=), training frames from Redis and
from the offline log, and a brute-force reference agree at every sampled time. Bounded:
1,500 operations over 30 entities (bench/replay_consistency.py runs a bigger one)."""

from __future__ import annotations

from pathlib import Path

import redis
from replay import check, run, stores


def test_replay_has_no_mismatches(client: redis.Redis, project: str, tmp_path: Path) -> None:
    redis_store, log_store = stores(client, project, tmp_path / "log")
    try:
        rp = run(log_store, entities=30, ops=1_500, samples=12, seed=3)
        got = check(rp, redis_store, log_store)
    finally:
        redis_store.close()
        log_store.close()
    assert got["compared"] > 10_000
    assert got["mismatches"] == 0, got["examples"]
