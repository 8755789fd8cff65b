"""What issue 17's behaviours cost, each beside a baseline measured in the same run.

Command:

    .venv/bin/python bench/api.py [--rounds 1000] [--vectors 20000]

Starts a private embedded server in a temporary directory and stops it at the end.

- vector search right after a write of the same store (read-your-writes: the search first
  catches up with the change feed) and ``consistent=True`` with nothing new, against a
  plain search (no write in between);
- ``series.add`` on a series with ``max_points`` against one without;
- bytes per raw point of a 10 s gauge with ``precision=2`` against the exact values (noisy
  values with many decimals);
- ``get_features`` with a near cache holding every row against no cache.

BLAS runs on one thread (``OPENBLAS_NUM_THREADS=1`` unless set): with its worker threads,
a matrix product right after any wait on the network wakes them first, which on a busy
2-core machine costs milliseconds and drowns what is measured here (redfeat's own round
trips) in noise.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy is imported

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import redis  # noqa: E402

from redfeat import FeatureStore, FeatureView, Field  # noqa: E402
from redfeat import types as t  # noqa: E402
from redfeat.core.embedded import EmbeddedServer  # noqa: E402
from redfeat.realtime.cache import Cache  # noqa: E402


def p50(fn: Callable[[], object], rounds: int) -> float:
    """Median wall time of ``fn`` in milliseconds (after a warm-up)."""
    for _ in range(min(20, rounds)):
        fn()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(samples)


def vectors(store: FeatureStore, n: int, rounds: int) -> None:
    rng = np.random.default_rng(1)
    store.apply(FeatureView("items", entity="item", fields=[Field("e", t.Vector(64))]))
    vecs = rng.normal(size=(n, 64)).astype(np.float32)
    store.write_many("items", [{"entity_id": f"i{i}", "e": vecs[i]} for i in range(n)])
    q = rng.normal(size=64)
    store.similar("items", "e", q, k=10)  # builds the index
    time.sleep(0.5)  # the load's own events settle
    plain = p50(lambda: store.similar("items", "e", q, k=10), rounds)
    consistent = p50(lambda: store.similar("items", "e", q, k=10, consistent=True), rounds)
    i = 0

    def write_then_search() -> None:
        nonlocal i
        i += 1
        store.write("items", f"i{i % n}", {"e": rng.normal(size=64)})
        store.similar("items", "e", q, k=10)

    write = p50(lambda: store.write("items", "w", {"e": q}), rounds)
    both = p50(write_then_search, rounds)
    print(f"vector search, {n} x 64, exact, k=10 (p50 ms)")
    print(f"  plain search                         {plain:7.3f}   (baseline)")
    print(f"  consistent=True, nothing new         {consistent:7.3f}   {consistent / plain:4.2f}x")
    print(
        f"  search right after a write           {both - write:7.3f}   "
        f"{(both - write) / plain:4.2f}x  (write+search {both:.3f} - write {write:.3f})"
    )


def series_cap(store: FeatureStore, rounds: int) -> None:
    free = store.series("free", rollups=["1m"])
    capped = store.series("capped", rollups=["1m"], max_points=1_000)
    t0 = 1_700_000_000.0
    for s in (free, capped):
        s.add_many([t0 + i for i in range(5_000)], np.arange(5_000.0))
    k = {"free": 5_000, "capped": 5_000}

    def add(s: object, name: str) -> Callable[[], object]:
        def go() -> object:
            k[name] += 1
            return s.add(1.0, t0 + k[name])  # type: ignore[attr-defined]

        return go

    a = p50(add(free, "free"), rounds)
    b = p50(add(capped, "capped"), rounds)
    assert len(capped.range()[1]) == 1_000
    print("series.add, one point (p50 ms)")
    print(f"  no cap                               {a:7.3f}   (baseline)")
    print(f"  max_points=1000                      {b:7.3f}   {b / a:4.2f}x")


def series_precision(store: FeatureStore, client: redis.Redis) -> None:
    rng = np.random.default_rng(2)
    n = 100_000
    ts = 1_700_000_000 + 10 * np.arange(n)
    vs = 50 + np.cumsum(rng.normal(0, 0.1, n))  # a noisy gauge, full float64 decimals
    out = {}
    for name, precision in (("exact", None), ("rounded", 2)):
        s = store.series(name, rollups=[], precision=precision)
        s.add_many(ts, vs)
        e = s.spec.escaped
        chunks = client.hvals(store.keys.series_chunks(e))
        out[name] = sum(len(c) for c in chunks) / (len(chunks) * 4096)
    print(f"raw chunk bytes per point, {n} points of a 10 s gauge")
    print(f"  exact values                         {out['exact']:7.2f}   (baseline)")
    print(
        f"  precision=2                          {out['rounded']:7.2f}   "
        f"{out['rounded'] / out['exact']:4.2f}x"
    )


def cached_features(client: redis.Redis, project: str, rounds: int) -> None:
    view = FeatureView("f", entity="user", fields=[Field(f"x{i}", t.Float) for i in range(20)])
    ids = [f"u{i}" for i in range(100)]
    rows = [{"entity_id": e, **{f"x{i}": float(i) for i in range(20)}} for e in ids]
    plain = FeatureStore(client=client, project=project)
    plain.apply(view)
    plain.write_many("f", rows)
    cached = FeatureStore(client=client, project=project, cache=Cache())
    try:
        refs = [f"f:x{i}" for i in range(20)]
        time.sleep(0.3)
        cached.get_features(ids, refs)  # fills the cache
        a = p50(lambda: plain.get_features(ids, refs), rounds)
        b = p50(lambda: cached.get_features(ids, refs), rounds)
        c = p50(lambda: cached.get_features(ids, refs, cache=False), rounds)
    finally:
        cached.close()
        plain.close()
    print("get_features, 100 entities x 20 features (p50 ms)")
    print(f"  no cache                             {a:7.3f}   (baseline)")
    print(f"  near cache, every row cached         {b:7.3f}   {b / a:4.2f}x")
    print(f"  near cache, cache=False              {c:7.3f}   {c / a:4.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--vectors", type=int, default=20_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(tmp)
        info = server.ensure(keep_running=True)
        client = info.client()
        try:
            with FeatureStore(client=client, project="bench") as store:
                vectors(store, args.vectors, args.rounds)
                series_cap(store, args.rounds)
                series_precision(store, client)
            cached_features(client, "bench2", args.rounds)
        finally:
            client.close()
            server.stop()


if __name__ == "__main__":
    main()
