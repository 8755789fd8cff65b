"""The offline log fed from the change feed by a consumer group (issue 14): what the server
acknowledged reaches the log once, whoever is killed with -9 (the writer, the log writer),
a feed trimmed from under the log is resynced from history, and the lag shows in stats().
Bounded: a few seconds of writes per test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from redfeat import FeatureStore, FeatureView, Field, WindowFeatures
from redfeat import types as t
from redfeat.offline.feeder import GROUP, LogFeeder
from redfeat.offline.log import OfflineLog
from redfeat.online import events

VIEW = FeatureView("v", entity="user", fields=[Field("x", t.Int)], history=100_000)

WRITER = """
import sys
from redfeat import FeatureStore
store = FeatureStore.from_url(sys.argv[1], project=sys.argv[2])
i = 0
while True:
    store.write_many("v", [{"entity_id": f"e{j}", "x": i} for j in range(i % 7, 200, 7)])
    print(i, flush=True)
    i += 1
"""


def _file_rows(root: Path) -> list[tuple[str, int]]:
    """(entity_id, version_id) of every row of every part file, duplicates kept."""
    out: list[tuple[str, int]] = []
    for p in sorted(root.rglob("part-*.parquet")):
        t_ = pq.read_table(p, columns=["entity_id", "version_id"])
        out += list(zip(t_["entity_id"].to_pylist(), t_["version_id"].to_pylist(), strict=True))
    return out


def _redis_versions(store: FeatureStore) -> set[tuple[str, int]]:
    table = store.versions("v")
    return set(zip(table["entity_id"].to_pylist(), table["version_id"].to_pylist(), strict=True))


def _once_each(root: Path, want: set[tuple[str, int]]) -> None:
    rows = _file_rows(root)
    dup = [k for k, n in Counter(rows).items() if n > 1]
    assert not dup, f"{len(dup)} versions logged twice, e.g. {dup[:3]}"
    missing = want - set(rows)
    assert not missing, f"{len(missing)} versions not logged, e.g. {sorted(missing)[:3]}"


def test_every_write_kind_reaches_the_log_once(
    client: redis.Redis, project: str, tmp_path: Path
) -> None:
    root = tmp_path / "log"
    with FeatureStore(client=client, project=project, offline_dir=root) as store:
        store.apply(VIEW)
        store.write("v", "a", {"x": 1}, event_time=1_700_000_000)
        store.write("v", "a", {"x": 1}, event_time=1_700_000_000)  # a retry: no new version
        store.write_many("v", [{"entity_id": f"b{i}", "x": i} for i in range(300)])
        store.increment("v", "c", {"x": 5})
        store.write("v", "a", {"x": 0}, event_time=1_600_000_000)  # late: history only
        want = _redis_versions(store)
    assert len(want) == 303
    _once_each(root, want)
    log = OfflineLog(root)
    assert log.scan(VIEW).num_rows == 303
    assert client.xinfo_groups(f"rf:{project}:feed:v")[0]["pending"] == 0


def _url(backend: str, embedded_url: str) -> str:
    return os.environ["REDFEAT_TEST_URL"] if backend == "url" else embedded_url


def test_writer_killed_loses_nothing(
    client: redis.Redis, project: str, tmp_path: Path, backend: str, embedded_url: str
) -> None:
    url = _url(backend, embedded_url)
    setup = FeatureStore(client=client, project=project)
    setup.apply(VIEW)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, project], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        acked = [int(proc.stdout.readline()) for _ in range(40)]  # 40 calls acknowledged
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    root = tmp_path / "log"
    with FeatureStore(client=client, project=project, offline_dir=root) as store:
        want = _redis_versions(store)  # versions() drains the feed into the log first
    assert len(want) >= sum(len(range(i % 7, 200, 7)) for i in acked)
    _once_each(root, want)
    setup.close()


def test_log_writer_killed_loses_and_duplicates_nothing(
    client: redis.Redis, project: str, tmp_path: Path, backend: str, embedded_url: str
) -> None:
    url = _url(backend, embedded_url)
    root = tmp_path / "log"
    store = FeatureStore(client=client, project=project)
    store.apply(VIEW)
    stop = threading.Event()

    def write() -> None:
        # 80 versions a call, at most 1,000 calls: below the feed's cap (100,000 versions),
        # so however slowly the log writers go (a loaded machine), no entry is trimmed before
        # they read it; a trim would be a gap and a resync, which this test is not about
        i = 0
        while not stop.is_set() and i < 1_000:
            store.write_many("v", [{"entity_id": f"e{j}", "x": i} for j in range(i % 5, 400, 5)])
            i += 1

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    cli = "from redfeat.serve.cli import main; main()"
    try:
        for delay in (0.0, 0.13, 0.31):  # three log writers, each killed while at work
            before = len(_file_rows(root)) if root.exists() else 0
            proc = subprocess.Popen(
                [sys.executable, "-c", cli, "offline", "run", str(root), "--url", url,
                 "--project", project, "--every", "0.2"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(_file_rows(root)) <= before:
                time.sleep(0.05)  # until it logged something: it is in its loop
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    finally:
        stop.set()
        writer.join(10)
    assert _file_rows(root), "the killed log writers logged nothing at all"
    feeder = LogFeeder(store._ctx, OfflineLog(root))
    feeder.drain()
    assert feeder.gaps == 0
    _once_each(root, _redis_versions(store))
    store.close()


def test_a_batch_written_but_not_acknowledged_is_not_written_twice(
    store: FeatureStore, tmp_path: Path
) -> None:
    store.apply(VIEW)
    store.write_many("v", [{"entity_id": f"e{j}", "x": j} for j in range(50)])
    ctx, log = store._ctx, OfflineLog(tmp_path)
    LogFeeder(ctx, log).views()
    events.ensure_group(ctx.client, ctx.keys, "v", GROUP)
    # what a log writer killed between the rename and XACK leaves: files, entries pending
    batch = events.read_group(ctx.client, ctx.keys, "v", GROUP, "log", count=5_000, pending=False)
    vs = batch.versions
    from redfeat.core.codec import decode
    from redfeat.offline.arrow import versions_table

    res = ctx.registry.get("v")
    table = versions_table(
        res.view, res.codec.slots, [v.entity_id for v in vs], [v.event_us for v in vs],
        [v.version_id for v in vs], [decode(v.payload) for v in vs],
    )  # fmt: skip
    assert log.write_named(res.view, table, batch.ids[0].replace("-", "_")) == 50
    store.write_many("v", [{"entity_id": f"e{j}", "x": -j} for j in range(50)])
    again = LogFeeder(ctx, log)
    assert again.drain() == 2  # the pending entry (already in Parquet), then the new one
    _once_each(tmp_path, _redis_versions(store))
    assert len(_file_rows(tmp_path)) == 100


def test_trimmed_feed_is_resynced_from_history_and_lag_shows(
    client: redis.Redis, project: str, tmp_path: Path
) -> None:
    with FeatureStore(client=client, project=project, feed_cap=10) as store:
        store.apply(VIEW)
        for i in range(400):  # one entry per call: the feed keeps ~10 (MAXLEN ~) of 400
            store.write("v", f"e{i % 20}", {"x": i})
        assert client.xlen(f"rf:{project}:feed:v") < 400
        assert store.stats(storage=False)["offline"]["views"]["v"]["lag"] is None  # no log yet
    root = tmp_path / "log"
    with FeatureStore(client=client, project=project, feed_cap=10, offline_dir=root) as store:
        want = _redis_versions(store)
        assert len(want) == 400
        off = store.stats(storage=False)["offline"]
        assert off["gaps"] == 1 and off["views"]["v"] == {"pending": 0, "lag": 0, "gap": False}
    # the resync overlaps the entries the feed still held: readers keep one of each
    logged = OfflineLog(root).scan(VIEW)
    pairs = zip(logged["entity_id"].to_pylist(), logged["version_id"].to_pylist(), strict=True)
    assert set(pairs) == want
    assert logged.num_rows == 400
    assert pa.concat_tables([pq.read_table(p) for p in root.rglob("part-resync_*")]).num_rows == 400


def test_window_events_reach_the_log(client: redis.Redis, project: str, tmp_path: Path) -> None:
    root = tmp_path / "log"
    t0 = 1_767_225_600  # 2026-01-01, on a hop boundary
    with FeatureStore(client=client, project=project, offline_dir=root) as store:
        store.apply(
            WindowFeatures("w", entity="u", source="x", aggs=["sum"], windows=["1h"], hop="5m")
        )
        store.record("w", "a", 1.5, ts=t0 + 0.25)
        store.record("w", "a", 2.5, ts=t0 + 0.25)  # the same ms: kept in the recorded order
        rows = [{"entity_id": f"e{i % 3}", "x": float(i), "event_time": t0 + 60 * i}
                for i in range(100)]  # fmt: skip
        report = store.record_many("w", rows)
        assert (report.events, report.dropped_late) == (100, 30)  # older than 1h + 5m
        assert not store.record("w", "a", 9.0, ts=t0 - 86_400)  # too late for the tiles
        log = store.offline
        assert log is not None
    files = log.events_glob("w")
    got = duckdb.execute(
        f"SELECT entity_id, epoch_ms(event_time) AS ms, value FROM read_parquet('{files}') "
        "ORDER BY entity_id, event_time, written_at, seq"
    ).fetchall()
    want = sorted(
        [("a", (t0 - 86_400) * 1000, 9.0)]
        + [("a", t0 * 1000 + 250, 1.5), ("a", t0 * 1000 + 250, 2.5)]
        + [(f"e{i % 3}", (t0 + 60 * i) * 1000, float(i)) for i in range(100)],
        key=lambda r: (r[0], r[1]),
    )
    assert got == want  # the log keeps what the tiles refused as too old
