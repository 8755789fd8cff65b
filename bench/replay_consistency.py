"""Replay consistency at a bigger size than tests/test_replay.py, one run.

Command:

    .venv/bin/python bench/replay_consistency.py [--ops 20000] [--entities 200] [--samples 20]

Starts a private embedded server in a temporary directory, replays ``--ops`` writes and
window events (late, out of order, duplicated, ties on event time) through a store with an
offline log, samples live reads along the way, then checks get(as_of=), training frames
from Redis and from the log and the brute-force reference (tests/replay.py) against them.
Prints the comparisons made and the mismatches (0 expected) beside the replay's rate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from replay import check, run, stores  # noqa: E402

from redfeat.core.embedded import EmbeddedServer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=20_000)
    ap.add_argument("--entities", type=int, default=200)
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(Path(tmp) / "server")
        info = server.ensure(keep_running=True)
        try:
            redis_store, log_store = stores(info.client(), "replay", Path(tmp) / "log")
            t0 = time.perf_counter()
            rp = run(log_store, args.entities, args.ops, args.samples, seed=11)
            replay_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            got = check(rp, redis_store, log_store, ttl_edges=500)
            check_s = time.perf_counter() - t0
            print(
                f"replay: {args.ops:,} operations ({len(rp.writes):,} writes, "
                f"{len(rp.events):,} window events) over {args.entities} entities in "
                f"{replay_s:.1f} s ({args.ops / replay_s:,.0f} ops/s), {args.samples} samples"
            )
            print(
                f"checked in {check_s:.1f} s: {got['compared']:,} comparisons, "
                f"{got['mismatches']} mismatches"
            )
            for ex in got["examples"]:
                print("  ", ex)
            redis_store.close()
            log_store.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
