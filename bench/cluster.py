"""Redis Cluster benchmark: redfeat on one node and on a 3-master cluster, in one run, each
beside raw redis-py (its cluster client on the cluster) doing the same work.

Command (what `make bench` runs):

    .venv/bin/python bench/cluster.py [--entities 20000] [--rounds 2000] [--write-rows 100000]
                                      [--ingest-rows 50000] [--live 200]

Starts, in a temporary directory, one server of the embedded binary (TCP on loopback, as
the cluster's nodes are) and a local cluster of 3 masters of the same binary (no replicas:
on 2 cores they would only take CPU from the masters; the failover tests run with
replicas), both with AOF everysec, and stops them at the end. Rows: 20 float features.
Baselines: GET of one key, MGET of 100 keys (``mget_nonatomic`` on the cluster: split by
slot, nodes one after the other), pipelined SET of payloads of a row's size (bytes, no
validation, no history, no event). Stream ingestion: ``push`` of a backlog, one worker
draining it, and single rows pushed while a worker waits, until ``get`` sees them.
Targets (issue 13): get_many(100) on the cluster <= 2x the single node's p50; write_many
>= 100k rows/s on the cluster.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.cluster import LocalCluster, free_ports
from redfeat.core.embedded import default_binary

FEATURES = [f"f{i}" for i in range(20)]


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


def measure(name: str, client: Any, args: argparse.Namespace) -> dict[str, float]:
    rng = random.Random(7)
    store = FeatureStore(client=client, project="bench")
    store.apply(
        FeatureView("v", entity="e", fields=[Field(f, t.Float) for f in FEATURES], history=5)
    )
    ids = [f"u{i}" for i in range(args.entities)]
    rows = [
        {"entity_id": ids[i % len(ids)], **{f: rng.random() for f in FEATURES}}
        for i in range(args.write_rows)
    ]
    t0 = time.perf_counter()
    store.write_many("v", rows)
    write_rate = len(rows) / (time.perf_counter() - t0)
    get50, get99 = timings(lambda: store.get("v", rng.choice(ids)), args.rounds)
    many50, many99 = timings(
        lambda: store.get_many("v", rng.sample(ids, 100)), max(200, args.rounds // 4)
    )
    # raw redis-py: the same shapes of work on keys of its own
    payload = os.urandom(200)  # ~ one row's latest value (20 floats + header)
    raw_keys = [f"bench:raw:{{{i % 1024}}}:{i}" for i in range(args.entities)]
    t0 = time.perf_counter()
    for lo in range(0, args.write_rows, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(lo, min(lo + 1000, args.write_rows)):
            pipe.set(raw_keys[i % len(raw_keys)], payload)
        pipe.execute()
    raw_write = args.write_rows / (time.perf_counter() - t0)
    raw_get50, _ = timings(lambda: client.get(rng.choice(raw_keys)), args.rounds)
    mget = client.mget_nonatomic if isinstance(client, RedisCluster) else client.mget
    raw_many50, _ = timings(lambda: mget(rng.sample(raw_keys, 100)), max(200, args.rounds // 4))
    # stream ingestion: a backlog pushed then drained by one worker, and single rows pushed
    # while a worker waits (on a cluster it waits on the push channel, not on the streams)
    store.apply(FeatureView("q", entity="e", fields=[Field(f, t.Float) for f in FEATURES]))
    backlog = rows[: args.ingest_rows]
    t0 = time.perf_counter()
    store.push("q", backlog)
    push_rate = len(backlog) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    drained = store.run_worker(["q"], until_idle=True)
    worker_rate = drained.rows / (time.perf_counter() - t0)
    worker = store.worker(["q"], block=1.0)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    time.sleep(0.3)
    seen: list[float] = []
    for i in range(args.live):
        ent = f"live{i}"
        t0 = time.perf_counter()
        store.push("q", [{"entity_id": ent, "f0": 1.0}])
        while store.get("q", ent) is None:
            time.sleep(0.0002)
        seen.append((time.perf_counter() - t0) * 1e3)
    worker.stop()
    thread.join(10)
    seen.sort()
    live50, live99 = statistics.median(seen), seen[max(0, int(len(seen) * 0.99) - 1)]
    store.close()
    print(
        f"{name:8s} push {push_rate / 1000:.1f}k rows/s, worker {worker_rate / 1000:.1f}k "
        f"rows/s ({drained.batches} batches) | one row pushed -> visible with a waiting "
        f"worker p50 {live50:.2f} ms p99 {live99:.2f} ms"
    )
    print(
        f"{name:8s} write_many {write_rate / 1000:7.1f}k rows/s (raw pipelined SET "
        f"{raw_write / 1000:.1f}k, ratio {write_rate / raw_write:.2f}) | get p50 {get50:.3f} ms "
        f"p99 {get99:.3f} (raw GET {raw_get50:.3f}, ratio {get50 / raw_get50:.2f}) | "
        f"get_many(100) p50 {many50:.3f} ms p99 {many99:.3f} (raw MGET {raw_many50:.3f}, "
        f"ratio {many50 / raw_many50:.2f})"
    )
    return {
        "write": write_rate,
        "get": get50,
        "many": many50,
        "push": push_rate,
        "worker": worker_rate,
        "live": live50,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entities", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=2_000)
    ap.add_argument("--write-rows", type=int, default=100_000)
    ap.add_argument("--ingest-rows", type=int, default=50_000)
    ap.add_argument("--live", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_ports(1)[0]
        server = subprocess.Popen(
            [default_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp]
            + ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        local = LocalCluster(os.path.join(tmp, "cluster"), masters=3, replicas=0)
        try:
            one = redis.Redis(host="127.0.0.1", port=port)
            for _ in range(100):
                try:
                    one.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            single = measure("1 node", one, args)
            one.close()
            cinfo = local.start()
            nodes = [ClusterNode(h, p) for h, p in cinfo.startup_nodes()]  # type: ignore[no-untyped-call]
            cl = RedisCluster(startup_nodes=nodes)
            multi = measure("cluster", cl, args)
            cl.close()
        finally:
            local.stop()
            server.terminate()
            server.wait(30)
    print(
        f"cluster / 1 node: write_many {multi['write'] / single['write']:.2f}x rows/s "
        f"({multi['write'] / 3 / 1000:.1f}k rows/s per master), get p50 "
        f"{multi['get'] / single['get']:.2f}x, get_many(100) p50 "
        f"{multi['many'] / single['many']:.2f}x (target <= 2x); write_many on the cluster "
        f"{'meets' if multi['write'] >= 100_000 else 'misses'} 100k rows/s; push "
        f"{multi['push'] / single['push']:.2f}x, worker {multi['worker'] / single['worker']:.2f}x "
        f"rows/s, push -> visible p50 {multi['live'] / single['live']:.2f}x"
    )


if __name__ == "__main__":
    main()
