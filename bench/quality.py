"""Cost of quality monitoring on the write path, in one run.

Command:

    .venv/bin/python bench/quality.py [--rows 100000] [--rounds 5]

write_many of the same rows (age Int, income Float, score Float, segment Category;
history=10) with profiling on (the default) and off, interleaved round by round into fresh
projects on a private embedded server; then with one row-wise custom validator on top.
Baseline: raw redis-py pipelined HSET of the same rows. Target: profiling costs <= 10 % of
write_many throughput. Drift of a day against a week of profiles is timed too.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.embedded import EmbeddedServer

VIEW = FeatureView(
    "users",
    entity="user",
    fields=[
        Field("age", t.Int, min=0, max=150),
        Field("income", t.Float, min=0),
        Field("score", t.Float),
        Field("segment", t.Category(["basic", "premium", "gold"])),
    ],
    history=10,
)


def rows_of(rng: random.Random, n: int) -> list[dict[str, Any]]:
    return [
        {
            "entity_id": f"u{i}",
            "age": rng.randrange(18, 90),
            "income": rng.random() * 1e5,
            "score": rng.random(),
            "segment": rng.choice(["basic", "premium", "gold"]),
        }
        for i in range(n)
    ]


def write_rate(client: redis.Redis, project: str, rows: list[dict[str, Any]], mode: str) -> float:
    store = FeatureStore(client=client, project=project)
    store.apply(VIEW)
    if mode == "off":
        store.quality.configure("users", profile=False)
    if mode == "validator":

        @store.validator("users", severity="warning")
        def rich_minor(row: dict[str, Any]) -> str | None:
            return "minor with income" if row["age"] < 18 and row["income"] > 0 else None

    t0 = time.perf_counter()
    store.write_many("users", rows)
    store.quality.flush()  # the profile's cost includes sending it
    rate = len(rows) / (time.perf_counter() - t0)
    store.delete_view("users")
    store.close()
    return rate


def raw_rate(client: redis.Redis, rows: list[dict[str, Any]]) -> float:
    t0 = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i, row in enumerate(rows):
        pipe.hset(
            f"raw:{{users|{row['entity_id']}}}",
            mapping={k: v for k, v in row.items() if k != "entity_id"},
        )
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    rate = len(rows) / (time.perf_counter() - t0)
    for i in range(0, len(rows), 1000):
        client.unlink(*[f"raw:{{users|{r['entity_id']}}}" for r in rows[i : i + 1000]])
    return rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(3)
    rows = rows_of(rng, args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(tmp)
        info = server.ensure(keep_running=True)
        try:
            client = info.client()
            rates: dict[str, list[float]] = {"on": [], "off": [], "validator": [], "raw": []}
            write_rate(client, "warmup", rows[:10_000], "on")
            for r in range(args.rounds):
                for mode in ("on", "off", "validator"):
                    rates[mode].append(write_rate(client, f"b{r}{mode}", rows, mode))
                rates["raw"].append(raw_rate(client, rows))
            med = {k: statistics.median(v) for k, v in rates.items()}
            print(f"write_many, {args.rows:,} rows x 4 features, history=10, {args.rounds} rounds")
            print(f"{'mode':<34} {'rows/s (median)':>16} {'range':>22} {'vs off':>8}")
            labels = {
                "off": "profiling off",
                "on": "profiling on (default)",
                "validator": "profiling + 1 row-wise validator",
                "raw": "raw redis-py pipelined HSET",
            }
            for k in ("off", "on", "validator", "raw"):
                lo, hi = min(rates[k]), max(rates[k])
                print(
                    f"{labels[k]:<34} {med[k]:>16,.0f} {lo:>10,.0f}-{hi:<11,.0f}"
                    f" {med[k] / med['off']:>7.2f}x"
                )
            print(f"profiling cost: {1 - med['on'] / med['off']:.1%} of write_many throughput")
            wide_small_batches(client, args.rounds)
            drift_timing(client)
        finally:
            server.stop()


WIDE = FeatureView(
    "wide",
    entity="user",
    fields=[Field(f"f{i}", t.Float) for i in range(20)],
    history=10,
)


def wide_small_batches(client: redis.Redis, rounds: int) -> None:
    """20 Float features, 50 write_many calls of 1,000 rows: per-call costs show here."""
    rng = random.Random(9)
    batches = [
        [
            {"entity_id": f"w{b}_{i}", **{f"f{j}": rng.random() for j in range(20)}}
            for i in range(1000)
        ]
        for b in range(50)
    ]
    rates: dict[str, list[float]] = {"on": [], "off": []}
    for r in range(rounds):
        for mode in ("on", "off"):
            store = FeatureStore(client=client, project=f"wide{r}{mode}")
            store.apply(WIDE)
            if mode == "off":
                store.quality.configure("wide", profile=False)
            t0 = time.perf_counter()
            for batch in batches:
                store.write_many("wide", batch)
            store.quality.flush()
            rates[mode].append(50_000 / (time.perf_counter() - t0))
            store.delete_view("wide")
            store.close()
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    print(
        f"20 Float features, 50 calls x 1,000 rows: profiling off {off:,.0f} rows/s, "
        f"on {on:,.0f} rows/s: cost {1 - on / off:.1%}"
    )


def drift_timing(client: redis.Redis) -> None:
    """A week of hourly profiles as baseline, then drift of one day: how long it takes."""
    store = FeatureStore(client=client, project="drift")
    store.apply(VIEW)
    rng = random.Random(5)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    rows = rows_of(rng, 8 * 24 * 100)
    for i, row in enumerate(rows):
        row["event_time"] = t0 + timedelta(minutes=i * 60 / 100)
    store.write_many("users", rows, event_time_column="event_time")
    s = time.perf_counter()
    store.quality.set_baseline("users", t0, t0 + timedelta(days=7))
    base_s = time.perf_counter() - s
    s = time.perf_counter()
    report = store.quality.drift("users", start=t0 + timedelta(days=7), end=t0 + timedelta(days=8))
    drift_s = time.perf_counter() - s
    print(
        f"baseline from 168 hourly profiles: {base_s * 1e3:.0f} ms; drift of 24 hours against "
        f"it: {drift_s * 1e3:.0f} ms (verdict {report.verdict})"
    )
    store.delete_view("users")
    store.close()


if __name__ == "__main__":
    main()
