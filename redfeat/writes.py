"""The write verbs behind the facade: one write goes to the online store (one atomic
server step per entity), then to its materialised derived views, and the near cache forgets
what it held of those entities.

Derived views are checked before anything is written (a row they refuse is refused with
the source row), and a writer holds a lease while it writes a source that has them
(``transforms.derived.Leases``), so that a process killed between a source version and its
derived versions leaves a span of the change feed that ``Recovery`` derives again: at the
next store open, and from any process writing in bulk (the stream worker) within about a
minute. With ``durability`` kept by WAITAOF, each call is acknowledged once fsynced.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import redis

from .core.context import Ctx
from .core.durability import Durability
from .core.embedded import pid_alive
from .core.records import Status, Version, WriteReport
from .core.registry import Resolved
from .errors import (
    ConfigurationError,
    FeedTrimmedError,
    NotFoundError,
    Problem,
    RedfeatError,
    ValidationError,
    wrap_redis,
)
from .online.events import trimmed_after
from .online.online import Online, Progress
from .quality.service import Monitor
from .realtime.cache import Cache
from .transforms.derived import (
    LEASE_TIMEOUT_MS,
    Deriver,
    Leases,
    lease_field,
    source_frame,
    with_event_time,
)

_log = logging.getLogger("redfeat.derived")

RECOVER_EVERY = 15.0  # s: how often a bulk writer looks for dead leases
LOCK_MS = 60_000  # the catch-up lock's ttl, renewed per batch
CHUNK = 1000  # entities per catch-up batch


class Writes:
    """write, write_many, update, increment, delete, and what each entails."""

    def __init__(
        self,
        ctx: Ctx,
        online: Online,
        deriver: Deriver,
        cache: Cache | None,
        monitor: Monitor,
        durability: Durability,
    ) -> None:
        self._ctx = ctx
        self._online = online
        self._deriver = deriver
        self._cache = cache
        self._monitor = monitor
        self._durability = durability
        self.leases = Leases(ctx)
        self.recovery = Recovery(ctx, online, deriver, self.leases)
        self._looked = time.monotonic()

    # -- durability -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _confirmed(self) -> Iterator[None]:
        """Around one write call: once it returns, confirm its fsync where the promised
        durability needs WAITAOF (this thread's raw connection carried the writes). On a
        cluster the writer confirms each node's part itself, on that node."""
        if self._ctx.direct.cluster is not None:
            yield
            return
        conn = self._ctx.direct.conn()
        mark = self._durability.mark(conn)
        yield
        self._durability.confirm(conn, mark, self._ctx.keys.durability)

    def sync(self) -> None:
        """Confirm the fsync of writes made on the client's pool (push, window events); on
        a cluster on every master, in parallel (each with a barrier on one of its slots)."""
        direct = self._ctx.direct
        if direct.cluster is None:
            self._durability.sync(self._ctx.client, self._ctx.keys.durability)
            return
        if not self._durability.confirms:
            return
        names = [str(n.name) for n in direct.cluster.get_primaries()]  # type: ignore[no-untyped-call]
        barriers: dict[str, str] = {}
        n = 0
        while len(barriers) < len(names) and n < 100_000:
            key = self._ctx.keys.durability_slot(n)
            barriers.setdefault(direct.node_of(key), key)
            n += 1

        def node(name: str) -> None:
            key = barriers[name]
            direct.retrying(
                lambda: self._durability.confirm_node(direct.conn(key), key),
                what="confirming the fsync (WAITAOF)",
            )

        direct.parallel(node, [m for m in names if m in barriers])

    # -- the verbs ------------------------------------------------------------------------

    def write(
        self, view: str, entity_id: str | int, values: Mapping[str, Any], event_time: Any
    ) -> Version:
        res, deps = self._deriver.writable(view)
        with self._confirmed():
            if not deps:
                with self._monitor.refusals(view):
                    version = self._online.write(res, entity_id, values, event_time)
                self._forget(res, deps, entity_id)
                return version
            stored = self._stored_form(res, entity_id, values)
            pre = self._check_derived(res, deps, entity_id, stored)
            with self.leases.hold():
                with self._monitor.refusals(view):
                    version = self._online.write(res, entity_id, values, event_time)
                # the derived values of exactly these stored values: computed already
                self._after_write(res, deps, entity_id, version, pre)
        return version

    def update(
        self, view: str, entity_id: str | int, values: Mapping[str, Any], event_time: Any
    ) -> Version:
        res, deps = self._deriver.writable(view)
        with self._confirmed():
            if deps:
                current = self._current(res, entity_id) or {}
                self._check_derived(res, deps, entity_id, {**current, **values})
            with self.leases.hold() if deps else contextlib.nullcontext():
                with self._monitor.refusals(view):
                    version = self._online.update(res, entity_id, values, event_time)
                self._after_write(res, deps, entity_id, version)
        return version

    def increment(
        self, view: str, entity_id: str | int, deltas: Mapping[str, int | float], event_time: Any
    ) -> Version:
        res, deps = self._deriver.writable(view)
        with self._confirmed():
            if deps:
                current = dict(self._current(res, entity_id) or {})
                for name, d in deltas.items():
                    if isinstance(d, int | float) and isinstance(
                        current.get(name) or 0, int | float
                    ):
                        current[name] = (current.get(name) or 0) + d
                self._check_derived(res, deps, entity_id, current)
            with self.leases.hold() if deps else contextlib.nullcontext():
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
        self._maybe_recover()
        if not deps:
            with self._confirmed():
                report = self._online.write_many(
                    res,
                    rows,
                    entity_column=entity_column,
                    event_time_column=event_time_column,
                    on_error=on_error,
                    progress=progress,
                )
            self.forget_cached(view, deps)
            return report
        frame_like = type(rows).__module__.split(".")[0] in ("pandas", "pyarrow")
        if not isinstance(rows, list) and not frame_like:
            rows = list(rows)  # read twice: for the source, then for its derived views
        if event_time_column is None:
            rows, event_time_column = with_event_time(rows)
        with self._confirmed():
            report = self._write_with_derived(
                res, deps, rows, entity_column, event_time_column, on_error, progress
            )
        self.forget_cached(view, deps)
        return report

    def _write_with_derived(
        self,
        res: Resolved,
        deps: list[Resolved],
        rows: Any,
        entity_column: str,
        event_time_column: str,
        on_error: str,
        progress: Progress | None,
    ) -> WriteReport:
        """Derive first: a row a derived view refuses is refused before anything is
        written; then the source rows, then the derived rows of those it stored."""
        frame = self._source_frame(res, rows)
        derived: dict[str, Any] = {}
        refused: dict[int, list[Problem]] = {}
        for dep in deps:
            if entity_column not in frame or event_time_column not in frame:
                break  # the source's own check names the missing column
            derived[dep.name], problems = self._deriver.checked_frame(
                dep, frame, entity_column, event_time_column
            )
            for i, probs in problems.items():
                refused.setdefault(i, []).extend(probs)
        if refused:
            # A row the source itself refuses is reported with the source's reasons.
            own = self._source_problems(
                res, _take(rows, sorted(refused)), entity_column, event_time_column
            )
            for j, i in enumerate(sorted(refused)):
                if own.get(j):
                    refused[i] = own[j]
            if on_error == "raise":
                others = self._source_problems(res, rows, entity_column, event_time_column)
                every = {**others, **refused}
                self._monitor.refused(res.name, len(every))
                raise ValidationError([p for i in sorted(every) for p in every[i]])
            self._monitor.refused(res.name, len(refused))
        keep = [i for i in range(len(frame)) if i not in refused]
        with self.leases.hold() as beat:

            def step(done: int, total: int) -> None:
                beat()
                if progress is not None:
                    progress(done, total)

            report = self._online.write_many(
                res,
                rows if not refused else _take(rows, keep),
                entity_column=entity_column,
                event_time_column=event_time_column,
                on_error=on_error,
                progress=step,
            )
            source_refused = {keep[i] for i, _ in report.refused}
            report.refused = sorted(
                [(keep[i], err) for i, err in report.refused]
                + [(i, ValidationError(p)) for i, p in refused.items()],
                key=lambda r: r[0],
            )
            stored = [i for i in keep if i not in source_refused]
            for dep in deps:
                if dep.name not in derived or not stored:
                    continue
                rows_of_dep = derived[dep.name].iloc[stored]
                try:
                    self._online.write_many(
                        dep,
                        rows_of_dep,
                        entity_column=entity_column,
                        event_time_column=event_time_column,
                        on_error="raise",
                        progress=lambda _d, _t: beat(),
                    )
                except ValidationError as exc:  # checked above: only a race gets here
                    raise ValidationError(
                        exc.problems,
                        outcome=f"the {len(stored)} source rows of view {res.name!r} were "
                        f"stored; derived view {dep.name!r} refused these rows and was not "
                        "written (the next catch-up tries again)",
                    ) from exc
        return report

    def _source_frame(self, res: Resolved, rows: Any) -> Any:
        """The rows as a pandas frame (index 0..n-1) with every field of the source view:
        a field a row leaves out is null, as the source stores it."""
        frame = source_frame(rows)
        missing = [f for f in res.codec.fields if f not in frame.columns]
        if missing:
            frame = frame.reindex(columns=[*frame.columns, *missing])
        return frame

    def _source_problems(
        self, res: Resolved, rows: Any, entity_column: str, event_time_column: str
    ) -> dict[int, list[Problem]]:
        from .core.columns import validate

        report = validate(
            res.codec, rows, entity_column=entity_column, event_time_column=event_time_column
        )
        out: dict[int, list[Problem]] = {}
        for p in report.problems:
            if p.row is not None:
                out.setdefault(p.row, []).append(p)
        return out

    def delete(self, view: str, entity_id: str | int) -> bool:
        res = self._ctx.registry.get(view)
        deps = self._ctx.registry.dependents(view)
        with self._confirmed(), self.leases.hold() if deps else contextlib.nullcontext():
            # the source first: a crash in between leaves a delete event in its feed, from
            # which the catch-up removes the derived values too
            gone = self._online.delete(res, entity_id)
            for dep in deps:
                self._online.delete(dep, entity_id)
        if self._cache is not None:
            for name in [view, *(d.name for d in deps)]:
                self._cache.invalidate(name, str(entity_id))
        return gone

    @contextlib.contextmanager
    def deriving(self, deps: list[Resolved]) -> Iterator[None]:
        """Hold the lease (when there are derived views) around a write of a source done
        elsewhere (import_frame), and confirm its durability."""
        with self._confirmed(), self.leases.hold() if deps else contextlib.nullcontext():
            yield

    # -- what a write entails -----------------------------------------------------------

    def _stored_form(self, res: Resolved, entity_id: Any, values: Mapping[str, Any]) -> Any:
        """The values as the source will store them (typed, every field), or the input if
        the source refuses it (its own error then says why)."""
        from .core.codec import encode

        arr, problems = res.codec.problems_for(str(entity_id), values)
        if problems or arr is None:
            return None
        return res.codec.decode(encode(arr))

    def _current(self, res: Resolved, entity_id: Any) -> dict[str, Any] | None:
        try:
            (got,) = self._online.get_many(res, [entity_id], None, False)
        except ValidationError:
            return None  # a bad id: the write itself says so
        return got  # type: ignore[no-any-return]

    def _check_derived(
        self, res: Resolved, deps: list[Resolved], entity_id: Any, values: Any
    ) -> dict[str, dict[str, Any]] | None:
        """Refuse, before anything is written, a row that a derived view refuses; else
        the derived values by view (None when the source refuses the row itself)."""
        if values is None:
            return None
        row = {f: values.get(f) for f in res.codec.fields}  # as stored: every field
        problems: list[Problem] = []
        out: dict[str, dict[str, Any]] = {}
        for dep in deps:
            derived, probs = self._deriver.checked_values(dep, row, str(entity_id))
            problems += probs
            if derived is not None:
                out[dep.name] = derived
        if problems:
            self._monitor.refused(res.name)
            raise ValidationError(problems)
        return out

    def _forget(self, res: Resolved, deps: list[Resolved], entity_id: Any) -> None:
        if self._cache is not None:
            for name in [res.name, *(d.name for d in deps)]:
                self._cache.invalidate(name, str(entity_id))

    def _after_write(
        self,
        res: Resolved,
        deps: list[Resolved],
        entity_id: Any,
        version: Version,
        pre: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        """Forget cached values of the entity (here and in derived views) and write the
        derived views of the new version, with its event time (``pre``: derived values
        already computed from exactly the stored values)."""
        self._forget(res, deps, entity_id)
        if version.id == 0:
            return  # late data a latest-only view dropped: nothing to derive from
        for dep in deps:
            if pre is not None and dep.name in pre:
                self._online.write(dep, entity_id, pre[dep.name], version.event_time)
                continue
            values, problems = self._deriver.checked_values(dep, version.values, str(entity_id))
            if problems or values is None:
                # checked before the write: only a concurrent change of the entity (update,
                # increment) gets here
                raise ValidationError(
                    problems,
                    outcome=f"view {res.name!r}, entity {str(entity_id)!r}: version "
                    f"{version.id} was stored; derived view {dep.name!r} refused it and "
                    "keeps its previous value",
                )
            self._online.write(dep, entity_id, values, version.event_time)

    def derive_bulk(
        self,
        deps: list[Resolved],
        rows: Any,
        entity_column: str,
        event_time_column: str,
        report: WriteReport,
    ) -> None:
        """Write the derived views of the rows a backfill (import_frame) accepted."""
        frame = source_frame(rows)
        if report.refused:
            frame = frame.drop(index=frame.index[[i for i, _ in report.refused]])
            frame = frame.reset_index(drop=True)
        for dep in deps:
            derived, problems = self._deriver.checked_frame(
                dep, frame, entity_column, event_time_column
            )
            if problems:
                _log.warning(
                    "redfeat: derived view %r refused %d backfilled row(s); first: %s",
                    dep.name,
                    len(problems),
                    problems[min(problems)][0],
                )
                derived = derived.drop(index=sorted(problems))
            self._online.write_many(
                dep,
                derived,
                entity_column=entity_column,
                event_time_column=event_time_column,
                on_error="skip",
                progress=None,
            )

    def forget_cached(self, view: str, deps: list[Resolved]) -> None:
        """After a bulk write: drop the cached values of the view and its derived views
        (cheaper than finding each written id)."""
        if self._cache is not None:
            for name in [view, *(d.name for d in deps)]:
                self._cache.clear(name)

    # -- catching up ----------------------------------------------------------------------

    def _maybe_recover(self) -> None:
        """From a process writing in bulk (the stream worker, an HTTP server): look for dead
        writers' leases every RECOVER_EVERY seconds and catch their spans up."""
        if time.monotonic() - self._looked < RECOVER_EVERY:
            return
        self._looked = time.monotonic()
        try:
            self.recovery.run()
        except RedfeatError as exc:  # a catch-up that fails must not fail this write
            _log.warning("redfeat: catching derived views up failed (tried again later): %s", exc)

    def close(self) -> None:
        self.leases.release()


def _take(rows: Any, index: list[int]) -> Any:
    """Some rows of a list of dicts, pandas.DataFrame or pyarrow.Table, in that order."""
    mod = type(rows).__module__
    if mod.startswith("pandas"):
        return rows.iloc[index]
    if mod.startswith("pyarrow"):
        import pyarrow as pa

        return rows.take(pa.array(index, pa.int64()))
    return [rows[i] for i in index]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Recovery:
    """Derive again what dead writers left underived.

    ``run()``: (1) a lease whose writer is gone (same host and its pid is not alive, or
    silent for LEASE_TIMEOUT_MS) becomes one pending span per source view with derived
    views, "<since>:<now>" in server ms, in one atomic step; (2) every pending span whose
    transforms this process can compute is derived again: the change feed gives the
    entities and versions written in the span, and each source version without a derived
    version written after it (same entity, same event time) gets one. Where the feed no
    longer reaches back (trimmed, or ``feed_cap=0``) the whole derived view is caught up
    instead. Spans and backfills stay pending until done, so a crash of the catch-up
    itself is caught up in turn."""

    def __init__(self, ctx: Ctx, online: Online, deriver: Deriver, leases: Leases) -> None:
        self._ctx = ctx
        self._online = online
        self._deriver = deriver
        self._leases = leases

    def run(self) -> int:
        """Claim dead leases, then catch up what is pending; the derived versions written."""
        self.claim()
        return self.catch_up()

    def claim(self) -> int:
        """Turn dead writers' leases into pending spans; how many were claimed."""
        ctx = self._ctx
        key = ctx.keys.derive
        with wrap_redis("reading derived-view leases failed"):
            raw = ctx.client.hgetall(key)
            leases = {_text(f)[2:]: _text(v) for f, v in raw.items() if _text(f).startswith("L:")}
            if not leases:
                return 0
            sec, usec = ctx.client.time()
        now = sec * 1000 + usec // 1000
        host = socket.gethostname()
        claimed = 0
        for token, value in leases.items():
            if token == self._leases.token:
                continue
            since, _, beat = value.partition(":")
            who, _, rest = token.partition("|")
            pid = rest.partition("|")[0]
            gone = who == host and pid.isdigit() and not pid_alive(int(pid))
            if not gone and now - int(beat) <= LEASE_TIMEOUT_MS:
                continue
            sources = [v.name for v in ctx.registry.views() if ctx.registry.dependents(v.name)]
            spans = {f"P:{src}|{token}": f"{since}:{now}" for src in sources}
            if self._swap(lease_field(token), value, spans):
                claimed += 1
                _log.warning(
                    "redfeat: writer %s stopped while writing views with derived views; "
                    "their derived versions since server time %s ms are caught up",
                    token,
                    since,
                )
        return claimed

    def _swap(self, field: str, expected: str | None, new: Mapping[str, str]) -> bool:
        """Atomically: if ``field`` holds ``expected`` (None: any value, it must exist),
        delete it and set ``new``; False if someone else changed it first."""
        key = self._ctx.keys.derive
        pipe: Any
        what = "updating derived-view catch-up state failed"
        with wrap_redis(what), self._ctx.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                cur = pipe.hget(key, field)
                if cur is None or (expected is not None and _text(cur) != expected):
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.hdel(key, field)
                if new:
                    pipe.hset(key, mapping=dict(new))
                pipe.execute()
            except redis.WatchError:
                return False
        return True

    def pending(self) -> dict[str, str]:
        """Pending work: ``P:<source>|<writer>`` spans and ``B:<view>`` backfills."""
        with wrap_redis("reading derived-view catch-up state failed"):
            raw = self._ctx.client.hgetall(self._ctx.keys.derive)
        return {_text(f): _text(v) for f, v in raw.items() if _text(f).startswith(("P:", "B:"))}

    def catch_up(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Derive every pending span and backfill this process can; returns the derived
        versions written. Another process already at it: nothing (it holds the lock)."""
        pending = self.pending()
        if not pending:
            return 0
        client, lock = self._ctx.client, self._ctx.keys.derive_lock
        token = self._leases.token
        with wrap_redis("taking the derived-view catch-up lock failed"):
            if not client.set(lock, token, nx=True, px=LOCK_MS):
                return 0
        written = 0
        try:
            for field, value in sorted(pending.items()):
                done = self._one(field, value, progress)
                if done is None:
                    continue
                written += done
                self._swap(field, value, {})
                with wrap_redis("renewing the derived-view catch-up lock failed"):
                    client.pexpire(lock, LOCK_MS)
        finally:
            with contextlib.suppress(RedfeatError, redis.RedisError):
                if _text(client.get(lock) or b"") == token:
                    client.delete(lock)
        return written

    def _one(
        self, field: str, value: str, progress: Callable[[int, int], None] | None
    ) -> int | None:
        """One pending item; None if this process cannot do it (a custom transform it
        does not have), leaving it for another."""
        registry = self._ctx.registry
        kind, name = field[0], field[2:]
        try:
            if kind == "B":
                dep = registry.get(name)
                if dep.view.source is None or dep.view.on_read:
                    return 0  # no longer a materialised derived view
                src = registry.get(dep.view.source)
                deps = [dep]
            else:
                src = registry.get(name.partition("|")[0])
                deps = registry.dependents(src.name)
            for dep in deps:
                self._deriver.transforms(dep.view)
        except NotFoundError as exc:
            if "transform" in str(exc):
                _log.warning("redfeat: cannot catch %s up in this process: %s", name, exc)
                return None
            return 0  # the view is gone: nothing to catch up
        except ConfigurationError as exc:
            _log.warning("redfeat: cannot catch %s up in this process: %s", name, exc)
            return None
        if not deps:
            return 0
        if value in ("all", "force"):
            return self.backfill(src, deps, force=value == "force", progress=progress)
        lo, _, hi = value.partition(":")
        return self._span(src, deps, int(lo), int(hi))

    def _span(self, src: Resolved, deps: list[Resolved], lo_ms: int, hi_ms: int) -> int:
        """The source writes of [lo_ms, hi_ms] (server time), from the change feed."""
        from .core.time import to_us
        from .online.events import changes

        ctx = self._ctx
        if not self._online.writer.feed_cap or self._trimmed(src, lo_ms):
            return self.backfill(src, deps, force=False)
        wrote: dict[str, set[int]] = {}
        deleted: set[str] = set()
        start = f"{max(lo_ms - 1, 0)}-18446744073709551615"
        # in a partitioned project, the same point in every partition's feed
        cursor: str | None = ",".join([start] * max(1, ctx.keys.partitions))
        hi_us = (hi_ms + 1) * 1000
        while True:
            try:
                events, nxt = changes(ctx.client, ctx.keys, src.name, cursor, 5000)
            except FeedTrimmedError:  # trimmed while being read: catch the whole view up
                return self.backfill(src, deps, force=False)
            if not events:
                break
            for ev in events:
                if ev.written_at is not None and to_us(ev.written_at) > hi_us:
                    break
                if ev.kind == "delete":
                    deleted.add(ev.entity_id)
                    wrote.pop(ev.entity_id, None)
                else:
                    wrote.setdefault(ev.entity_id, set()).add(ev.version_id)
                    deleted.discard(ev.entity_id)
            else:
                cursor = nxt
                continue
            break
        n = 0
        ents = sorted(wrote)
        for first in range(0, len(ents), CHUNK):
            chunk = ents[first : first + CHUNK]
            n += self.derive_versions(src, deps, chunk, {e: wrote[e] for e in chunk})
        if deleted:
            n += self._deleted(src, deps, sorted(deleted))
        return n

    def _trimmed(self, src: Resolved, lo_ms: int) -> bool:
        """Whether the feed (any partition's) may have lost entries from lo_ms on."""
        for feed in self._ctx.keys.feeds(src.name):
            try:
                info = self._ctx.client.xinfo_stream(feed)
            except redis.ResponseError:
                continue  # no feed at all: nothing was written since it was removed
            except redis.RedisError as exc:
                raise RedfeatError(
                    f"view {src.name!r}: reading its change feed failed: {exc}"
                ) from exc
            if trimmed_after(info, f"{max(lo_ms - 1, 0)}-{(1 << 64) - 1}") is not None:
                return True
        return False

    def _deleted(self, src: Resolved, deps: list[Resolved], ents: list[str]) -> int:
        """Entities deleted in the span: their derived values go too if the source has
        nothing of them now (a writer killed between the two deletes)."""
        have = self._online.get_many(src, list(ents), None, True)
        gone = [r.entity_id for r in have if r.status == Status.MISSING]
        for dep in deps:
            for e in gone:
                self._online.delete(dep, e)
        return len(gone) * len(deps)

    def backfill_views(
        self,
        views: Mapping[str, bool],
        *,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> int:
        """Backfill derived views (name -> force: derive every version again); each is
        marked pending first, so that a backfill cut short resumes at the next catch-up."""
        marks = {"B:" + name: "force" if force else "all" for name, force in views.items()}
        with wrap_redis("recording a derived-view backfill failed"):
            self._ctx.client.hset(self._ctx.keys.derive, mapping=dict(marks.items()))
        n = 0
        for field, value in marks.items():
            name = field[2:]
            step = None if progress is None else functools.partial(progress, name)
            done = self._one(field, value, step)
            if done is None:  # not computable here: left pending, said in the log
                continue
            n += done
            self._swap(field, value, {})
        return n

    def backfill(
        self,
        src: Resolved,
        deps: list[Resolved],
        *,
        force: bool,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Every entity of the source: each stored version without its derived version
        gets one (``force``: every version is derived again: the transforms changed)."""
        from .online.scan import entities_of

        ents = entities_of(self._ctx, src)
        n = 0
        if progress is not None:
            progress(0, len(ents))
        for first in range(0, len(ents), CHUNK):
            chunk = ents[first : first + CHUNK]
            n += self.derive_versions(src, deps, chunk, None, force=force)
            with contextlib.suppress(redis.RedisError):
                self._ctx.client.pexpire(self._ctx.keys.derive_lock, LOCK_MS)
            if progress is not None:
                progress(min(first + CHUNK, len(ents)), len(ents))
        return n

    def derive_versions(
        self,
        src: Resolved,
        deps: list[Resolved],
        ents: list[str],
        only: Mapping[str, set[int]] | None,
        *,
        force: bool = False,
    ) -> int:
        """Derive the stored versions of ``ents`` (``only``: just these version ids) that
        a derived view lacks, i.e. has no version of the entity at the same event time
        written after the source version, and would keep (its own history setting).
        Returns the derived versions written."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        from .offline.dump import Dumper

        dumper = Dumper(self._ctx.keys, self._ctx.direct)
        table = dumper.versions(src, ents)  # by entity, then (event time, version id)
        if not table.num_rows:
            return 0
        ids = table["entity_id"].to_pylist()
        ets = pc.cast(table["event_time"], pa.int64()).to_pylist()
        vids = table["version_id"].to_pylist()
        # per row: how many newer versions the entity has, and its newest event time
        back = [0] * len(ids)
        newest: dict[str, int] = {}
        seen: dict[str, int] = {}
        for i in range(len(ids) - 1, -1, -1):
            e = ids[i]
            back[i] = seen.get(e, 0)
            seen[e] = back[i] + 1
            newest.setdefault(e, ets[i])
        wanted = None if only is None else {(e, v) for e, vs in only.items() for v in vs}
        n = 0
        for dep in deps:
            derived_at: dict[tuple[str, int], int] = {}
            derived_latest: dict[str, int] = {}
            if not force:
                have = dumper.versions(dep, ents)
                for e, et, vid in zip(
                    have["entity_id"].to_pylist(),
                    pc.cast(have["event_time"], pa.int64()).to_pylist(),
                    have["version_id"].to_pylist(),
                    strict=True,
                ):
                    derived_at[(e, et)] = max(derived_at.get((e, et), 0), vid)
                    derived_latest[e] = max(derived_latest.get(e, et), et)
            keep = []
            for i, e in enumerate(ids):
                et = ets[i]
                if dep.hist_mode == "c":
                    kept = back[i] < max(dep.hist_value, 1)
                elif dep.hist_mode == "d":
                    kept = et >= newest[e] - dep.hist_value
                else:  # latest only: the newest version is all it keeps
                    kept = back[i] == 0 and et >= derived_latest.get(e, et)
                keep.append(
                    kept
                    and (wanted is None or (e, vids[i]) in wanted)
                    and derived_at.get((e, et), 0) <= vids[i]
                )
            rows = table.filter(pa.array(keep, pa.bool_()))
            if not rows.num_rows:
                continue
            frame = rows.drop_columns(["written_at", "version_id"]).to_pandas()
            derived, problems = self._deriver.checked_frame(dep, frame, "entity_id", "event_time")
            if problems:
                _log.warning(
                    "redfeat: derived view %r refuses %d stored source version(s) of %r; first: %s",
                    dep.name,
                    len(problems),
                    src.name,
                    problems[min(problems)][0],
                )
                derived = derived.drop(index=sorted(problems))
            # oldest first, so that the newest of each entity ends as its latest
            order = np.argsort(derived["event_time"].to_numpy(), kind="stable")
            report = self._online.write_many(
                dep,
                derived.iloc[order],
                entity_column="entity_id",
                event_time_column="event_time",
                on_error="skip",
                progress=None,
            )
            n += report.written
        return n
