"""Versions: history of an entity, time travel (as-of reads)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis

from . import scripts
from ._conn import Direct, Script
from ._time import MAX_US, MIN_US, from_us, now_us, to_us
from .arrowio import versions_table
from .codec import Reader, decode
from .errors import BackendError, Problem, ValidationError
from .keys import Keys, escape_id
from .registry import Resolved

_HEAD = struct.Struct(">qQ")  # latest value: event_time_us, version id
_ID = struct.Struct(">Q")  # history member: version id


@dataclass(frozen=True, slots=True)
class Version:
    """One stored version of an entity's features."""

    id: int
    event_time: datetime
    written_at: datetime
    values: dict[str, Any]


def as_of_us(view: str, as_of: Any) -> int:
    try:
        return to_us(as_of, what="as_of")
    except ValueError as exc:
        raise ValidationError(
            [Problem(view, None, None, "as_of", as_of, str(exc))], outcome="nothing was read"
        ) from None


def from_member(
    res: Resolved, member: bytes, score: float, readers: Reader | None = None
) -> Version:
    (vid,) = _ID.unpack_from(member)
    return Version(
        vid,
        from_us(int(score)),
        from_us(vid),
        res.codec.decode(memoryview(member)[8:], readers),
    )


def from_latest(res: Resolved, blob: bytes, readers: Reader | None = None) -> Version:
    et, vid = _HEAD.unpack_from(blob)
    return Version(vid, from_us(et), from_us(vid), res.codec.decode(memoryview(blob)[16:], readers))


def ttl_ok(res: Resolved, et_us: int, at_us: int | None = None) -> bool:
    ttl = res.view.ttl_us
    if ttl is None:
        return True
    return et_us >= (now_us() if at_us is None else at_us) - ttl


def history(
    client: redis.Redis, keys: Keys, res: Resolved, entity: str, limit: int
) -> list[Version]:
    """Versions of one entity, newest event time first (ties: last written first)."""
    esc = escape_id(entity)
    try:
        if res.hist_mode == "n":
            blob = cast(bytes | None, client.get(keys.latest(res.name, esc)))
            return [from_latest(res, blob)] if blob else []
        rows = cast(
            list[tuple[bytes, float]],
            client.zrevrange(keys.history(res.name, esc), 0, limit - 1, withscores=True),
        )
    except redis.RedisError as exc:
        raise BackendError(f"view {res.name!r}: reading history failed: {exc}") from exc
    return [from_member(res, m, s) for m, s in rows]


def get_many_as_of(
    client: redis.Redis,
    keys: Keys,
    res: Resolved,
    entities: list[str],
    at_us: int,
    readers: Reader,
    *,
    apply_ttl: bool = True,
) -> list[Version | None]:
    """For each entity, the version with the greatest event time <= at_us (ttl applies)."""
    out: list[Version | None] = []
    try:
        if res.hist_mode == "n":
            blobs = cast(
                list[bytes | None],
                client.mget([keys.latest(res.name, escape_id(e)) for e in entities]),
            )
            for blob in blobs:
                v = None
                if blob:
                    et, _ = _HEAD.unpack_from(blob)
                    if et <= at_us and (not apply_ttl or ttl_ok(res, et, at_us)):
                        v = from_latest(res, blob, readers)
                out.append(v)
            return out
        pipe = client.pipeline(transaction=False)
        for e in entities:
            pipe.zrevrangebyscore(
                keys.history(res.name, escape_id(e)), at_us, "-inf", start=0, num=1, withscores=True
            )
        replies = pipe.execute()
    except redis.RedisError as exc:
        raise BackendError(f"view {res.name!r}: time-travel read failed: {exc}") from exc
    for rows in replies:
        v = None
        if rows:
            member, score = rows[0]
            if not apply_ttl or ttl_ok(res, int(score), at_us):
                v = from_member(res, member, score, readers)
        out.append(v)
    return out


DUMP_CHUNK = 500  # entities per DUMP call


class Dumper:
    """Bulk reads of stored versions, one msgpack blob per chunk of entities."""

    def __init__(self, keys: Keys, direct: Direct) -> None:
        self.keys = keys
        self.direct = direct
        self.script = Script(scripts.DUMP)

    def versions(
        self,
        res: Resolved,
        entities: Sequence[str],
        *,
        start_us: int | None = None,
        end_us: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> pa.Table:
        """Every stored version of ``entities`` (event time in [start, end]) as an Arrow table."""
        name = res.name
        latest_only = res.hist_mode == "n"
        key = self.keys.latest if latest_only else self.keys.history
        lo = "-inf" if start_us is None else str(start_us)
        hi = "+inf" if end_us is None else str(end_us)
        chunks = [entities[i : i + DUMP_CHUNK] for i in range(0, len(entities), DUMP_CHUNK)]
        calls = (
            ([key(name, escape_id(e)) for e in chunk], ["l" if latest_only else "h", lo, hi])
            for chunk in chunks
        )
        done = 0

        def step(_reply: Any) -> None:
            nonlocal done
            done = min(done + DUMP_CHUNK, len(entities))
            if progress is not None:
                progress(done, len(entities))

        try:
            blobs = self.script.stream(self.direct.conn(), calls, step)
        except redis.RedisError as exc:
            self.direct.conn().disconnect()
            raise BackendError(f"view {name!r}: reading versions failed: {exc}") from exc
        ent_idx: list[int] = []
        ets: list[int] = []
        vids: list[int] = []
        payloads: list[list[Any]] = []
        base = 0
        for chunk, blob in zip(chunks, blobs, strict=True):
            rows = decode(blob)
            if rows:
                idx, et, vid, vals = zip(*rows, strict=True)
                ent_idx.extend(i + base - 1 for i in idx)
                ets.extend(et)
                vids.extend(vid)
                payloads.extend(vals)
            base += len(chunk)
        ids = pa.array(entities, pa.string()).take(pa.array(ent_idx, pa.int64()))
        table = versions_table(res.view, res.codec.slots, ids, ets, vids, payloads)
        if latest_only and (start_us is not None or end_us is not None):
            et_us = pc.cast(table["event_time"], pa.int64())
            keep = pc.and_(
                pc.greater_equal(et_us, start_us if start_us is not None else MIN_US),
                pc.less_equal(et_us, end_us if end_us is not None else MAX_US),
            )
            table = table.filter(keep)
        return table


def find_version(
    client: redis.Redis, keys: Keys, res: Resolved, entity: str, version_id: int
) -> Version | None:
    """One version by id (a scan of the entity's history, which is bounded by the view)."""
    for v in history(client, keys, res, entity, limit=1 << 30):
        if v.id == version_id:
            return v
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    return bool(a == b)


def diff_values(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Fields set only in new (added), only in old (removed), or set in both but different."""
    added = {k: v for k, v in new.items() if v is not None and old.get(k) is None}
    removed = {k: v for k, v in old.items() if v is not None and new.get(k) is None}
    modified = {
        k: (old[k], v)
        for k, v in new.items()
        if v is not None and old.get(k) is not None and not _same(old[k], v)
    }
    return {"added": added, "removed": removed, "modified": modified}
