"""Bulk reads of stored versions into Arrow tables (exports, training frames)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis

from ..core.codec import decode
from ..core.conn import Direct, pack
from ..core.keys import Keys, escape_id
from ..core.registry import Resolved
from ..core.time import MAX_US, MIN_US
from ..errors import backend_error
from ..online.history import LATEST_HEAD
from .arrow import empty_versions, versions_table

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
        if self.direct.cluster is None:
            return self._versions_on(self.direct.conn(), res, entities, start_us, end_us, progress)
        # On a cluster: the entities of each slot on its node's connection (an MGET of
        # latest-only views must stay in one slot), then back in the order asked.
        keys = [self.keys.latest(res.name, escape_id(e)) for e in entities]
        groups = self.direct.slot_groups(keys)
        done = 0

        def part(n: int, _total: int) -> None:
            if progress is not None:
                progress(done + n, len(entities))

        tables: list[pa.Table] = []
        for idx in groups:
            ents = [entities[i] for i in idx]

            def step(ents: list[str] = ents, key: str = keys[idx[0]]) -> pa.Table:
                return self._versions_on(self.direct.conn(key), res, ents, start_us, end_us, part)

            tables.append(self.direct.retrying(step, what=f"view {res.name!r}: reading versions"))
            done += len(idx)
        if not tables:
            return empty_versions(res.view)
        table = pa.concat_tables(tables)
        rank = {e: i for i, e in enumerate(entities)}
        order = np.argsort(
            np.asarray([rank[e] for e in table["entity_id"].to_pylist()], dtype=np.int64),
            kind="stable",
        )
        return table.take(pa.array(order))

    def _versions_on(
        self,
        conn: Any,
        res: Resolved,
        entities: Sequence[str],
        start_us: int | None,
        end_us: int | None,
        progress: Callable[[int, int], None] | None,
    ) -> pa.Table:
        name = res.name
        latest_only = res.hist_mode == "n"
        lo = "-inf" if start_us is None else str(start_us)
        hi = "+inf" if end_us is None else str(end_us)
        span = (MIN_US if start_us is None else start_us, MAX_US if end_us is None else end_us)
        tables: list[pa.Table] = []
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
                    # history holds the versions older than the latest: both are read
                    hist, latest = self.keys.history, self.keys.latest
                    escs = [escape_id(e) for e in chunk]
                    packed = b"".join(
                        [
                            pack("ZRANGEBYSCORE", hist(name, esc), lo, hi, "WITHSCORES")
                            for esc in escs
                        ]
                        + [pack("MGET", *[latest(name, esc) for esc in escs])]
                    )
                conn.send_packed_command([packed])  # one buffer: one sendall
                pending.append(chunk)
                if len(pending) > 1:  # one batch stays in flight while the previous is read
                    tables.append(self._batch(res, conn, pending.pop(0), latest_only, span))
                    if progress is not None:
                        progress(first, len(entities))
            while pending:
                tables.append(self._batch(res, conn, pending.pop(0), latest_only, span))
            if progress is not None:
                progress(len(entities), len(entities))
        except redis.RedisError as exc:
            conn.disconnect()  # replies may still be in flight: start clean next time
            raise backend_error(f"view {name!r}: reading versions failed", exc) from exc
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
    def _batch(
        res: Resolved,
        conn: Any,
        chunk: Sequence[str],
        latest_only: bool,
        span: tuple[int, int] = (MIN_US, MAX_US),
    ) -> pa.Table:
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
        replies = read_replies(conn, len(chunk) + 1)
        _add_latest(replies, replies.pop(), span, str(getattr(conn, "protocol", 2)) == "3")
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


def _add_latest(
    replies: list[Any], blobs: list[bytes | None], span: tuple[int, int], resp3: bool
) -> None:
    """Append each entity's latest version (newest of all, so last in event-time order) to
    its history reply, unless outside the span or already there (a view with a ttl)."""
    for i, blob in enumerate(blobs):
        if blob is None:
            continue
        et = LATEST_HEAD.unpack_from(blob)[0]
        if not span[0] <= et <= span[1]:
            continue
        rows = replies[i] = list(replies[i])
        vid = blob[8:16]
        member = b"\xcf" + blob[8:]
        if resp3:  # [[member, score], ...]
            if not rows or rows[-1][0][1:9] != vid:
                rows.append([member, float(et)])
        elif not rows or rows[-2][1:9] != vid:  # member, score, ... (scores as text)
            rows.extend((member, str(et).encode()))


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
