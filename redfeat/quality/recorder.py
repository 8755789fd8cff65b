"""Recording of profiles and counters: buffered in the process, flushed to Redis.

Writers only ever RPUSH a partial profile per (view, source, hour) and HINCRBY counters, so
any number of processes record concurrently without losing each other's data. A list that
grows past a few partials is compacted (merged into one) under a short lock, in one
MULTI/EXEC that keeps partials pushed meanwhile. The buffer is flushed every couple of
seconds by a daemon thread, on ``flush()`` and on close; a crash loses at most that much
monitoring data, never feature data.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import redis

from ..core.keys import Keys
from ..core.schema import Field
from ..core.time import now_us
from ..errors import backend_error, wrap_redis
from .profiles import Profile, add_column, profile_rows

HOUR_US = 3_600_000_000
KEEP_MS = 90 * 24 * 3_600_000  # profiles and counters are kept 90 days after their last update
COMPACT_AT = 8  # partial profiles in one hour's list before they are merged
FOLD_AT = 512  # single-write rows buffered before they are folded into a profile
FLUSH_AT = 1_000  # rows profiled since the last flush that wake the flush thread early
MIN_GAP = 0.5  # seconds between flushes under load: each one serializes every sketch

log = logging.getLogger("redfeat.quality")

_Key = tuple[str, str, int]  # view, source ("write" | "read"), hour


class Recorder:
    """Profiles and counters of one store, buffered and flushed in the background."""

    def __init__(self, client: redis.Redis, keys: Keys, interval: float = 2.0) -> None:
        self.client = client
        self.keys = keys
        self.interval = interval
        self._lock = threading.Lock()
        self._profiles: dict[_Key, Profile] = {}
        # rows buffered per hour AND per set of fields profiled (reads of some features)
        self._pending: dict[
            tuple[_Key, tuple[str, ...]], tuple[Mapping[str, Field], list[Mapping[str, Any]]]
        ] = {}
        self._counters: dict[tuple[str, int], Counter[str]] = {}
        self._newest: dict[str, int] = {}
        self._written: dict[str, int] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._flushing = threading.Lock()  # one flush at a time: a flush() returns only
        # once data taken by a concurrent flush (the thread's) is in Redis too
        self._thread: threading.Thread | None = None
        self._dirty = False
        self._since_flush = 0
        # for store.stats()["profiles"]: when the last flush succeeded, and since when the
        # oldest data not yet in Redis waits (None: nothing waits), both time.time()
        self.flushed_at: float | None = None
        self.pending_since: float | None = None
        _track(self)

    def _reset_after_fork(self) -> None:
        # The child must neither send the parent's buffered data a second time nor wait
        # on the parent's flush thread or on a lock it held at the fork.
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._profiles, self._pending, self._counters = {}, {}, {}
        self._newest, self._written = {}, {}
        self._stop, self._wake = threading.Event(), threading.Event()
        self._thread = None
        self._dirty = False
        self._since_flush = 0
        self.flushed_at = self.pending_since = None

    # -- recording (cheap: in-process only) ---------------------------------------------

    def add_columns(
        self,
        view: str,
        fields: Mapping[str, Field],
        cols: Mapping[str, Sequence[Any]],
        ets: Sequence[int],
        source: str = "write",
    ) -> None:
        """Profile checked columns; each row lands in the hour of its event time."""
        n = len(ets)
        if n == 0:
            return
        lo, hi = min(ets), max(ets)
        groups: list[tuple[int, Mapping[str, Sequence[Any]], int]]
        if lo // HOUR_US == hi // HOUR_US:
            groups = [(lo // HOUR_US, cols, n)]
        else:  # a backfill: each hour gets its own rows
            hours = np.asarray(ets, dtype=np.int64) // HOUR_US
            uniq, inv = np.unique(hours, return_inverse=True)
            groups = []
            for j, hour in enumerate(uniq.tolist()):
                idx = np.flatnonzero(inv == j).tolist()
                groups.append((hour, {k: [c[i] for i in idx] for k, c in cols.items()}, len(idx)))
        for hour, sub, rows in groups:
            prof = Profile(view, rows)
            for name, f in fields.items():
                col = sub.get(name)
                add_column(prof, f, col if col is not None else [None] * rows)
            self._merge((view, source, hour), prof)
        self._since_flush += n
        if self._since_flush >= FLUSH_AT:
            # a bulk load becomes visible to other processes (drift, health) within
            # moments, without the writer paying for the flush
            self._wake.set()

    def add_row(
        self,
        view: str,
        fields: Mapping[str, Field],
        values: Mapping[str, Any],
        et_us: int,
        source: str = "write",
    ) -> None:
        """Profile one row (single writes, sampled reads): buffered, folded in batches."""
        key = (view, source, et_us // HOUR_US)
        pkey = (key, tuple(fields))
        with self._lock:
            entry = self._pending.get(pkey)
            if entry is None:
                entry = self._pending[pkey] = (fields, [])
            entry[1].append(values)
            full = len(entry[1]) >= FOLD_AT
            if full:
                del self._pending[pkey]
            self._mark()
        if full:
            self._merge(key, profile_rows(view, entry[0], entry[1]))
        self._ensure_thread()

    def count(self, view: str, name: str, n: int = 1) -> None:
        """Add to a counter of the current hour (writes, refused, warnings, reads...)."""
        if n <= 0:
            return
        key = (view, now_us() // HOUR_US)
        with self._lock:
            c = self._counters.get(key)
            if c is None:
                c = self._counters[key] = Counter()
            c[name] += n
            self._mark()
        self._ensure_thread()

    def _merge(self, key: _Key, prof: Profile) -> None:
        with self._lock:
            mine = self._profiles.get(key)
            if mine is None:
                self._profiles[key] = prof
            else:
                mine.merge(prof)
            self._mark()
        self._ensure_thread()

    def saw(self, view: str, et_us: int) -> None:
        """A write of ``view`` with this event time (for freshness; a future event time
        counts as now, so that it cannot keep a view fresh forever)."""
        now = now_us()
        et_us = min(et_us, now)
        with self._lock:
            if et_us > self._newest.get(view, -(2**62)):
                self._newest[view] = et_us
            self._written[view] = now
            self._mark()
        self._ensure_thread()

    def forget(self, view: str) -> None:
        """Drop what is buffered for a view (it is being deleted)."""
        with self._lock:
            for k in [k for k in self._profiles if k[0] == view]:
                del self._profiles[k]
            for pk in [pk for pk in self._pending if pk[0][0] == view]:
                del self._pending[pk]
            for ck in [k for k in self._counters if k[0] == view]:
                del self._counters[ck]
            self._newest.pop(view, None)
            self._written.pop(view, None)

    def _mark(self) -> None:
        """Data waits for the next flush (called under ``_lock``)."""
        if not self._dirty:
            self.pending_since = time.time()
        self._dirty = True

    # -- flushing -----------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None and not self._stop.is_set():
            with self._lock:
                if self._thread is None:
                    ref = weakref.ref(self)
                    self._thread = threading.Thread(
                        target=_run,
                        args=(ref, self._stop, self._wake, self.interval),
                        daemon=True,
                    )
                    self._thread.start()

    def flush(self) -> None:
        """Send everything buffered to Redis now."""
        with self._flushing:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            profiles, self._profiles = self._profiles, {}
            pending, self._pending = self._pending, {}
            counters, self._counters = self._counters, {}
            newest, self._newest = self._newest, {}
            written, self._written = self._written, {}
            self._dirty = False
            since, self.pending_since = self.pending_since, None
            self._since_flush = 0
            self._wake.clear()
        for (key, _names), (fields, rows) in pending.items():
            prof = profile_rows(key[0], fields, rows)
            if key in profiles:
                profiles[key].merge(prof)
            else:
                profiles[key] = prof
        k = self.keys
        try:
            pipe = self.client.pipeline(transaction=False)
            order: list[str] = []
            for (view, source, hour), prof in profiles.items():
                lkey = k.quality(view, "p", source, hour)
                pipe.rpush(lkey, prof.dumps())
                pipe.pexpire(lkey, KEEP_MS)
                pipe.zadd(k.quality(view, "hours", source), {str(hour): hour})
                pipe.pexpire(k.quality(view, "hours", source), KEEP_MS)
                order.append(lkey)
            for (view, hour), c in counters.items():
                ckey = k.quality(view, "c", hour)
                for name, n in c.items():
                    pipe.hincrby(ckey, name, n)
                pipe.pexpire(ckey, KEEP_MS)
            for view, et in newest.items():
                pipe.zadd(k.newest_event, {view: et}, gt=True)
            for view, at in written.items():
                pipe.zadd(k.last_write, {view: at}, gt=True)
            replies = pipe.execute()
        except redis.RedisError as exc:
            self._restore(profiles, counters, newest, written)
            with self._lock:
                self.pending_since = min(since or time.time(), self.pending_since or time.time())
            raise backend_error("recording feature profiles failed", exc) from exc
        self.flushed_at = time.time()
        for i, lkey in enumerate(order):
            if int(replies[4 * i]) > COMPACT_AT:
                self.compact(lkey)

    def _restore(
        self,
        profiles: dict[_Key, Profile],
        counters: dict[tuple[str, int], Counter[str]],
        newest: dict[str, int],
        written: dict[str, int],
    ) -> None:
        # A failed flush puts its data back, so that the next one sends it (a pipeline that
        # failed part-way may have sent some of it: counts can then be over by one flush).
        for key, prof in profiles.items():
            self._merge(key, prof)
        with self._lock:
            for ck, c in counters.items():
                self._counters.setdefault(ck, Counter()).update(c)
            for view, et in newest.items():
                self._newest[view] = max(et, self._newest.get(view, et))
            for view, at in written.items():
                self._written[view] = max(at, self._written.get(view, at))
            self._mark()

    def compact(self, lkey: str) -> None:
        """Merge an hour's partial profiles into one (skipped if another process is on it)."""
        lock = lkey + ":lock"
        token = uuid.uuid4().hex
        try:
            if not self.client.set(lock, token, nx=True, px=10_000):
                return
            try:
                blobs: list[bytes] = self.client.lrange(lkey, 0, -1)  # type: ignore[assignment]
                if len(blobs) <= 1:
                    return
                view = lkey[len(self.keys.prefix) + 2 :].split(":", 1)[0]
                merged = Profile(view)
                for b in blobs:
                    merged.merge(Profile.loads(view, b))
                pipe = self.client.pipeline(transaction=True)
                pipe.ltrim(lkey, len(blobs), -1)  # keeps partials pushed since the read
                pipe.lpush(lkey, merged.dumps())
                pipe.pexpire(lkey, KEEP_MS)
                pipe.execute()
            finally:
                if self.client.get(lock) == token.encode():
                    self.client.delete(lock)
        except redis.RedisError as exc:
            log.warning("compacting %s failed (will retry on a later flush): %s", lkey, exc)

    def close(self) -> None:
        with self._lock:  # a thread is started under the lock: never seen half-started
            self._stop.set()
            self._wake.set()
            t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)
        self.flush()

    # -- reading ------------------------------------------------------------------------

    def load(self, view: str, start_us: int, end_us: int, source: str = "write") -> Profile:
        """Merged profile of the hours that overlap [start, end)."""
        self.flush()
        k = self.keys
        first, last = start_us // HOUR_US, (end_us - 1) // HOUR_US
        with wrap_redis(f"view {view!r}: reading profiles failed"):
            found: list[bytes] = self.client.zrangebyscore(  # type: ignore[assignment]
                k.quality(view, "hours", source), first, last
            )
            hours = [int(h) for h in found]
            pipe = self.client.pipeline(transaction=False)
            for h in hours:
                pipe.lrange(k.quality(view, "p", source, h), 0, -1)
            replies = pipe.execute()
        merged = Profile(view)
        gone = []
        closed = now_us() // HOUR_US - 1
        for h, blobs in zip(hours, replies, strict=True):
            if not blobs:
                gone.append(str(h))  # expired: keep the index in step
            for b in blobs:
                merged.merge(Profile.loads(view, b))
            if len(blobs) > 1 and h < closed:  # a closed hour: keep one profile, not many
                self.compact(k.quality(view, "p", source, h))
        if gone:
            self.client.zrem(k.quality(view, "hours", source), *gone)
        return merged

    def counters(self, view: str, start_us: int, end_us: int) -> Counter[str]:
        """Counters summed over the hours that overlap [start, end) (counters are kept 90
        days: older hours are not asked for)."""
        self.flush()
        now = now_us()
        first = max(start_us, now - KEEP_MS * 1000) // HOUR_US
        last = min(end_us - 1, now) // HOUR_US
        total: Counter[str] = Counter()
        with wrap_redis(f"view {view!r}: reading counters failed"):
            pipe = self.client.pipeline(transaction=False)
            for h in range(first, last + 1):
                pipe.hgetall(self.keys.quality(view, "c", h))
            replies: list[dict[bytes, bytes]] = pipe.execute()
            for d in replies:
                for name, n in d.items():
                    total[name.decode()] += int(n)
        return total

    def freshness(self) -> tuple[dict[str, int], dict[str, int]]:
        """(view -> newest event time, view -> last write time), in us."""
        self.flush()
        k = self.keys
        with wrap_redis("reading freshness failed"):
            pipe = self.client.pipeline(transaction=False)
            pipe.zrange(k.newest_event, 0, -1, withscores=True)
            pipe.zrange(k.last_write, 0, -1, withscores=True)
            a, b = pipe.execute()
        return {m.decode(): int(s) for m, s in a}, {m.decode(): int(s) for m, s in b}


_LIVE: weakref.WeakSet[Recorder] = weakref.WeakSet()
_hooks_installed = False


def _track(rec: Recorder) -> None:
    global _hooks_installed
    _LIVE.add(rec)
    if not _hooks_installed:
        _hooks_installed = True
        os.register_at_fork(after_in_child=_after_fork)
        # registered after the first store's server finalizer, so it runs before it
        atexit.register(flush_all)


def _after_fork() -> None:
    for rec in list(_LIVE):
        rec._reset_after_fork()


def flush_all() -> None:
    """At exit: send what stores that were never closed still buffer."""
    for rec in list(_LIVE):
        try:
            rec.flush()
        except Exception as exc:
            log.warning("flushing quality data at exit failed: %s", exc)


def _run(
    ref: weakref.ref[Recorder], stop: threading.Event, wake: threading.Event, interval: float
) -> None:
    # Holds only a weak reference: a store that is garbage collected stops its thread.
    last = 0.0
    while not stop.is_set():
        wake.wait(interval)
        # a busy writer wakes the thread on every batch: flush at most every MIN_GAP, so that
        # serializing sketches does not compete with the writes for the interpreter
        gap = MIN_GAP - (time.monotonic() - last)
        if gap > 0:
            stop.wait(gap)
        wake.clear()
        last = time.monotonic()
        if stop.is_set():
            return
        rec = ref()
        if rec is None:
            return
        try:
            rec.flush()
        except Exception as exc:  # a blip must not kill the thread; the next tick retries
            log.warning("flushing quality data failed: %s", exc)
        del rec
