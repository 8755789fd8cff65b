"""Training data as a service: history, versions, diffs, point-in-time training frames of
views, export and backfill. Window columns are joined on by the facade (``store.py``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.codec import READ, normalize_id
from ..core.context import Ctx, WriteObserver
from ..core.records import Version, WriteReport
from ..core.refs import Wanted, plan
from ..errors import ConfigurationError, NotFoundError
from ..online import history as _history
from ..online.online import Online, Progress

if TYPE_CHECKING:
    from .feeder import LogFeeder
    from .log import OfflineLog

# The Arrow, Parquet and DuckDB modules load on first use of the verbs that need them:
# history, version and diff read Redis only, and stay quick to import (the CLI).

MAX_LIMIT = 2**31 - 1  # history limit: beyond it Redis refuses the count


class Training:
    """Versions and training data of one store."""

    def __init__(
        self,
        ctx: Ctx,
        online: Online,
        observer: WriteObserver,
        offline: OfflineLog | None,
        feeder: LogFeeder | None = None,
    ) -> None:
        self._ctx = ctx
        self._online = online
        self._observer = observer
        self._offline = offline
        self._feeder = feeder
        self.client = ctx.client
        self.keys = ctx.keys
        self.registry = ctx.registry

    # -- versions, training data, export and backfill --------------------------------

    def history(self, view: str, entity_id: str | int, *, limit: int = 10) -> list[Version]:
        """Stored versions of one entity, newest event time first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ConfigurationError(f"limit must be an int in 1 .. {MAX_LIMIT:,}, got {limit!r}")
        res = self.registry.get(view)
        ent = normalize_id(view, entity_id, outcome=READ)
        return _history.history(self.client, self.keys, res, ent, limit)

    def version(
        self, view: str, entity_id: str | int, version_id: int | None, tag: str | None = None
    ) -> Version:
        """One version by id, or by the tag a write gave it (NotFoundError if it is not, or
        no longer, kept)."""
        res = self.registry.get(view)
        if (version_id is None) == (tag is None):
            raise ConfigurationError(
                f"view {view!r}: give a version id or tag=, one of them (got {version_id!r:.60}"
                f" and tag={tag!r:.60})"
            )
        ent = normalize_id(view, entity_id, outcome=READ)
        if tag is not None:
            return _history.tagged(self.client, self.keys, res, ent, _history.check_tag(view, tag))
        if isinstance(version_id, bool) or not isinstance(version_id, int | np.integer):
            raise ConfigurationError(
                f"view {view!r}: a version id is an int (Version.id), got {version_id!r:.60}"
            )
        version_id = int(version_id)
        found = _history.find_version(self.client, self.keys, res, ent, version_id)
        if found is not None:
            return found
        raise NotFoundError(
            f"view {view!r}, entity {entity_id!r}: no version {version_id} "
            "(never written, or trimmed by the view's history setting)"
        )

    def tag(self, view: str, entity_id: str | int, tag: str, version_id: int) -> None:
        """Name a version of an entity (``write(..., tag=)``)."""
        res = self.registry.get(view)
        ent = normalize_id(view, entity_id)  # an int id of a one-key entity is given as is
        _history.set_tag(self.client, self.keys, res, ent, tag, version_id)

    def diff(self, view: str, entity_id: str | int, a: Any, b: Any) -> dict[str, Any]:
        """What changed between two versions (ids, or datetimes read as-of):
        ``{"added": {f: new}, "removed": {f: old}, "modified": {f: (old, new)}}``."""
        res = self.registry.get(view)
        ent = normalize_id(view, entity_id, outcome=READ)
        old = _history.version_at(self.client, self.keys, res, ent, a)
        new = _history.version_at(self.client, self.keys, res, ent, b)
        return _history.diff_values(old.values, new.values)

    def training_frame(
        self,
        entity_df: Any,
        features: Sequence[str],
        *,
        entity_column: str = "entity_id",
        event_time_column: str = "event_time",
        full_feature_names: bool = False,
        filter_by_written_at: bool = False,
        as_arrow: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> Any:
        """Point-in-time correct features for each (entity, timestamp) row of entity_df.

        For each row and view: the version with the greatest event_time <= the row's time
        (and >= time - ttl when the view has one), ties to the last written; with
        ``filter_by_written_at`` only versions written by then. Every input row and column is
        kept in order; no match gives null. Returns pandas (or Arrow with ``as_arrow``).
        ``progress(view, done, total)`` reports the bulk read of versions.
        """
        wanted = plan(features, self.registry.get, full_feature_names)
        from .frames import training_frame

        opts: dict[str, Any] = dict(
            entity_column=entity_column,
            event_time_column=event_time_column,
            filter_by_written_at=filter_by_written_at,
            as_arrow=as_arrow,
        )
        if self._offline is None:

            def fetch(w: Wanted, ents: list[str], lo: int | None, hi: int | None) -> Any:
                step = None if progress is None else (lambda d, n: progress(w.res.name, d, n))
                return self.versions(w.res.name, ents, start=lo, end=hi, _us=True, progress=step)

            return training_frame(entity_df, wanted, fetch, **opts)
        # With the log: it is the system of record. What the feeds hold and the log has not
        # taken yet goes into it first; then DuckDB reads the Parquet, entity and time pushed
        # into the scan, and Redis is not read at all.
        import pyarrow as pa

        from . import asof, logsql

        self.sync()
        con = logsql.connect()
        root = self._offline.root
        lock = threading.Lock()

        def cursor() -> Any:
            with lock:  # a connection is not for two threads at once: one cursor each
                return con.cursor()

        def from_log(w: Wanted, ents: list[str], lo: int | None, hi: int | None) -> Any:
            cur = cursor()
            try:
                got = logsql.versions(
                    cur, root, w.res.view, list(w.features), pa.array(ents, pa.string()), lo, hi
                )
            finally:
                cur.close()
            if progress is not None:
                progress(w.res.name, len(ents), len(ents))
            return got

        log = self._offline

        def direct(w: Wanted, edf: Any, codes: Any, lo: int | None, hi: int | None) -> Any:
            feats = list(w.features)
            runs = log.runs(w.res.view, ["entity_id", "event_time", "version_id", *feats], lo, hi)
            if runs is None:
                return None
            got = asof.join(runs, feats, edf, codes, w.res.view.ttl_us)
            if got is not None:
                return got
            cur = cursor()  # keys too wide for int64: DuckDB's ASOF JOIN
            try:
                return logsql.join(
                    cur, root, w.res.view, list(w.features), edf, codes, w.res.view.ttl_us,
                    lo, hi,
                )  # fmt: skip
            finally:
                cur.close()

        try:
            return training_frame(entity_df, wanted, from_log, direct=direct, **opts)
        finally:
            con.close()

    def sync(self) -> None:
        """Log what the feeds hold that the log has not taken yet (with a feeder in this
        process): the log plus nothing is then every version."""
        if self._feeder is not None:
            self._feeder.drain()

    def window_events(self, name: str, ids: Any, hi_us: int | None) -> Any:
        """The logged events of window features ``name`` for entities ``ids`` up to
        ``hi_us``, from the offline log (None without one, or when nothing is logged)."""
        if self._offline is None:
            return None
        import pyarrow as pa

        from . import logsql

        self.sync()
        con = logsql.connect()
        try:
            return logsql.window_events(
                con, self._offline.root, name, pa.array(ids, pa.string()), hi_us
            )
        finally:
            con.close()

    def versions(
        self,
        view: str,
        entity_ids: Iterable[str | int] | None = None,
        *,
        start: Any = None,
        end: Any = None,
        progress: Callable[[int, int], None] | None = None,
        _us: bool = False,
    ) -> Any:
        """Every stored version (Redis history, plus the offline log when configured) of some
        entities (all when None) with event time in [start, end], as a pyarrow.Table."""
        lo = start if _us or start is None else _history.as_of_us(view, start)
        hi = end if _us or end is None else _history.as_of_us(view, end)
        from .dump import Dumper
        from .transfer import versions

        self.sync()  # what the feed holds may be gone from history already: log it first
        dumper = Dumper(self._ctx.keys, self._ctx.direct)
        return versions(self._ctx, dumper, self._offline, view, entity_ids, lo, hi, progress)

    def export(
        self,
        view: str,
        path: str | os.PathLike[str],
        *,
        start: Any = None,
        end: Any = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Write every version of a view with event time in [start, end] to one Parquet file
        (atomically). Returns the number of versions written."""
        table = self.versions(view, start=start, end=end, progress=progress)
        from .transfer import write_parquet

        write_parquet(table, path)
        return int(table.num_rows)

    def import_frame(
        self,
        view: str,
        frame: Any,
        *,
        entity_column: str = "entity_id",
        event_time_column: str = "event_time",
        written_at_column: str | None = None,
        progress: Progress | None = None,
    ) -> WriteReport:
        """Backfill historical versions (history and offline log). Latest values only move
        forward: a row older than an entity's latest lands in history. All or nothing."""
        from .transfer import import_frame

        return import_frame(
            self._ctx,
            self._online,
            self._observer,
            view,
            frame,
            entity_column=entity_column,
            event_time_column=event_time_column,
            written_at_column=written_at_column,
            progress=progress,
        )
