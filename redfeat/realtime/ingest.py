"""Stream ingestion: ``push`` raw rows to a per-view stream; workers in a consumer group
validate, transform (derived views) and write them, then acknowledge.

    rf:<project>:ingest:<view>   stream of pushed batches (field "rows": msgpack list of dicts)
    rf:<project>:dead:<view>     dead letters: rows that failed validation, with the error

In a partitioned project (a Redis Cluster) both are one stream per partition, a row going
to its entity's partition (``Keys.ingest(view, k)``, ``Keys.dead_letters(view, k)``), so
one view's pushes spread over the masters; a worker reads every partition.

Every pushed row gets its event time at push (unless it has one), so a batch replayed after
a crash writes the same (event time, values) again, which the write step recognises as the
same version: no duplicates. A crashed worker's unacknowledged batches are claimed by
another one (XAUTOCLAIM) once idle for ``claim_idle`` seconds.

A worker outlives server outages: while the server cannot be reached it waits (0.5 s,
doubling up to ``max_backoff``), says so in its log (``redfeat.worker``) when the outage
starts and ends, then goes on with its own unacknowledged batches first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis

from ..core.codec import normalize_id
from ..core.conn import REDIRECTS
from ..core.context import Ctx, Writer
from ..core.keys import escape_id
from ..core.time import to_us
from ..errors import BackendError, ConfigurationError, ValidationError, backend_error, wrap_redis

ET = "__event_time_us"
PUSH_CHUNK = 500

_log = logging.getLogger("redfeat.worker")


def _enc_hook(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise NotImplementedError(f"cannot push a {type(obj).__name__}")


_encode = msgspec.msgpack.Encoder(enc_hook=_enc_hook).encode


def _partitioner(ctx: Ctx, view: str) -> Callable[[Mapping[str, Any]], int]:
    """A row's partition: that of its entity (``entity_id``, else the entity's join-key
    columns), as the write step places it, so that one entity's rows stay in order in one
    stream and a worker's batch writes to one slot. A row with no valid id goes to
    partition 0 (the worker refuses it into the dead letters)."""
    keys = ctx.keys
    if not keys.partitions:
        return lambda _row: 0
    key = ctx.registry.get(view).key
    names = key.key_names if key.declared else []

    def part(row: Mapping[str, Any]) -> int:
        eid = row.get("entity_id")
        if eid is None and names and all(n in row for n in names):
            eid = row[names[0]] if len(names) == 1 else tuple(row[n] for n in names)
        try:
            return keys.partition(escape_id(normalize_id(view, eid, key=key)))
        except (ValidationError, TypeError, ValueError):
            return 0

    return part


def push(
    ctx: Ctx, view: str, rows: Iterable[Mapping[str, Any]], event_time_column: str | None
) -> int:
    """Append rows to the view's ingest stream (each row to its entity's partition's, in a
    partitioned project); returns how many were pushed."""
    ctx.registry.get(view)
    part = _partitioner(ctx, view)
    now = to_us(datetime.now(UTC))
    batches: dict[int, list[dict[str, Any]]] = {}
    n = 0
    pipe = ctx.client.pipeline(transaction=False)
    for row in rows:
        if not isinstance(row, Mapping):
            raise ConfigurationError(f"push takes dicts, got {type(row).__name__}")
        item = {k: v for k, v in row.items() if k != event_time_column}
        et = row.get(event_time_column) if event_time_column else None
        # one microsecond apart: two rows of one entity in a push stay two versions when
        # a crashed batch is replayed (equal times would look like new writes, not retries)
        item[ET] = now + n if et is None else to_us(et)
        if isinstance(item.get("entity_id"), bytes):
            raise ConfigurationError("entity ids are str or int")
        k = part(item)
        batch = batches.setdefault(k, [])
        batch.append(item)
        n += 1
        if len(batch) == PUSH_CHUNK:
            pipe.xadd(ctx.keys.ingest(view, k), {"rows": _encode(batch)})
            batches[k] = []
    for k, batch in batches.items():
        if batch:
            pipe.xadd(ctx.keys.ingest(view, k), {"rows": _encode(batch)})
    try:
        pipe.execute()
        if ctx.direct.cluster is not None and n:
            # wake workers waiting for rows (on a cluster they cannot block on the streams),
            # saying which partitions got some
            ctx.client.publish(ctx.keys.ingest_bell(view), ",".join(map(str, sorted(batches))))
    except (redis.RedisError, TypeError) as exc:
        raise backend_error(f"view {view!r}: push failed", exc) from exc
    return n


@dataclass(slots=True)
class WorkerStats:
    """What a worker did so far."""

    rows: int = 0
    batches: int = 0
    dead: int = 0
    claimed: int = 0
    outages: int = 0  # times the server could not be reached (the worker waited)
    started: float = field(default_factory=time.monotonic)
    lag: dict[str, int] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / max(1e-9, time.monotonic() - self.started)


class Worker:
    """Consumes ingest streams in a consumer group. ``run()`` until ``stop()``.

    In a partitioned project it reads every partition's stream of its views. On one node
    a round is one XREADGROUP over all of them, blocking up to ``block`` seconds when
    nothing is there. On a cluster the streams are on many slots, which one command cannot
    span: a round sends one XAUTOCLAIM and one XREADGROUP per stream, pipelined per node,
    nodes in parallel; when that finds nothing the worker waits on the views' push channel
    (``Keys.ingest_bell``, rung by every push) for up to ``block`` seconds."""

    def __init__(
        self,
        ctx: Ctx,
        writer: Writer,
        views: Iterable[str] | None = None,
        *,
        group: str = "redfeat",
        consumer: str | None = None,
        claim_idle: float = 30.0,
        block: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        self._ctx = ctx
        self._writer = writer
        self.views = list(views) if views is not None else [v.name for v in ctx.registry.views()]
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self.claim_idle_ms = int(claim_idle * 1000)
        self.block_ms = int(block * 1000)
        # a blocked read must answer before the client's socket times out (that would look
        # like an outage): longer waits are several reads
        pool = getattr(ctx.client, "connection_pool", None)
        limit = getattr(pool, "connection_kwargs", {}).get("socket_timeout")
        self._read_block_ms = (
            self.block_ms if not limit else min(self.block_ms, max(100, int(limit * 1000) - 500))
        )
        self.max_backoff = max_backoff
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._own_first = True  # read this consumer's unacknowledged batches before new ones
        self._bell: Any = None  # on a cluster: the pub/sub connection pushes ring
        self._lag_at = 0.0  # when the lag was last measured (monotonic)
        self._hinted: set[str] = set()  # streams a push rang for since the last read
        # XAUTOCLAIM is one command per stream: sent while it finds batches, else at most
        # once a second (or every claim_idle, if shorter)
        self._claim_at: float | None = None
        # every stream read: key -> (view, partition)
        self._streams: dict[str, tuple[str, int]] = {}
        for v in self.views:
            ctx.registry.get(v)
            for k, key in enumerate(ctx.keys.ingests(v)):
                self._streams[key] = (v, k)
        with wrap_redis("cannot create the consumer group"):
            pipe = ctx.client.pipeline(transaction=False)
            for key in self._streams:
                pipe.xgroup_create(key, group, id="0", mkstream=True)
            for reply in pipe.execute(raise_on_error=False):
                if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                    raise reply

    def stop(self) -> None:
        self._stop.set()

    def run(
        self,
        *,
        max_batches: int | None = None,
        until_idle: bool = False,
        on_progress: Callable[[WorkerStats], None] | None = None,
    ) -> WorkerStats:
        """Process batches until stopped, ``max_batches`` done, or (``until_idle``) nothing
        is left to read or claim. A server outage does not end it: it waits and goes on."""
        try:
            return self._run(max_batches, until_idle, on_progress)
        finally:
            self._ring_off()

    def _run(
        self,
        max_batches: int | None,
        until_idle: bool,
        on_progress: Callable[[WorkerStats], None] | None,
    ) -> WorkerStats:
        down_since: float | None = None
        wait = 0.0
        redirected = 0
        while not self._stop.is_set():
            try:
                got = self._round(until_idle)
                redirected = 0
            except _Redirected:
                # not an outage: read again with the new slot map, 10 ms apart while a slot
                # is being migrated, 0.5 s apart if that lasts over a second
                self._own_first = True
                redirected += 1
                if redirected <= _REDIRECTS_BEFORE_OUTAGE:
                    self._stop.wait(0.01)
                    continue
                self._ring_off()
                self._stop.wait(min(self.max_backoff, 0.5))
                redirected = 0
                continue
            except BackendError as exc:
                self._own_first = True  # what this consumer had read stays pending
                self._ring_off()
                if down_since is None:
                    down_since = time.monotonic()
                    self.stats.outages += 1
                    _log.warning(
                        "redfeat worker %s: the server cannot be reached (%s); waiting and "
                        "retrying (up to every %.0f s). Unacknowledged batches stay pending",
                        self.consumer,
                        exc,
                        self.max_backoff,
                    )
                wait = min(self.max_backoff, max(0.5, wait * 2))
                self._stop.wait(wait)
                continue
            if down_since is not None:
                _log.warning(
                    "redfeat worker %s: the server answers again after %.1f s; going on",
                    self.consumer,
                    time.monotonic() - down_since,
                )
                down_since, wait = None, 0.0
            done = (max_batches is not None and self.stats.batches >= max_batches) or (
                until_idle and got == 0
            )
            # the lag costs a command per stream: measured when idle, when done, and at
            # most twice a second while busy
            if done or got == 0 or time.monotonic() - self._lag_at >= 0.5:
                self._measure_lag()
            if on_progress is not None:
                on_progress(self.stats)
            if done:
                break
        return self.stats

    def _round(self, until_idle: bool) -> int:
        """One read of the streams (this consumer's own pending batches first, after a
        start or an outage), plus batches claimed from dead consumers; how many it took."""
        cluster = self._ctx.direct.cluster is not None
        if cluster and not until_idle:
            self._ring_on()  # before reading: a push after the read still rings
        own = self._own_first
        block = None if until_idle or own else self.block_ms
        claimed, pairs = self._read(
            own, None if cluster or block is None else min(block, self._read_block_ms)
        )
        got = 0
        for stream, entries in claimed:
            for entry_id, data in entries:
                if data is None:  # deleted from the stream meanwhile
                    continue
                self.stats.claimed += 1
                self._process(stream, entry_id, data)
                got += 1
        mine = 0
        for stream, entries in pairs:
            for entry_id, data in entries:
                if data is None:  # own pending entry deleted from the stream meanwhile
                    with wrap_redis(f"worker: acknowledging a batch of {stream!r} failed"):
                        self._ctx.client.xack(stream, self.group, entry_id)
                    continue
                self._process(stream, entry_id, data)
                got += 1
                mine += 1
        if own and mine == 0:
            self._own_first = False  # none left: on to new batches, in this same round
            return got + self._round(until_idle)
        if cluster and block and got == 0:
            self._wait_for_bell(block / 1000)
        return got

    def _read(self, own: bool, block: int | None) -> tuple[list[Any], list[Any]]:
        """(stream, entries) claimed from consumers idle past ``claim_idle``, and (stream,
        entries) read: this consumer's pending ones (``own``) or new ones."""
        client: Any = self._ctx.client  # redis-py's stream replies are loosely typed
        start = "0" if own else ">"
        names = list(self._streams)
        now = time.monotonic()
        claim = self._claim_at is None or now - self._claim_at >= min(
            1.0, self.claim_idle_ms / 1000
        )
        claiming = names if claim else []
        with wrap_redis("worker: reading the ingest streams failed"):
            if self._ctx.direct.cluster is None:
                claims: list[Any] = []
                if claiming:
                    pipe = client.pipeline(transaction=False)
                    for key in claiming:
                        pipe.xautoclaim(
                            key, self.group, self.consumer, self.claim_idle_ms, "0-0", count=10
                        )
                    claims = pipe.execute()
                # one node: one read of every stream, blocking until something comes
                reply = client.xreadgroup(
                    self.group, self.consumer, dict.fromkeys(names, start), count=10, block=block
                )
                pairs = _stream_pairs(reply)
            else:
                # a cluster: a command cannot span slots; each stream read on its own, the
                # commands of each node sent at once, the nodes at once. Woken by a push,
                # the streams it rang for alone (the next round reads them all again)
                hinted, self._hinted = self._hinted, set()
                reading = names
                if hinted and not own:
                    reading = [k for k in names if k in hinted]
                    claim, claiming = False, []
                claims, pairs = self._read_nodes(claiming, reading, start)
        claimed = list(zip(claiming, [c[1] if c else [] for c in claims], strict=True))
        if claim:
            # found some: claim again next round (there may be more), else in a while
            self._claim_at = None if any(entries for _, entries in claimed) else now
        return claimed, pairs

    def _read_nodes(
        self, claiming: list[str], reading: list[str], start: str
    ) -> tuple[list[Any], list[Any]]:
        """``_read`` on a cluster: XAUTOCLAIM and XREADGROUP per stream, raw replies."""
        g, me = self.group, self.consumer
        calls = [
            (k, ("XAUTOCLAIM", k, g, me, self.claim_idle_ms, "0-0", "COUNT", 10)) for k in claiming
        ] + [(k, ("XREADGROUP", "GROUP", g, me, "COUNT", 10, "STREAMS", k, start)) for k in reading]
        direct = self._ctx.direct
        try:
            replies = direct.pipelined(calls)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        except REDIRECTS:
            # a slot moved (resharding, a failover): the next round reads with the new map.
            # What a lost reply delivered stays pending to this consumer: the run loop
            # reads its own pending batches first
            direct.refresh()
            raise _Redirected from None
        claims = [[r[0], _entries(r[1])] for r in replies[: len(claiming)]]
        pairs = [
            (stream, _entries(entries))
            for reply in replies[len(claiming) :]
            # RESP3: {stream: entries}; RESP2: [[stream, entries]]
            for stream, entries in (reply.items() if isinstance(reply, dict) else reply or [])
        ]
        return claims, pairs

    def _ring_on(self) -> None:
        if self._bell is not None:
            return
        try:
            bell = self._ctx.client.pubsub(ignore_subscribe_messages=True)
            bell.subscribe(*[self._ctx.keys.ingest_bell(v) for v in self.views])
        except redis.RedisError:
            return  # no bell: the round waits out ``block`` instead
        self._bell = bell

    def _ring_off(self) -> None:
        bell, self._bell = self._bell, None
        if bell is not None:
            with contextlib.suppress(redis.RedisError):
                bell.close()

    def _wait_for_bell(self, seconds: float) -> None:
        """Until a push rings (or ``seconds`` pass, or stop()): the cluster's stand-in for
        a blocking read. Rings that came meanwhile are taken too, so they wake no one."""
        deadline = time.monotonic() + seconds
        bell = self._bell
        try:
            while bell is not None and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                msg = bell.get_message(timeout=min(left, 0.25))
                if msg is not None and msg.get("type") == "message":
                    while msg is not None:  # rings that came meanwhile: their streams too
                        self._hint(msg)
                        msg = bell.get_message(timeout=0)
                    return
        except redis.RedisError:
            self._ring_off()  # subscribed again on the next round
        self._stop.wait(max(0.0, min(0.2, deadline - time.monotonic())))

    def _hint(self, msg: Mapping[str, Any]) -> None:
        """The streams a push rang for (its message: the partitions it wrote to)."""
        parsed = self._ctx.keys.parse(_text(msg.get("channel", b"")))
        if parsed is None or parsed.name not in self.views:
            return
        for k in _text(msg.get("data", b"")).split(","):
            if k.isdigit() and int(k) < max(1, self._ctx.keys.partitions):
                self._hinted.add(self._ctx.keys.ingest(parsed.name, int(k)))

    def _process(self, stream: str, entry_id: Any, data: Mapping[Any, Any]) -> None:
        view, k = self._streams[_text(stream)]
        raw = data.get(b"rows") if b"rows" in data else data.get("rows")
        refused: list[tuple[dict[str, Any], str]] = []
        written = 0
        try:
            rows: list[dict[str, Any]] = msgspec.msgpack.decode(raw) if raw else []
            for row in rows:
                row[ET] = datetime.fromtimestamp(row[ET] / 1e6, UTC)
            report = self._writer.write_many(view, rows, event_time_column=ET, on_error="skip")
            refused = [(rows[i], str(err)) for i, err in report.refused]
            written = report.written + report.duplicates
        except BackendError:
            self._own_first = True  # the batch stays pending: read it again first
            raise  # the server is unreachable: leave the batch pending
        except Exception as exc:
            # A batch that fails as a whole must not block the group: write_many refuses
            # before it writes anything (a derived view's refusal is a row's refusal, with
            # its own error), so none of these rows is stored; each goes to the dead letters
            # with the error, then the batch is acknowledged.
            rows = msgspec.msgpack.decode(raw) if raw else []
            refused = [(r, f"{type(exc).__name__}: {exc}") for r in rows]
        with wrap_redis(f"worker: acknowledging a batch of {view!r} failed"):
            # the partition's dead letters share its stream's slot: one node, one step
            pipe = self._ctx.client.pipeline(transaction=False)
            for row, error in refused:
                bad = {key: v for key, v in row.items() if key != ET}
                pipe.xadd(
                    self._ctx.keys.dead_letters(view, k),
                    {"row": _encode(bad), "error": error, "entry": entry_id},
                    maxlen=100_000,
                    approximate=True,
                )
            pipe.xack(_text(stream), self.group, entry_id)
            pipe.execute()
        self.stats.rows += written
        self.stats.dead += len(refused)
        self.stats.batches += 1

    def _measure_lag(self) -> None:
        """Rows not yet read by the group, per view (summed over its partitions; -1 when
        the server cannot tell)."""
        names = list(self._streams)
        pipe = self._ctx.client.pipeline(transaction=False)
        for key in names:
            pipe.xinfo_groups(key)
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.RedisError:
            return
        self._lag_at = time.monotonic()
        lags: dict[str, int] = {}
        for key, groups in zip(names, replies, strict=True):
            if isinstance(groups, Exception):
                continue
            view = self._streams[key][0]
            for g in groups:
                name = g.get("name")
                if _text(name) == self.group:
                    lag = g.get("lag")
                    was = lags.get(view, 0)
                    lags[view] = -1 if lag is None or was < 0 else was + int(lag)
        self.stats.lag.update(lags)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _entries(raw: Any) -> list[tuple[Any, dict[Any, Any] | None]]:
    """Raw stream entries ``[[id, [field, value, ...] | nil], ...]`` as (id, {field: value})."""
    return [
        (
            e[0],
            e[1]
            if e[1] is None or isinstance(e[1], dict)
            else dict(zip(e[1][0::2], e[1][1::2], strict=True)),
        )
        for e in raw or []
    ]


class _Redirected(Exception):
    """A cluster node answered MOVED, ASK or TRYAGAIN to a worker's read (a slot moved);
    never leaves the worker."""


_REDIRECTS_BEFORE_OUTAGE = 100  # ~1 s of reads 10 ms apart, then 0.5 s waits


def _stream_pairs(reply: Any) -> list[Any]:
    """An XREADGROUP reply as [(stream, entries), ...] (RESP2: [[stream, entries], ...];
    RESP3: {stream: [entries]})."""
    if isinstance(reply, dict):
        return [(k, v[0] if v and isinstance(v[0], list) else v) for k, v in reply.items()]
    return list(reply or [])


def dead_letters(ctx: Ctx, view: str, limit: int = 100) -> list[dict[str, Any]]:
    """Rows refused by workers, oldest first (the ``limit`` oldest kept): {"row": ...,
    "error": ..., "entry": ...}. In a partitioned project the partitions' dead letters are
    merged by the time they were refused."""
    client: Any = ctx.client
    streams = ctx.keys.dead_letter_streams(view)
    with wrap_redis(f"view {view!r}: reading dead letters failed"):
        if len(streams) == 1:
            replies = [client.xrange(streams[0], count=limit)]
        else:
            pipe = client.pipeline(transaction=False)
            for key in streams:
                pipe.xrange(key, count=limit)
            replies = pipe.execute()
    entries = [e for reply in replies for e in reply or []]
    if len(streams) > 1:
        entries.sort(key=lambda e: tuple(int(p) for p in _text(e[0]).split("-")))
    out = []
    for _id, data in entries[:limit]:
        d = {_text(k): v for k, v in (data or {}).items()}
        out.append(
            {
                "row": msgspec.msgpack.decode(d["row"]),
                "error": _text(d["error"]),
                "entry": _text(d["entry"]),
            }
        )
    return out
