"""The online store: writes (one atomic server step per entity) and latest-value reads."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast

import redis

from ..core.codec import READ, Reader, encode, normalize_id
from ..core.columns import columns_of, encode_columns
from ..core.conn import Script
from ..core.context import Ctx, WriteObserver
from ..core.keys import escape_id, unescape_id
from ..core.records import Record, Status, Version, WriteReport, count_expired
from ..core.registry import Resolved
from ..core.schema import Field
from ..core.time import from_us, now_us, to_us
from ..errors import (
    ConflictError,
    Problem,
    ValidationError,
    backend_error,
    wrap_redis,
)
from . import lua as scripts
from .history import LATEST_HEAD, from_latest, get_many_as_of, ttl_ok
from .writer import Item, Writer, tally

CAS_RETRIES = 200

Progress = Callable[[int, int], None]
# Receives new versions once the server has them: (view, entity ids, event times in us,
# version ids, payloads). The offline log is one.
LogHook = Callable[[Resolved, list[str], list[int], list[int], list[bytes]], None]


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


class Online:
    """Writes and latest reads for one project."""

    def __init__(
        self,
        ctx: Ctx,
        feed_cap: int = 100_000,
        *,
        observer: WriteObserver | None = None,
        log: LogHook | None = None,
        replicate: Callable[[Any], None] | None = None,
    ) -> None:
        self.client = ctx.client
        self.keys = ctx.keys
        self.direct = ctx.direct
        self.writer = Writer(ctx.client, ctx.keys, ctx.direct, feed_cap, replicate)
        self.delete_script = Script(scripts.DELETE)
        self.log = log  # new versions go there too (the offline log)
        self.observer = observer  # validators and profiles (store.quality)

    def run_logged(
        self,
        res: Resolved,
        items: Iterable[Item],
        *,
        mode: int = 0,
        progress: Callable[[int], None] | None = None,
        fields: Iterable[str] = (),
    ) -> list[int]:
        """Writer.run, then hand the new versions to the log (if any)."""
        log = self.log
        if log is None:
            return self.writer.run(res, items, mode=mode, progress=progress, fields=fields)
        seen: list[Item] = []

        def recording(it: Iterable[Item]) -> Iterator[Item]:
            for x in it:
                seen.append(x)
                yield x

        flat = self.writer.run(res, recording(items), mode=mode, progress=progress, fields=fields)
        new = [i for i, s in enumerate(flat[1::2]) if s in (0, 1)]
        if new:
            log(
                res,
                [unescape_id(seen[i][0]) for i in new],
                [seen[i][1] for i in new],
                [flat[2 * i] for i in new],
                [seen[i][2] for i in new],
            )
        return flat

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
            res, items, progress=step, fields=[f for f in res.codec.fields if f in cols.data]
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
                (n,) = self.delete_script.stream(conn, [(keys, [channel, self.writer.feed_cap])])
                if self.writer.replicate is not None:
                    self.writer.replicate(conn)
            except BaseException:
                conn.disconnect()
                raise
            return int(n)

        try:
            # a repeated delete finds nothing more to remove (and records no event)
            return bool(self.direct.retrying(step, what=f"view {res.name!r}: delete"))
        except redis.RedisError as exc:
            raise backend_error(f"view {res.name!r}: delete failed", exc) from exc

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
        with wrap_redis(f"view {name!r}: read failed"):
            blobs = self.direct.mget(keys)
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
            with wrap_redis(f"view {res.name!r}: read failed"):
                pipe = self.client.pipeline(transaction=False)
                for i in missing:
                    pipe.zrevrange(
                        self.keys.history(res.name, escape_id(ents[i])), 0, 0, withscores=True
                    )
                replies = pipe.execute()
            for i, rows in zip(missing, replies, strict=True):
                if rows:
                    records[i] = Record(ents[i], Status.EXPIRED, from_us(int(rows[0][1])), None)
        return records
