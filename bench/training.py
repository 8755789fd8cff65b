"""Training-frame benchmark: redfeat against pandas merge_asof doing the same join, one run.

Command:

    .venv/bin/python bench/training.py [--entities 100000] [--versions 10] [--rows 1000000]
    .venv/bin/python bench/training.py --log [--rows 100000 1000000]

Loads ENTITIES x VERSIONS versions into each of 3 views of 5 features (one with a ttl) on a
private embedded server, then builds a training frame for ROWS (entity, timestamp) rows.
redfeat's time includes reading every version from Redis; the baseline gets the same
versions already in pandas (so it does less work) and runs merge_asof per view.

``--log``: the store has an offline log (``offline_dir``), fed while loading, drained and
compacted before timing; training frames read it with DuckDB. The baseline is a plain
DuckDB ASOF JOIN per view over the same Parquet files (no ttl, no tie rule: less work).
Peak RSS of the process is printed at the end.

``--log --stream N [N ...]``: also an entity_df of N rows (for each N) written to Parquet, joined by
``write_training_frame`` (read and joined a chunk at a time) into a Parquet file, in a
process of its own whose peak RSS is reported; the baseline is DuckDB doing the same join
out of core (``COPY (... ASOF JOIN ...) TO``), also in a process of its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.embedded import EmbeddedServer

T0 = datetime(2026, 1, 1, tzinfo=UTC)
VIEWS = {"va": None, "vb": timedelta(hours=6), "vc": None}


def load(
    store: FeatureStore, entities: int, versions: int, rng: np.random.Generator
) -> dict[str, pd.DataFrame]:
    frames = {}
    for name, ttl in VIEWS.items():
        store.apply(
            FeatureView(
                name,
                entity="user",
                fields=[Field(f"{name}_f{i}", t.Float) for i in range(5)],
                history=versions,
                ttl=ttl,
            )
        )
        n = entities * versions
        df = pd.DataFrame(
            {
                "entity_id": np.repeat([f"u{i}" for i in range(entities)], versions),
                "event_time": pd.to_datetime(
                    T0.timestamp() + rng.integers(0, 30 * 86400, n), unit="s", utc=True
                ),
                **{f"{name}_f{i}": rng.random(n) for i in range(5)},
            }
        )
        t0 = time.perf_counter()
        for start in range(0, n, 200_000):
            store.write_many(name, df.iloc[start : start + 200_000], event_time_column="event_time")
        print(f"  loaded {name}: {n:,} versions in {time.perf_counter() - t0:.1f} s")
        frames[name] = df
    return frames


def baseline(entity_df: pd.DataFrame, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    out = entity_df.assign(__rid=np.arange(len(entity_df))).sort_values("event_time")
    for name, ttl in VIEWS.items():
        # stable: among equal event times the row written last stays last, and wins
        right = frames[name].sort_values("event_time", kind="stable")
        out = pd.merge_asof(
            out,
            right,
            on="event_time",
            by="entity_id",
            direction="backward",
            allow_exact_matches=True,
            tolerance=ttl,
        )
    return out.sort_values("__rid")


def duckdb_baseline(root: Path, entity_df: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    """A plain DuckDB ASOF JOIN of entity_df with each view's Parquet: the time and result."""
    import duckdb
    import pyarrow as pa

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    edf = pa.Table.from_pandas(entity_df.assign(__rid=np.arange(len(entity_df))))
    t0 = time.perf_counter()
    con.register("edf", edf)
    out = entity_df.copy()
    for name, ttl in VIEWS.items():
        files = root / name / "schema=*" / "date=*" / "part-*.parquet"
        cols = ", ".join(
            f"v.{name}_f{i}" if ttl is None else
            f"CASE WHEN v.event_time >= e.event_time - INTERVAL {int(ttl.total_seconds())} "
            f"SECOND THEN v.{name}_f{i} END AS {name}_f{i}"
            for i in range(5)
        )  # fmt: skip
        got = con.sql(
            f"SELECT e.__rid, {cols} FROM edf e ASOF LEFT JOIN read_parquet('{files}') v "
            "ON e.entity_id = v.entity_id AND e.event_time >= v.event_time ORDER BY e.__rid"
        ).to_arrow_table()
        for i in range(5):
            out[f"{name}_f{i}"] = got[f"{name}_f{i}"].to_numpy(zero_copy_only=False)
    return time.perf_counter() - t0, out


def same(ours: pd.DataFrame, theirs: pd.DataFrame, features: list[str]) -> bool:
    return all(
        np.array_equal(
            ours[c].to_numpy(dtype=float, na_value=np.nan),
            theirs[c].to_numpy(dtype=float, na_value=np.nan),
            equal_nan=True,
        )
        for c in (f.split(":")[1] for f in features)
    )


def log_run(args: argparse.Namespace, rng: np.random.Generator, tmp: str) -> None:
    server = EmbeddedServer(Path(tmp) / "server")
    info = server.ensure(keep_running=True)
    root = Path(tmp) / "log"
    try:
        store = FeatureStore(client=info.client(), project="bench", offline_dir=root)
        print(f"{args.entities:,} entities x {args.versions} versions x {len(VIEWS)} views")
        load(store, args.entities, args.versions, rng)
        features = [f"{v}:{v}_f{i}" for v in VIEWS for i in range(5)]
        t0 = time.perf_counter()
        store.training_frame(
            pd.DataFrame({"entity_id": ["u0"], "event_time": [T0]}), features
        )  # drains the feeds into the log; warm-up
        assert store.offline is not None
        for v in VIEWS:
            store.offline.compact(v)
        print(f"  log drained and compacted in {time.perf_counter() - t0:.1f} s")
        for rows in args.rows:
            entity_df = pd.DataFrame(
                {
                    "entity_id": [f"u{i}" for i in rng.integers(0, args.entities, rows)],
                    "event_time": pd.to_datetime(
                        T0.timestamp() + rng.integers(0, 32 * 86400, rows), unit="s", utc=True
                    ),
                }
            )
            runs = []
            for _ in range(2):
                t0 = time.perf_counter()
                ours = store.training_frame(entity_df, features)
                runs.append(time.perf_counter() - t0)
            base_s, theirs = duckdb_baseline(root, entity_df)
            print(f"training_frame from the log, {rows:,} rows x {len(features)} features:")
            print(f"  runs: {', '.join(f'{r:.2f}' for r in runs)} s (best reported)")
            print(f"  redfeat {min(runs):6.2f} s   plain DuckDB ASOF JOIN {base_s:6.2f} s   "
                  f"ratio {base_s / min(runs):.2f}x   results identical: "
                  f"{same(ours, theirs, features)}")  # fmt: skip
        for n in args.stream:
            stream_run(store, info.url(), root, Path(tmp), n, args.entities, features)
        store.close()
    finally:
        server.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:,.0f} MB")


OURS = """
import json, sys, time
def peak_mb():
    # VmHWM belongs to this program's memory map; ru_maxrss would carry the forking
    # parent's peak across execve
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
from redfeat import FeatureStore
url, project, log, src, out, features = sys.argv[1:7]
store = FeatureStore.from_url(url, project=project, offline_dir=log)
t0 = time.perf_counter()
n = store.write_training_frame(out, src, features.split(","), chunk_rows=1_000_000)
took = time.perf_counter() - t0
store.close()
print(json.dumps({"rows": n, "s": took, "peak_mb": peak_mb()}))
"""

THEIRS = """
import json, sys, time
def peak_mb():
    # VmHWM belongs to this program's memory map; ru_maxrss would carry the forking
    # parent's peak across execve
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
import duckdb
log, src, out = sys.argv[1:4]
views = {"va": None, "vb": 6 * 3600, "vc": None}
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
t0 = time.perf_counter()
sel, joins = [], []
for v, ttl in views.items():
    files = f"{log}/{v}/schema=*/date=*/part-*.parquet"
    for i in range(5):
        c = f"{v}.{v}_f{i}"
        sel.append(c if ttl is None else
                   f"CASE WHEN {v}.event_time >= e.event_time - INTERVAL {ttl} SECOND THEN {c} END")
    joins.append(f"ASOF LEFT JOIN read_parquet('{files}') {v} "
                 f"ON e.entity_id = {v}.entity_id AND e.event_time >= {v}.event_time")
con.execute(f"COPY (SELECT e.*, {', '.join(sel)} FROM read_parquet('{src}') e {' '.join(joins)}) "
            f"TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
took = time.perf_counter() - t0
rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchall()[0][0]
print(json.dumps({"rows": rows, "s": took, "peak_mb": peak_mb()}))
"""


def stream_run(
    store: FeatureStore,
    url: str,
    root: Path,
    tmp: Path,
    rows: int,
    entities: int,
    features: list[str],
) -> None:
    """write_training_frame over an entity_df of ``rows`` rows in Parquet, and DuckDB's own
    out-of-core join, each in a fresh process: time and peak RSS."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp / "entity_df.parquet"
    rng = np.random.default_rng(11)
    schema = pa.schema([("entity_id", pa.string()), ("event_time", pa.timestamp("us", "UTC"))])
    with pq.ParquetWriter(src, schema, compression="zstd") as w:
        for start in range(0, rows, 1_000_000):
            n = min(1_000_000, rows - start)
            ids = np.char.add("u", rng.integers(0, entities, n).astype(str))
            ts = (T0.timestamp() + rng.integers(0, 32 * 86400, n)) * 1_000_000
            w.write_table(
                pa.table(
                    {"entity_id": ids, "event_time": ts.astype("datetime64[us]")}, schema=schema
                )
            )
    mb = src.stat().st_size / 1e6
    print(f"streamed training frame: {rows:,} entity rows in {mb:,.0f} MB of Parquet")
    got = {}
    ours_argv = [url, store.project, str(root), str(src), str(tmp / "ours.parquet")]
    for who, code, argv in (
        ("redfeat", OURS, [*ours_argv, ",".join(features)]),
        ("duckdb", THEIRS, [str(root), str(src), str(tmp / "theirs.parquet")]),
    ):
        done = subprocess.run(
            [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            print(f"  {who} failed: {done.stderr[-2000:]}")
            return
        got[who] = json.loads(done.stdout.strip().splitlines()[-1])
        r = got[who]
        print(f"  {who:8s} {r['rows']:,} rows in {r['s']:6.1f} s, peak RSS {r['peak_mb']:,.0f} MB")
    ours, theirs = got["redfeat"], got["duckdb"]
    print(f"  ratio (time) {theirs['s'] / ours['s']:.2f}x   "
          f"peak RSS {ours['peak_mb']:,.0f} MB vs DuckDB's {theirs['peak_mb']:,.0f} MB; "
          f"input {src.stat().st_size / 1e6:,.0f} MB Parquet, output "
          f"{(tmp / 'ours.parquet').stat().st_size / 1e6:,.0f} MB")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entities", type=int, default=100_000)
    ap.add_argument("--versions", type=int, default=10)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--log", action="store_true", help="training frames from the offline log")
    ap.add_argument(
        "--stream",
        type=int,
        nargs="*",
        default=[],
        help="with --log: also streamed frames of these many rows (each in its own process)",
    )
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    if args.log:
        with tempfile.TemporaryDirectory() as tmp:
            log_run(args, rng, tmp)
        return
    args.rows = args.rows[0]
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(tmp)
        info = server.ensure(keep_running=True)
        try:
            store = FeatureStore(client=info.client(), project="bench")
            print(
                f"{args.entities:,} entities x {args.versions} versions x {len(VIEWS)} views"
                " x 5 features"
            )
            frames = load(store, args.entities, args.versions, rng)
            entity_df = pd.DataFrame(
                {
                    "entity_id": [f"u{i}" for i in rng.integers(0, args.entities, args.rows)],
                    "event_time": pd.to_datetime(
                        T0.timestamp() + rng.integers(0, 32 * 86400, args.rows), unit="s", utc=True
                    ),
                }
            )
            features = [f"{v}:{v}_f{i}" for v in VIEWS for i in range(5)]
            store.training_frame(entity_df.head(1), features)  # warm-up: imports DuckDB
            runs = []
            for _ in range(2):
                t0 = time.perf_counter()
                ours = store.training_frame(entity_df, features)
                runs.append(time.perf_counter() - t0)
            ours_s = min(runs)
            t0 = time.perf_counter()
            theirs = baseline(entity_df, frames)
            base_s = time.perf_counter() - t0
            same = all(
                np.array_equal(
                    ours[c].to_numpy(dtype=float, na_value=np.nan),
                    theirs[c].to_numpy(dtype=float, na_value=np.nan),
                    equal_nan=True,
                )
                for c in (f.split(":")[1] for f in features)
            )
            print(f"training_frame, {args.rows:,} rows x {len(features)} features:")
            print(f"  runs: {', '.join(f'{r:.2f}' for r in runs)} s (best reported)")
            print(
                f"  redfeat (incl. reading {len(VIEWS) * args.entities * args.versions:,} versions"
                f" from Redis) {ours_s:6.2f} s"
            )
            print(f"  pandas merge_asof (versions already in memory)   {base_s:6.2f} s")
            print(f"  ratio {base_s / ours_s:.2f}x   results identical: {same}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
