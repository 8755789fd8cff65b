"""Real-time benchmark: event delivery latency, stream ingestion, near-cache reads.

Command:

    .venv/bin/python bench/realtime.py [--events 2000] [--rows 100000]

On a private embedded server (unix socket, AOF everysec):
- write -> subscriber latency: a subscriber in another process receives each event; the
  writer stamps the send time (time.time_ns) into the row, the subscriber subtracts it from
  the arrival time. Writes are paced (1 per ms), as live traffic is.
- push -> visible through a worker: rows/s for a backlog, and p50/p99 of single rows pushed
  while a worker runs, until `get` sees them.
- cached get p50 beside an uncached get of the same entity in the same run (baseline: the
  uncached redfeat get, itself faster than raw redis-py GET; see bench/online.py).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import threading
import time
from typing import Any

import redis

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.embedded import EmbeddedServer
from redfeat.realtime.cache import Cache

VIEW = FeatureView("clicks", entity="user", fields=[Field("n", t.Int), Field("sent_ns", t.Int)])


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def _subscriber(path: str, n: int, out: Any, ready: Any) -> None:
    store = FeatureStore(client=redis.Redis(unix_socket_path=path), project="rt")
    sub = store.subscribe("clicks")
    ready.set()
    lat: list[float] = []
    while len(lat) < n:
        for ev in sub.poll(1.0):
            if ev.kind == "write":
                got = store.get("clicks", ev.entity_id)  # the value as served after the event
                if got is not None:
                    lat.append((time.time_ns() - got["sent_ns"]) / 1e6)
    out.put(lat)
    sub.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(tmp)
        info = server.ensure(keep_running=True)
        try:
            assert info.unix_socket is not None
            run(info.unix_socket, args)
        finally:
            server.stop()


def run(path: str, args: argparse.Namespace) -> None:
    store = FeatureStore(client=redis.Redis(unix_socket_path=path), project="rt")
    store.apply(VIEW)

    ctx = mp.get_context("spawn")
    out, ready = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_subscriber, args=(path, args.events, out, ready))
    proc.start()
    ready.wait(30)
    time.sleep(0.3)
    for i in range(args.events):
        store.write("clicks", f"u{i % 50}", {"n": i, "sent_ns": time.time_ns()})
        time.sleep(0.001)
    lat = out.get(timeout=120)
    proc.join(30)
    print(f"write -> subscriber (another process, event then get), {len(lat)} events:")
    p50, p99 = statistics.median(lat), pct(lat, 0.99)
    print(f"  p50 {p50:.3f} ms   p99 {p99:.3f} ms   (target p99 <= 2 ms)")

    rows = [{"entity_id": f"r{i}", "n": i, "sent_ns": 0} for i in range(args.rows)]
    t0 = time.perf_counter()
    store.push("clicks", rows)
    pushed = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = store.run_worker(["clicks"], until_idle=True)
    worked = time.perf_counter() - t0
    print(f"push -> worker, {args.rows:,} rows backlog:")
    print(
        f"  push {args.rows / pushed:,.0f} rows/s; worker {stats.rows / worked:,.0f} rows/s "
        f"({stats.batches} batches, {stats.dead} dead letters)"
    )

    worker = store.worker(["clicks"], block=0.05)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    vis: list[float] = []
    for i in range(200):
        ent = f"live{i}"
        t0 = time.perf_counter()
        store.push("clicks", [{"entity_id": ent, "n": i, "sent_ns": 0}])
        while store.get("clicks", ent) is None:
            time.sleep(0.0002)
        vis.append((time.perf_counter() - t0) * 1e3)
    worker.stop()
    thread.join(5)
    print(
        f"  single row push -> visible with a running worker: p50 {statistics.median(vis):.2f}"
        f" ms   p99 {pct(vis, 0.99):.2f} ms"
    )

    cached = FeatureStore(client=redis.Redis(unix_socket_path=path), project="rt", cache=Cache())
    cached.get("clicks", "u1")
    n = 20_000

    def timed(fn: Any) -> list[float]:
        xs = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            fn()
            xs.append((time.perf_counter_ns() - t0) / 1e3)
        return xs

    hot = timed(lambda: cached.get("clicks", "u1"))
    cold = timed(lambda: store.get("clicks", "u1"))
    print("get of one entity:")
    h50, c50 = statistics.median(hot), statistics.median(cold)
    print(
        f"  cached p50 {h50:.2f} us   uncached p50 {c50:.2f} us   ratio {c50 / h50:.0f}x"
        "   (target cached <= 5 us)"
    )
    print(f"  cache stats: {cached.cache.stats() if cached.cache else {}}")
    cached.close()


if __name__ == "__main__":
    main()
