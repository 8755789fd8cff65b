"""FeatureStore verbs for training data: diffs, point-in-time frames, export, backfill."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from ..core.codec import READ, normalize_id
from ..core.metrics import timed
from ..errors import ConfigurationError, NotFoundError
from ..online import history as _history
from ..online.history import Version
from ..online.writer import WriteReport
from . import frames as _offline
from . import transfer as _transfer

if TYPE_CHECKING:
    import redis

    from ..core.keys import Keys
    from ..core.registry import Registry
    from ..online.history import Dumper
    from ..online.online import Online, Progress
    from ..store import FeatureStore
    from .log import OfflineLog

MAX_LIMIT = 2**31 - 1  # history limit: beyond it Redis refuses the count


class TrainingVerbs:
    """Mixed into FeatureStore."""

    # provided by FeatureStore
    client: redis.Redis
    keys: Keys
    registry: Registry
    online: Online
    dumper: Dumper
    offline: OfflineLog | None

    def _fs(self) -> FeatureStore:
        return cast("FeatureStore", self)

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
        ent = normalize_id(view, entity_id, outcome=READ)
        found = _history.find_version(self.client, self.keys, res, ent, version_id)
        if found is not None:
            return found
        raise NotFoundError(
            f"view {view!r}, entity {entity_id!r}: no version {version_id} "
            "(never written, or trimmed by the view's history setting)"
        )

    @timed("diff")
    def diff(self, view: str, entity_id: str | int, a: Any, b: Any) -> dict[str, Any]:
        """What changed between two versions (ids, or datetimes read as-of):
        ``{"added": {f: new}, "removed": {f: old}, "modified": {f: (old, new)}}``."""
        res = self.registry.get(view)
        ent = normalize_id(view, entity_id, outcome=READ)
        old = _history.version_at(self.client, self.keys, res, ent, a)
        new = _history.version_at(self.client, self.keys, res, ent, b)
        return _history.diff_values(old.values, new.values)

    @timed("training_frame")
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
        refs, wins = self._fs()._window_refs(features, full_feature_names)
        if wins:
            return _windows_frame(
                self._fs(), entity_df, features, refs, wins, entity_column, event_time_column,
                full_feature_names, filter_by_written_at, as_arrow, progress,
            )  # fmt: skip
        wanted = _offline.plan(features, self.registry.get, full_feature_names)

        def fetch(w: _offline.Wanted, ents: list[str], lo: int | None, hi: int | None) -> Any:
            step = None if progress is None else (lambda d, n: progress(w.res.name, d, n))
            return self.versions(w.res.name, ents, start=lo, end=hi, _us=True, progress=step)

        return _offline.training_frame(
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
        return _transfer.versions(self._fs(), view, entity_ids, lo, hi, progress)

    @timed("export")
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
        _transfer.write_parquet(table, path)
        return int(table.num_rows)

    @timed("import_frame")
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
        report = _transfer.import_frame(
            self._fs(),
            view,
            frame,
            entity_column=entity_column,
            event_time_column=event_time_column,
            written_at_column=written_at_column,
            progress=progress,
        )
        self._fs()._clear_cached(view, self.registry.dependents(view))
        return report


def _windows_frame(
    store: FeatureStore,
    entity_df: Any,
    features: Sequence[str],
    refs: list[str],
    wins: list[Any],
    entity_column: str,
    event_time_column: str,
    full_feature_names: bool,
    filter_by_written_at: bool,
    as_arrow: bool,
    progress: Callable[[str, int, int], None] | None,
) -> Any:
    """A training frame with window features: the views' columns by the ASOF path, then
    the window columns computed from the tiles at each row's time."""
    import numpy as np
    import pyarrow as pa

    table, join = _offline.entity_table(entity_df, entity_column, event_time_column)
    entity = None
    if refs:
        wanted = _offline.plan(refs, store.registry.get, full_feature_names)
        entity = wanted[0].res.view.entity
        frame = store.training_frame(
            entity_df,
            refs,
            entity_column=entity_column,
            event_time_column=event_time_column,
            full_feature_names=full_feature_names,
            filter_by_written_at=filter_by_written_at,
            as_arrow=as_arrow,
            progress=progress,
        )
    elif as_arrow:
        frame = table
    elif type(entity_df).__module__.startswith("pandas"):
        frame = entity_df.copy()
    else:
        frame = table.to_pandas()
    cols = store._window_frame(join, wins, entity)
    have = frame.column_names if as_arrow else list(frame.columns)
    clash = [c for c in cols if c in have]
    if clash:
        raise ConfigurationError(
            f"the frame already has column(s) {clash}; rename them or pass full_feature_names=True"
        )
    for name, col in cols.items():
        if as_arrow:
            frame = frame.append_column(name, pa.array(col, mask=np.isnan(col)))
        else:
            frame[name] = col
        if progress is not None:
            progress(name.split("__")[0], len(col), len(col))
    # the caller's order of features after entity_df's columns
    win_out = {f"{ww.wf.name}:{f}": out for ww in wins for out, f, _, _ in ww.feats}
    outs = [win_out.get(r) or _view_out(r, full_feature_names) for r in features]
    ordered = list(table.column_names) + list(dict.fromkeys(outs))
    return frame.select(ordered) if as_arrow else frame[ordered]


def _view_out(ref: str, full_feature_names: bool) -> str:
    view, _, feat = ref.partition(":")
    return f"{view}__{feat}" if full_feature_names else feat
