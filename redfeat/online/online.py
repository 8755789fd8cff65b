"""The online store: writes (one atomic server step per entity) and latest-value reads."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any, cast

import redis

from ..core.codec import READ, Reader, encode, normalize_id
from ..core.columns import columns_of, encode_columns
from ..core.conn import Script
from ..core.context import Ctx, WriteObserver
from ..core.keys import escape_id
from ..core.records import Record, Status, Version, WriteReport, count_expired
from ..core.registry import Resolved
from ..core.schema import Field
from ..core.time import from_us, now_us, to_us
from ..errors import (
    ConfigurationError,
    ConflictError,
    Problem,
    ValidationError,
    backend_error,
    wrap_redis,
)
from . import lua as scripts
from .history import LATEST_HEAD, from_latest, get_many_as_of, read_chunks, ttl_ok
from .writer import Item, Writer, tally

CAS_RETRIES = 200

Progress = Callable[[int, int], None]
# Receives new versions once the server has them: (view, entity ids, event times in us,
# version ids, payloads). The offline log is one.


def _set_fields(res: Resolved, values: Any) -> list[str]:
    """The fields a write sets, in schema order (for change events)."""
    if not isinstance(values, Mapping):
        return []
    return [f for f in res.codec.fields if values.get(f) is not None]


def _event_us(view: str, entity: str | None, value: Any, row: int | None) -> int:
    try:
        return to_us(value, what="event_time")
    except ValueError as exc:
        raise ValidationError(
            [Problem(view, entity, None, "event_time", value, str(exc), row)]
        ) from None


def _prepare(
    res: Resolved,
    entity_id: Any,
    values: Any,
    event_time: Any,
    partial: bool = False,
    et_us: int | None = None,
) -> tuple[str, bytes, int]:
    """Check id, values and event time together, so one error lists every problem."""
    problems: list[Problem] = []
    ent: str | None = None
    try:
        ent = normalize_id(res.name, entity_id)
    except ValidationError as exc:
        problems.extend(exc.problems)
    arr, probs = res.codec.problems_for(ent if ent is not None else "?", values, partial=partial)
    problems.extend(probs)
    et = 0
    try:
        if et_us is not None:
            et = et_us
        else:
            et = now_us() if event_time is None else _event_us(res.name, ent, event_time, None)
    except ValidationError as exc:
        problems.extend(exc.problems)
    if problems or ent is None or arr is None:
        raise ValidationError(problems)
    return ent, encode(arr), et


def _version(res: Resolved, vid: int, et: int, payload: bytes) -> Version:
    # Values as stored (decoded from the payload), i.e. exactly what a read returns.
    return Version(vid, from_us(et), from_us(vid), res.codec.decode(payload))


def superseded(ids: list[Any], ets: list[int], problems: Mapping[int, Any]) -> dict[int, int]:
    """Rows of one call with the same entity and event time as a later row: the later one
    wins (last written wins), and sending only it keeps a retried or resent call from
    adding the earlier one again. Keys are indexes among the valid rows."""
    valid = [i for i in range(len(ids)) if i not in problems] if problems else None
    if len(set(ids)) == len(ids):
        return {}  # the usual case: one row per entity
    keys = [(ids[i], ets[i]) for i in (valid if valid is not None else range(len(ids)))]
    last = {key: k for k, key in enumerate(keys)}
    if len(last) == len(keys):
        return {}
    return {k: last[key] for k, key in enumerate(keys) if last[key] != k}


def _expand(
    flat: list[int], superseded: Mapping[int, int], progress: Callable[[int], None] | None
) -> list[int]:
    """The flat WRITE reply of the items sent, with the superseded items put back."""
    total = len(flat) // 2 + len(superseded)
    out = [0] * (2 * total)
    it = iter(range(0, len(flat), 2))
    for k in range(total):
        if k not in superseded:
            j = next(it)
            out[2 * k], out[2 * k + 1] = flat[j], flat[j + 1]
    for k, winner in superseded.items():
        out[2 * k], out[2 * k + 1] = out[2 * winner], 2
    if progress is not None:
        progress(len(superseded))
    return out


class Online:
    """Writes and latest reads for one project."""

    def __init__(
        self,
        ctx: Ctx,
        feed_cap: int = 100_000,
        *,
        feed_retention_ms: int = 0,
        observer: WriteObserver | None = None,
        confirm: Callable[[Any, str, str], AbstractContextManager[None]] | None = None,
    ) -> None:
        self.client = ctx.client
        self.keys = ctx.keys
        self.direct = ctx.direct
        self.writer = Writer(
            ctx.client,
            ctx.keys,
            ctx.direct,
            feed_cap,
            feed_retention_ms,
            confirm=confirm,
            payloads=ctx.registry.offline_attached,
        )
        self.delete_script = Script(scripts.DELETE)
        self._delete_version = ctx.client.register_script(scripts.DELETE_VERSION)
        self.observer = observer  # validators and profiles (store.quality)

    def run_logged(
        self,
        res: Resolved,
        items: Iterable[Item],
        *,
        mode: int = 0,
        progress: Callable[[int], None] | None = None,
        fields: Iterable[str] = (),
        superseded: Mapping[int, int] | None = None,
    ) -> list[int]:
        """Writer.run (the write step puts new versions in the change feed, which feeds
        the offline log: offline/feeder.py). ``superseded``: item index -> index of a later
        item of the same entity and event time; those are not sent and report that item's
        version as a duplicate (status 2)."""
        if superseded:
            sent = (it for k, it in enumerate(items) if k not in superseded)
            flat = self.run_logged(res, sent, mode=mode, progress=progress, fields=fields)
            return _expand(flat, superseded, progress)
        return self.writer.run(res, items, mode=mode, progress=progress, fields=fields)

    # -- writes -------------------------------------------------------------------------

    def write(
        self, res: Resolved, entity_id: Any, values: Mapping[str, Any], event_time: Any
    ) -> Version:
        ent, payload, et = _prepare(res, entity_id, values, event_time)
        if self.observer is not None:
            self.observer.check_row(res, ent, payload)
        vid, status = self.run_logged(
            res, [(escape_id(ent), et, payload, None)], fields=_set_fields(res, values)
        )
        return self._stored(res, vid, status, et, payload)

    def _stored(self, res: Resolved, vid: int, status: int, et: int, payload: bytes) -> Version:
        v = _version(res, vid, et, payload)
        if self.observer is not None and status in (0, 1):  # new data, not a retry or a drop
            self.observer.written(res, v, et)
        return v

    def write_many(
        self,
        res: Resolved,
        rows: Any,
        *,
        entity_column: str,
        event_time_column: str | None,
        on_error: str,
        progress: Progress | None,
    ) -> WriteReport:
        cols = columns_of(rows)
        q = self.observer
        out: dict[str, Any] = {}
        items, total, problems = encode_columns(
            res.codec,
            cols,
            entity_column=entity_column,
            event_time_column=event_time_column,
            custom=None if q is None else functools.partial(q.check_columns, res),
            out=out,
        )
        report = WriteReport(warnings=out["warnings"])
        if problems:
            if on_error == "raise":
                if q is not None:
                    q.refused(res.name, len(problems))
                raise ValidationError([p for i in sorted(problems) for p in problems[i]])
            report.refused = [(i, ValidationError(problems[i])) for i in sorted(problems)]
        done = 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        flat = self.run_logged(
            res,
            items,
            progress=step,
            fields=[f for f in res.codec.fields if f in cols.data],
            superseded=superseded(out["ids"], out["ets"], problems),
        )
        if q is not None:
            q.written_columns(res, out, problems, flat)
        report.expired = count_expired(res.view.ttl_us, out["ets"], problems, flat)
        return tally(report, flat)

    def _cas(
        self,
        res: Resolved,
        entity_id: Any,
        event_time: Any,
        merge: Callable[[dict[str, Any] | None], dict[str, Any]],
        fields: Iterable[str],
    ) -> Version:
        """Read, compute new values, write only if the latest did not change meanwhile.

        Without an event time the new version is stamped now, or at the latest's event time
        if that is later (a clock behind the data must not turn an increment into late data).
        With one, the values are merged into the version as of that time, so that a
        correction of the past never carries values from its future."""
        ent = normalize_id(res.name, entity_id)
        esc = escape_id(ent)
        key = self.keys.latest(res.name, esc)
        at = None if event_time is None else _event_us(res.name, ent, event_time, None)
        for _ in range(CAS_RETRIES):
            with wrap_redis(f"view {res.name!r}: read failed"):
                cur = cast(bytes | None, self.client.get(key))
            cur_et = LATEST_HEAD.unpack_from(cur)[0] if cur else None
            if at is not None and cur_et is not None and at < cur_et:
                # a correction of the past: merge into the version as of then
                (past,) = get_many_as_of(self.client, self.keys, res, [ent], at, res.codec.reader)
                current = None if past is None else past.values
                et = at
            else:
                fresh = cur is not None and cur_et is not None and ttl_ok(res, cur_et)
                current = from_latest(res, cur).values if fresh and cur else None
                now = now_us()
                et = at if at is not None else now if cur_et is None else max(now, cur_et)
            merged = merge(current)
            _, payload, et = _prepare(res, ent, merged, None, et_us=et)
            if self.observer is not None:
                self.observer.check_row(res, ent, payload)
            vid, status = self.run_logged(
                res, [(esc, et, payload, cur or b"")], mode=1, fields=fields
            )
            if status != 3:
                return self._stored(res, vid, status, et, payload)
        raise ConflictError(
            f"view {res.name!r}, entity {ent!r}: the latest value kept changing during "
            f"{CAS_RETRIES} attempts; retry later or reduce contention on this entity"
        )

    def update(
        self, res: Resolved, entity_id: Any, values: Mapping[str, Any], event_time: Any
    ) -> Version:
        # Check the partial row on its own first, so its problems are reported as given.
        _prepare(res, entity_id, values, event_time, partial=True)

        def merge(current: dict[str, Any] | None) -> dict[str, Any]:
            return {**(current or {}), **values}

        return self._cas(
            res, entity_id, event_time, merge, [f for f in res.codec.fields if f in values]
        )

    def increment(
        self, res: Resolved, entity_id: Any, deltas: Mapping[str, Any], event_time: Any
    ) -> Version:
        problems: list[Problem] = []
        ent: str | None = None
        try:
            ent = normalize_id(res.name, entity_id)
        except ValidationError as exc:
            problems.extend(exc.problems)
        for name, d in deltas.items():
            fld: Field | None = res.codec.fields.get(name)
            if fld is None or name not in res.codec.numeric:
                rule = "unknown_field" if fld is None else "not_numeric"
                msg = (
                    f"view {res.name!r} has no field {name!r}"
                    if fld is None
                    else f"field {name!r} is {fld.dtype!r}; increment needs Int or Float"
                )
                problems.append(Problem(res.name, ent, name, rule, d, msg))
            elif isinstance(d, bool) or not isinstance(d, int | float) or not math.isfinite(d):
                problems.append(
                    Problem(
                        res.name, ent, name, "type", d, "increment must be a finite int or float"
                    )
                )
            elif isinstance(d, float) and fld.dtype.kind == "Int":
                problems.append(
                    Problem(res.name, ent, name, "type", d, "Int fields take int increments")
                )
        if problems:
            raise ValidationError(problems)

        def merge(current: dict[str, Any] | None) -> dict[str, Any]:
            new = dict(current or {})
            for name, d in deltas.items():
                new[name] = (new.get(name) or 0) + d
            return new

        return self._cas(
            res, entity_id, event_time, merge, [f for f in res.codec.fields if f in deltas]
        )

    # -- deletes ------------------------------------------------------------------------

    def delete(self, res: Resolved, entity_id: Any) -> bool:
        """Remove an entity's keys and record a delete event, in one server step."""
        esc = escape_id(normalize_id(res.name, entity_id))
        keys = [
            self.keys.latest(res.name, esc),
            self.keys.history(res.name, esc),
            self.keys.feed(res.name, self.keys.partition(esc)),
        ]
        channel = self.keys.channel(res.name) if self.writer.feed_cap else ""

        def step() -> int:
            conn = self.direct.conn(keys[0])
            try:
                with self.writer.confirming(conn, keys[0] if self.direct.cluster else None):
                    bounds = self.writer.feed_bounds
                    (n,) = self.delete_script.stream(conn, [(keys, [channel, bounds])])
            except BaseException:
                conn.disconnect()
                raise
            return int(n)

        try:
            # a repeated delete finds nothing more to remove (and records no event)
            gone = bool(self.direct.retrying(step, what=f"view {res.name!r}: delete"))
            self.client.unlink(self.keys.tags(res.name, esc))  # names of versions now gone
        except redis.RedisError as exc:
            raise backend_error(f"view {res.name!r}: delete failed", exc) from exc
        return gone

    def delete_version(self, res: Resolved, entity_id: Any, version_id: int) -> bool:
        """Remove one version (the newest remaining one becomes the latest if it was the
        latest) and the tags naming it, in one server step. Whether it was there."""
        if isinstance(version_id, bool) or not isinstance(version_id, int) or version_id <= 0:
            raise ConfigurationError(
                f"view {res.name!r}: a version id is a positive int (Version.id), "
                f"got {version_id!r:.60}"
            )
        esc = escape_id(normalize_id(res.name, entity_id))
        keys = [
            self.keys.latest(res.name, esc),
            self.keys.history(res.name, esc),
            self.keys.tags(res.name, esc),
        ]
        with wrap_redis(f"view {res.name!r}: deleting version {version_id} failed"):
            return bool(self._delete_version(keys=keys, args=[version_id, res.ttl_ms]))

    # -- reads --------------------------------------------------------------------------

    def get_many(
        self,
        res: Resolved,
        entity_ids: list[Any],
        features: list[str] | None,
        with_meta: bool,
    ) -> list[Any]:
        readers = res.codec.select(features)
        ents = [normalize_id(res.name, e, i, outcome=READ) for i, e in enumerate(entity_ids)]
        latest, name = self.keys.latest, res.name
        keys = [latest(name, escape_id(e)) for e in ents]
        if not keys:
            return []
        try:  # not wrap_redis: a context manager costs ~5% of a one-entity read
            blobs = self.direct.mget(keys)
        except redis.RedisError as exc:
            raise backend_error(f"view {name!r}: read failed", exc) from exc
        return self.decode_latest(res, ents, blobs, readers, with_meta)

    def decode_latest(
        self,
        res: Resolved,
        ents: list[str],
        blobs: list[bytes | None],
        readers: Reader,
        with_meta: bool = False,
    ) -> list[Any]:
        """Typed values (or Records) from the latest blobs of ``ents``; ttl applied."""
        ttl = res.view.ttl_us
        limit = now_us() - ttl if ttl is not None else None
        decode = res.codec.decode
        unpack = LATEST_HEAD.unpack_from
        if not with_meta:
            out: list[Any] = []
            for blob in blobs:
                if blob is None or (limit is not None and unpack(blob)[0] < limit):
                    out.append(None)
                else:
                    out.append(decode(memoryview(blob)[16:], readers))
            return out
        records: list[Record] = []
        missing: list[int] = []
        for i, blob in enumerate(blobs):
            if blob is None:
                records.append(Record(ents[i], Status.MISSING, None, None))
                missing.append(i)
                continue
            et = unpack(blob)[0]
            if limit is not None and et < limit:
                records.append(Record(ents[i], Status.EXPIRED, from_us(et), None))
            else:
                values = decode(memoryview(blob)[16:], readers)
                records.append(Record(ents[i], Status.PRESENT, from_us(et), values))
        if missing and ttl is not None and res.hist_mode != "n":
            # The latest key expired with its ttl; history still says the entity existed.
            # A chunk starts with its newest event time: 8 bytes are enough.
            hkeys = [self.keys.history(res.name, escape_id(ents[i])) for i in missing]
            with wrap_redis(f"view {res.name!r}: read failed"):
                pipe = self.client.pipeline(transaction=False)
                for hkey in hkeys:
                    pipe.getrange(hkey, 0, 7)
                heads = read_chunks(self.client, hkeys, pipe.execute(raise_on_error=False))
            for i, head in zip(missing, heads, strict=True):
                if head:
                    et = int.from_bytes(head[:8], "big", signed=True)
                    records[i] = Record(ents[i], Status.EXPIRED, from_us(et), None)
        return records
