"""FeatureStore verbs for real time: the change feed, subscriptions, stream ingestion."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from ..core.metrics import timed
from ..online import events as _events
from ..online.events import ChangeEvent, Subscription
from . import ingest as _ingest

if TYPE_CHECKING:
    import redis

    from ..core.keys import Keys
    from ..core.registry import Registry
    from ..online.online import Online
    from ..store import FeatureStore


class LiveVerbs:
    """Mixed into FeatureStore."""

    # provided by FeatureStore
    client: redis.Redis
    keys: Keys
    registry: Registry
    online: Online

    def _fs(self) -> FeatureStore:
        return cast("FeatureStore", self)

    # -- change events ------------------------------------------------------------------

    def changes(
        self, view: str, *, since: str | None = None, limit: int = 1000
    ) -> tuple[list[ChangeEvent], str | None]:
        """Change events of a view after the cursor ``since`` (None: the oldest kept), and
        the cursor to resume from. The feed lives in Redis, so the cursor survives
        restarts; it keeps about ``feed_cap`` write calls."""
        self.registry.get(view)
        return _events.changes(self.client, self.keys, view, since, limit)

    def subscribe(
        self,
        view: str | Iterable[str] | None = None,
        entity_ids: Iterable[str | int] | None = None,
    ) -> Subscription:
        """Live change events of one view, several, or all (None), optionally only for
        some entities. Iterate it, ``async for`` it, or ``sub.on_event(callback)``."""
        views = None if view is None else [view] if isinstance(view, str) else list(view)
        for v in views or []:
            self.registry.get(v)
        ids = None if entity_ids is None else [str(e) for e in entity_ids]
        known = [v.name for v in self.registry.views()] if views is None else []
        return Subscription(self.client, self.keys, views, ids, known)

    # -- stream ingestion ---------------------------------------------------------------

    @timed("push")
    def push(
        self,
        view: str,
        rows: Iterable[Mapping[str, Any]],
        *,
        event_time_column: str | None = None,
    ) -> int:
        """Append raw rows (dicts with an ``entity_id``) to the view's ingest stream, for
        workers to validate and write. Rows without an event time get the push time."""
        return _ingest.push(self._fs(), view, rows, event_time_column)

    def worker(self, views: Iterable[str] | None = None, **options: Any) -> _ingest.Worker:
        """A consumer-group worker for the ingest streams of ``views`` (all when None)."""
        return _ingest.Worker(self._fs(), views, **options)

    def run_worker(self, views: Iterable[str] | None = None, **options: Any) -> Any:
        """Run a worker in this thread until it is stopped (see ``worker``)."""
        run_opts = {k: options.pop(k) for k in ("max_batches", "until_idle") if k in options}
        return self.worker(views, **options).run(**run_opts)

    def dead_letters(self, view: str, limit: int = 100) -> list[dict[str, Any]]:
        """Rows workers refused, with the error."""
        return _ingest.dead_letters(self._fs(), view, limit)
