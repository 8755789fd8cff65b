"""Offline Parquet log: layout, buffering, atomic files, schema evolution, scans, compaction."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from redfeat import FeatureView, Field
from redfeat import types as t
from redfeat.errors import ConfigurationError
from redfeat.offline import arrow as arrowio
from redfeat.offline import log as offlinelog
from redfeat.offline.log import OfflineLog

DAY = 86_400_000_000
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
PART_RE = re.compile(r"^part-\d{13}-[0-9a-f]{8}\.parquet$")

EVERY_TYPE = FeatureView(
    "every_type",
    entity="user",
    fields=[
        Field("i", t.Int),
        Field("f", t.Float),
        Field("b", t.Bool),
        Field("s", t.String),
        Field("c", t.Category(["basic", "premium"])),
        Field("ts", t.Timestamp),
        Field("vec", t.Vector(3)),
        Field("li", t.List(t.Int)),
        Field("ls", t.List(t.String)),
    ],
)
SMALL = FeatureView("small", entity="user", fields=[Field("x", t.Int)])

Row = tuple[str, int, int, Sequence[Any]]  # entity_id, event_us, version_id, payload


def vec(*xs: float) -> bytes:
    return np.array(xs, dtype="<f4").tobytes()


def table(view: FeatureView, rows: Sequence[Row]) -> pa.Table:
    slots = {f.name: i for i, f in enumerate(view.fields)}
    return arrowio.versions_table(
        view,
        slots,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [list(r[3]) for r in rows],
    )


def small_rows(n: int, *, start: int = 0, event_us: int = T0, step: int = 1) -> list[Row]:
    return [(f"u{i}", event_us + i * step, 1_000 + i, [i]) for i in range(start, start + n)]


def keys(tbl: pa.Table) -> list[tuple[str, int]]:
    return sorted(zip(tbl["entity_id"].to_pylist(), tbl["version_id"].to_pylist(), strict=True))


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_round_trip_every_type_with_nulls(tmp_path: Path) -> None:
    rows: list[Row] = [
        ("a", T0 + 1, 10, [1, 1.5, True, "x", "basic", T0 - 5, vec(1, 2, 3), [1, 2], ["p"]]),
        ("b", T0 + 2, 11, [None] * 9),
        ("c", T0 + 3, 12, [-7, -0.25, False, "", "premium", 0, vec(-1, 0, 0.5), [], []]),
        ("d", T0 + 4, 13, [2**62, None, None, "ünï", None, None, None, [None, 3], [None, "q"]]),
    ]
    src = table(EVERY_TYPE, rows)
    log = OfflineLog(tmp_path)
    log.append(EVERY_TYPE, src)
    log.close()

    got = OfflineLog(tmp_path).scan(EVERY_TYPE)  # a fresh log: rows come from disk only
    assert got.schema.equals(arrowio.version_schema(EVERY_TYPE))
    assert got.equals(src)
    vecs = got["vec"].to_pylist()
    assert vecs == [[1.0, 2.0, 3.0], None, [-1.0, 0.0, 0.5], None]
    assert got["ts"].cast(pa.int64()).to_pylist() == [T0 - 5, None, 0, None]
    assert got["written_at"].cast(pa.int64()).to_pylist() == [10, 11, 12, 13]
    assert got.slice(1, 1).to_pylist()[0] == {
        "entity_id": "b",
        "event_time": got["event_time"][1].as_py(),
        "written_at": got["written_at"][1].as_py(),
        "version_id": 11,
        **{f.name: None for f in EVERY_TYPE.fields},
    }
    assert got["li"].to_pylist() == [[1, 2], None, [], [None, 3]]
    assert got["ls"].to_pylist() == [["p"], None, [], [None, "q"]]

    [part] = log.files("every_type")
    assert part.parent == tmp_path / "every_type" / "schema=1" / "date=2026-01-01"
    assert PART_RE.match(part.name)
    assert pq.ParquetFile(part).metadata.row_group(0).column(0).compression == "ZSTD"


def test_partitions_by_utc_event_date(tmp_path: Path) -> None:
    log = OfflineLog(tmp_path)
    rows: list[Row] = [
        ("a", T0 - 1, 1, [1]),  # 2025-12-31T23:59:59.999999Z
        ("b", T0, 2, [2]),  # midnight belongs to the new day
        ("c", T0 + DAY - 1, 3, [3]),
        ("d", T0 + 2 * DAY + 5, 4, [4]),
        ("e", -1, 5, [5]),  # before the epoch: 1969-12-31
        ("f", T0 + 10, 6, [6]),
    ]
    log.append(SMALL, table(SMALL, rows))
    assert log.flush() == 6
    by_date = {
        p.parent.name: sorted(pq.read_table(p)["entity_id"].to_pylist()) for p in log.files("small")
    }
    assert by_date == {
        "date=1969-12-31": ["e"],
        "date=2025-12-31": ["a"],
        "date=2026-01-01": ["b", "c", "f"],
        "date=2026-01-03": ["d"],
    }
    assert keys(log.scan(SMALL)) == [(e, v) for e, v in zip("abcdef", range(1, 7), strict=True)]


def test_buffered_rows_are_scanned_before_any_flush(tmp_path: Path) -> None:
    log = OfflineLog(tmp_path, max_rows=1_000, max_age_seconds=3_600)
    log.append(SMALL, table(SMALL, small_rows(3)))
    assert log.files("small") == []
    assert log.scan(SMALL)["x"].to_pylist() == [0, 1, 2]


def test_flush_by_size(tmp_path: Path) -> None:
    log = OfflineLog(tmp_path, max_rows=10, max_age_seconds=3_600)
    log.append(SMALL, table(SMALL, small_rows(4)))
    log.append(SMALL, table(SMALL, small_rows(4, start=4)))
    assert log.files("small") == []
    log.append(SMALL, table(SMALL, small_rows(4, start=8)))  # 12 rows >= 10: written
    [part] = log.files("small")
    assert pq.read_metadata(part).num_rows == 12
    assert log.flush() == 0
    log.append(SMALL, table(SMALL, small_rows(1, start=12)))
    assert len(log.files("small")) == 1
    assert log.flush("small") == 1
    assert len(log.files("small")) == 2


def test_flush_by_age(tmp_path: Path) -> None:
    log = OfflineLog(tmp_path, max_rows=1_000, max_age_seconds=0.2)
    log.append(SMALL, table(SMALL, small_rows(2)))
    assert log.files("small") == []
    time.sleep(0.25)
    log.append(SMALL, table(SMALL, small_rows(1, start=2)))  # finds the buffer too old
    [part] = log.files("small")
    assert pq.read_metadata(part).num_rows == 3
    assert log.flush() == 0


def test_close_flushes_everything(tmp_path: Path) -> None:
    other = FeatureView("other", entity="user", fields=[Field("x", t.Int)])
    with OfflineLog(tmp_path, max_rows=1_000, max_age_seconds=3_600) as log:
        log.append(SMALL, table(SMALL, small_rows(5)))
        log.append(other, table(other, small_rows(2)))
        assert all_files(tmp_path) == []
    assert [pq.read_metadata(p).num_rows for p in log.files("small")] == [5]
    assert [pq.read_metadata(p).num_rows for p in log.files("other")] == [2]
    assert len(OfflineLog(tmp_path).scan(SMALL)) == 5


def test_flush_one_view_only(tmp_path: Path) -> None:
    other = FeatureView("other", entity="user", fields=[Field("x", t.Int)])
    log = OfflineLog(tmp_path, max_age_seconds=3_600)
    log.append(SMALL, table(SMALL, small_rows(3)))
    log.append(other, table(other, small_rows(4)))
    assert log.flush("other") == 4
    assert log.files("small") == []
    assert log.flush() == 3
    with pytest.raises(ConfigurationError):
        log.flush("../escape")


def test_no_tmp_files_left_after_flush(tmp_path: Path) -> None:
    log = OfflineLog(tmp_path)
    log.append(SMALL, table(SMALL, small_rows(50, step=DAY // 10)))  # 5 days
    log.flush()
    files = all_files(tmp_path)
    assert len(files) == 5
    assert all(PART_RE.match(p.name) for p in files)
    assert not any(p.name.startswith(".tmp-") for p in files)


def test_leftover_tmp_file_is_ignored(tmp_path: Path) -> None:
    log = OfflineLog(tmp_path)
    log.append(SMALL, table(SMALL, small_rows(3)))
    log.flush()
    [part] = log.files("small")
    # A crash mid-write: a truncated file under the temporary name, next to the real one.
    data = part.read_bytes()
    crashed = part.parent / ".tmp-x.parquet"
    crashed.write_bytes(data[: len(data) // 2])
    # And a complete one that was never renamed: its rows are not part of the log either.
    pq.write_table(table(SMALL, small_rows(2, start=100)), part.parent / ".tmp-y.parquet")

    assert log.files("small") == [part]
    assert keys(OfflineLog(tmp_path).scan(SMALL)) == [("u0", 1000), ("u1", 1001), ("u2", 1002)]

    log.append(SMALL, table(SMALL, small_rows(1, start=3)))
    log.flush()
    assert log.compact("small") == 2
    assert crashed.exists()  # fresh: maybe another process still writing it
    old = time.time() - 2 * offlinelog.STALE_TMP_SECONDS
    os.utime(crashed, (old, old))
    assert log.compact("small") == 0
    assert not crashed.exists()
    assert (part.parent / ".tmp-y.parquet").exists()


def test_duplicates_are_dropped(tmp_path: Path) -> None:
    log = OfflineLog(tmp_path)
    rows: list[Row] = [
        ("u1", T0, 1, [1]),
        ("u1", T0 + 5, 2, [2]),  # a second version of the same entity: kept
        ("u2", T0, 1, [3]),  # same version id, other entity: kept
    ]
    src = table(SMALL, rows)
    log.append(SMALL, src)
    log.flush()
    log.append(SMALL, src)  # a retried import, logged twice
    log.flush()
    log.append(SMALL, src)  # and a third copy still in the buffer
    assert len(log.files("small")) == 2
    got = log.scan(SMALL)
    assert got.equals(src)
    assert keys(got) == [("u1", 1), ("u1", 2), ("u2", 1)]


def test_added_field_reads_null_for_old_rows(tmp_path: Path) -> None:
    v1 = FeatureView("evolve", entity="user", fields=[Field("a", t.Int), Field("gone", t.String)])
    v2 = FeatureView("evolve", entity="user", fields=[Field("a", t.Int), Field("b", t.String)])
    log = OfflineLog(tmp_path, max_age_seconds=3_600)
    log.append(v1, table(v1, [("old", T0, 1, [1, "z"])]))
    log.flush()
    log.append(v1, table(v1, [("buffered-old", T0, 2, [2, "z"])]))
    # Same schema_version, new shape: the old buffer is written first, never mixed in one file.
    log.append(v2, table(v2, [("new", T0 + 1, 3, [3, "hello"])]))
    assert len(log.files("evolve")) == 2

    got = log.scan(v2)
    assert got.schema.equals(arrowio.version_schema(v2))
    assert got.select(["entity_id", "a", "b"]).to_pylist() == [
        {"entity_id": "buffered-old", "a": 2, "b": None},
        {"entity_id": "new", "a": 3, "b": "hello"},
        {"entity_id": "old", "a": 1, "b": None},
    ]
    log.close()
    assert OfflineLog(tmp_path).scan(v2).equals(got)
    # Reading with the old definition drops "b" and nulls "gone" for the new rows.
    old_view = OfflineLog(tmp_path).scan(v1)
    assert old_view.column_names == [*arrowio.META, "a", "gone"]
    assert old_view["gone"].to_pylist() == ["z", None, "z"]


def test_type_change_with_bumped_schema_version(tmp_path: Path) -> None:
    v1 = FeatureView("typed", entity="user", fields=[Field("a", t.Int), Field("k", t.Float)])
    v2 = FeatureView(
        "typed",
        entity="user",
        fields=[Field("a", t.String), Field("k", t.Float)],
        schema_version=2,
    )
    log = OfflineLog(tmp_path)
    log.append(v1, table(v1, [("u1", T0, 1, [7, 0.5]), ("u2", T0, 2, [8, 1.5])]))
    log.flush()
    log.append(v2, table(v2, [("u1", T0 + DAY, 3, ["seven", 2.5])]))
    log.flush()
    assert sorted(p.parent.parent.name for p in log.files("typed")) == ["schema=1", "schema=2"]

    got = log.scan(v2)
    assert got.schema.equals(arrowio.version_schema(v2))
    assert got.select(["entity_id", "version_id", "a", "k"]).to_pylist() == [
        {"entity_id": "u1", "version_id": 1, "a": None, "k": 0.5},
        {"entity_id": "u1", "version_id": 3, "a": "seven", "k": 2.5},
        {"entity_id": "u2", "version_id": 2, "a": None, "k": 1.5},
    ]
    assert log.scan(v1)["a"].to_pylist() == [7, None, 8]


def test_start_end_filter_is_inclusive_and_prunes_dates(tmp_path: Path) -> None:
    log = OfflineLog(tmp_path, max_age_seconds=3_600)
    rows = [(f"u{d}", T0 + d * DAY, d, [d]) for d in range(5)]
    log.append(SMALL, table(SMALL, rows))
    log.flush()
    log.append(SMALL, table(SMALL, [("buf", T0 + 2 * DAY + 7, 99, [99])]))  # buffered row

    def ids(start: int | None, end: int | None) -> list[str]:
        got = log.scan(SMALL, start_us=start, end_us=end)
        return sorted(got["entity_id"].to_pylist())

    assert ids(T0 + DAY, T0 + 3 * DAY) == ["buf", "u1", "u2", "u3"]
    assert ids(T0 + DAY + 1, T0 + 3 * DAY - 1) == ["buf", "u2"]
    assert ids(T0 + 3 * DAY, None) == ["u3", "u4"]
    assert ids(None, T0) == ["u0"]
    assert ids(T0 + 10 * DAY, None) == []
    assert log.scan(SMALL, start_us=T0 + 10 * DAY).schema.equals(arrowio.version_schema(SMALL))

    # Pruning: a corrupt file in a date outside the range is never opened.
    bad = (
        tmp_path / "small" / "schema=1" / "date=2026-01-05" / "part-0000000000000-deadbeef.parquet"
    )
    bad.write_bytes(b"not parquet")
    assert ids(T0, T0 + 3 * DAY) == ["buf", "u0", "u1", "u2", "u3"]
    with pytest.raises(pa.ArrowInvalid):
        log.scan(SMALL)


def test_compact_merges_partitions_and_keeps_rows(tmp_path: Path) -> None:
    log = OfflineLog(tmp_path)
    for batch in range(3):
        rows = [(f"u{i}", T0 + (i % 2) * DAY + batch, batch * 100 + i, [i]) for i in range(10)]
        log.append(SMALL, table(SMALL, rows))
        log.flush()
    log.append(SMALL, table(SMALL, [("u0", T0, 0, [0])]))  # a duplicate of batch 0's u0
    log.flush()
    other = FeatureView("small", entity="user", fields=[Field("x", t.Int)], schema_version=2)
    log.append(other, table(other, [("solo", T0, 5_000, [1])]))  # a single-file partition
    log.flush()
    before = log.scan(SMALL)
    assert len(before) == 31
    assert len(log.files("small")) == 8
    assert sum(pq.read_metadata(p).num_rows for p in log.files("small")) == 32

    assert log.compact("small") == 7  # 4 files on day 0 and 3 on day 1 -> one each
    after = log.files("small")
    assert len(after) == 3
    assert all(PART_RE.match(p.name) for p in after)
    assert sum(pq.read_metadata(p).num_rows for p in after) == 31  # duplicate gone on disk
    assert log.scan(SMALL).equals(before)
    assert log.compact("small") == 0
    assert not any(p.name.startswith(".tmp-") for p in all_files(tmp_path))


def test_scan_retries_when_compaction_removes_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = OfflineLog(tmp_path)
    for i in range(3):
        log.append(SMALL, table(SMALL, small_rows(2, start=2 * i)))
        log.flush()
    real = offlinelog._read_conformed
    calls = []

    def racing(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            assert log.compact("small") == 3  # the listed files vanish before they are read
        return real(*args)

    monkeypatch.setattr(offlinelog, "_read_conformed", racing)
    assert len(log.scan(SMALL)) == 6
    assert len(calls) == 2


def test_rows_being_written_stay_visible_to_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = OfflineLog(tmp_path)
    log.append(SMALL, table(SMALL, small_rows(3)))
    entered, release = threading.Event(), threading.Event()
    real = offlinelog._write_atomic

    def slow(directory: Path, tbl: pa.Table) -> Path:
        entered.set()
        assert release.wait(5)
        return real(directory, tbl)

    monkeypatch.setattr(offlinelog, "_write_atomic", slow)
    flusher = threading.Thread(target=log.flush)
    flusher.start()
    try:
        assert entered.wait(5)
        assert log.files("small") == []  # out of the buffer, not on disk yet...
        assert len(log.scan(SMALL)) == 3  # ...and still scanned
    finally:
        release.set()
        flusher.join()
    assert len(log.files("small")) == 1
    assert len(log.scan(SMALL)) == 3


def test_failed_write_keeps_rows_buffered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = OfflineLog(tmp_path)
    log.append(SMALL, table(SMALL, small_rows(4)))

    def full(directory: Path, tbl: pa.Table) -> Path:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(offlinelog, "_write_atomic", full)
        with pytest.raises(OSError, match="No space"):
            log.flush()
    assert log.files("small") == []
    assert len(log.scan(SMALL)) == 4
    assert log.flush() == 4
    assert len(OfflineLog(tmp_path).scan(SMALL)) == 4


def test_threads_appending_concurrently(tmp_path: Path) -> None:
    log = OfflineLog(tmp_path, max_rows=97, max_age_seconds=0.01)
    n_threads, appends, per = 8, 40, 13
    errors: list[BaseException] = []
    seen: list[int] = []

    def writer(w: int) -> None:
        try:
            for a in range(appends):
                base = (w * appends + a) * per
                rows = [
                    (f"w{w}", T0 + (base + i) * 3_600_000_000, base + i, [w]) for i in range(per)
                ]
                log.append(SMALL, table(SMALL, rows))
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(5):
                seen.append(len(log.scan(SMALL)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(n_threads)]
    threads.append(threading.Thread(target=reader))
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    log.close()
    assert errors == []
    assert seen == sorted(seen)  # a scan never loses rows an earlier scan saw
    total = n_threads * appends * per
    got = OfflineLog(tmp_path).scan(SMALL)
    assert len(got) == total
    assert sorted(got["version_id"].to_pylist()) == list(range(total))
    assert sum(pq.read_metadata(p).num_rows for p in log.files("small")) == total


def test_empty_log_and_bad_input(tmp_path: Path) -> None:
    log = OfflineLog(tmp_path)
    assert log.scan(EVERY_TYPE).equals(arrowio.empty_versions(EVERY_TYPE))
    assert log.files("every_type") == []
    assert log.compact("every_type") == 0
    assert log.flush() == 0
    log.append(SMALL, table(SMALL, []))  # nothing to log
    assert log.flush() == 0
    with pytest.raises(ConfigurationError, match="schema does not match"):
        log.append(EVERY_TYPE, table(SMALL, small_rows(1)))
    tbl = table(SMALL, small_rows(2))
    nulls = tbl.set_column(0, "entity_id", pa.array(["a", None], pa.string()))
    with pytest.raises(ConfigurationError, match="'entity_id' has null"):
        log.append(SMALL, nulls)
    with pytest.raises(ConfigurationError):
        OfflineLog(tmp_path, max_rows=0)
