"""History write benchmark (issue 18): what keeping versions costs the write step, on the
client and on the server.

Command:

    .venv/bin/python bench/history.py [--entities 20000] [--rounds 10] [--features 3]

On a private embedded server (Valkey, unix socket, AOF everysec), a view with history=10:

- first: the first version of every entity (no history yet), then the second (a history
  key is made), as bench/online.py's write_many does;
- steady: every entity written once, then ``--rounds`` calls of ``write_many`` over all of
  them, in order (each row moves its entity's latest version into history and, once it is
  full, drops the oldest): the median of the rounds;
- load: 10 versions per entity with random event times, each entity's rows together (as a
  backfill or a materialisation sends them: late versions land in history), 3 views.

Reported: rows/s of the call, and the server's microseconds per row in the write script
(INFO commandstats, reset before each call), which the client's load does not change.
To compare two trees, run it from each (``PYTHONPATH=<other tree>`` from outside this one).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import pandas as pd
import redis

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.embedded import EmbeddedServer


def script_us(r: redis.Redis) -> float:
    stats = r.info("commandstats")
    ev = stats.get("cmdstat_evalsha") or stats.get("cmdstat_eval") or {"usec": 0}
    return float(ev["usec"])


def steady(fs: FeatureStore, r: redis.Redis, n: int, rounds: int, features: int) -> str:
    rng = random.Random(3)
    fields = [Field(f"f{j}", t.Float) for j in range(features)]

    def rows() -> list[dict[str, Any]]:
        return [
            {"entity_id": f"u{i}", **{f"f{j}": rng.random() for j in range(features)}}
            for i in range(n)
        ]

    def timed(view: str) -> tuple[float, float]:
        batch = rows()
        r.config_resetstat()
        t0 = time.perf_counter()
        fs.write_many(view, batch)
        return n / (time.perf_counter() - t0), script_us(r) / n

    firsts, seconds = [], []
    for k in range(5):  # fresh views: each entity's first version, then its second
        fs.apply(FeatureView(f"fresh{k}", entity="user", fields=fields, history=10))
        firsts.append(timed(f"fresh{k}"))
        seconds.append(timed(f"fresh{k}"))
    for label, got in (("first version", firsts), ("second version", seconds)):
        print(
            f"{label}, {features} Floats: {statistics.median(g[0] for g in got):>9,.0f} rows/s, "
            f"server {statistics.median(g[1] for g in got):.2f} us/row (median of 5 views)"
        )
    fs.apply(FeatureView("steady", entity="user", fields=fields, history=10))
    fs.write_many("steady", rows())
    got = [timed("steady") for _ in range(rounds)]
    return (
        f"steady, {features} Floats, in order: {statistics.median(g[0] for g in got):>9,.0f} "
        f"rows/s, server {statistics.median(g[1] for g in got):.2f} us/row (median of {rounds})"
    )


def load(fs: FeatureStore, r: redis.Redis, n: int, features: int) -> str:
    rng = np.random.default_rng(1)
    versions = 10
    rates, server = [], []
    for k in range(3):
        name = f"load{k}"
        fields = [Field(f"f{j}", t.Float) for j in range(features)]
        fs.apply(FeatureView(name, entity="user", fields=fields, history=versions))
        m = n * versions
        df = pd.DataFrame(
            {
                "entity_id": np.repeat([f"u{i}" for i in range(n)], versions),
                "event_time": pd.to_datetime(
                    1.7e9 + rng.integers(0, 30 * 86400, m), unit="s", utc=True
                ),
                **{f"f{j}": rng.random(m) for j in range(features)},
            }
        )
        r.config_resetstat()
        t0 = time.perf_counter()
        fs.write_many(name, df, event_time_column="event_time")
        rates.append(m / (time.perf_counter() - t0))
        server.append(script_us(r) / m)
    return (
        f"load, {features} Floats, 10 versions per entity in random order: "
        f"{statistics.median(rates):>9,.0f} rows/s, server {statistics.median(server):.2f} "
        "us/row (median of 3 views)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entities", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--features", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(tmp)
        info = server.ensure(keep_running=True)
        try:
            r = info.client()
            fs = FeatureStore(client=r, project="benchhist")
            print(steady(fs, r, args.entities, args.rounds, args.features))
            print(load(fs, r, args.entities, args.features))
            fs.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
