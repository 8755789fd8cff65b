"""Stream ingestion: ``push`` raw rows to a per-view stream; workers in a consumer group
validate, transform (derived views) and write them, then acknowledge.

    rf:<project>:ingest:<view>   stream of pushed batches (field "rows": msgpack list of dicts)
    rf:<project>:dead:<view>     dead letters: rows that failed validation, with the error

Every pushed row gets its event time at push (unless it has one), so a batch replayed after
a crash writes the same (event time, values) again, which the write step recognises as the
same version: no duplicates. A crashed worker's unacknowledged batches are claimed by
another one (XAUTOCLAIM) once idle for ``claim_idle`` seconds.

A worker outlives server outages: while the server cannot be reached it waits (0.5 s,
doubling up to ``max_backoff``), says so in its log (``redfeat.worker``) when the outage
starts and ends, then goes on with its own unacknowledged batches first.
"""

from __future__ import annotations

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

from ..core.context import Ctx, Writer
from ..core.time import to_us
from ..errors import BackendError, ConfigurationError, backend_error, wrap_redis

ET = "__event_time_us"
PUSH_CHUNK = 500

_log = logging.getLogger("redfeat.worker")


def _enc_hook(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise NotImplementedError(f"cannot push a {type(obj).__name__}")


_encode = msgspec.msgpack.Encoder(enc_hook=_enc_hook).encode


def push(
    ctx: Ctx, view: str, rows: Iterable[Mapping[str, Any]], event_time_column: str | None
) -> int:
    """Append rows to the view's ingest stream; returns how many were pushed."""
    ctx.registry.get(view)
    now = to_us(datetime.now(UTC))
    batch: list[dict[str, Any]] = []
    n = 0
    key = ctx.keys.ingest(view)
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
        batch.append(item)
        n += 1
        if len(batch) == PUSH_CHUNK:
            pipe.xadd(key, {"rows": _encode(batch)})
            batch = []
    if batch:
        pipe.xadd(key, {"rows": _encode(batch)})
    try:
        pipe.execute()
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
    """Consumes ingest streams in a consumer group. ``run()`` until ``stop()``."""

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
        self.max_backoff = max_backoff
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._own_first = True  # read this consumer's unacknowledged batches before new ones
        for v in self.views:
            ctx.registry.get(v)
            try:
                ctx.client.xgroup_create(self._stream(v), group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise backend_error("cannot create the consumer group", exc) from exc

    def _stream(self, view: str) -> str:
        return self._ctx.keys.ingest(view)

    def _dead(self, view: str) -> str:
        return self._ctx.keys.dead_letters(view)

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
        down_since: float | None = None
        wait = 0.0
        while not self._stop.is_set():
            try:
                got = self._round(until_idle)
            except BackendError as exc:
                self._own_first = True  # what this consumer had read stays pending
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
            self._measure_lag()
            if on_progress is not None:
                on_progress(self.stats)
            if max_batches is not None and self.stats.batches >= max_batches:
                break
            if until_idle and got == 0:
                break
        return self.stats

    def _round(self, until_idle: bool) -> int:
        """One read of the streams (this consumer's own pending batches first, after a
        start or an outage), plus batches claimed from dead consumers; how many it took."""
        client: Any = self._ctx.client  # redis-py's stream replies are loosely typed
        got = 0
        for view in self.views:
            got += self._claim(view)
        own = self._own_first
        streams = {self._stream(v): "0" if own else ">" for v in self.views}
        block = None if until_idle or own else self.block_ms
        # on a cluster each view's stream is on its own slot: one read per stream, and a
        # blocking one only when there is one stream
        reads = (
            [streams] if self._ctx.direct.cluster is None else [{k: v} for k, v in streams.items()]
        )
        pairs: list[Any] = []
        with wrap_redis("worker: reading the ingest streams failed"):
            for part in reads:
                reply = client.xreadgroup(
                    self.group,
                    self.consumer,
                    part,
                    count=10,
                    block=block if len(reads) == 1 else None,
                )
                # RESP2: [[stream, entries], ...]; RESP3: {stream: [entries]}
                if isinstance(reply, dict):
                    pairs += [
                        (k, v[0] if v and isinstance(v[0], list) else v) for k, v in reply.items()
                    ]
                else:
                    pairs += reply or []
            if len(reads) > 1 and not any(entries for _, entries in pairs) and block:
                self._stop.wait(min(block, 200) / 1000)  # nothing anywhere: no busy loop
        mine = 0
        for stream, entries in pairs:
            parsed = self._ctx.keys.parse(stream)
            if parsed is None:
                continue
            view = parsed.name
            for entry_id, data in entries:
                if data is None:  # own pending entry deleted from the stream meanwhile
                    with wrap_redis(f"worker: acknowledging a batch of {view!r} failed"):
                        client.xack(self._stream(view), self.group, entry_id)
                    continue
                self._process(view, entry_id, data)
                got += 1
                mine += 1
        if own and mine == 0:
            self._own_first = False  # none left: on to new batches, in this same round
            return got + self._round(until_idle)
        return got

    def _claim(self, view: str) -> int:
        """Take over batches another consumer read but never acknowledged (it crashed)."""
        client: Any = self._ctx.client
        with wrap_redis("worker: claiming pending batches failed"):
            reply = client.xautoclaim(
                self._stream(view), self.group, self.consumer, self.claim_idle_ms, "0-0", count=10
            )
        entries = reply[1] if reply else []
        n = 0
        for entry_id, data in entries:
            if data is None:  # deleted from the stream meanwhile
                continue
            self.stats.claimed += 1
            self._process(view, entry_id, data)
            n += 1
        return n

    def _process(self, view: str, entry_id: Any, data: Mapping[Any, Any]) -> None:
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
            pipe = self._ctx.client.pipeline(transaction=False)
            for row, error in refused:
                bad = {k: v for k, v in row.items() if k != ET}
                pipe.xadd(
                    self._dead(view),
                    {"row": _encode(bad), "error": error, "entry": entry_id},
                    maxlen=100_000,
                    approximate=True,
                )
            pipe.xack(self._stream(view), self.group, entry_id)
            pipe.execute()
        self.stats.rows += written
        self.stats.dead += len(refused)
        self.stats.batches += 1

    def _measure_lag(self) -> None:
        for view in self.views:
            try:
                groups = self._ctx.client.xinfo_groups(self._stream(view))
            except redis.RedisError:
                continue
            for g in groups:
                name = g.get("name")
                if (name.decode() if isinstance(name, bytes) else name) == self.group:
                    lag = g.get("lag")
                    self.stats.lag[view] = int(lag) if lag is not None else -1


def dead_letters(ctx: Ctx, view: str, limit: int = 100) -> list[dict[str, Any]]:
    """Rows refused by workers, newest last: {"row": ..., "error": ..., "entry": ...}."""
    out = []
    client: Any = ctx.client
    with wrap_redis(f"view {view!r}: reading dead letters failed"):
        entries = client.xrange(ctx.keys.dead_letters(view), count=limit)
    for _id, data in entries:
        d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in (data or {}).items()}
        out.append(
            {
                "row": msgspec.msgpack.decode(d["row"]),
                "error": d["error"].decode() if isinstance(d["error"], bytes) else d["error"],
                "entry": d["entry"].decode() if isinstance(d["entry"], bytes) else d["entry"],
            }
        )
    return out
