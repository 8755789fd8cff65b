"""Change events: the durable per-view feed (a capped stream) and live subscriptions.

Every write kind records its new versions inside the same server-side step as the write
(scripts.WRITE / scripts.DELETE): one stream entry and one published message per call,
each carrying every entity of that call. This module turns them back into one
``ChangeEvent`` per entity.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import queue
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import redis

from ..core.codec import READ, normalize_id
from ..core.context import Ctx
from ..core.keys import Keys, unescape_id
from ..core.records import ChangeEvent
from ..core.schema import Entity
from ..core.time import from_us
from ..errors import (
    BackendError,
    ConfigurationError,
    FeedTrimmedError,
    ValidationError,
    wrap_redis,
)

_KINDS = {"w": "write", "d": "delete"}


def _decode(
    view: str, entry: str, kind: str, fields: str, ids: bytes, pairs: bytes
) -> list[ChangeEvent]:
    names = tuple(f for f in fields.split(",") if f)
    ents = ids.decode().split("\n") if ids else []
    nums = np.frombuffer(pairs, dtype=">i8").reshape(-1, 2) if pairs else np.zeros((0, 2))
    out = []
    deleted = kind == "d"
    for esc, (vid, t) in zip(ents, nums.tolist(), strict=True):
        if vid == 0 and not deleted:
            continue  # that write made no new version
        out.append(
            ChangeEvent(
                view=view,
                entity_id=unescape_id(esc),
                kind=_KINDS.get(kind, kind),
                version_id=int(vid),
                event_time=None if deleted else from_us(int(t)),
                written_at=from_us(int(t)) if deleted else from_us(int(vid)),
                fields=names,
                cursor=entry,
            )
        )
    return out


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _stream_id(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


def _raw(v: Any) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()


def _versions_in(entry: Any) -> int:
    """How many versions one feed entry counts (its id's count grew by that much)."""
    data = {_text(k): v for k, v in ((entry[1] or {}) if entry else {}).items()}
    pairs = _raw(data.get("v", b""))
    if _text(data.get("k", b"w")) == "d":
        return len(pairs) // 16
    return int(np.count_nonzero(np.frombuffer(pairs, dtype=">i8")[0::2]))


def trimmed_after(info: Any, since: str) -> str | None:
    """Whether the feed (its XINFO STREAM, parsed) lost entries after cursor ``since``:
    None if not, else the cursor to read on from (just before the oldest entry kept).

    Trims only remove the oldest entries, and an entry id's sequence counts the versions
    recorded up to it (online.lua FEED), so the oldest entry kept says exactly where the
    trimmed ones end: before it by the versions it holds. A cursor that is not that point
    (a legacy feed's, or a made-up one) counts as a gap when anything was trimmed."""
    if not isinstance(info, dict):
        return None  # no feed: nothing was trimmed
    first = info.get("first-entry")
    if not first or int(info.get("entries-added") or 0) <= int(info.get("length") or 0):
        return None  # empty, or nothing ever trimmed
    ms, seq = _stream_id(_text(first[0]))
    at = _stream_id(since)
    if at >= (ms, seq):
        return None
    before = seq - _versions_in(first)
    if at[1] == before and at[0] <= ms:
        return None  # the cursor is the last entry before the oldest kept
    return f"{ms}-{before}" if before >= 0 else f"{ms - 1}-{(1 << 64) - 1}"


def changes(
    client: redis.Redis, keys: Keys, view: str, since: str | None, limit: int
) -> tuple[list[ChangeEvent], str | None]:
    """Events after ``since`` (a cursor; None = from the oldest kept), in order. Whole
    stream entries are returned, so a call may give a few more than ``limit``.

    Raises FeedTrimmedError if entries after ``since`` were trimmed before they were read
    (events read before the trim are returned first, and the next call raises).

    The one reader of "every partition of a view's feed": in a partitioned project (a
    cluster) the partitions' entries are merged by entry id and a cursor holds every
    partition's position (``id0,id1,...``; empty: from the oldest kept), so that resuming
    from any event's cursor neither repeats nor skips an event. One entity's events are
    all in one partition: their order is the order they were written."""
    if not keys.partitions:
        return _changes_of(client, keys.feed(view), view, since, limit)
    n = keys.partitions
    pos: list[str | None] = [None] * n
    if since is not None:
        parts = since.split(",")
        if len(parts) != n:
            raise ConfigurationError(
                f"view {view!r}: cursor {since!r} is not one of this project's change-feed "
                f"cursors ({n} partitions: use an event's cursor, or None)"
            )
        pos = [p or None for p in parts]
    entries: list[tuple[tuple[int, int, int], int, str, list[ChangeEvent]]] = []
    gaps: dict[int, str] = {}
    for k in range(n):
        try:
            evs, _ = _changes_of(client, keys.feed(view, k), view, pos[k], limit)
        except FeedTrimmedError as exc:
            gaps[k] = exc.resume or ""
            continue
        if not evs and pos[k] is None:
            # empty now: what this partition gets next must count as after this read, or
            # a trim of it before the next read would go unnoticed
            pos[k] = "0-0"
        by_entry: dict[str, list[ChangeEvent]] = {}
        for ev in evs:
            by_entry.setdefault(ev.cursor, []).append(ev)
        for entry, group in by_entry.items():
            ms, seq = _stream_id(entry)
            entries.append(((ms, k, seq), k, entry, group))
    if gaps:  # one error for every partition that lost events; the others stay where they are
        resume = [gaps.get(k, p or "") for k, p in enumerate(pos)]
        raise FeedTrimmedError(view, since or "", ",".join(resume))
    entries.sort(key=lambda e: e[0])
    out: list[ChangeEvent] = []
    for _, k, entry, group in entries:
        if len(out) >= limit:
            break
        pos[k] = entry
        cursor = ",".join(p or "" for p in pos)
        out.extend(dataclasses.replace(ev, cursor=cursor) for ev in group)
    return out, ",".join(p or "" for p in pos)


def _pairs(v: Any) -> Any:
    """A flat [k, v, k, v...] reply as a dict (keys decoded); anything else as it is."""
    if isinstance(v, list):
        return {_text(a): b for a, b in zip(v[0::2], v[1::2], strict=False)}
    return v


def _parsed_rows(rows: Any) -> Any:
    """XRANGE rows as (id, {field: value}): a cluster client's MULTI hands them back raw."""
    if not isinstance(rows, list):
        return rows
    return [(r[0], _pairs(r[1])) for r in rows]


def _parsed_info(info: Any) -> Any:
    """XINFO STREAM as a dict of str keys, its first entry as (id, {field: value}) (a
    cluster client's MULTI leaves it half parsed)."""
    if isinstance(info, dict):
        out = {_text(k): v for k, v in info.items()}
    elif isinstance(info, list):
        out = _pairs(info)
    else:
        return info
    for k in ("first-entry", "last-entry"):
        e = out.get(k)
        if isinstance(e, list | tuple) and e and isinstance(e[1], list):
            out[k] = (e[0], _pairs(e[1]))
    for k in ("length", "entries-added"):
        if isinstance(out.get(k), bytes):
            out[k] = int(out[k])
    return out


def feed_end(client: redis.Redis, keys: Keys, view: str) -> str | None:
    """The cursor of the view's newest event (composite in a partitioned project); None
    when the feed is empty."""
    ends: list[str] = []
    with wrap_redis(f"view {view!r}: reading the change feed failed"):
        for feed in keys.feeds(view):
            last = client.xrevrange(feed, count=1)
            # "0-0": an empty partition's position, so that entries trimmed from it before
            # they are read are reported, not skipped
            ends.append(_text(last[0][0]) if last else "0-0")
    if not keys.partitions:
        return None if ends[0] == "0-0" else ends[0]
    return ",".join(ends)


def later_cursor(a: str | None, b: str | None) -> str | None:
    """The later of two cursors of one view (per partition, in a partitioned project)."""
    if a is None or b is None:
        return b if a is None else a
    pa, pb = a.split(","), b.split(",")
    if len(pa) != len(pb):
        return b
    return ",".join(
        y if x == "" or (y != "" and _stream_id(y) > _stream_id(x)) else x
        for x, y in zip(pa, pb, strict=True)
    )


def _changes_of(
    client: redis.Redis, feed: str, view: str, since: str | None, limit: int
) -> tuple[list[ChangeEvent], str | None]:
    """``changes`` of one feed stream."""
    start = "-" if since is None else f"({since}"
    events: list[ChangeEvent] = []
    cursor = since
    with wrap_redis(f"view {view!r}: reading the change feed failed"):
        while len(events) < limit:
            if cursor is None:
                rows = client.xrange(feed, min=start, max="+", count=100)
            else:
                # the read and the trim mark in one step: the trim only ever removes the
                # oldest entries, so any entry trimmed after the cursor means lost events
                pipe = client.pipeline(transaction=True)
                pipe.xrange(feed, min=start, max="+", count=100)
                pipe.xinfo_stream(feed)
                rows, info = pipe.execute(raise_on_error=False)
                if isinstance(rows, Exception):
                    raise rows
                rows, info = _parsed_rows(rows), _parsed_info(info)
                resume = trimmed_after(info, cursor)
                if resume is not None:
                    if events:
                        break  # hand over what was read; the next call reports the gap
                    raise FeedTrimmedError(view, cursor, resume)
            if not rows:
                break
            for entry_id, data in rows:
                d = {_text(k): v for k, v in (data or {}).items()}
                cursor = _text(entry_id)
                events.extend(
                    _decode(view, cursor, _text(d["k"]), _text(d["f"]), _raw(d["e"]), _raw(d["v"]))
                )
                if len(events) >= limit:
                    break
            start = f"({cursor}"
    return events, cursor


class Subscription:
    """Live change events: iterate it, ``async for`` it, or ``on_event(callback)``.

    A dedicated pub/sub connection; if it drops, the subscription reconnects by itself,
    yields a "gap" event, and replays what the feed recorded meanwhile."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        views: Iterable[str] | None,
        entity_ids: Iterable[str] | None,
        all_views: Iterable[str] = (),
    ) -> None:
        self._client = client
        self._keys = keys
        self._views = None if views is None else list(views)
        self._ids = None if entity_ids is None else {str(e) for e in entity_ids}
        self._cursors: dict[str, str | None] = {}
        self._closed = threading.Event()
        self._queue: queue.Queue[ChangeEvent | None] = queue.Queue()
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._reconnected = False
        # Where each feed ends now: after a lost connection, replay from the last event
        # delivered (or from here). With views=None, the views known at subscribe time.
        self._cursors = {v: self._feed_end(v) for v in (self._views or list(all_views))}
        self._subscribe()
        self._thread: threading.Thread | None = None
        self.errors: list[Exception] = []  # what the on_event callback raised
        self._callback: Callable[[ChangeEvent], None] | None = None

    def _subscribe(self) -> None:
        if self._views is None:
            self._pubsub.psubscribe(self._keys.channel_pattern)
        else:
            self._pubsub.subscribe(*[self._keys.channel(v) for v in self._views])
        # redis-py reconnects a pub/sub connection by itself and says nothing: hear about
        # it, since messages published meanwhile are lost and must come from the feed.
        conn = self._pubsub.connection
        if conn is not None and hasattr(conn, "register_connect_callback"):
            conn.register_connect_callback(self._on_connect)

    def _on_connect(self, _conn: Any) -> None:
        self._reconnected = True

    def _feed_end(self, view: str) -> str | None:
        try:
            return feed_end(self._client, self._keys, view)
        except BackendError:
            return None

    def _wanted(self, ev: ChangeEvent) -> bool:
        return self._ids is None or ev.entity_id in self._ids

    def _messages(self, timeout: float) -> list[ChangeEvent]:
        deadline = time.monotonic() + timeout
        while True:
            # None also stands for a swallowed (un)subscribe confirmation: keep waiting
            msg = self._pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if msg is not None and msg.get("type") in ("message", "pmessage"):
                break
            if time.monotonic() >= deadline:
                return []
        if self._reconnected:
            return []  # read after a silent reconnect: the replay delivers it, in order
        parsed = self._keys.parse(_text(msg["channel"]))
        view = "" if parsed is None else parsed.name
        try:
            entry, kind, fields, ids, pairs = msgspec.msgpack.decode(msg["data"])
        except (msgspec.DecodeError, ValueError, TypeError):
            return []  # not one of ours: ignore
        last = self._cursors.get(view)
        cursor = _text(entry)
        if self._keys.partitions:
            # the partition of a message: that of its entities (all of one partition)
            first = _raw(ids).split(b"\n", 1)[0].decode()
            k = self._keys.partition(first)
            pos = (last or "").split(",") if last else [""] * self._keys.partitions
            if pos[k] and _stream_id(cursor) <= _stream_id(pos[k]):
                return []  # already delivered by a replay
            pos[k] = cursor
            cursor = ",".join(pos)
        elif last is not None and _stream_id(cursor) <= _stream_id(last):
            return []  # already delivered by a replay
        self._cursors[view] = cursor
        events = _decode(view, cursor, _text(kind), _text(fields), _raw(ids), _raw(pairs))
        return [ev for ev in events if self._wanted(ev)]

    def _recover(self) -> list[ChangeEvent]:
        """Reconnect, then replay from the feed what may have been missed."""
        out: list[ChangeEvent] = []
        while not self._closed.is_set():
            try:
                self._pubsub.reset()
                self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                self._subscribe()
                break
            except redis.RedisError:
                self._closed.wait(0.2)
        self._reconnected = True
        return out + self._replay_now()

    def _replay(self) -> list[ChangeEvent]:
        """A "gap" marker per view, then what the feed recorded after the last event seen;
        a "trimmed" marker where the feed no longer holds all of it (its cursor: where the
        events kept start again; what came between is lost, reload the view's state)."""
        out: list[ChangeEvent] = []
        if self._views is None:  # views created after subscribing have no cursor: say so
            out.append(ChangeEvent("*", "", "gap", 0, None, None, (), "0-0"))
        for view, cursor in list(self._cursors.items()):
            out.append(ChangeEvent(view, "", "gap", 0, None, None, (), cursor or "0-0"))
            try:
                events, new_cursor = changes(self._client, self._keys, view, cursor, 1_000_000)
            except FeedTrimmedError as exc:
                out.append(ChangeEvent(view, "", "trimmed", 0, None, None, (), exc.resume or ""))
                events, new_cursor = changes(self._client, self._keys, view, exc.resume, 1_000_000)
            out.extend(ev for ev in events if self._wanted(ev))
            self._cursors[view] = new_cursor
        return out

    def poll(self, timeout: float = 1.0) -> list[ChangeEvent]:
        """Events that arrived within ``timeout`` seconds (maybe none)."""
        if self._closed.is_set():
            return []
        try:
            if not self._reconnected:
                events = self._messages(timeout)
                if not self._reconnected:
                    return events
            return self._replay_now()
        except (redis.ConnectionError, redis.TimeoutError):
            return self._recover()

    def _replay_now(self) -> list[ChangeEvent]:
        """After a reconnect: gap markers and the feed's events since the last delivered.
        If the server cannot answer yet (restarting, loading), try again on the next poll."""
        try:
            out = self._replay()
        except (redis.RedisError, BackendError):
            self._reconnected = True
            self._closed.wait(0.2)
            return []
        self._reconnected = False
        return out

    def __iter__(self) -> Iterator[ChangeEvent]:
        while not self._closed.is_set():
            yield from self.poll(0.5)

    async def __aiter__(self) -> AsyncIterator[ChangeEvent]:
        while not self._closed.is_set():
            for ev in await asyncio.to_thread(self.poll, 0.5):
                yield ev

    def on_event(self, callback: Callable[[ChangeEvent], None]) -> Subscription:
        """Call ``callback`` for every event on a background thread (until close())."""
        self._callback = callback

        def run() -> None:
            while not self._closed.is_set():
                try:
                    events = self.poll(0.5)
                except Exception as exc:  # never let the thread die: retry, then replay
                    self.errors.append(exc)
                    self._reconnected = True
                    self._closed.wait(0.5)
                    continue
                for ev in events:
                    try:
                        callback(ev)
                    except Exception as exc:  # the subscription outlives a bad callback
                        self.errors.append(exc)

        self._thread = threading.Thread(target=run, name="redfeat-subscription", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with contextlib.suppress(redis.RedisError):
            self._pubsub.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _event_ids(keys: dict[str, Entity], entity_ids: list[Any]) -> list[str]:
    """The ids as change events carry them: each encoded the way the views' writes encode
    it (a tuple or mapping of a composite entity joined and escaped, an Int key's digits).
    With several views, an id in the encoding of each view whose entity it fits (an id no
    view's entity takes is refused); with none, tuples are encoded without checking them
    against an entity."""
    out: set[str] = set()
    for i, e in enumerate(entity_ids):
        if not keys:
            out.add(normalize_id("(all views)", e, i, outcome=READ))
            continue
        refused: ValidationError | None = None
        fits = 0
        for view, key in keys.items():
            try:
                out.add(normalize_id(view, e, i, outcome=READ, key=key))
                fits += 1
            except ValidationError as exc:
                refused = refused or exc
        if not fits and refused is not None:
            raise refused
    return sorted(out)


def subscribe(
    ctx: Ctx, view: str | Iterable[str] | None, entity_ids: Iterable[Any] | None
) -> Subscription:
    """A subscription to one view, several, or all (None), optionally to some entities."""
    views = None if view is None else [view] if isinstance(view, str) else list(view)
    keys = {v: ctx.registry.get(v).key for v in views or []}
    ids = None if entity_ids is None else _event_ids(keys, list(entity_ids))
    known = [v.name for v in ctx.registry.views()] if views is None else []
    return Subscription(ctx.client, ctx.keys, views, ids, known)


# -- consumer groups: the offline log's durable reader of the feed ---------------------------

OFFLINE_GROUP = "offline"  # the group the offline log reads every view's feed with


@dataclass(frozen=True, slots=True)
class FeedVersion:
    """One new version as the write step put it in the feed: the payload as stored, or None
    when the entry carries no payloads (written while no offline log was attached: the
    reader finds the version in Redis by id)."""

    entity_id: str
    version_id: int
    event_us: int
    payload: bytes | None


@dataclass(frozen=True, slots=True)
class FeedBatch:
    """Feed entries read by a consumer group: their ids (to acknowledge), the versions they
    carry in order, whether entries were trimmed from under the group (``gap``: the
    versions of those are not here; resync from history), and the entities deleted, with
    the server time of the delete in microseconds (every version written before it went)."""

    ids: list[str]
    versions: list[FeedVersion]
    gap: bool
    deletes: list[tuple[str, int]]


# In a partitioned project (a cluster) a group reads every partition's feed; the ids of a
# FeedBatch are then "p<partition>.<entry id>" (safe in a file name), so that ack() finds
# each entry's stream.


def ensure_group(client: redis.Redis, keys: Keys, view: str, group: str) -> None:
    """Create ``group`` on the view's feed (each partition's), reading from its oldest kept
    entry (MKSTREAM: a view nothing was written to yet gets an empty feed)."""
    with wrap_redis(f"view {view!r}: creating the feed's consumer group failed"):
        for feed in keys.feeds(view):
            try:
                client.xgroup_create(feed, group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise


def _read_rows(
    client: redis.Redis,
    keys: Keys,
    name: str,
    group: str,
    consumer: str,
    count: int,
    pending: bool,
) -> list[tuple[str, dict[str, Any] | None]]:
    """Entries of ``name``'s feed for ``consumer``; in a partitioned project each
    partition's feed in turn (up to ``count`` entries each; one entity's entries stay in
    order, they are in one feed), ids tagged "p<partition>.<entry id>" for ack()."""
    rows: list[tuple[str, dict[str, Any] | None]] = []
    with wrap_redis(f"{name!r}: reading the change feed failed"):
        for k, feed in enumerate(keys.feeds(name)):
            reply = client.xreadgroup(group, consumer, {feed: "0" if pending else ">"}, count=count)
            got: list[Any] = []
            if isinstance(reply, dict):  # RESP3
                for v in reply.values():
                    got.extend(v[0] if v and isinstance(v[0], list) else v)
            else:
                for _, entries in reply or []:
                    got.extend(entries)
            tag = f"p{k}." if keys.partitions else ""
            rows.extend(
                (tag + _text(i), {_text(f): v for f, v in data.items()} if data else None)
                for i, data in got
            )
    return rows


def read_group(
    client: redis.Redis,
    keys: Keys,
    view: str,
    group: str,
    consumer: str,
    *,
    count: int,
    pending: bool,
) -> FeedBatch:
    """The next entries of a view's feed for ``consumer`` (``pending``: those delivered to
    it and not yet acknowledged, oldest first, as a restart must redo them; else new ones).
    Versions of entries that carry no payloads (written while no offline log was attached)
    come with payload None; pending entries trimmed meanwhile set ``gap``."""
    ids: list[str] = []
    out: list[FeedVersion] = []
    deletes: list[tuple[str, int]] = []
    gap = False
    for entry_id, d in _read_rows(client, keys, view, group, consumer, count, pending):
        ids.append(entry_id)
        if d is None:
            gap = True  # trimmed after delivery, before it was acknowledged
            continue
        kind = _text(d.get("k", b""))
        if kind not in ("w", "d"):
            continue
        ents = _raw(d["e"]).decode().split("\n") if d["e"] else []
        nums = np.frombuffer(_raw(d["v"]), dtype=">i8").reshape(-1, 2).tolist()
        if kind == "d":  # (0, the server time of the delete) per entity
            deletes.extend(
                (unescape_id(esc), int(at)) for esc, (_, at) in zip(ents, nums, strict=True)
            )
            continue
        if "p" not in d:
            out.extend(
                FeedVersion(unescape_id(esc), int(vid), int(et), None)
                for esc, (vid, et) in zip(ents, nums, strict=True)
                if vid != 0
            )
            continue
        blob, at = _raw(d["p"]), 0
        for esc, (vid, et) in zip(ents, nums, strict=True):
            if vid == 0:
                continue
            (size,) = struct.unpack_from(">I", blob, at)
            out.append(
                FeedVersion(unescape_id(esc), int(vid), int(et), blob[at + 4 : at + 4 + size])
            )
            at += 4 + size
    return FeedBatch(ids, out, gap, deletes)


@dataclass(frozen=True, slots=True)
class WindowBatch:
    """Entries of a window features' feed: ids (to acknowledge), and per bucket of an
    entity the raw events counted (entity id, bucket id, packed events: windows/spec.py
    RECORD); ``gap`` as in FeedBatch."""

    ids: list[str]
    events: list[tuple[str, int, bytes]]
    gap: bool


def read_window_group(
    client: redis.Redis,
    keys: Keys,
    name: str,
    group: str,
    consumer: str,
    *,
    count: int,
    pending: bool,
) -> WindowBatch:
    """read_group for the feed of window features ``name``."""
    ids: list[str] = []
    out: list[tuple[str, int, bytes]] = []
    gap = False
    for entry_id, d in _read_rows(client, keys, name, group, consumer, count, pending):
        ids.append(entry_id)
        if d is None:
            gap = True
            continue
        ent, blob, at = unescape_id(_text(d["e"])), _raw(d["w"]), 0
        while at < len(blob):
            bucket, size = struct.unpack_from(">qI", blob, at)
            out.append((ent, int(bucket), blob[at + 12 : at + 12 + size]))
            at += 12 + size
    return WindowBatch(ids, out, gap)


def ack(client: redis.Redis, keys: Keys, view: str, group: str, ids: list[str]) -> None:
    """Acknowledge entries: the group will not deliver them again."""
    if not ids:
        return
    by_feed: dict[str, list[str]] = {}
    for i in ids:
        k, _, entry = i.rpartition(".")
        by_feed.setdefault(keys.feed(view, int(k[1:] or 0)), []).append(entry)
    with wrap_redis(f"view {view!r}: acknowledging feed entries failed"):
        for feed, entries in by_feed.items():
            client.xack(feed, group, *entries)


def group_state(client: redis.Redis, keys: Keys, view: str, group: str) -> dict[str, Any]:
    """How far ``group`` is behind on the view's feed: ``pending`` (delivered, not yet
    acknowledged), ``lag`` (entries not yet delivered; None when the server cannot tell, or
    the group does not exist) and ``gap`` (entries were trimmed before the group read them).
    In a partitioned project: summed over the partitions (gap: in any)."""
    states = [_group_state(client, feed, view, group) for feed in keys.feeds(view)]
    if len(states) == 1:
        return states[0]
    lags = [s["lag"] for s in states]
    return {
        "pending": sum(s["pending"] for s in states),
        "lag": None if any(lag is None for lag in lags) else sum(lags),
        "gap": any(s["gap"] for s in states),
    }


def _group_state(client: redis.Redis, feed: str, view: str, group: str) -> dict[str, Any]:
    with wrap_redis(f"view {view!r}: reading the feed's groups failed"):
        try:
            groups = client.xinfo_groups(feed)
            info = client.xinfo_stream(feed)
        except redis.ResponseError:
            return {"pending": 0, "lag": None, "gap": False}
    mine = next((g for g in groups if _text(g.get("name", "")) == group), None)
    if mine is None:
        return {"pending": 0, "lag": None, "gap": False}
    last = _text(mine.get("last-delivered-id", "0-0"))
    # more entries were trimmed than the group ever read: some were never delivered
    # (Redis >= 7.0 counts entries added to a stream and entries a group read)
    first = info.get("first-entry")
    trimmed = int(info.get("entries-added") or 0) - int(info.get("length") or 0)
    read = mine.get("entries-read")
    if read is None and last == "0-0":
        read = 0
    gap = bool(
        first
        and trimmed > 0
        and _stream_id(last) < _stream_id(_text(first[0]))
        and (read is None or trimmed > int(read))
    )
    lag = mine.get("lag")
    if lag is None and not first:
        lag = 0
    if lag is None and not gap:
        # Redis 7.0 answers no lag once entries were trimmed; count what follows the cursor
        with wrap_redis(f"view {view!r}: reading the change feed failed"):
            after = client.xrange(feed, min=f"({last}", max="+", count=100_000)
        lag = len(after or [])
    return {"pending": int(mine.get("pending", 0)), "lag": lag, "gap": gap}
