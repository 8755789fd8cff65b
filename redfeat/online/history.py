"""Versions: history of an entity, time travel (as-of reads)."""

from __future__ import annotations

import struct
from typing import Any, cast

import numpy as np
import redis

from ..core.args import text
from ..core.codec import Reader
from ..core.conn import mget
from ..core.keys import Keys, escape_id
from ..core.records import Version
from ..core.registry import Resolved
from ..core.time import from_us, now_us, to_us
from ..errors import ConfigurationError, NotFoundError, Problem, ValidationError, wrap_redis

LATEST_HEAD = struct.Struct(">qQ")  # latest value: event_time_us, version id
_ID = struct.Struct(">xQ")  # history member: 0xCF, version id (see scripts.py)


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
        res.codec.decode(memoryview(member)[9:], readers),
    )


def from_latest(res: Resolved, blob: bytes, readers: Reader | None = None) -> Version:
    et, vid = LATEST_HEAD.unpack_from(blob)
    return Version(vid, from_us(et), from_us(vid), res.codec.decode(memoryview(blob)[16:], readers))


def ttl_ok(res: Resolved, et_us: int, at_us: int | None = None) -> bool:
    ttl = res.view.ttl_us
    if ttl is None:
        return True
    return et_us >= (now_us() if at_us is None else at_us) - ttl


def _merged(
    res: Resolved, blob: bytes | None, rows: list[tuple[bytes, float]], limit: int
) -> list[Version]:
    """The latest value and history's versions (newest first) as one list, newest first.

    The latest version has the greatest (event time, id) of all, so it comes first; it is
    in history too for a view with a ttl (and for data written before history stopped
    holding it twice): then it is not repeated."""
    out = [from_member(res, m, s) for m, s in rows]
    if blob:
        top = from_latest(res, blob)
        if not out or out[0].id != top.id:
            out.insert(0, top)
    return out[:limit]


def history(
    client: redis.Redis, keys: Keys, res: Resolved, entity: str, limit: int
) -> list[Version]:
    """Versions of one entity, newest event time first (ties: last written first)."""
    esc = escape_id(entity)
    with wrap_redis(f"view {res.name!r}: reading history failed"):
        if res.hist_mode == "n":
            blob = cast(bytes | None, client.get(keys.latest(res.name, esc)))
            return [from_latest(res, blob)] if blob else []
        pipe = client.pipeline(transaction=False)
        pipe.get(keys.latest(res.name, esc))
        pipe.zrevrange(keys.history(res.name, esc), 0, limit - 1, withscores=True)
        blob, rows = pipe.execute()
    return _merged(res, blob, rows, limit)


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
    with wrap_redis(f"view {res.name!r}: time-travel read failed"):
        if res.hist_mode == "n":
            # MGET split by slot (the cluster client's mget_nonatomic is plain MGET on one node)
            latest = [keys.latest(res.name, escape_id(e)) for e in entities]
            blobs = cast(list[bytes | None], mget(client, latest))
            for blob in blobs:
                v = None
                if blob:
                    et, _ = LATEST_HEAD.unpack_from(blob)
                    if et <= at_us and (not apply_ttl or ttl_ok(res, et, at_us)):
                        v = from_latest(res, blob, readers)
                out.append(v)
            return out
        pipe = client.pipeline(transaction=False)
        for e in entities:
            esc = escape_id(e)
            pipe.zrevrangebyscore(
                keys.history(res.name, esc), at_us, "-inf", start=0, num=1, withscores=True
            )
            pipe.get(keys.latest(res.name, esc))
        replies = pipe.execute()
    for rows, blob in zip(replies[0::2], replies[1::2], strict=True):
        v = None
        # The latest version is the newest of all: in force at at_us if it had happened by
        # then; otherwise history's newest version up to at_us is.
        et = LATEST_HEAD.unpack_from(blob)[0] if blob else None
        if et is not None and et <= at_us:
            if not apply_ttl or ttl_ok(res, et, at_us):
                v = from_latest(res, blob, readers)
        elif rows:
            member, score = rows[0]
            if not apply_ttl or ttl_ok(res, int(score), at_us):
                v = from_member(res, member, score, readers)
        out.append(v)
    return out


def find_version(
    client: redis.Redis, keys: Keys, res: Resolved, entity: str, version_id: int
) -> Version | None:
    """One version by id (a scan of the entity's history, which is bounded by the view)."""
    for v in history(client, keys, res, entity, limit=1 << 30):
        if v.id == version_id:
            return v
    return None


MAX_TAG = 256


def check_tag(view: str, tag: object) -> str:
    if isinstance(tag, str):
        text(f"view {view!r}: tag", tag)
    if not isinstance(tag, str) or not tag or len(tag.encode()) > MAX_TAG:
        raise ConfigurationError(
            f"view {view!r}: a tag is a non-empty str of at most {MAX_TAG} bytes "
            f"(e.g. 'v2'), got {tag!r:.60}"
        )
    return tag


def set_tag(
    client: redis.Redis, keys: Keys, res: Resolved, entity: str, tag: str, vid: int
) -> None:
    """Name version ``vid`` of an entity ``tag`` (a later tag of that name moves it)."""
    with wrap_redis(f"view {res.name!r}, entity {entity!r}: tagging a version failed"):
        client.hset(keys.tags(res.name, escape_id(entity)), tag, vid)


def tagged(client: redis.Redis, keys: Keys, res: Resolved, entity: str, tag: str) -> Version:
    """The version an entity's ``tag`` names (NotFoundError if none, or no longer kept)."""
    with wrap_redis(f"view {res.name!r}, entity {entity!r}: reading a tag failed"):
        raw = cast(bytes | None, client.hget(keys.tags(res.name, escape_id(entity)), tag))
    found = None if raw is None else find_version(client, keys, res, entity, int(raw))
    if found is None:
        raise NotFoundError(
            f"view {res.name!r}, entity {entity!r}: no version tagged {tag!r} "
            + ("(never tagged)" if raw is None else f"(version {int(raw)} is no longer kept)")
        )
    return found


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


def version_at(client: redis.Redis, keys: Keys, res: Resolved, entity: str, ref: Any) -> Version:
    """A version by id (int), or the one in force at a time (as-of, ttl not applied)."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        found = find_version(client, keys, res, entity, ref)
        if found is None:
            raise NotFoundError(
                f"view {res.name!r}, entity {entity!r}: no version {ref} (never written, or "
                "trimmed by the view's history setting)"
            )
        return found
    at = as_of_us(res.name, ref)
    (found_at,) = get_many_as_of(client, keys, res, [entity], at, res.codec.reader, apply_ttl=False)
    if found_at is None:
        raise NotFoundError(f"view {res.name!r}, entity {entity!r}: no version as of {ref!r}")
    return found_at
