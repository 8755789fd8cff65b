"""Similarity search over a view's Vector field, in process, kept current by change events.

``VectorIndex(ctx, reader, view, field)`` loads every entity's latest vector (and the view's
scalar fields, for ``where`` filters) from Redis into memory, then follows the view's change
events so that a write made anywhere is searchable a few milliseconds later.

Consistency (see ``search``): a search sees every write and delete its own store made
before it (the store marks the index ``touched``; the search first catches up with the
view's change feed); writes from other processes arrive with their change events, within
milliseconds, and at the latest ``SYNC_SECONDS`` later (the index compares its position
with the feed that often, which also covers events a connection lost); ``consistent=True``
catches up with the feed before answering, whoever wrote.

Scores (results are always best first, ties broken by entity id ascending):

- ``cosine``: cosine similarity in [-1, 1], higher is better. Stored vectors are normalised
  when indexed; an all-zero stored vector is kept and scores 0 against every query; an
  all-zero query is refused (it has no direction).
- ``ip``: the inner product, higher is better.
- ``l2``: the Euclidean distance (not squared), LOWER is better.

``index="exact"`` scores every (filtered) row with one float32 matrix product: exact
answers, in time linear in the rows (about 1.5 ms for 100k x 128 on a small machine).
``index="hnsw"`` (needs ``hnswlib``) answers approximately in sub-linear time; its
candidates are re-scored exactly, so scores mean the same in both modes. Memory: the
vectors (float32) and scalar fields of every entity, plus hnswlib's graph for "hnsw".
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import redis

from .. import types as t
from ..core.context import Ctx, Reader
from ..core.records import Match
from ..core.time import now_us, to_us
from ..errors import (
    ConfigurationError,
    FeedTrimmedError,
    Problem,
    ValidationError,
    backend_error,
    wrap_redis,
)
from ..online.events import changes, feed_end, later_cursor, subscribe
from ..online.scan import entities_of
from .rows import F32, Hnsw, Mask, Rows

if TYPE_CHECKING:
    from ..core.records import ChangeEvent, Record
    from ..online.events import Subscription

__all__ = ["Match", "VectorIndex"]

CHUNK = 1000  # entities per get_many while loading: one round trip each
SYNC_SECONDS = 1.0  # the longest a write elsewhere stays unseen when its live event is lost
_CATCH_UP_LIMIT = 100_000  # events read from the feed at once; more: reload instead
_INDEXES = ("exact", "hnsw")
# A filter keeping at most this many rows is answered exactly even on an hnsw index: scoring
# a small subset directly is exact and cheaper than over-fetching candidates.
_SMALL_SUBSET = 4096
_MAX_ERRORS = 100
_F32_MAX = float(np.finfo(np.float32).max)  # stored vectors are float32


def _stream_id(entry: Any) -> tuple[int, int] | None:
    """A stream entry id (bytes or str, "ms-seq") as a comparable pair; None for none."""
    if entry is None:
        return None
    text = entry.decode() if isinstance(entry, bytes) else str(entry)
    ms, _, seq = text.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return None


# -- filter columns --------------------------------------------------------------------


@dataclass(slots=True)
class _State:
    """Everything a search reads; a rebuild makes a new one and swaps it in."""

    rows: Rows
    hnsw: Hnsw | None


# -- the index ---------------------------------------------------------------------------


class VectorIndex:
    """In-process index of one (view, Vector field), built from Redis and kept current by
    change events.

    ``build()`` loads it (the first ``search`` does so if nobody did) and subscribes to the
    view's events: a write is fetched and indexed, a delete removed, a lost connection
    ("gap") triggers a full reload. Entities with no value for the field are not indexed.
    Thread-safe: searches run under a lock against the current rows; updates are applied by
    one background thread, in event order. ``errors`` lists what that thread hit (it
    retries). Values that expire with the view's ttl stop matching at once (no event says
    so); a deleted view (``delete_view``) is not noticed: rebuild or close the index.
    """

    def __init__(
        self,
        ctx: Ctx,
        reader: Reader,
        view: str,
        field: str,
        *,
        index: str = "exact",
        M: int = 16,
        ef_construction: int = 200,
        ef_search: int = 32,
    ) -> None:
        res = ctx.registry.get(view)
        fields = {f.name: f for f in res.view.fields}
        if field not in fields:
            raise ConfigurationError(
                f"view {view!r} has no field {field!r} (fields: {sorted(fields)})"
            )
        dtype = fields[field].dtype
        if not isinstance(dtype, t.Vector):
            raise ConfigurationError(
                f"view {view!r}: field {field!r} is {dtype!r}, not a Vector: nothing to search"
            )
        if res.view.on_read:
            raise ConfigurationError(
                f"view {view!r} is computed on read, so nothing is stored to index: index its "
                f"source {res.view.source!r} or a materialised view"
            )
        if index not in _INDEXES:
            raise ConfigurationError(
                f"index must be one of {(*_INDEXES, 'server', 'auto')}, got {index!r}"
            )
        for name, value in (
            ("M", M),
            ("ef_construction", ef_construction),
            ("ef_search", ef_search),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
        self._lib: Any = None
        if index == "hnsw":
            try:
                self._lib = importlib.import_module("hnswlib")
            except ImportError:
                raise ConfigurationError(
                    "index='hnsw' needs hnswlib: pip install hnswlib (or use index='exact')"
                ) from None
        self._ctx = ctx
        self._reader = reader
        self.view = view
        self.field = field
        self.index = index
        self.dim = dtype.dim
        self.metric = dtype.metric
        self._M, self._ef_construction, self._ef_search = M, ef_construction, ef_search
        self._ttl_us = res.view.ttl_us
        # Filter columns: the scalar fields (lists and other vectors cannot be filtered on).
        self._columns: dict[str, t.DType] = {
            f.name: f.dtype for f in res.view.fields if not isinstance(f.dtype, t.Vector | t.List)
        }
        self._filterable = set(self._columns)
        self._fields = set(fields)
        self._read = [field, *self._columns]
        self._state = self._new_state()
        self._lock = threading.Lock()  # guards self._state (searches and updates)
        self._apply = threading.Lock()  # one writer at a time: loads and event batches
        self._cond = threading.Condition()  # guards the fields below
        self._pending: dict[str, str] = {}  # entity id -> kind of its latest unapplied event
        self._rebuild = False
        # read-your-writes: every note of work bumps _seq; _done is the _seq that the applied
        # state covers, so a search waits for (or does) exactly the work noted before it
        self._seq = 0
        self._done = 0
        self._cursor: tuple[int, int] | None = None  # feed position noted (stream id)
        self._parts_cursor: str | None = None  # the same in a partitioned project (composite)
        self._touched = False  # this store wrote the view: catch up with the feed first
        self._synced = 0.0  # monotonic time of the last comparison with the feed
        self._closed = False
        self._built = False
        self._sub: Subscription | None = None
        self._worker: threading.Thread | None = None
        self.errors: list[Exception] = []

    # -- lifecycle -----------------------------------------------------------------------

    def build(self, progress: Callable[[int, int], None] | None = None) -> int:
        """(Re)load every entity from Redis and start following changes; returns how many
        entities are indexed. ``progress(done, total)`` after each chunk of 1000."""
        if self._closed:
            raise ConfigurationError(f"VectorIndex({self.view!r}) is closed")
        # Subscribe before reading, so a write landing during the load is not missed: its
        # event is applied (re-read) after the load is swapped in.
        self._follow()
        with self._apply:
            self._move_cursor(self._feed_end())  # what the load covers, at least
            count = self._load(progress)
        self._built = True
        return count

    def touched(self, entity_ids: list[str] | None = None, kind: str = "write") -> None:
        """This store just wrote (or deleted, ``kind="delete"``) these entities of the view,
        and the server acknowledged it: the next search applies that first (a re-read, or
        a removal). None (a bulk write): the next search catches up with the change feed."""
        if entity_ids is None:
            self._touched = True
            return
        with self._cond:
            for e in entity_ids:
                self._pending[e] = kind
            self._seq += 1
            self._cond.notify_all()

    def close(self) -> None:
        """Stop following changes (the index keeps its last contents but refuses searches)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._sub is not None:
            self._sub.close()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=5)

    def __enter__(self) -> VectorIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._state.rows.n

    # -- search --------------------------------------------------------------------------

    def search(
        self,
        query: Sequence[float] | np.ndarray[Any, Any],
        *,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        include_values: bool = False,
        consistent: bool = False,
    ) -> list[Match]:
        """The k best entities for ``query``, best first (ties: entity id ascending).

        ``where`` keeps rows whose scalar fields match: ``{"f": value}`` (None matches a
        missing value), ``{"f": [a, b]}`` (any of), ``{"f": (lo, hi)}`` (inclusive range,
        None for an open end; Int, Float, Timestamp). Conditions combine with AND.
        ``include_values`` adds each entity's latest values (one more round trip).
        Every change event received (and every write of this store, see ``touched``) is
        applied before the search; ``consistent=True`` also catches up with the view's
        change feed first (one round trip when nothing is new), so writes acknowledged
        anywhere before the call are seen."""
        if not isinstance(consistent, bool):
            raise ConfigurationError(f"consistent must be True or False, got {consistent!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigurationError(f"k must be an int >= 1, got {k!r}")
        if where is not None and not isinstance(where, Mapping):
            raise ConfigurationError(
                f"where must be a mapping of field -> condition, got {where!r}"
            )
        for name in where or {}:
            if name not in self._filterable:
                why = "is not a scalar field" if name in self._fields else "is unknown"
                raise ConfigurationError(
                    f"VectorIndex({self.view!r}): cannot filter on {name!r}: it {why} "
                    f"(filterable: {sorted(self._filterable)})"
                )
        q = self._query(query)
        if self._closed:
            raise ConfigurationError(f"VectorIndex({self.view!r}) is closed")
        if not self._built:
            self.build()
        if consistent or self._touched:
            self._touched = False  # cleared first: a write noted meanwhile sets it again
            self._sync_feed()
        self._catch_up()
        found = self._search_locked(q, k, where or {})
        if not include_values or not found:
            return [Match(e, s, None) for e, s in found]
        rows = self._reader.get_many(self.view, [e for e, _ in found])
        return [Match(e, s, v) for (e, s), v in zip(found, rows, strict=True)]

    def _query(self, query: Any) -> F32:
        def refuse(rule: str, value: Any, message: str) -> ValidationError:
            problem = Problem(self.view, None, self.field, rule, value, message)
            return ValidationError([problem], outcome="nothing was searched")

        try:
            q = np.asarray(query, dtype=np.float64)
        except (TypeError, ValueError):
            raise refuse(
                "type", type(query).__name__, f"query must be {self.dim} numbers"
            ) from None
        if q.shape != (self.dim,):
            raise refuse(
                "dimension", q.shape, f"query must have shape ({self.dim},), got {q.shape}"
            )
        if not np.isfinite(q).all():
            raise refuse("finite", None, "query has NaN or infinite values")
        peak = float(np.abs(q).max())
        if self.metric == "cosine":
            if peak == 0.0:
                raise refuse("nonzero", 0.0, "a cosine query must not be all zeros")
            # scaled to its largest value first: the norm of values near the float limit
            # overflows, and cosine does not depend on the scale
            q = q / peak
            q = q / float(np.linalg.norm(q))
        elif peak > _F32_MAX:
            raise refuse(
                "range", peak, "query values must fit a float32 (|x| <= 3.4e38), as stored ones do"
            )
        return q.astype(np.float32)

    def _search_locked(self, q: F32, k: int, where: Mapping[str, Any]) -> list[tuple[str, float]]:
        with self._lock:  # updates swap rows under this lock
            return self._search(q, k, where)

    def _search(self, q: F32, k: int, where: Mapping[str, Any]) -> list[tuple[str, float]]:
        rows = self._state.rows
        n = rows.n
        if n == 0:
            return []
        mask: Mask | None = None
        for name, cond in where.items():
            m = rows.cols[name].mask(self.view, cond, n)
            mask = m if mask is None else mask & m
        if self._ttl_us is not None:  # expired values read as missing: never match them
            fresh = rows.ets[:n] >= now_us() - self._ttl_us
            mask = fresh if mask is None else mask & fresh
        sel = None if mask is None else np.flatnonzero(mask)
        if sel is not None and sel.size == 0:
            return []
        hnsw = self._state.hnsw
        if hnsw is not None and hnsw.label:
            kept = n if sel is None else sel.size
            if kept > _SMALL_SUBSET:
                got = self._approximate(hnsw, rows, q, k, mask)
                if got is not None:
                    return self._rank(rows, q, got, k)
        return self._exact(rows, q, k, sel)

    def _exact(
        self, rows: Rows, q: F32, k: int, sel: np.ndarray[Any, Any] | None
    ) -> list[tuple[str, float]]:
        n = rows.n
        if sel is None:
            dots = rows.vecs[:n] @ q
            idx: np.ndarray[Any, Any] = np.arange(n)
        elif sel.size * 4 < n:
            dots = rows.vecs[sel] @ q  # gathering a small subset beats scoring every row
            idx = sel
        else:
            dots = (rows.vecs[:n] @ q)[sel]
            idx = sel
        # Ascending key: -similarity, or the squared distance expanded around the product
        # (cheap, slightly rounded: the chosen rows are re-scored directly below).
        key = rows.sqn[idx] - 2.0 * dots if self.metric == "l2" else -dots
        if k < key.size:
            part = np.argpartition(key, k - 1)[:k]
            # every row tied with the k-th best joins, so the id tie-break is honoured
            cand = np.flatnonzero(key <= key[part].max())
            idx = idx[cand]
        return self._rank(rows, q, idx, k)

    def _approximate(
        self, hnsw: Hnsw, rows: Rows, q: F32, k: int, mask: Mask | None
    ) -> np.ndarray[Any, Any] | None:
        """Rows of the hnsw candidates that pass the mask; None: answer exactly instead."""
        live = len(hnsw.label)
        fetch = min(k, live) if mask is None else k * 10
        while True:
            n = min(fetch, live)
            try:
                ids = hnsw.query(q, n)
            except RuntimeError:  # hnswlib found fewer than n: fall back to exact
                return None
            got = np.fromiter((rows.pos[e] for e in ids), dtype=np.intp, count=len(ids))
            if mask is None:
                return got
            got = got[mask[got]]
            if got.size >= k or n >= live:
                return got
            if fetch * 4 >= live // 2:
                return None  # most of the set would be fetched: scoring it all is cheaper
            fetch *= 4

    def _rank(
        self, rows: Rows, q: F32, idx: np.ndarray[Any, Any], k: int
    ) -> list[tuple[str, float]]:
        """Exact scores of candidate rows, best first, ties by id; the first k."""
        vecs = rows.vecs[idx]
        if self.metric == "l2":
            diff = (vecs - q).astype(np.float64)
            scores = np.sqrt(np.einsum("ij,ij->i", diff, diff))
            order = sorted(
                zip(scores.tolist(), idx.tolist(), strict=True),
                key=lambda p: (p[0], rows.ids[p[1]]),
            )
        else:
            scores = vecs @ q
            order = sorted(
                zip(scores.tolist(), idx.tolist(), strict=True),
                key=lambda p: (-p[0], rows.ids[p[1]]),
            )
        return [(rows.ids[r], float(s)) for s, r in order[:k]]

    # -- loading and applying changes ----------------------------------------------------

    def _new_state(self) -> _State:
        return _State(Rows(self.dim, self._columns), self._graph(1024))

    def _graph(self, capacity: int) -> Hnsw | None:
        if self._lib is None:
            return None
        return Hnsw(
            self._lib,
            self.metric,
            self.dim,
            self._M,
            self._ef_construction,
            self._ef_search,
            capacity,
        )

    def _load(self, progress: Callable[[int, int], None] | None) -> int:
        """Read every entity into a new state, then swap it in (searches meanwhile see the
        old one). Caller holds self._apply."""
        res = self._ctx.registry.get(self.view)
        ids = entities_of(self._ctx, res)
        state = _State(Rows(self.dim, self._columns), None)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            records = self._reader.get_many(self.view, chunk, features=self._read, with_meta=True)
            self._merge(state, records)
            if progress is not None:
                progress(min(start + CHUNK, len(ids)), len(ids))
        if progress is not None and not ids:
            progress(0, 0)
        rows = state.rows
        state.hnsw = self._graph(max(1024, rows.n))
        if state.hnsw is not None and rows.n:
            # one call for the whole graph: hnswlib inserts in parallel on every core
            state.hnsw.upsert(list(rows.ids), rows.vecs[: rows.n], threads=-1)
        with self._lock:
            self._state = state
        return state.rows.n

    def _merge(self, state: _State, records: list[Record]) -> None:
        """Upsert present records with a vector; remove the others."""
        keep: list[Record] = []
        gone: list[str] = []
        for rec in records:
            values = rec.values
            vec = None if values is None else values.get(self.field)
            if vec is None or len(vec) != self.dim:
                gone.append(rec.entity_id)
            else:
                keep.append(rec)
        for e in gone:
            if state.rows.remove(e) and state.hnsw is not None:
                state.hnsw.remove(e)
        if not keep:
            return
        vecs = np.stack([r.values[self.field] for r in keep if r.values is not None]).astype(
            np.float32, copy=False
        )
        if self.metric == "cosine":
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            vecs = (vecs / np.where(norms == 0.0, 1.0, norms)).astype(np.float32)  # 0 stays 0
        ids = [r.entity_id for r in keep]
        cols = {c: [r.values.get(c) for r in keep if r.values is not None] for c in self._columns}
        ets = [0 if r.event_time is None else to_us(r.event_time) for r in keep]
        state.rows.upsert(ids, vecs, cols, ets)
        if state.hnsw is not None:
            state.hnsw.upsert(ids, vecs)

    def _follow(self) -> None:
        if self._sub is not None:
            return
        self._sub = subscribe(self._ctx, self.view, None)
        self._synced = time.monotonic()
        self._worker = threading.Thread(target=self._run, name="redfeat-vectors", daemon=True)
        self._worker.start()
        self._sub.on_event(self._on_event)

    def _on_event(self, ev: ChangeEvent) -> None:
        # Runs on the subscription's thread: only note it, so a burst of events (one
        # write_many call arrives as hundreds) is read back in a few get_many calls.
        self._note([ev])

    def _note(self, events: list[ChangeEvent], *, rebuild: bool = False) -> None:
        with self._cond:
            for ev in events:
                if ev.kind == "gap":
                    rebuild = True
                else:
                    self._pending[ev.entity_id] = ev.kind
                if ev.kind != "gap":  # a gap's cursor is where the replay starts
                    self._move_cursor_locked(ev.cursor)
            if rebuild:
                self._rebuild = True
            self._seq += 1
            self._cond.notify_all()

    # -- where the index stands in the change feed --------------------------------------

    def _move_cursor(self, entry: str | None) -> None:
        with self._cond:
            self._move_cursor_locked(entry)

    def _move_cursor_locked(self, entry: str | None) -> None:
        if self._ctx.keys.partitions:  # a composite cursor: per partition
            self._parts_cursor = later_cursor(self._parts_cursor, entry)
            return
        pos = _stream_id(entry)
        if pos is not None and (self._cursor is None or pos > self._cursor):
            self._cursor = pos

    def _feed_info(self) -> tuple[tuple[int, int] | None, tuple[int, int] | None] | None:
        """(last id generated, last id trimmed) of the view's feed; None: no feed. A raw
        reply: redis-py would also decode the first and last entries (256 ids each)."""
        try:
            feed = self._ctx.keys.feed(self.view)
            raw: Any = self._ctx.direct.call("XINFO", "STREAM", feed, key=feed)
        except redis.ResponseError:
            return None  # no feed (yet, or feed_cap=0)
        except redis.RedisError as exc:
            raise backend_error(f"view {self.view!r}: reading the change feed failed", exc) from exc
        info = raw if isinstance(raw, dict) else dict(zip(raw[::2], raw[1::2], strict=False))
        info = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in info.items()}
        return (
            _stream_id(info.get("last-generated-id")),
            _stream_id(info.get("max-deleted-entry-id")),
        )

    def _feed_end(self) -> str | None:
        if self._ctx.keys.partitions:
            return feed_end(self._ctx.client, self._ctx.keys, self.view)
        info = self._feed_info()
        last = None if info is None else info[0]
        return None if last is None else f"{last[0]}-{last[1]}"

    def _sync_feed(self) -> None:
        """Note every change the feed holds after our position (or a reload, when the feed
        was trimmed past it), so that applying the noted work covers every write the
        server acknowledged before this call."""
        self._synced = time.monotonic()
        if self._ctx.keys.partitions:
            self._sync_partitions()
            return
        with self._cond:
            cursor = self._cursor
        start = "-" if cursor is None else f"({cursor[0]}-{cursor[1]}"
        feed = self._ctx.keys.feed(self.view)
        with wrap_redis(f"view {self.view!r}: reading the change feed failed"):
            # the common case, nothing new, costs one small round trip
            if not self._ctx.direct.call("XRANGE", feed, start, "+", "COUNT", 1):
                return
        info = self._feed_info()
        if info is None:
            return
        last, _ = info
        if last is None:
            return
        since = None if cursor is None else f"{cursor[0]}-{cursor[1]}"
        try:
            events, end = changes(
                self._ctx.client, self._ctx.keys, self.view, since, _CATCH_UP_LIMIT
            )
        except FeedTrimmedError:
            # events we never saw were trimmed away: only a reload knows their effect
            self._note([], rebuild=True)
            self._move_cursor(f"{last[0]}-{last[1]}")
            return
        self._note(events, rebuild=len(events) >= _CATCH_UP_LIMIT)
        self._move_cursor(end)

    def _sync_partitions(self) -> None:
        """_sync_feed of a partitioned project: every partition's feed after the composite
        cursor (one read per partition)."""
        with self._cond:
            since = self._parts_cursor
        try:
            events, end = changes(
                self._ctx.client, self._ctx.keys, self.view, since, _CATCH_UP_LIMIT
            )
        except FeedTrimmedError:
            self._note([], rebuild=True)
            self._move_cursor(self._feed_end())
            return
        if events:
            self._note(events, rebuild=len(events) >= _CATCH_UP_LIMIT)
        self._move_cursor(end)

    # -- applying noted work ------------------------------------------------------------

    def _catch_up(self) -> None:
        """Apply, here and now, whatever was noted before this call (waiting for a batch
        the update thread is applying). Errors are raised: the search cannot be served."""
        with self._cond:
            if self._done >= self._seq:
                return
        self._drain()

    def _drain(self) -> None:
        """Take the noted work and apply it, under the apply lock, so that a batch is
        never taken by one thread and still being applied when another one returns."""
        with self._apply:
            with self._cond:
                pending, self._pending = self._pending, {}
                rebuild, self._rebuild = self._rebuild, False
                seq = self._seq
            try:
                if rebuild:
                    self._move_cursor(self._feed_end())
                    self._load(None)
                self._refresh(pending)
            except BaseException:
                with self._cond:  # keep it for the next try; a newer event wins
                    self._rebuild = self._rebuild or rebuild
                    for e, kind in pending.items():
                        self._pending.setdefault(e, kind)
                raise
            with self._cond:
                self._done = max(self._done, seq)
                self._cond.notify_all()

    def _run(self) -> None:
        """The update thread: apply noted events in order, one batch at a time; every
        SYNC_SECONDS without events, compare the position with the feed."""
        while True:
            with self._cond:
                while not (self._done < self._seq or self._closed):
                    left = SYNC_SECONDS - (time.monotonic() - self._synced)
                    if left <= 0 and self._built:
                        break
                    self._cond.wait(left if left > 0 else SYNC_SECONDS)
                if self._closed:
                    return
                idle = self._done >= self._seq
            try:
                if idle:
                    self._sync_feed()
                else:
                    self._drain()
            except Exception as exc:  # keep following; try again shortly
                if len(self.errors) < _MAX_ERRORS:
                    self.errors.append(exc)
                with self._cond:
                    self._cond.wait(0.2)

    def _refresh(self, pending: dict[str, str]) -> None:
        """Apply one batch: deletes directly, writes by reading the latest values (so a
        batch applied late still converges to what Redis holds)."""
        deleted = [e for e, kind in pending.items() if kind == "delete"]
        written = [e for e, kind in pending.items() if kind != "delete"]
        state = self._state
        if deleted:
            with self._lock:
                for e in deleted:
                    if state.rows.remove(e) and state.hnsw is not None:
                        state.hnsw.remove(e)
        for start in range(0, len(written), CHUNK):
            chunk = written[start : start + CHUNK]
            records = self._reader.get_many(self.view, chunk, features=self._read, with_meta=True)
            with self._lock:
                self._merge(state, records)
