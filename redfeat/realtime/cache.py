"""Near cache: an in-process LRU for latest reads, invalidated by change events.

``FeatureStore(..., cache=Cache(max_entries=100_000, ttl="5m"))`` serves ``get``,
``get_many`` and ``get_features`` of whole rows from memory (``cache=False`` on a call reads
Redis and leaves the cache as it is). Writes made through this
store invalidate at once; writes from other processes as soon as their change event
arrives (a subscription on a background thread). After a lost connection every entry is
dropped, since events may have been missed. An entry also expires with the view's ttl (by
event time) and the cache's own ``ttl``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.context import Ctx, Reader
from ..core.time import Duration, duration_us, now_us, to_us
from ..errors import ConfigurationError
from ..online.events import Subscription, subscribe

if TYPE_CHECKING:
    from ..core.records import ChangeEvent, Record

MISSING = object()  # lookup(): not cached (None is a cached miss)


class Cache:
    """LRU of (view, entity id) -> latest values (or None for a known miss)."""

    def __init__(self, max_entries: int = 100_000, ttl: Duration = "5m") -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError(f"max_entries must be an int >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        self.ttl_us = duration_us(ttl, what="cache ttl")
        self._data: OrderedDict[tuple[str, str], tuple[int, dict[str, Any] | None]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = self.invalidations = 0
        # Every invalidation gets the next epoch number and is remembered per key (and per
        # view for clear): a value read from Redis while that key was invalidated may be
        # stale, so put() skips it.
        self.epoch = 0
        self._invalidated: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._forgotten = 0  # newest epoch dropped from _invalidated (its memory is bounded)
        self._cleared: dict[str | None, int] = {}
        self._reader: Reader | None = None
        self._sub: Subscription | None = None

    # -- wiring ----------------------------------------------------------------------

    def bind(self, ctx: Ctx, reader: Reader) -> None:
        """Start listening to the project's change events (called by FeatureStore)."""
        self._reader = reader
        self._sub = subscribe(ctx, None, None)
        self._sub.on_event(self._on_event)

    def close(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    def _on_event(self, ev: ChangeEvent) -> None:
        if ev.kind in ("gap", "trimmed"):
            self.clear()  # events may have been missed, of any view: trust nothing cached
        else:
            self.invalidate(ev.view, ev.entity_id)

    # -- the cache itself --------------------------------------------------------------

    def lookup(self, view: str, entity_id: str) -> Any:
        """The cached values (a copy), None for a cached miss, or MISSING."""
        key = (view, entity_id)
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                self.misses += 1
                return MISSING
            expires, values = entry
            if expires < now_us():
                del self._data[key]
                self.misses += 1
                return MISSING
            self._data.move_to_end(key)
            self.hits += 1
        return None if values is None else _copy(values)

    def put(
        self,
        view: str,
        entity_id: str,
        values: dict[str, Any] | None,
        expires_us: int,
        epoch: int,
    ) -> None:
        """Cache a value read while the cache was at ``epoch`` (skipped if anything was
        invalidated since: the read may have raced a write)."""
        expires = min(expires_us, now_us() + self.ttl_us)
        key = (view, entity_id)
        with self._lock:
            if (
                self._forgotten > epoch  # an invalidation since may have been forgotten
                or self._invalidated.get(key, -1) > epoch
                or self._cleared.get(view, -1) > epoch
                or self._cleared.get(None, -1) > epoch
            ):
                return
            self._data[(view, entity_id)] = (expires, values)
            self._data.move_to_end((view, entity_id))
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
                self.evictions += 1

    def read_many(
        self,
        view: str,
        ids: list[Any],
        fetch: Callable[[list[Any]], list[Record]],
        ttl_us: int | None,
    ) -> list[Any]:
        """Values of ``ids``: hits from memory, the rest fetched (one call) and cached, as
        values or as a known miss, until the view's ttl runs out for them."""
        out = [self.lookup(view, str(e)) for e in ids]
        missing = [i for i, hit in enumerate(out) if hit is MISSING]
        if missing:
            filled = self.fill(view, [ids[i] for i in missing], fetch, ttl_us)
            for i, values in zip(missing, filled, strict=True):
                out[i] = values
        return out

    def fill(
        self,
        view: str,
        ids: list[Any],
        fetch: Callable[[list[Any]], list[Record]],
        ttl_us: int | None,
    ) -> list[Any]:
        """Fetch ``ids`` (known misses) with one call, cache and return copies."""
        epoch = self.epoch
        return self.keep(view, fetch(ids), ttl_us, epoch)

    def keep(self, view: str, records: list[Record], ttl_us: int | None, epoch: int) -> list[Any]:
        """Cache records read from Redis while the cache was at ``epoch`` (take it before
        the read); returns copies of their values."""
        out: list[Any] = []
        for rec in records:
            expires = 2**62
            if ttl_us is not None and rec.event_time is not None:
                expires = to_us(rec.event_time) + ttl_us
            self.put(view, rec.entity_id, rec.values, expires, epoch)
            out.append(None if rec.values is None else _copy(rec.values))
        return out

    def invalidate(self, view: str, entity_id: str) -> None:
        key = (view, entity_id)
        with self._lock:
            self.epoch += 1
            self._invalidated[key] = self.epoch
            self._invalidated.move_to_end(key)
            if len(self._invalidated) > self.max_entries:
                _, dropped = self._invalidated.popitem(last=False)
                self._forgotten = max(self._forgotten, dropped)
            if self._data.pop(key, None) is not None:
                self.invalidations += 1

    def clear(self, view: str | None = None) -> None:
        with self._lock:
            self.epoch += 1
            self._cleared[view] = self.epoch
            if view is None:
                self._data.clear()
            else:
                for key in [k for k in self._data if k[0] == view]:
                    del self._data[key]

    def preload(self, view: str, entity_ids: list[str | int]) -> int:
        """Read these entities now (one round trip) so later gets are served from memory."""
        if self._reader is None:
            raise ConfigurationError("preload needs a cache attached to a FeatureStore")
        return sum(1 for v in self._reader.get_many(view, entity_ids) if v is not None)

    def stats(self) -> dict[str, Any]:
        """Hits, misses, evictions, invalidations, hit_rate and entries, counted for real."""
        with self._lock:
            total = self.hits + self.misses
            return {
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "invalidations": self.invalidations,
                "hit_rate": self.hits / total if total else 0.0,
                "entries": len(self._data),
            }

    def __len__(self) -> int:
        return len(self._data)


def _copy(values: dict[str, Any]) -> dict[str, Any]:
    # vectors are numpy arrays: a caller writing into one must not change the cache
    return {
        k: v.copy() if hasattr(v, "copy") and hasattr(v, "dtype") else v for k, v in values.items()
    }
