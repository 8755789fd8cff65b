"""Durability benchmark (issue 17): what each mode costs, and what it loses when the server
or a writer is killed with SIGKILL in the middle of writes.

Command:

    .venv/bin/python bench/durability.py [--kills 30] [--writer-kills 10] [--seconds 3]

1. Cost: single writes (p50) and write_many (rows/s) with durability "everysec" (the
   baseline), "always" kept by the server (appendfsync always), and "always" kept by
   WAITAOF (a URL store on a server running everysec), each as a ratio to everysec in the
   same run. Then the cost of derived views: write_many into a source with one derived
   view, against writing the same rows and their derived rows as two plain write_many
   calls (what a store did before its derived rows were checked first).
2. Server kills: for each server (the embedded Valkey; Debian's redis-server 7.0 when it
   is installed) and mode, ``--kills`` rounds of: write (single writes and 50-row bulk
   calls) until a random moment, kill -9 the server, restart it, count acknowledged writes
   that are gone and how long before the kill they were acknowledged.
3. Writer kills: ``--writer-kills`` rounds of a child process writing a source view with a
   derived view, killed with SIGKILL at a random moment; the source versions it left
   without a derived version, and how long the next store open takes to catch them up.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from redfeat import BackendError, FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.embedded import EmbeddedServer
from redfeat.transforms.builtins import bucketize, min_max

VIEW = FeatureView("v", entity="user", fields=[Field("x", t.Int), Field("y", t.Float)], history=0)
SOURCE = FeatureView(
    "p", entity="user", fields=[Field("age", t.Int), Field("income", t.Float)], history="1h"
)
DERIVED = FeatureView(
    "d",
    entity="user",
    source="p",
    transforms=[
        bucketize("age", [25, 55], ["young", "adult", "senior"], output="group"),
        min_max("income", 0, 2000, output="scaled"),
    ],
    history="1h",
)
DEBIAN_REDIS = shutil.which("redis-server")


def p50_ms(fn: Any, n: int) -> float:
    for _ in range(min(20, n)):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(samples)


def rows_per_s(store: FeatureStore, view: str, rows: list[dict[str, Any]], reps: int) -> float:
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        store.write_many(view, rows)
        best = max(best, len(rows) / (time.perf_counter() - t0))
    return best


# -- 1. cost ---------------------------------------------------------------------------


def measure(
    server: EmbeddedServer, mode: str, rows: list[dict[str, Any]], n: int
) -> tuple[float, float]:
    with FeatureStore(data_dir=server.dir, durability=mode) as store:
        store.apply(VIEW)
        counter = iter(range(10**9))
        single = p50_ms(lambda: store.write("v", f"s{next(counter)}", {"x": 1}), n)
        return single, rows_per_s(store, "v", rows, 3)


def cost(n_single: int, n_rows: int) -> None:
    print("1. cost of each mode (embedded Valkey 9.1, unix socket)")
    rows = [{"entity_id": f"e{i}", "x": i, "y": i / 3} for i in range(n_rows)]
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("everysec", "always"):
            server = EmbeddedServer(Path(tmp) / mode, durability=mode)
            server.ensure(keep_running=True)
            try:
                results[mode] = measure(server, mode, rows, n_single)
            finally:
                server.stop(force=True)
        # WAITAOF under everysec, one round trip after the write: if it waited for an
        # fsync it could not be faster than a write under appendfsync always
        server = EmbeddedServer(Path(tmp) / "waitaof")
        info = server.ensure(keep_running=True)
        try:
            with info.client() as c:
                seq = iter(range(10**9))
                waitaof = p50_ms(
                    lambda: (
                        c.set("k", next(seq)),
                        c.execute_command("WAITAOF", 1, 0, 0),
                    ),
                    n_single,
                )
                plain = p50_ms(lambda: c.set("k", next(seq)), n_single)
        finally:
            server.stop(force=True)
    base_single, base_bulk = results["everysec"]
    print(f"  {'mode':10} {'write p50':>10} {'ratio':>7} {'write_many':>14} {'ratio':>7}")
    for label, (single, bulk) in results.items():
        print(
            f"  {label:10} {single:8.3f}ms {single / base_single:6.2f}x "
            f"{bulk:10,.0f} r/s {bulk / base_bulk:6.2f}x"
        )
    print(
        f"  Valkey, appendfsync everysec: SET p50 {plain:.3f} ms, SET then WAITAOF 1 0 0 p50 "
        f"{waitaof:.3f} ms (less than one fsync: it acknowledges before the fsync)"
    )


def derived_cost(n_single: int, n_rows: int) -> None:
    print("\n   derived views (everysec): one source view with one derived view")
    rows: list[dict[str, Any]] = [
        {"entity_id": f"e{i}", "age": i % 90, "income": float(i % 2000)} for i in range(n_rows)
    ]
    derived_rows = [
        {
            "entity_id": r["entity_id"],
            "group": "young" if r["age"] < 25 else "adult" if r["age"] < 55 else "senior",
            "scaled": r["income"] / 2000,
        }
        for r in rows
    ]
    plain_d = FeatureView(
        "plain_d",
        entity="user",
        fields=[Field("group", t.Category(["young", "adult", "senior"])), Field("scaled", t.Float)],
        history="1h",
    )
    plain_p = FeatureView("plain_p", entity="user", fields=SOURCE.fields, history="1h")
    with tempfile.TemporaryDirectory() as tmp, FeatureStore(data_dir=tmp) as store:
        store.apply(SOURCE, DERIVED, plain_p, plain_d)
        ours = best = 0.0
        for _ in range(3):  # alternated: the server's state grows alike for both
            t0 = time.perf_counter()
            store.write_many("p", rows)
            ours = max(ours, len(rows) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            store.write_many("plain_p", rows)
            store.write_many("plain_d", derived_rows)
            best = max(best, len(rows) / (time.perf_counter() - t0))
        mine: list[float] = []
        base: list[float] = []
        for k in range(n_single + 50):  # alternated, warm-up of 50 left out
            t0 = time.perf_counter_ns()
            store.write("p", f"s{k}", {"age": 30, "income": 5.0})
            t1 = time.perf_counter_ns()
            store.write("plain_p", f"s{k}", {"age": 30, "income": 5.0})
            store.write("plain_d", f"s{k}", {"group": "adult", "scaled": 0.0025})
            t2 = time.perf_counter_ns()
            if k >= 50:
                mine.append((t1 - t0) / 1e6)
                base.append((t2 - t1) / 1e6)
        one, base_one = statistics.median(mine), statistics.median(base)
    print(
        f"  write_many with a derived view   {ours:10,.0f} r/s   two plain write_many "
        f"{best:10,.0f} r/s   ratio {ours / best:.2f}x"
    )
    print(
        f"  write with a derived view p50    {one:8.3f} ms     two plain writes     "
        f"{base_one:8.3f} ms     ratio {one / base_one:.2f}x"
    )


# -- 2. server kills -------------------------------------------------------------------


def server_kill(
    data_dir: Path, mode: str, server_bin: str | None, rng: random.Random
) -> dict[str, Any]:
    store = FeatureStore(data_dir=data_dir, durability=mode, server_bin=server_bin)
    store.apply(VIEW)
    acked: list[tuple[str, float]] = []

    def writer() -> None:
        i = 0
        while True:
            try:
                if i % 10 == 9:
                    ids = [f"b{i}-{j}" for j in range(50)]
                    store.write_many("v", [{"entity_id": e, "x": i} for e in ids])
                    now = time.monotonic()
                    acked.extend((e, now) for e in ids)
                else:
                    store.write("v", f"e{i}", {"x": i})
                    acked.append((f"e{i}", time.monotonic()))
            except BackendError:
                return
            i += 1

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    time.sleep(rng.uniform(0.2, 1.5))
    assert store.server_info is not None
    os.kill(store.server_info.pid, signal.SIGKILL)
    killed = time.monotonic()
    th.join(30)
    store.close()
    with FeatureStore(data_dir=data_dir, server_bin=server_bin) as again:
        got = again.get_many("v", [e for e, _ in acked])
    lost = [killed - at for (e, at), g in zip(acked, got, strict=True) if g is None]
    return {"acked": len(acked), "lost": len(lost), "oldest_lost_ms": max(lost, default=0) * 1000}


def server_kills(kills: int) -> None:
    print(f"\n2. kill -9 of the server mid-write, {kills} kills per server and mode")
    rng = random.Random(17)
    servers = [("valkey 9.1", None)] + ([("redis 7.0", DEBIAN_REDIS)] if DEBIAN_REDIS else [])
    head = f"{'server':11} {'mode':9} {'acked':>9} {'lost':>6} {'kills losing':>13}"
    print(f"  {head} {'oldest lost':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, binary in servers:
            for mode in ("everysec", "always"):
                acked = lost = losing = 0
                oldest = 0.0
                for k in range(kills):
                    out = server_kill(Path(tmp) / f"{name}-{mode}-{k}", mode, binary, rng)
                    acked += out["acked"]
                    lost += out["lost"]
                    losing += out["lost"] > 0
                    oldest = max(oldest, out["oldest_lost_ms"])
                print(
                    f"  {name:11} {mode:9} {acked:9,} {lost:6,} {losing:6}/{kills:<6} "
                    f"{oldest:9.1f} ms"
                )


# -- 3. writer kills -------------------------------------------------------------------

WRITER = """
import sys
from redfeat import FeatureStore
store = FeatureStore.from_url(sys.argv[1], project="bench")
print("ready", flush=True)
i = 0
while True:
    rows = [{"entity_id": f"e{(i * 7 + j) % 5000}", "age": (i + j) % 90, "income": float(j)}
            for j in range(1000)]
    store.write_many("p", rows)
    store.write("p", f"s{i % 100}", {"age": i % 90, "income": 1.0})
    i += 1
"""


def pairs(store: FeatureStore, view: str) -> set[tuple[str, int]]:
    table = store.versions(view)
    return set(
        zip(
            table["entity_id"].to_pylist(),
            pc.cast(table["event_time"], "int64").to_pylist(),
            strict=True,
        )
    )


def writer_kills(kills: int, seconds: float) -> None:
    print(f"\n3. kill -9 of a writer with a derived view, {kills} kills")
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(tmp)
        info = server.ensure(keep_running=True)
        try:
            url = info.url()
            # opened before any kill: it counts what a kill left, without catching up itself
            # (only an open, or a bulk write, catches up)
            observer = FeatureStore.from_url(url, project="bench")
            observer.apply(SOURCE, DERIVED)
            left = []
            catch = []
            total = 0
            for _ in range(kills):
                proc = subprocess.Popen(
                    [sys.executable, "-c", textwrap.dedent(WRITER), url],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
                time.sleep(rng.uniform(0.3, seconds))
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                proc.stdout.close()
                src = pairs(observer, "p")
                left.append(len(src - pairs(observer, "d")))
                total = len(src)
                t0 = time.perf_counter()
                with FeatureStore.from_url(url, project="bench") as s:  # catches up at open
                    catch.append(time.perf_counter() - t0)
                    assert pairs(s, "p") == pairs(s, "d"), "a source version without its derived"
            observer.close()
            print(f"  source versions at the end            {total:,}")
            some = sum(1 for n in left if n)
            print(f"  kills that left versions underived    {some} of {kills}")
            print(f"  left underived by a kill (min-max)    {min(left):,} - {max(left):,}")
            print("  after the next open                   0 in every round")
            print(
                f"  that open (with the catch-up)         {min(catch) * 1000:.0f} - "
                f"{max(catch) * 1000:.0f} ms"
            )
        finally:
            server.stop(force=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--writer-kills", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--single", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=50_000)
    args = ap.parse_args()
    cost(args.single, args.rows)
    derived_cost(args.single, args.rows)
    server_kills(args.kills)
    writer_kills(args.writer_kills, args.seconds)


if __name__ == "__main__":
    main()
