"""Versions: history of an entity, time travel (as-of reads)."""

from __future__ import annotations

import gc
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis

from ..core.codec import Reader, decode
from ..core.conn import Direct, pack
from ..core.keys import Keys, escape_id
from ..core.registry import Resolved
from ..core.time import MAX_US, MIN_US, from_us, now_us, to_us
from ..errors import BackendError, NotFoundError, Problem, ValidationError
from ..offline.arrow import empty_versions, versions_table

_HEAD = struct.Struct(">qQ")  # latest value: event_time_us, version id
_ID = struct.Struct(">xQ")  # history member: 0xCF, version id (see scripts.py)


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
        res.codec.decode(memoryview(member)[9:], readers),
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
        if not rows:  # written while the view kept no history: the latest is all there is
            blob = cast(bytes | None, client.get(keys.latest(res.name, esc)))
            return [from_latest(res, blob)] if blob else []
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
            esc = escape_id(e)
            pipe.zrevrangebyscore(
                keys.history(res.name, esc), at_us, "-inf", start=0, num=1, withscores=True
            )
            pipe.get(keys.latest(res.name, esc))
        replies = pipe.execute()
    except redis.RedisError as exc:
        raise BackendError(f"view {res.name!r}: time-travel read failed: {exc}") from exc
    for rows, blob in zip(replies[0::2], replies[1::2], strict=True):
        v = None
        if rows:
            member, score = rows[0]
            if not apply_ttl or ttl_ok(res, int(score), at_us):
                v = from_member(res, member, score, readers)
        elif blob:
            # written while the view kept no history: the latest value is all there is
            et, _ = _HEAD.unpack_from(blob)
            if et <= at_us and (not apply_ttl or ttl_ok(res, et, at_us)):
                v = from_latest(res, blob, readers)
        out.append(v)
    return out


DUMP_CHUNK = 500  # entities per pipelined batch


class Dumper:
    """Bulk reads of stored versions: pipelined ZRANGEBYSCORE (or MGET for latest-only
    views) on a raw connection, turned into an Arrow table a batch at a time."""

    def __init__(self, keys: Keys, direct: Direct) -> None:
        self.keys = keys
        self.direct = direct

    def versions(
        self,
        res: Resolved,
        entities: Sequence[str],
        *,
        start_us: int | None = None,
        end_us: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> pa.Table:
        """Every stored version of ``entities`` (event time in [start, end]) as an Arrow table,
        grouped by entity, sorted by (event time, version id) within each."""
        name = res.name
        latest_only = res.hist_mode == "n"
        lo = "-inf" if start_us is None else str(start_us)
        hi = "+inf" if end_us is None else str(end_us)
        tables: list[pa.Table] = []
        conn = self.direct.conn()
        gc_was_on = gc.isenabled()
        gc.disable()  # millions of small objects: the cyclic collector would rescan them all
        try:
            pending: list[Sequence[str]] = []
            for first in range(0, len(entities), DUMP_CHUNK):
                chunk = entities[first : first + DUMP_CHUNK]
                if latest_only:
                    keys = [self.keys.latest(name, escape_id(e)) for e in chunk]
                    packed = pack("MGET", *keys)
                else:
                    hist = self.keys.history
                    packed = b"".join(
                        [
                            pack("ZRANGEBYSCORE", hist(name, escape_id(e)), lo, hi, "WITHSCORES")
                            for e in chunk
                        ]
                    )
                conn.send_packed_command([packed])  # one buffer: one sendall
                pending.append(chunk)
                if len(pending) > 1:  # one batch stays in flight while the previous is read
                    tables.append(self._batch(res, conn, pending.pop(0), latest_only))
                    if progress is not None:
                        progress(first, len(entities))
            while pending:
                tables.append(self._batch(res, conn, pending.pop(0), latest_only))
            if progress is not None:
                progress(len(entities), len(entities))
        except redis.RedisError as exc:
            conn.disconnect()  # replies may still be in flight: start clean next time
            raise BackendError(f"view {name!r}: reading versions failed: {exc}") from exc
        except BaseException:
            conn.disconnect()  # a raising progress callback or Ctrl-C: replies are in flight
            raise
        finally:
            if gc_was_on:
                gc.enable()
        table = pa.concat_tables(tables) if tables else empty_versions(res.view)
        if latest_only and (start_us is not None or end_us is not None):
            et_us = pc.cast(table["event_time"], pa.int64())
            keep = pc.and_(
                pc.greater_equal(et_us, start_us if start_us is not None else MIN_US),
                pc.less_equal(et_us, end_us if end_us is not None else MAX_US),
            )
            table = table.filter(keep)
        return table

    @staticmethod
    def _batch(res: Resolved, conn: Any, chunk: Sequence[str], latest_only: bool) -> pa.Table:
        if latest_only:  # one MGET: event_time (8) + version id (8) + payload per value
            blobs = conn.read_response()
            present = [i for i, b in enumerate(blobs) if b is not None]
            heads = np.frombuffer(b"".join([blobs[i][:16] for i in present]), dtype=">i8")
            return versions_table(
                res.view,
                res.codec.slots,
                pa.array(chunk, pa.string()).take(pa.array(present, pa.int64())),
                heads[0::2].astype(np.int64),
                heads[1::2].astype(np.int64),
                _decode_many([blobs[i][16:] for i in present]),
            )
        replies = read_replies(conn, len(chunk))
        counts = [len(r) for r in replies]
        nonempty = next((r for r in replies if r), None)
        if nonempty is None:
            return empty_versions(res.view)
        if isinstance(nonempty[0], list):  # RESP3: [[member, score], ...]
            members = [p[0] for r in replies for p in r]
            scores = [p[1] for r in replies for p in r]
        else:  # RESP2: [member, score, member, score, ...], scores as strings
            members = [m for r in replies for m in r[0::2]]
            scores = [float(x) for r in replies for x in r[1::2]]
            counts = [c // 2 for c in counts]
        owner = np.repeat(np.arange(len(chunk), dtype=np.int64), counts)
        return versions_table(
            res.view,
            res.codec.slots,
            pa.array(chunk, pa.string()).take(pa.array(owner)),
            np.asarray(scores, dtype=np.float64).astype(np.int64),
            *_ids_and_payloads(members),
        )


def read_replies(conn: Any, n: int) -> list[Any]:
    """Read n pipelined replies. Straight from redis-py's hiredis reader when it has one:
    half the cost of conn.read_response() per reply, which matters at 100k+ replies."""
    parser = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    fill = getattr(parser, "read_from_socket", None)
    if reader is None or fill is None or not hasattr(reader, "gets"):
        return [conn.read_response() for _ in range(n)]
    out: list[Any] = []
    while len(out) < n:
        reply = reader.gets()
        if reply is False or type(reply) is object:  # redis-py's "not enough data" sentinel
            fill()
        elif isinstance(reply, redis.ResponseError):
            raise reply
        else:
            out.append(reply)
    return out


def _ids_and_payloads(members: list[bytes]) -> tuple[np.ndarray, list[Any]]:
    """History members are msgpack (uint64 id, array of values) pairs: one decode for all."""
    flat: list[Any] = decode(b"\xdd" + (2 * len(members)).to_bytes(4, "big") + b"".join(members))
    return np.array(flat[0::2], dtype=np.int64), flat[1::2]


def _decode_many(parts: list[bytes]) -> list[Any]:
    """Decode many msgpack values with one call: frame them as one msgpack array."""
    result: list[Any] = decode(b"\xdd" + len(parts).to_bytes(4, "big") + b"".join(parts))
    return result


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
