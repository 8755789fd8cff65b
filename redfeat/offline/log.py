"""Offline log: every version written, kept as Parquet for training data older than Redis keeps.

Layout under ``root``::

    <view>/schema=<schema_version>/date=<YYYY-MM-DD>/part-<name>.parquet
    <window features>/events/date=<YYYY-MM-DD>/part-<name>.parquet

Views' files hold versions (EVENTS below for window features' raw events); ``<name>`` is the
first feed entry id of the batch the file came from (``1733550000000_0``), ``resync_<us>``
for a resync from history, or ``<unix ms>-<uuid8>`` for files written by ``append``.

``date`` is the UTC date of each row's ``event_time``. Files are written to ``.tmp-*`` in the
same directory, fsynced, then renamed into place, so readers never see a partial
``part-*.parquet``; ``.tmp-*`` files (left by a crash) are ignored. Rows use the versions
schema of :mod:`redfeat.offline.arrow`.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..core.schema import FeatureView, check_name
from ..errors import ConfigurationError
from . import arrow as arrowio

__all__ = ["OfflineLog"]

DAY_US = 86_400_000_000
EPOCH_DAY = date(1970, 1, 1)
TMP_PREFIX = ".tmp-"
PART_PREFIX = "part-"
SUFFIX = ".parquet"
COMPRESSION = "zstd"
ROW_GROUP = 128 * 1024
# compact() removes .tmp-* files older than this (a crashed writer's leftovers).
STALE_TMP_SECONDS = 3600.0
_SCAN_ATTEMPTS = 5
_ORDER = [("entity_id", "ascending"), ("event_time", "ascending"), ("version_id", "ascending")]

_Key = tuple[str, int]  # (view name, schema_version)
# Window features' events: every event counted, with when it was recorded (``written_at``,
# the feed entry's time) and ``seq``, its order among events recorded at the same ms.
EVENTS = pa.schema(
    [
        pa.field("entity_id", pa.string()),
        pa.field("event_time", arrowio.TS),
        pa.field("value", pa.float64()),
        pa.field("written_at", arrowio.TS),
        pa.field("seq", pa.int64()),
    ]
)
_EVENT_ORDER = [
    ("entity_id", "ascending"),
    ("event_time", "ascending"),
    ("written_at", "ascending"),
    ("seq", "ascending"),
]


@dataclass
class _Buffer:
    schema: pa.Schema
    tables: list[pa.Table] = field(default_factory=list)
    rows: int = 0
    since: float = field(default_factory=time.monotonic)


class OfflineLog:
    """Append-only Parquet log of every version written, partitioned by view and event date.

    Appends are buffered in memory per (view, schema_version) and written when a buffer holds
    ``max_rows`` rows, when an append finds it older than ``max_age_seconds``, and on
    :meth:`flush` / :meth:`close` (there is no background timer). Thread-safe; several
    processes may also share one root, since every file gets a unique name.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_rows: int = 50_000,
        max_age_seconds: float = 5.0,
    ) -> None:
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ConfigurationError(f"offline log: max_rows must be an int >= 1, got {max_rows!r}")
        if not max_age_seconds >= 0:
            raise ConfigurationError(
                f"offline log: max_age_seconds must be >= 0, got {max_age_seconds!r}"
            )
        self.root = Path(root)
        self.max_rows = max_rows
        self.max_age_seconds = float(max_age_seconds)
        self._lock = threading.Lock()
        self._compact_lock = threading.Lock()
        self._buffers: dict[_Key, _Buffer] = {}
        # Buffers taken for writing and not yet renamed into place: scan() still sees them.
        self._inflight: dict[int, tuple[_Key, list[pa.Table]]] = {}
        self._next_ticket = 0

    # -- writing ---------------------------------------------------------------------------

    def append(self, view: FeatureView, table: pa.Table) -> None:
        """Buffer ``table`` (in exactly ``arrowio.version_schema(view)``) for the log."""
        expected = arrowio.version_schema(view)
        if not table.schema.equals(expected):
            raise ConfigurationError(
                f"offline log, view {view.name!r}: table schema does not match the view "
                f"(schema_version {view.schema_version}):\n{table.schema}\nexpected:\n{expected}"
            )
        if table.num_rows == 0:
            return
        for name in arrowio.META:
            if table.column(name).null_count:
                raise ConfigurationError(
                    f"offline log, view {view.name!r}: column {name!r} has null values"
                )
        key: _Key = (view.name, view.schema_version)
        taken: list[tuple[int, _Key, list[pa.Table]]] = []
        with self._lock:
            buf = self._buffers.get(key)
            if buf is not None and not buf.schema.equals(expected):
                # Same schema_version, different fields (e.g. one added): never mix in a file.
                taken.append(self._take(key))
                buf = None
            if buf is None:
                buf = self._buffers[key] = _Buffer(expected)
            buf.tables.append(table)
            buf.rows += table.num_rows
            if buf.rows >= self.max_rows or time.monotonic() - buf.since >= self.max_age_seconds:
                taken.append(self._take(key))
        self._write_taken(taken)

    def write_named(self, view: FeatureView, table: pa.Table, stem: str) -> int:
        """Write ``table`` now as ``part-<stem>.parquet`` in each date partition it touches,
        skipping a partition that has that file already: a writer redoing a batch under the
        same name (after a crash) writes nothing twice. Returns the rows written."""
        if table.num_rows == 0:
            return 0
        if not table.schema.equals(arrowio.version_schema(view)):
            raise ConfigurationError(
                f"offline log, view {view.name!r}: table schema does not match the view"
            )
        base = self.root / view.name / f"schema={view.schema_version}"
        written = 0
        for day, part in _split_by_day(table):
            directory = base / f"date={_day_name(day)}"
            if (directory / f"{PART_PREFIX}{stem}{SUFFIX}").exists():
                continue
            _write_atomic(directory, part.sort_by(_ORDER), stem)
            written += part.num_rows
        return written

    def write_events(self, name: str, table: pa.Table, stem: str) -> int:
        """Window features' events (schema EVENTS) as ``part-<stem>.parquet`` per date, a
        partition holding that file already skipped (see write_named)."""
        check_name("window features", name)
        if table.num_rows == 0:
            return 0
        written = 0
        for day, part in _split_by_day(table):
            directory = self.root / name / "events" / f"date={_day_name(day)}"
            if (directory / f"{PART_PREFIX}{stem}{SUFFIX}").exists():
                continue
            _write_atomic(directory, part.sort_by(_EVENT_ORDER), stem)
            written += part.num_rows
        return written

    def events_glob(self, name: str) -> str:
        """Every event file of window features ``name``, as a glob for DuckDB or Polars."""
        return str(self.root / name / "events" / "date=*" / f"{PART_PREFIX}*{SUFFIX}")

    def flush(self, view: str | None = None) -> int:
        """Write buffered rows (of one view, or of all) to Parquet; return how many rows."""
        if view is not None:
            check_name("view", view)
        with self._lock:
            keys = [k for k in self._buffers if view is None or k[0] == view]
            taken = [self._take(k) for k in keys]
        return self._write_taken(taken)

    def close(self) -> None:
        """Flush everything."""
        self.flush()

    def __enter__(self) -> OfflineLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _take(self, key: _Key) -> tuple[int, _Key, list[pa.Table]]:
        """Move a buffer to the in-flight set (caller holds the lock)."""
        buf = self._buffers.pop(key)
        ticket = self._next_ticket
        self._next_ticket += 1
        self._inflight[ticket] = (key, buf.tables)
        return ticket, key, buf.tables

    def _write_taken(self, taken: list[tuple[int, _Key, list[pa.Table]]]) -> int:
        written = 0
        for i, (ticket, key, tables) in enumerate(taken):
            try:
                written += self._write_partitions(key, pa.concat_tables(tables))
            except BaseException:
                # Nothing of a failed batch is lost: its rows (and those not yet tried) go back
                # to the front of their buffers. Partitions already renamed may be logged twice;
                # scan() de-duplicates.
                with self._lock:
                    for t_ticket, t_key, t_tables in taken[i:]:
                        self._inflight.pop(t_ticket, None)
                        self._restore(t_key, t_tables)
                raise
            with self._lock:
                del self._inflight[ticket]
        return written

    def _restore(self, key: _Key, tables: list[pa.Table]) -> None:
        """Put rows back at the front of their buffer (caller holds the lock)."""
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = _Buffer(tables[0].schema)
        # Rare: meanwhile a buffer of another shape started for this key; conform, never drop.
        back = [t if t.schema.equals(buf.schema) else conform(t, buf.schema) for t in tables]
        buf.tables[:0] = back
        buf.rows += sum(t.num_rows for t in back)

    def _write_partitions(self, key: _Key, table: pa.Table) -> int:
        """Write one file per event date; return the number of rows written."""
        name, schema_version = key
        base = self.root / name / f"schema={schema_version}"
        for day, part in _split_by_day(table):
            directory = base / f"date={_day_name(day)}"
            _write_atomic(directory, part)
        return int(table.num_rows)

    # -- reading ---------------------------------------------------------------------------

    def files(self, view: str) -> list[Path]:
        """Every part file of ``view`` (all schema versions and dates), sorted."""
        check_name("view", view)
        return sorted(p for _, _, p in self._part_files(view))

    def scan(
        self,
        view: FeatureView,
        *,
        start_us: int | None = None,
        end_us: int | None = None,
    ) -> pa.Table:
        """Every logged version of ``view`` (files and buffered rows) in its current schema.

        Columns missing from older data, or stored with another Arrow type, read as null;
        columns no longer defined are dropped. Rows are unique on (entity_id, version_id) and
        sorted by entity_id, event_time, version_id. ``start_us``/``end_us`` bound event_time
        (microseconds since the epoch, inclusive).
        """
        target = arrowio.version_schema(view)
        expr = _time_filter(start_us, end_us)
        # Memory first, files second: a buffer flushed in between is then seen at least once.
        with self._lock:
            memory: list[tuple[int, pa.Table]] = [
                (k[1], t)
                for k, buf in self._buffers.items()
                if k[0] == view.name
                for t in buf.tables
            ]
            memory += [
                (k[1], t)
                for k, tables in self._inflight.values()
                if k[0] == view.name
                for t in tables
            ]
        pieces: list[tuple[int, int, pa.Table]] = []
        for schema_version, t in memory:
            if expr is not None:
                t = t.filter(expr)
            if t.num_rows:
                pieces.append((schema_version, 0, conform(t, target)))
        pieces += self._read_files(view.name, target, expr, start_us, end_us)
        if not pieces:
            return arrowio.empty_versions(view)
        # Priority for de-duplication: newest schema first, buffered rows before files.
        pieces.sort(key=lambda p: (-p[0], p[1]))
        table = pa.concat_tables([p[2] for p in pieces])
        return _dedup(table).sort_by(_ORDER)

    def runs(
        self, view: FeatureView, columns: list[str], start_us: int | None, end_us: int | None
    ) -> pa.Table | None:
        """The logged rows of ``view`` in files, ``columns`` of its current schema (missing or
        retyped ones null), event time within [start_us, end_us] (inclusive, None: open):
        each file's rows sorted by (entity, event time, version id), the files one after
        the other, neither merged nor de-duplicated (a join that merges the sorted runs
        itself reads this). None when nothing is logged."""
        full = arrowio.version_schema(view)
        target = pa.schema([full.field(c) for c in columns])
        pieces = self._read_files(
            view.name, target, _time_filter(start_us, end_us), start_us, end_us
        )
        if not pieces:
            return None
        return pa.concat_tables([p[2] for p in pieces])

    def _read_files(
        self,
        name: str,
        target: pa.Schema,
        expr: pc.Expression | None,
        start_us: int | None,
        end_us: int | None,
    ) -> list[tuple[int, int, pa.Table]]:
        lo = None if start_us is None else start_us // DAY_US
        hi = None if end_us is None else end_us // DAY_US
        for attempt in range(_SCAN_ATTEMPTS):
            found = [
                (sv, p)
                for sv, day, p in self._part_files(name)
                if (lo is None or day >= lo) and (hi is None or day <= hi)
            ]
            try:
                return _read_conformed(found, target, expr)
            except FileNotFoundError:
                # A file vanished under us (compaction): its rows are in a newer file.
                if attempt == _SCAN_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _part_files(self, name: str) -> Iterator[tuple[int, int, Path]]:
        """(schema_version, day number, path) of every part file of a view."""
        for sv, day, directory in self._partitions(name):
            for p in _list_parts(directory):
                yield sv, day, p

    def _partitions(self, name: str) -> Iterator[tuple[int, int, Path]]:
        """(schema_version, day number, directory) of every date partition of a view."""
        for schema_dir in _subdirs(self.root / name):
            sv = _parse_int(schema_dir.name, "schema=")
            if sv is None:
                continue
            for day_dir in _subdirs(schema_dir):
                day = _parse_day(day_dir.name)
                if day is not None:
                    yield sv, day, day_dir

    # -- maintenance -----------------------------------------------------------------------

    def compact(self, view: str) -> int:
        """Merge each partition's part files into one (de-duplicated); return files removed.

        Leftover ``.tmp-*`` files older than an hour are deleted too (not counted).
        """
        check_name("view", view)
        removed = 0
        with self._compact_lock:
            for _, _, directory in list(self._partitions(view)):
                _remove_stale_tmp(directory)
                parts = _list_parts(directory)
                if len(parts) < 2:
                    continue
                # Newest file first: its column order wins and its copy of a duplicate is kept.
                try:
                    tables = [pq.read_table(p) for p in reversed(parts)]
                except FileNotFoundError:
                    continue  # another process is compacting this partition
                try:
                    merged = pa.concat_tables(tables, promote_options="default")
                except (pa.ArrowInvalid, pa.ArrowTypeError):
                    continue  # a field changed type without a schema bump: leave as is
                _write_atomic(directory, _dedup(merged).sort_by(_ORDER))
                for p in parts:
                    try:
                        p.unlink()
                    except FileNotFoundError:
                        continue  # another process compacted it already
                    removed += 1
        return removed


# -- helpers -------------------------------------------------------------------------------


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(e for e in path.iterdir() if e.is_dir() and not e.name.startswith("."))
    except FileNotFoundError:
        return []


def _list_parts(directory: Path) -> list[Path]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(directory / n for n in names if n.startswith(PART_PREFIX) and n.endswith(SUFFIX))


def _parse_int(name: str, prefix: str) -> int | None:
    if not name.startswith(prefix):
        return None
    try:
        return int(name[len(prefix) :])
    except ValueError:
        return None


def _parse_day(name: str) -> int | None:
    if not name.startswith("date="):
        return None
    try:
        return (date.fromisoformat(name[5:]) - EPOCH_DAY).days
    except ValueError:
        return None


def _day_name(day: int) -> str:
    return (EPOCH_DAY + timedelta(days=day)).isoformat()


def _split_by_day(table: pa.Table) -> Iterator[tuple[int, pa.Table]]:
    us = table.column("event_time").cast(pa.int64()).to_numpy()
    days = us // DAY_US  # floor division: dates before 1970 land on the right day
    first = int(days[0])
    if (days == first).all():
        yield first, table
        return
    order = np.argsort(days, kind="stable")
    sorted_days = days[order]
    table = table.take(pa.array(order))
    bounds = np.flatnonzero(np.diff(sorted_days)) + 1
    starts = [0, *bounds.tolist()]
    ends = [*bounds.tolist(), len(sorted_days)]
    for s, e in zip(starts, ends, strict=True):
        yield int(sorted_days[s]), table.slice(s, e - s)


def _write_atomic(directory: Path, table: pa.Table, stem: str | None = None) -> Path:
    """Write ``table`` as a new part file: temporary name, fsync, rename, fsync the dir.
    Row groups of ROW_GROUP rows: sorted by (entity, event time), their statistics let a
    reader skip what an entity or time filter excludes."""
    directory.mkdir(parents=True, exist_ok=True)
    if stem is None:
        stem = f"{time.time_ns() // 1_000_000}-{uuid.uuid4().hex[:8]}"
    tmp = directory / f"{TMP_PREFIX}{stem}-{uuid.uuid4().hex[:8]}{SUFFIX}"
    final = directory / f"{PART_PREFIX}{stem}{SUFFIX}"
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression=COMPRESSION, row_group_size=ROW_GROUP)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    return final


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_tmp(directory: Path) -> None:
    cutoff = time.time() - STALE_TMP_SECONDS
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for n in names:
        if not n.startswith(TMP_PREFIX):
            continue
        p = directory / n
        try:
            if p.stat().st_mtime < cutoff:
                p.unlink()
        except FileNotFoundError:
            pass


def _time_filter(start_us: int | None, end_us: int | None) -> pc.Expression | None:
    col = pc.field("event_time")
    expr: pc.Expression | None = None
    if start_us is not None:
        expr = col >= pa.scalar(start_us, arrowio.TS)
    if end_us is not None:
        upper = col <= pa.scalar(end_us, arrowio.TS)
        expr = upper if expr is None else expr & upper
    return expr


def _same_type(a: pa.DataType, b: pa.DataType) -> bool:
    """Equal types, ignoring the names of list children (Parquet may rename them)."""
    if a.equals(b):
        return True
    if pa.types.is_fixed_size_list(a) and pa.types.is_fixed_size_list(b):
        return bool(a.list_size == b.list_size) and _same_type(a.value_type, b.value_type)
    if pa.types.is_list(a) and pa.types.is_list(b):
        return _same_type(a.value_type, b.value_type)
    return False


def conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    """``table`` in ``target``'s columns: missing or differently typed columns become null."""
    n = table.num_rows
    cols: list[pa.ChunkedArray] = []
    for f in target:
        i = table.schema.get_field_index(f.name)
        if i >= 0 and _same_type(table.schema.field(i).type, f.type):
            col = table.column(i)
            cols.append(col if col.type.equals(f.type) else col.cast(f.type))
        else:
            cols.append(pa.chunked_array([pa.nulls(n, f.type)], f.type))
    return pa.Table.from_arrays(cols, schema=target)


def _read_conformed(
    found: Iterable[tuple[int, Path]],
    target: pa.Schema,
    expr: pc.Expression | None,
) -> list[tuple[int, int, pa.Table]]:
    """Read files grouped by (schema_version, physical schema): one dataset scan per group."""
    fmt = ds.ParquetFileFormat()
    local = pafs.LocalFileSystem()
    groups: dict[tuple[int, pa.Schema], list[Any]] = {}
    for sv, path in found:
        frag = fmt.make_fragment(os.path.abspath(path), filesystem=local)
        groups.setdefault((sv, frag.physical_schema), []).append(frag)
    out: list[tuple[int, int, pa.Table]] = []
    for (sv, physical), frags in groups.items():
        keep = [
            f.name
            for f in target
            if physical.get_field_index(f.name) >= 0
            and _same_type(physical.field(f.name).type, f.type)
        ]
        dataset = ds.FileSystemDataset(frags, physical, fmt, local)
        t = dataset.to_table(columns=keep, filter=expr)
        if t.num_rows:
            out.append((sv, 1, conform(t, target)))
    return out


def _dedup(table: pa.Table) -> pa.Table:
    """Keep the first row of each (entity_id, version_id)."""
    n = table.num_rows
    if n < 2:
        return table
    # Group on small integer codes rather than the strings themselves: about twice as fast.
    codes = pc.dictionary_encode(table.column("entity_id").combine_chunks()).indices
    keys = pa.table(
        {"e": codes, "v": table.column("version_id"), "i": pa.array(np.arange(n, dtype=np.int64))}
    )
    first = keys.group_by(["e", "v"]).aggregate([("i", "min")])
    if first.num_rows == n:
        return table
    keep = np.sort(first.column("i_min").to_numpy())
    return table.take(pa.array(keep))
