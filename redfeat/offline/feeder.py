"""The offline log fed durably from the change feed: a consumer group per view's feed.

Every write step puts its new versions in the view's feed inside the same atomic step as
the write, so what the server acknowledged is in the feed, whatever happens to the writer
afterwards. Payloads come with them once an offline log is attached to the project
(Registry.attach_offline, at FeatureStore(offline_dir=) and ``redfeat offline run``); the
versions of entries written before, or by a writer that had not yet re-read the registry,
are read from Redis by (entity, version id). The feeder reads each feed with the consumer group
``offline`` (consumer ``log``), writes a batch's versions as Parquet files named after the
batch's first entry id, then acknowledges the entries (XACK):

- killed before the files are renamed into place: the entries stay pending, a restart reads
  them again (pending first, same batch) and writes the same files;
- killed after the rename, before XACK: the restart finds the files already there (same
  names) and only acknowledges. Nothing is lost, nothing is written twice.

Entries trimmed from under the group before it read them (a feed cap, the feeder down for
long) are a gap: the feeder says so loudly (a warning, ``gaps`` in ``stats()``) and
resyncs the view from Redis history, every version kept there, into the log (readers drop
the overlap on (entity_id, version_id)). Run it as a thread of the store
(``FeatureStore(offline_dir=...)``) or as its own process, ``redfeat offline run DIR``:
both are the same class. One log directory per project: two processes feeding different
directories would split the entries between them.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pyarrow as pa

from ..core.codec import decode
from ..core.context import Ctx
from ..core.registry import Resolved
from ..errors import RedfeatError
from ..online import events
from ..online.scan import entities_of
from ..timeseries.tiles import EVENT
from .arrow import TS, versions_table
from .dump import Dumper
from .log import EVENTS, OfflineLog

GROUP = events.OFFLINE_GROUP
CONSUMER = "log"
BATCH = 5_000  # feed entries per batch (each entry holds up to 256 versions)
_log = logging.getLogger("redfeat.offline")


class LogFeeder:
    """Reads every view's feed with a consumer group and writes the versions to ``log``."""

    def __init__(self, ctx: Ctx, log: OfflineLog, *, batch: int = BATCH) -> None:
        self._ctx = ctx
        self.log = log
        self.batch = batch
        self._ready: set[str] = set()  # views whose group exists and pending entries redone
        self.gaps = 0
        self.written = 0
        self.errors: list[Exception] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one step at a time (thread, drain, close)

    # -- one pass ----------------------------------------------------------------------

    def step(self, view: str) -> int:
        """Log one batch of the view's feed; the number of entries it took."""
        with self._lock:
            return self._step(view)

    def _step(self, view: str) -> int:
        ctx = self._ctx
        if view in ctx.registry.window_specs():
            return self._step_window(view)
        res = ctx.registry.get(view)
        pending = view not in self._ready
        if pending:
            events.ensure_group(ctx.client, ctx.keys, view, GROUP)
            self._check_gap(view)
        batch = events.read_group(
            ctx.client, ctx.keys, view, GROUP, CONSUMER, count=self.batch, pending=pending,
        )  # fmt: skip
        if pending and not batch.ids:
            self._ready.add(view)
            return self._step(view)
        if batch.gap:
            self._resync(view, "entries were trimmed before they were logged")
        if batch.versions:
            vs = [v for v in batch.versions if v.payload is not None]
            table = versions_table(
                res.view,
                res.codec.slots,
                [v.entity_id for v in vs],
                [v.event_us for v in vs],
                [v.version_id for v in vs],
                [decode(v.payload) for v in vs if v.payload is not None],
            )
            bare = [v for v in batch.versions if v.payload is None]
            if bare:
                table = pa.concat_tables([table, self._from_redis(res, bare)])
            self.log.write_named(res.view, table, batch.ids[0].replace("-", "_").replace("/", "."))
            self.written += table.num_rows
        if batch.deletes:
            # readers leave out every version of these entities written before the delete,
            # as Redis no longer has them (and compaction drops them from the files)
            self.log.write_deletes(
                view,
                pa.table(
                    {
                        "entity_id": pa.array([e for e, _ in batch.deletes], pa.string()),
                        "deleted_at": pa.array([at for _, at in batch.deletes]).cast(TS),
                    }
                ),
                batch.ids[0].replace("-", "_").replace("/", "."),
            )
        events.ack(ctx.client, ctx.keys, view, GROUP, batch.ids)
        return len(batch.ids)

    def _from_redis(self, res: Resolved, bare: list[events.FeedVersion]) -> pa.Table:
        """The versions of feed entries written without payloads (no offline log was
        attached yet, or the writer did not know yet), read from Redis by (entity, id):
        one bulk read of the entities' versions in the event-time span of those wanted
        (not whole histories: a batch's versions are mostly recent). Versions Redis no
        longer keeps (trimmed by history, or replaced in a view without history) are a
        gap, said so."""
        ctx = self._ctx
        ents = sorted({v.entity_id for v in bare})
        lo, hi = min(v.event_us for v in bare), max(v.event_us for v in bare)
        kept = Dumper(ctx.keys, ctx.direct).versions(res, ents, start_us=lo, end_us=hi)
        want = {(v.entity_id, v.version_id) for v in bare}
        pairs = zip(kept["entity_id"].to_pylist(), kept["version_id"].to_pylist(), strict=True)
        found = [i for i, p in enumerate(pairs) if p in want]
        missing = len(want) - len(found)
        if missing:
            self.gaps += 1
            _log.warning(
                "offline log, view %r: %d version(s) written before the offline log was "
                "attached are no longer kept in Redis; they are not in the log",
                res.name,
                missing,
            )
        return kept.take(pa.array(found, pa.int64()))

    def _step_window(self, name: str) -> int:
        """One batch of a window features' feed: the events counted, as EVENTS rows."""
        ctx = self._ctx
        pending = name not in self._ready
        if pending:
            events.ensure_group(ctx.client, ctx.keys, name, GROUP)
            if events.group_state(ctx.client, ctx.keys, name, GROUP)["gap"]:
                self._gap(name, "the feed was trimmed past events the log had not read")
        batch = events.read_window_group(
            ctx.client, ctx.keys, name, GROUP, CONSUMER, count=self.batch, pending=pending
        )
        if pending and not batch.ids:
            self._ready.add(name)
            return self._step_window(name)
        if batch.gap:
            self._gap(name, "events were trimmed before they were logged")
        if batch.events:
            hop = int(ctx.registry.window_specs()[name]["hop_ms"])
            ents: list[str] = []
            times: list[np.ndarray] = []
            values: list[np.ndarray] = []
            for ent, bucket, blob in batch.events:
                ev = np.frombuffer(blob, EVENT)
                ents += [ent] * len(ev)
                times.append((bucket * hop + ev["o"].astype(np.int64)) * 1000)
                values.append(ev["v"])
            n = len(ents)
            # "<ms>-<seq>", or "p<partition>.<ms>-<seq>" on a cluster
            first_ms = int(batch.ids[0].rpartition(".")[2].partition("-")[0])
            table = pa.table(
                {
                    "entity_id": pa.array(ents, pa.string()),
                    "event_time": pa.array(np.concatenate(times)).cast(TS),
                    "value": pa.array(np.concatenate(values)),
                    "written_at": pa.array(np.full(n, first_ms * 1000)).cast(TS),
                    "seq": pa.array(np.arange(n, dtype=np.int64)),
                },
                schema=EVENTS,
            )
            self.log.write_events(name, table, batch.ids[0].replace("-", "_").replace("/", "."))
            self.written += n
        events.ack(ctx.client, ctx.keys, name, GROUP, batch.ids)
        return len(batch.ids)

    def _gap(self, name: str, why: str) -> None:
        self.gaps += 1
        _log.warning(
            "offline log, window features %r: %s; those events are not in the log (raise the "
            "feed cap or keep the feeder running)",
            name,
            why,
        )

    def _check_gap(self, view: str) -> None:
        state = events.group_state(self._ctx.client, self._ctx.keys, view, GROUP)
        if state["gap"]:
            self._resync(view, "the feed was trimmed past entries the log had not read")

    def _resync(self, view: str, why: str) -> None:
        """Every version Redis history keeps of the view, into the log."""
        ctx = self._ctx
        mark = str(time.time_ns() // 1000)
        self.gaps += 1
        _log.warning(
            "offline log, view %r: %s; resyncing the log from Redis history (versions "
            "history no longer keeps are not in the log: raise the feed cap or keep the "
            "feeder running)",
            view,
            why,
        )
        res = ctx.registry.get(view)
        table = Dumper(ctx.keys, ctx.direct).versions(res, entities_of(ctx, res))
        if table.num_rows:
            self.log.write_named(res.view, table, f"resync_{mark}")

    # -- running -----------------------------------------------------------------------

    def views(self) -> list[str]:
        """Views and window features: every feed the log reads."""
        self._ctx.registry.load()
        names = [v.name for v in self._ctx.registry.views()]
        return names + sorted(self._ctx.registry.window_specs())

    def drain(self) -> int:
        """Log everything the feeds hold now; the number of entries taken."""
        total = 0
        for view in self.views():
            while n := self.step(view):
                total += n
        return total

    def run(self, stop: threading.Event | None = None, idle: float = 0.2) -> None:
        """Feed the log until ``stop`` is set (or forever)."""
        stop = stop or self._stop
        while not stop.is_set():
            try:
                busy = sum(self.step(v) for v in self.views())
            except Exception as exc:  # the server away, a view deleted meanwhile: go on
                _log.warning("offline log: a feed could not be logged yet (%s); trying again", exc)
                self.errors.append(exc)
                del self.errors[:-20]
                busy = 0
            if not busy:
                stop.wait(idle)

    def start(self) -> LogFeeder:
        """Run in a daemon thread of this process."""
        self._thread = threading.Thread(target=self.run, name="redfeat-offline", daemon=True)
        self._thread.start()
        return self

    def close(self, drain: bool = True) -> None:
        """Stop the thread; with ``drain``, log what the feeds hold first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if drain:
            try:
                self.drain()
            except RedfeatError as exc:  # the server gone: what is left stays in the feed
                _log.warning("offline log: could not drain the feed on close: %s", exc)

    def counters(self) -> dict[str, int]:
        """What this feeder did: versions written to Parquet, gaps resynced from history."""
        return {"versions_written": self.written, "gaps": self.gaps}
