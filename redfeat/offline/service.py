"""Training data as a service: history, versions, diffs, point-in-time training frames of
views, export and backfill. Window columns are joined on by the facade (``store.py``)."""

from __future__ import annotations

import os
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

    def version(self, view: str, entity_id: str | int, version_id: int) -> Version:
        """One version by id (NotFoundError if it is not, or no longer, kept)."""
        res = self.registry.get(view)
        if isinstance(version_id, bool) or not isinstance(version_id, int | np.integer):
            raise ConfigurationError(
                f"view {view!r}: a version id is an int (Version.id), got {version_id!r:.60}"
            )
        version_id = int(version_id)
        ent = normalize_id(view, entity_id, outcome=READ)
        found = _history.find_version(self.client, self.keys, res, ent, version_id)
        if found is not None:
            return found
        raise NotFoundError(
            f"view {view!r}, entity {entity_id!r}: no version {version_id} "
            "(never written, or trimmed by the view's history setting)"
        )

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

        def fetch(w: Wanted, ents: list[str], lo: int | None, hi: int | None) -> Any:
            step = None if progress is None else (lambda d, n: progress(w.res.name, d, n))
            return self.versions(w.res.name, ents, start=lo, end=hi, _us=True, progress=step)

        from .frames import training_frame

        return training_frame(
            entity_df,
            wanted,
            fetch,
            entity_column=entity_column,
            event_time_column=event_time_column,
            filter_by_written_at=filter_by_written_at,
            as_arrow=as_arrow,
        )

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

        if self._feeder is not None:
            # what the feed holds and the log has not taken yet may be gone from history
            # already: log it first, so that log plus Redis is every version
            self._feeder.drain()
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
