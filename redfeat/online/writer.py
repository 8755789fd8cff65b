"""The write step from the client side: reports of what a write did, and the Writer that
streams the WRITE script over chunks of entities (see scripts.py)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import redis

from ..core.conn import Direct, Script
from ..core.keys import HISTORY, Keys
from ..core.records import WriteReport
from ..core.registry import Resolved
from ..errors import BackendError, backend_error
from . import lua as scripts

CHUNK = 256  # entities per server-side step: keeps each script call short (<1 ms)


# One entity's write: (escaped id, event_time_us, payload, extra) where extra is the
# expected latest value (compare-and-set), the written_at in us (backfill) or None.
Item = tuple[str, int, bytes, bytes | int | None]


class Writer:
    """Runs the WRITE script, chunked and pipelined, and reloads it if the server forgot it."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        direct: Direct,
        feed_cap: int,
        feed_retention_ms: int = 0,
        *,
        confirm: Callable[[Any, str, str], AbstractContextManager[None]] | None = None,
        payloads: Callable[[], bool] = lambda: True,
    ) -> None:
        # payloads(): whether feed entries carry the versions' payloads (an offline log is
        # attached to the project: Registry.offline_attached)
        self.payloads = payloads
        # confirm(conn, key, barrier): around the calls on one connection (one cluster
        # node's), confirms them once sent: WAIT for replicas (durability "replicated"),
        # WAITAOF on that node ("always" on a cluster); raises when they are not
        self.confirm = confirm
        self.client = client
        self.keys = keys
        self.direct = direct
        self.feed_cap = feed_cap  # versions kept in the feed; 0: no change events
        self.feed_retention_ms = feed_retention_ms  # 0: no age bound
        # the FEED bounds argument of WRITE and DELETE
        # (in a partitioned project each partition's feed keeps its share of feed_cap)
        cap = -(-feed_cap // keys.partitions) if keys.partitions else feed_cap
        self.feed_bounds = f"{cap} {feed_retention_ms}"
        self.script = Script(scripts.WRITE, idempotent=True)

    def _calls(
        self, res: Resolved, items: Iterable[Item], mode: int, fields: str, k: int = 0
    ) -> Iterator[tuple[list[str], list[Any]]]:
        """Script calls of up to CHUNK entities; in a partitioned project all ``items`` are
        of partition ``k`` (keys of one slot, that partition's feed)."""
        channel = self.keys.channel(res.name) if self.feed_cap else ""
        feed = self.keys.feed(res.name, k)
        head = [
            res.keys_per_entity,
            res.hist_mode,
            res.hist_value,
            res.ttl_ms,
            mode,
            channel,
            self.feed_bounds,
            "w",
            fields,
            "",  # the escaped ids of the call, filled in per call
            "1" if channel and self.payloads() else "0",
        ]
        ids: list[str] = []
        keys: list[str] = []
        args: list[Any] = list(head)
        pre, post = self.keys.latest_affix(res.name, k)
        two = res.keys_per_entity == 2
        n = 0
        for esc, et_us, payload, expected in items:
            ids.append(esc)
            key = pre + esc + post
            keys.append(key)
            if two:
                keys.append(key + HISTORY)
            args.append(et_us)
            args.append(payload)
            if mode == 1:
                args.append(expected or b"")
            elif mode == 2:
                args.append(expected)
            n += 1
            if n == CHUNK:
                keys.append(feed)
                args[9] = "\n".join(ids)
                yield keys, args
                keys, args, n, ids = [], list(head), 0, []
        if n:
            keys.append(feed)
            args[9] = "\n".join(ids)
            yield keys, args

    def confirming(self, conn: Any, key: str | None) -> AbstractContextManager[None]:
        """The durability check around write calls on ``conn`` (``key``: one they write,
        for the barrier on its slot; None on one node)."""
        if self.confirm is None:
            return contextlib.nullcontext()
        barrier = self.keys.durability if key is None else self.keys.durability_near(key)
        return self.confirm(conn, key or barrier, barrier)

    def run(
        self,
        res: Resolved,
        items: Iterable[Item],
        *,
        mode: int = 0,
        progress: Callable[[int], None] | None = None,
        fields: Iterable[str] = (),
    ) -> list[int]:
        """Run WRITE (mode 0 plain, 1 compare-and-set, 2 backfill with given written_at).
        ``fields``: the field names the write sets (for change events).

        Returns a flat list: id, status, id, status... in input order."""
        if self.keys.partitions:
            return self._run_partitioned(res, items, mode, progress, ",".join(fields))
        calls = self._calls(res, items, mode, ",".join(f for f in fields))
        out: list[int] = []
        conn = self.direct.conn()

        def step(_i: int, reply: Any) -> None:
            if progress is not None:
                progress(len(reply) // 2)

        try:
            # plain writes and backfills dedupe a repeated version, so a replay after a
            # timeout is safe; a compare-and-set replay would fail its own check and the
            # caller would merge (increment) again
            with self.confirming(conn, None):
                for reply in self.script.stream(conn, calls, step, idempotent=mode != 1):
                    out.extend(reply)
        except redis.ConnectionError as exc:
            conn.disconnect()
            raise BackendError(
                f"view {res.name!r}: connection lost during a write; versions are idempotent, "
                f"so retrying the same write is safe: {exc}"
            ) from exc
        except redis.RedisError as exc:
            conn.disconnect()  # replies may still be in flight: start clean
            raise backend_error(f"view {res.name!r}: write failed on the server", exc) from exc
        except BaseException:
            # An error from the caller's progress callback, or Ctrl-C: unread replies would
            # be taken as answers to the next commands on this connection.
            conn.disconnect()
            raise
        return out

    def _run_partitioned(
        self,
        res: Resolved,
        items: Iterable[Item],
        mode: int,
        progress: Callable[[int], None] | None,
        fields: str,
    ) -> list[int]:
        """Rows grouped by partition, one script call per partition chunk (keys of one
        slot), the calls of each node streamed on its connection, nodes in parallel.

        On a cluster, a call answered by a redirection or lost in a failover is sent again
        (to the node serving its slot by then) within the retry window: plain writes and
        backfills dedupe a repeated version, and a compare-and-set that was redirected did
        not run. A call whose reply was lost with its connection may have run: sent again,
        its entities report a duplicate of the version it wrote (same version id)."""
        keys = self.keys
        parts: dict[int, list[int]] = {}
        listed = items if isinstance(items, list) else list(items)
        for i, it in enumerate(listed):
            parts.setdefault(keys.partition(it[0]), []).append(i)
        calls: list[tuple[list[str], list[Any]]] = []
        where: list[list[int]] = []  # input indices of each call's entities
        for k, idx in parts.items():
            for first in range(0, len(idx), CHUNK):
                chunk = idx[first : first + CHUNK]
                calls.extend(self._calls(res, [listed[i] for i in chunk], mode, fields, k))
                where.append(chunk)
        replies: dict[int, list[int]] = {}
        lock = threading.Lock()
        by_node: dict[str, list[int]] = {}
        for c, (ks, _) in enumerate(calls):
            by_node.setdefault(self.direct.node_of(ks[-1]), []).append(c)

        def node(name: str) -> None:
            def step() -> None:
                todo = [c for c in by_node[name] if c not in replies]
                by_conn: dict[int, tuple[Any, list[int]]] = {}
                for c in todo:  # regrouped each try: slots may have moved meanwhile
                    conn = self.direct.conn(calls[c][0][-1])
                    by_conn.setdefault(id(conn), (conn, []))[1].append(c)
                for conn, cs in by_conn.values():

                    def got(j: int, reply: Any, cs: list[int] = cs) -> None:
                        with lock:
                            replies[cs[j]] = reply
                            if progress is not None:
                                progress(len(reply) // 2)

                    with self.confirming(conn, calls[cs[0]][0][-1]):
                        self.script.stream(conn, [calls[c] for c in cs], got, idempotent=mode != 1)

            self.direct.retrying(step, what=f"view {res.name!r}: write")

        try:
            self.direct.parallel(node, list(by_node))
        except redis.ConnectionError as exc:
            raise BackendError(
                f"view {res.name!r}: connection lost during a write; versions are idempotent, "
                f"so retrying the same write is safe: {exc}"
            ) from exc
        except redis.RedisError as exc:
            raise backend_error(f"view {res.name!r}: write failed on the server", exc) from exc
        out = [0] * (2 * len(listed))
        for c, idx in enumerate(where):
            flat = replies[c]
            for j, i in enumerate(idx):
                out[2 * i] = flat[2 * j]
                out[2 * i + 1] = flat[2 * j + 1]
        return out


def tally(report: WriteReport, flat: list[int]) -> WriteReport:
    """Count the WRITE script's statuses into a report."""
    statuses = flat[1::2]
    report.written = statuses.count(0) + statuses.count(1)
    report.late = statuses.count(1)
    report.duplicates = statuses.count(2)
    report.dropped = statuses.count(4)
    return report
