"""Versions: history of an entity, time travel (as-of reads)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import redis

from ._time import from_us, now_us, to_us
from .codec import Reader
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
                    if et <= at_us and ttl_ok(res, et, at_us):
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
            if ttl_ok(res, int(score), at_us):
                v = from_member(res, member, score, readers)
        out.append(v)
    return out
