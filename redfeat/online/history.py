"""Versions: history of an entity, time travel (as-of reads), and the stored form of a
history key (a chunk of versions, see lua.py's docstring) from the client side."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import redis
from redis.cluster import RedisCluster

from ..core.args import text
from ..core.codec import Reader
from ..core.conn import mget
from ..core.keys import Keys, escape_id
from ..core.records import Version
from ..core.registry import Resolved
from ..core.time import from_us, now_us, to_us
from ..errors import ConfigurationError, NotFoundError, Problem, ValidationError, wrap_redis

LATEST_HEAD = struct.Struct(">qQ")  # latest value (and a chunk's head): event_time_us, id
_ID = struct.Struct(">xQ")  # a member of a history zset written before chunks: 0xCF, id
_U64 = 1 << 64

# -- the chunk: one entity's kept versions in one string (lua.py's docstring) -------------


def _varint(b: bytes, i: int) -> tuple[int, int]:
    v = b[i]
    if v < 0x80:
        return v, i + 1
    out, shift = v & 0x7F, 7
    while True:
        i += 1
        v = b[i]
        out |= (v & 0x7F) << shift
        if v < 0x80:
            return out, i + 1
        shift += 7


def _put(v: int, out: bytearray) -> None:
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)


def encode_chunk(versions: Sequence[tuple[int, int, bytes]]) -> bytes | None:
    """The chunk of ``versions`` (event_time_us, id, payload), given newest first (event
    time, then id, descending), as WRITE stores it; None for none (no key)."""
    if not versions:
        return None
    meta = bytearray()
    et0, id0, _ = versions[0]
    pet, pid = et0, id0
    for et, vid, payload in versions:
        did = pid - vid
        _put(len(payload), meta)
        _put(pet - et, meta)
        _put(2 * did if did >= 0 else -2 * did - 1, meta)
        pet, pid = et, vid
    head = bytearray(LATEST_HEAD.pack(et0, id0))
    for v in (len(versions), len(meta), et0 - pet):
        _put(v, head)
    return bytes(head + meta) + b"".join(p for _, _, p in versions)


def _head(blob: bytes) -> tuple[int, int, int, int, int]:
    """A chunk's newest event time and id, its number of versions and where its meta is."""
    et, vid = LATEST_HEAD.unpack_from(blob)
    n, i = _varint(blob, 16)
    size, i = _varint(blob, i)
    _, i = _varint(blob, i)  # the span (for the script's trimming by duration)
    return et, vid, n, i, i + size


def chunk_head(blob: bytes) -> tuple[int, int, int]:
    """A chunk's newest event time and id, and how many versions it holds."""
    return _head(blob)[:3]


def chunk_versions(blob: bytes | None) -> list[tuple[int, int, bytes]]:
    """A chunk's versions (event_time_us, id, payload), newest first."""
    if not blob:
        return []
    et, vid, n, i, end = _head(blob)
    p = end
    out = []
    for _ in range(n):
        size, i = _varint(blob, i)
        dt, i = _varint(blob, i)
        zz, i = _varint(blob, i)
        et -= dt
        vid -= (zz >> 1) ^ -(zz & 1)
        out.append((et, vid, blob[p : p + size]))
        p += size
    return out


def zset_chunk(rows: Sequence[tuple[bytes, float]]) -> bytes | None:
    """The chunk of a history zset written before chunks (ZRANGE ... WITHSCORES rows,
    oldest first; members 0xCF .. id .. payload)."""
    return encode_chunk([(int(s), _ID.unpack_from(m)[0], bytes(m[9:])) for m, s in reversed(rows)])


def _varints(buf: bytes) -> np.ndarray:
    """Every varint of ``buf``, in order (uint64)."""
    b = np.frombuffer(buf, dtype=np.uint8)
    last = b < 0x80
    if last.all():  # every value under 128: the common case of short deltas
        return b.astype(np.uint64)
    starts = np.flatnonzero(np.concatenate(([True], last[:-1])))
    pos = np.arange(len(b)) - np.repeat(starts, np.diff(np.append(starts, len(b))))
    vals = (b & 0x7F).astype(np.uint64) << (7 * pos).astype(np.uint64)
    out: np.ndarray = np.add.reduceat(vals, starts)
    return out


@dataclass(frozen=True, slots=True)
class Chunks:
    """The versions of many chunks, decoded together: record r belongs to chunk owner[r];
    each chunk's records are contiguous, newest first, the first at first[chunk] (when
    counts[chunk] > 0); record r's payload is pays[start[r]:start[r + 1]] (end at the last)."""

    counts: np.ndarray  # versions per chunk
    first: np.ndarray  # index of each chunk's first (newest) record
    owner: np.ndarray  # int64 per record
    et: np.ndarray  # int64 event times (us)
    ids: np.ndarray  # int64 version ids
    start: np.ndarray  # int64 offsets into pays, one more than there are records
    pays: bytes  # every payload, chunk after chunk


def decode_chunks(blobs: Sequence[bytes | None]) -> Chunks:
    """Decode many chunks: the meta of all of them with a few numpy calls (no Python step
    per version), their payloads left joined for one msgpack call."""
    counts = np.zeros(len(blobs), dtype=np.int64)
    heads: list[int] = []
    metas: list[bytes] = []
    pays: list[bytes] = []
    for k, blob in enumerate(blobs):
        if blob:
            et, vid, n, i, end = _head(blob)
            counts[k] = n
            heads += (et % _U64, vid)
            metas.append(blob[i:end])
            pays.append(blob[end:])
    first = np.cumsum(counts) - counts
    owner = np.repeat(np.arange(len(blobs), dtype=np.int64), counts)
    v = _varints(b"".join(metas))
    size, dt, zz = v[0::3], v[1::3], v[2::3]
    # uint64 arithmetic wraps: the sums run over every chunk, the differences are exact
    half = zz >> np.uint64(1)
    did = np.where(zz & np.uint64(1), ~half, half)  # ~m is -m - 1 in two's complement
    h = np.asarray(heads, dtype=np.uint64)
    present = np.flatnonzero(counts)
    rank = np.repeat(np.arange(len(present)), counts[present])
    starts = first[owner]
    cdt, cdid = np.cumsum(dt), np.cumsum(did)
    et_ = (h[0::2][rank] - (cdt - cdt[starts])).view(np.int64)
    ids = (h[1::2][rank] - (cdid - cdid[starts])).view(np.int64)
    start = np.concatenate(([0], np.cumsum(size.astype(np.int64))))
    return Chunks(counts, first, owner, et_, ids, start, b"".join(pays))


def read_chunks(
    client: redis.Redis | RedisCluster, hkeys: Sequence[str], replies: Sequence[Any]
) -> list[bytes | None]:
    """GET replies of history keys (a pipeline run with raise_on_error=False) as chunks: a
    key written before chunks (a zset: WRONGTYPE) is read as a zset and converted; any other
    error is raised."""
    out: list[bytes | None] = []
    old: list[int] = []
    for i, r in enumerate(replies):
        if isinstance(r, redis.ResponseError) and str(r).startswith("WRONGTYPE"):
            old.append(i)
            out.append(None)
        elif isinstance(r, Exception):
            raise r
        else:
            out.append(r)
    for i, chunk in zip(old, zset_chunks(client, [hkeys[i] for i in old]), strict=True):
        out[i] = chunk
    return out


def zset_chunks(client: redis.Redis | RedisCluster, hkeys: Sequence[str]) -> list[bytes | None]:
    """The chunks of history keys written before chunks (zsets), read as they are."""
    if not hkeys:
        return []
    pipe = client.pipeline(transaction=False)
    for hkey in hkeys:
        pipe.zrange(hkey, 0, -1, withscores=True)
    return [zset_chunk(rows) for rows in pipe.execute()]


def _ok(reply: Any) -> Any:
    if isinstance(reply, Exception):
        raise reply
    return reply


# -- reads --------------------------------------------------------------------------------


def as_of_us(view: str, as_of: Any) -> int:
    try:
        return to_us(as_of, what="as_of")
    except ValueError as exc:
        raise ValidationError(
            [Problem(view, None, None, "as_of", as_of, str(exc))], outcome="nothing was read"
        ) from None


def _version(
    res: Resolved, et: int, vid: int, payload: bytes | memoryview, readers: Reader | None = None
) -> Version:
    return Version(vid, from_us(et), from_us(vid), res.codec.decode(payload, readers))


def from_latest(res: Resolved, blob: bytes, readers: Reader | None = None) -> Version:
    et, vid = LATEST_HEAD.unpack_from(blob)
    return Version(vid, from_us(et), from_us(vid), res.codec.decode(memoryview(blob)[16:], readers))


def ttl_ok(res: Resolved, et_us: int, at_us: int | None = None) -> bool:
    ttl = res.view.ttl_us
    if ttl is None:
        return True
    return et_us >= (now_us() if at_us is None else at_us) - ttl


def _merged(res: Resolved, blob: bytes | None, chunk: bytes | None, limit: int) -> list[Version]:
    """The latest value and history's versions as one list, newest first.

    The latest version has the greatest (event time, id) of all, so it comes first; it is
    in history too for a view with a ttl (and for data written before history stopped
    holding it twice): then it is not repeated."""
    kept = chunk_versions(chunk)
    out: list[Version] = []
    if blob:
        top = from_latest(res, blob)
        if not kept or kept[0][1] != top.id:
            out.append(top)
    for et, vid, payload in kept[: max(0, limit - len(out))]:
        out.append(_version(res, et, vid, payload))
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
        hkey = keys.history(res.name, esc)
        pipe = client.pipeline(transaction=False)
        pipe.get(keys.latest(res.name, esc))
        pipe.get(hkey)
        blob, raw = pipe.execute(raise_on_error=False)
        (chunk,) = read_chunks(client, [hkey], [raw])
    return _merged(res, _ok(blob), chunk, limit)


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
        hkeys = [keys.history(res.name, escape_id(e)) for e in entities]
        pipe = client.pipeline(transaction=False)
        for e, hkey in zip(entities, hkeys, strict=True):
            pipe.get(hkey)
            pipe.get(keys.latest(res.name, escape_id(e)))
        replies = pipe.execute(raise_on_error=False)
        chunks = read_chunks(client, hkeys, replies[0::2])
    ch = decode_chunks(chunks)
    # each entity's first (newest) kept version at or before at_us: chunks are newest first
    hit = np.flatnonzero(ch.et <= at_us)
    owners, at = np.unique(ch.owner[hit], return_index=True)
    found = dict(zip(owners.tolist(), hit[at].tolist(), strict=True))
    for k, blob in enumerate(replies[1::2]):
        v = None
        # The latest version is the newest of all: in force at at_us if it had happened by
        # then; otherwise history's newest version up to at_us is.
        et = LATEST_HEAD.unpack_from(_ok(blob))[0] if blob else None
        if et is not None and et <= at_us:
            if not apply_ttl or ttl_ok(res, et, at_us):
                v = from_latest(res, blob, readers)
        elif k in found:
            r = found[k]
            r_et = int(ch.et[r])
            if not apply_ttl or ttl_ok(res, r_et, at_us):
                pay = memoryview(ch.pays)[ch.start[r] : ch.start[r + 1]]
                v = _version(res, r_et, int(ch.ids[r]), pay, readers)
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
