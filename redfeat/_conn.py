"""Per-thread raw connections for the hot paths.

redis-py's ``execute_command`` costs ~25 us per call in pool checkout, retries and
observability hooks; on a ~55 us loopback round trip that is the difference between meeting
and missing a 0.1 ms single-entity read. The hot paths (latest reads, the write step) send
on a connection of their own, one per thread, built from the client's pool settings.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import redis
from hiredis import pack_command

WINDOW = 8  # script calls in flight: the client prepares the next while the server runs one


class Direct:
    """One raw connection per thread (and per process after a fork)."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[Any] = []

    def conn(self) -> Any:
        local = self._local
        c = getattr(local, "conn", None)
        if c is None or local.pid != os.getpid():
            pool = self._pool
            c = pool.connection_class(**pool.connection_kwargs)
            local.conn, local.pid = c, os.getpid()
            with self._lock:
                self._all.append(c)
        return c

    def call(self, *args: Any) -> Any:
        """Send one command and read its reply; reconnects once after a dropped connection."""
        c = self.conn()
        try:
            c.send_command(*args)
            return c.read_response()
        except (redis.ConnectionError, redis.TimeoutError):
            c.disconnect()
            c.send_command(*args)
            return c.read_response()

    def close(self) -> None:
        with self._lock:
            for c in self._all:
                c.disconnect()
            self._all.clear()
        self._local = threading.local()


class Script:
    """A Lua script run by EVALSHA, many calls streamed on one connection.

    Calls are sent without waiting for replies (up to WINDOW in flight), so the client
    prepares call k+1 while the server runs call k. If the server lost its script cache
    (restart, SCRIPT FLUSH), the calls that failed with NOSCRIPT did nothing: the script is
    loaded and they run again, in order.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._loaded: set[int] = set()  # ids of connections known to have loaded it

    def stream(
        self,
        conn: Any,
        calls: Iterable[tuple[list[str], list[Any]]],
        on_reply: Callable[[Any], None] | None = None,
    ) -> list[Any]:
        if id(conn) not in self._loaded:
            conn.send_command("SCRIPT", "LOAD", self.source)
            conn.read_response()
            self._loaded.add(id(conn))
        sent: list[tuple[list[str], list[Any]]] = []
        results: list[Any] = []

        def read_one() -> None:
            try:
                reply = conn.read_response()
            except redis.exceptions.NoScriptError as exc:
                reply = exc
            else:
                if on_reply is not None:
                    on_reply(reply)
            results.append(reply)

        for keys, args in calls:
            # Packed by hiredis directly: redis-py's generic packing costs more than the
            # encoding of the rows themselves.
            conn.send_packed_command([pack_command(("EVALSHA", self.sha, len(keys), *keys, *args))])
            sent.append((keys, args))
            if len(sent) - len(results) > WINDOW:
                read_one()
        while len(results) < len(sent):
            read_one()
        failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
        if failed:
            conn.send_command("SCRIPT", "LOAD", self.source)
            conn.read_response()
            for i in failed:
                keys, args = sent[i]
                conn.send_command("EVALSHA", self.sha, len(keys), *keys, *args)
                results[i] = conn.read_response()
                if on_reply is not None:
                    on_reply(results[i])
        return results
