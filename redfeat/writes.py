"""The write verbs behind the facade: one write goes to the online store (one atomic
server step per entity), then to its materialised derived views, and the near cache forgets
what it held of those entities."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .core.context import Ctx
from .core.records import Version, WriteReport
from .core.registry import Resolved
from .errors import ConfigurationError
from .online.online import Online, Progress
from .quality.service import Monitor
from .realtime.cache import Cache
from .transforms.derived import Deriver, source_frame, with_event_time


class Writes:
    """write, write_many, update, increment, delete, and what each entails."""

    def __init__(
        self,
        ctx: Ctx,
        online: Online,
        deriver: Deriver,
        cache: Cache | None,
        monitor: Monitor,
    ) -> None:
        self._ctx = ctx
        self._online = online
        self._deriver = deriver
        self._cache = cache
        self._monitor = monitor

    def write(
        self, view: str, entity_id: str | int, values: Mapping[str, Any], event_time: Any
    ) -> Version:
        res, deps = self._deriver.writable(view)
        with self._monitor.refusals(view):
            version = self._online.write(res, entity_id, values, event_time)
        self._after_write(res, deps, entity_id, version)
        return version

    def update(
        self, view: str, entity_id: str | int, values: Mapping[str, Any], event_time: Any
    ) -> Version:
        res, deps = self._deriver.writable(view)
        with self._monitor.refusals(view):
            version = self._online.update(res, entity_id, values, event_time)
        self._after_write(res, deps, entity_id, version)
        return version

    def increment(
        self, view: str, entity_id: str | int, deltas: Mapping[str, int | float], event_time: Any
    ) -> Version:
        res, deps = self._deriver.writable(view)
        with self._monitor.refusals(view):
            version = self._online.increment(res, entity_id, deltas, event_time)
        self._after_write(res, deps, entity_id, version)
        return version

    def write_many(
        self,
        view: str,
        rows: Any,
        *,
        entity_column: str,
        event_time_column: str | None,
        on_error: str,
        progress: Progress | None,
    ) -> WriteReport:
        if on_error not in ("raise", "skip"):
            raise ConfigurationError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if rows is None or isinstance(rows, str | bytes | Mapping):
            raise ConfigurationError(
                "write_many takes a list of dicts, a pandas.DataFrame or a pyarrow.Table, "
                f"got {type(rows).__name__}"
            )
        # A bulk write checks for definitions changed elsewhere first (one cheap read), so
        # that it never encodes rows with a layout another process has just replaced.
        self._ctx.registry.refresh()
        res, deps = self._deriver.writable(view)
        frame_like = type(rows).__module__.split(".")[0] in ("pandas", "pyarrow")
        if deps and not isinstance(rows, list) and not frame_like:
            rows = list(rows)  # read twice: for the source, then for its derived views
        if deps and event_time_column is None:
            rows, event_time_column = with_event_time(rows)
        report = self._online.write_many(
            res,
            rows,
            entity_column=entity_column,
            event_time_column=event_time_column,
            on_error=on_error,
            progress=progress,
        )
        if deps and event_time_column is not None:
            self.derive_bulk(deps, rows, entity_column, event_time_column, report)
        self.forget_cached(view, deps)
        return report

    def delete(self, view: str, entity_id: str | int) -> bool:
        res = self._ctx.registry.get(view)
        deps = self._ctx.registry.dependents(view)
        for dep in deps:
            self._online.delete(dep, entity_id)
        gone = self._online.delete(res, entity_id)
        if self._cache is not None:
            for name in [view, *(d.name for d in deps)]:
                self._cache.invalidate(name, str(entity_id))
        return gone

    # -- what a write entails -----------------------------------------------------------

    def _after_write(
        self, res: Resolved, deps: list[Resolved], entity_id: Any, version: Version
    ) -> None:
        """Forget cached values of the entity (here and in derived views) and write the
        derived views of the new version, with its event time."""
        if self._cache is not None:
            for name in [res.name, *(d.name for d in deps)]:
                self._cache.invalidate(name, str(entity_id))
        if version.id == 0:
            return  # late data a latest-only view dropped: nothing to derive from
        for dep in deps:
            values = self._deriver.values(dep.view, version.values)
            self._online.write(dep, entity_id, values, version.event_time)

    def derive_bulk(
        self,
        deps: list[Resolved],
        rows: Any,
        entity_column: str,
        event_time_column: str,
        report: WriteReport,
    ) -> None:
        """Write the derived views of the rows a bulk write (or a backfill) accepted."""
        frame = source_frame(rows)
        if report.refused:
            frame = frame.drop(index=frame.index[[i for i, _ in report.refused]])
        for dep in deps:
            derived = self._deriver.frame(dep.view, frame)
            derived.insert(0, entity_column, frame[entity_column].to_numpy())
            derived.insert(1, event_time_column, frame[event_time_column].to_numpy())
            self._online.write_many(
                dep,
                derived,
                entity_column=entity_column,
                event_time_column=event_time_column,
                on_error="raise",
                progress=None,
            )

    def forget_cached(self, view: str, deps: list[Resolved]) -> None:
        """After a bulk write: drop the cached values of the view and its derived views
        (cheaper than finding each written id)."""
        if self._cache is not None:
            for name in [view, *(d.name for d in deps)]:
                self._cache.clear(name)
