"""The write step from the client side: reports of what a write did, and the Writer that
streams the WRITE script over chunks of entities (see scripts.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis

from ..core.conn import Direct, Script
from ..core.keys import Keys
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
    ) -> None:
        self.client = client
        self.keys = keys
        self.direct = direct
        self.feed_cap = feed_cap  # versions kept in the feed; 0: no change events
        self.feed_retention_ms = feed_retention_ms  # 0: no age bound
        # the FEED bounds argument of WRITE and DELETE
        self.feed_bounds = f"{feed_cap} {feed_retention_ms}"
        self.script = Script(scripts.WRITE, idempotent=True)

    def _calls(
        self, res: Resolved, items: Iterable[Item], mode: int, fields: str
    ) -> Iterator[tuple[list[str], list[Any]]]:
        channel = self.keys.channel(res.name) if self.feed_cap else ""
        feed = self.keys.feed(res.name)
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
        ]
        ids: list[str] = []
        keys: list[str] = []
        args: list[Any] = list(head)
        pre = self.keys.tag(res.name, "")[:-1]  # "rf:<project>:{<view>|"
        two = res.keys_per_entity == 2
        n = 0
        for esc, et_us, payload, expected in items:
            ids.append(esc)
            key = pre + esc + "}"
            keys.append(key)
            if two:
                keys.append(key + ":h")
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


def tally(report: WriteReport, flat: list[int]) -> WriteReport:
    """Count the WRITE script's statuses into a report."""
    statuses = flat[1::2]
    report.written = statuses.count(0) + statuses.count(1)
    report.late = statuses.count(1)
    report.duplicates = statuses.count(2)
    report.dropped = statuses.count(4)
    return report
