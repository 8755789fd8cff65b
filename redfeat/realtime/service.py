"""Real time as a service: the change feed, subscriptions, stream ingestion."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..core import args
from ..core.context import Ctx, Writer
from ..core.records import ChangeEvent
from ..errors import ConfigurationError
from ..online import events as _events
from ..online.events import Subscription
from . import ingest as _ingest

# one feed's entry id; a partitioned project's: one (or nothing) per partition, comma-joined
_CURSOR = re.compile(r"\d{1,20}-\d{1,20}|(?:(?:\d{1,20}-\d{1,20})?,){1,1023}(?:\d{1,20}-\d{1,20})?")


class Live:
    """The change feed, subscriptions and ingest streams of one store."""

    def __init__(self, ctx: Ctx, writer: Writer) -> None:
        self._ctx = ctx
        self._writer = writer

    def changes(
        self, view: str, *, since: str | None = None, limit: int = 1000
    ) -> tuple[list[ChangeEvent], str | None]:
        self._ctx.registry.get(view)
        if since is not None and (not isinstance(since, str) or not _CURSOR.fullmatch(since)):
            raise ConfigurationError(
                f"view {view!r}: since must be a cursor from changes() like '1700000000000-0', "
                f"got {since!r:.60}"
            )
        return _events.changes(self._ctx.client, self._ctx.keys, view, since, _limit(limit))

    def subscribe(
        self,
        view: str | Iterable[str] | None = None,
        entity_ids: Iterable[Any] | None = None,
    ) -> Subscription:
        return _events.subscribe(self._ctx, view, entity_ids)

    def push(
        self,
        view: str,
        rows: Iterable[Mapping[str, Any]],
        *,
        event_time_column: str | None = None,
    ) -> int:
        return _ingest.push(self._ctx, view, args.rows("push: rows", rows), event_time_column)

    def worker(self, views: Iterable[str] | None = None, **options: Any) -> _ingest.Worker:
        return _ingest.Worker(self._ctx, self._writer, views, **options)

    def run_worker(self, views: Iterable[str] | None = None, **options: Any) -> Any:
        run_opts = {k: options.pop(k) for k in ("max_batches", "until_idle") if k in options}
        return self.worker(views, **options).run(**run_opts)

    def dead_letters(self, view: str, limit: int = 100) -> list[dict[str, Any]]:
        return _ingest.dead_letters(self._ctx, view, _limit(limit))


def _limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 2**31 - 1:
        raise ConfigurationError(f"limit must be an int in 1 .. 2,147,483,647, got {limit!r:.60}")
    return limit
