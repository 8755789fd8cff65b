"""The near cache: hits from memory, invalidated by writes here and in other processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from typing import Any

import redis

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.realtime.cache import Cache


def cached(client: redis.Redis, project: str, **kw: Any) -> FeatureStore:
    store = FeatureStore(client=client, project=project, cache=Cache(**kw))
    store.apply(FeatureView("v", entity="user", fields=[Field("x", t.Int)], ttl="1h"))
    return store


def wait_for(cond: Any, timeout: float = 5.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_hits_misses_and_own_writes(client: redis.Redis, project: str) -> None:
    store = cached(client, project)
    try:
        store.write("v", "a", {"x": 1})
        time.sleep(0.2)  # our own write's event comes back: later reads may be cached
        assert store.get("v", "a") == {"x": 1}  # miss, then cached
        assert store.get("v", "a") == {"x": 1}
        assert store.get("v", "nobody") is None
        assert store.get("v", "nobody") is None  # a cached miss
        stats = store.cache.stats() if store.cache else {}
        assert (stats["hits"], stats["misses"]) == (2, 2)
        assert stats["hit_rate"] == 0.5
        store.write("v", "a", {"x": 2})
        assert store.get("v", "a") == {"x": 2}  # invalidated at once by our own write
        got = store.get("v", "a")
        assert got is not None
        got["x"] = 99  # callers get copies
        assert store.get("v", "a") == {"x": 2}
        assert store.get_many("v", ["a", "nobody", "a"]) == [{"x": 2}, None, {"x": 2}]
    finally:
        store.delete_view("v")
        store.close()


def test_lru_eviction_and_preload(client: redis.Redis, project: str) -> None:
    store = cached(client, project, max_entries=10)
    try:
        store.write_many("v", [{"entity_id": f"e{i}", "x": i} for i in range(30)])
        time.sleep(0.3)  # let the write's own events arrive: they would void the preload
        assert store.cache is not None
        assert store.cache.preload("v", [f"e{i}" for i in range(30)]) == 30
        stats = store.cache.stats()
        assert stats["entries"] == 10 and stats["evictions"] == 20
        before = store.cache.hits
        assert store.get("v", "e29") == {"x": 29}
        assert store.cache.hits == before + 1
    finally:
        store.delete_view("v")
        store.close()


def test_writes_from_another_process_invalidate(
    client: redis.Redis, project: str, backend_url: str
) -> None:
    store = cached(client, project)
    try:
        store.write("v", "a", {"x": 1})
        time.sleep(0.2)  # our own write's event comes back first
        assert store.get("v", "a") == {"x": 1}
        assert store.cache is not None
        hits = store.cache.hits
        assert store.get("v", "a") == {"x": 1} and store.cache.hits == hits + 1  # cached
        code = f"""
            from redfeat import FeatureStore
            with FeatureStore.from_url({backend_url!r}, project={project!r}) as store:
                store.write("v", "a", {{"x": 2}})
        """
        subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True, timeout=60)
        assert wait_for(lambda: store.get("v", "a") == {"x": 2})
        assert store.cache is not None and store.cache.stats()["invalidations"] >= 1
    finally:
        store.delete_view("v")
        store.close()
