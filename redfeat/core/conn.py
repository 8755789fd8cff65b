"""Per-thread raw connections for the hot paths.

redis-py's ``execute_command`` costs ~25 us per call in pool checkout, retries and
observability hooks; on a ~55 us loopback round trip that is the difference between meeting
and missing a 0.1 ms single-entity read. The hot paths (latest reads, the write step) send
on a connection of their own, one per thread, built from the client's pool settings.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import redis
from hiredis import pack_command

from ..errors import BackendError, wrap_redis


def pack(*args: Any) -> bytes:
    """One command in RESP, packed by hiredis (much cheaper than redis-py's packer)."""
    packed: bytes = pack_command(args)
    return packed


WINDOW = 8  # script calls in flight: the client prepares the next while the server runs one


class _Held:
    """A thread's connection; closed when the thread ends (its thread-local storage goes)."""

    __slots__ = ("conn", "pid", "__weakref__")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.pid = os.getpid()
        weakref.finalize(self, conn.disconnect)


class Direct:
    """One raw connection per thread (and per process after a fork)."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: weakref.WeakSet[_Held] = weakref.WeakSet()

    def conn(self) -> Any:
        held: _Held | None = getattr(self._local, "held", None)
        if held is None or held.pid != os.getpid():
            pool = self._pool
            held = _Held(pool.connection_class(**pool.connection_kwargs))
            self._local.held = held
            with self._lock:
                self._all.add(held)
        return held.conn

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
        except redis.ResponseError:
            raise
        except BaseException:
            c.disconnect()  # never leave a reply unread on a shared connection
            raise

    def close(self) -> None:
        with self._lock:
            for held in list(self._all):
                held.conn.disconnect()
            self._all.clear()
        self._local = threading.local()


class Script:
    """A Lua script run by EVALSHA, many calls streamed on one connection.

    Calls are sent without waiting for replies (up to WINDOW in flight), so the client
    prepares call k+1 while the server runs call k. If the server lost its script cache
    (restart, SCRIPT FLUSH), the calls that failed with NOSCRIPT did nothing: the script is
    loaded and they run again, in order.

    ``idempotent``: running a call twice leaves the same state as running it once (view
    writes: a repeated version is found and kept once). Only such calls are sent again after
    a connection error or timeout while reading their replies, since the server may have run
    them; other scripts (the window RECORD adds into tiles) raise BackendError saying the
    outcome is unknown. A call whose send failed did not run and is always sent again.
    """

    def __init__(self, source: str, *, idempotent: bool = False) -> None:
        self.source = source
        self.idempotent = idempotent
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._loaded: set[int] = set()  # ids of connections known to have loaded it

    def stream(
        self,
        conn: Any,
        calls: Iterable[tuple[list[str], list[Any]]],
        on_reply: Callable[[int, Any], None] | None = None,
        *,
        idempotent: bool | None = None,
    ) -> list[Any]:
        """Run every call; ``on_reply(call index, reply)`` as each reply arrives.
        ``idempotent`` overrides the script's flag for these calls.

        An error reply (WRONGTYPE, OOM, BUSY...) is raised only after every reply of the
        batch was read, so the connection stays in step; any other exception (a raising
        ``on_reply``, Ctrl-C, a dropped connection) disconnects it, since replies may still
        be unread and would be taken as answers to the thread's next commands."""
        try:
            replay = self.idempotent if idempotent is None else idempotent
            results = self._stream(conn, calls, on_reply, replay)
        except BaseException:
            conn.disconnect()
            raise
        errors = [r for r in results if isinstance(r, redis.ResponseError)]
        if errors:
            raise errors[0]
        return results

    def _stream(
        self,
        conn: Any,
        calls: Iterable[tuple[list[str], list[Any]]],
        on_reply: Callable[[int, Any], None] | None,
        replay: bool,
    ) -> list[Any]:
        _check_idle(conn)
        if id(conn) not in self._loaded:
            conn.send_command("SCRIPT", "LOAD", self.source)
            conn.read_response()
            self._loaded.add(id(conn))
        sent: list[tuple[list[str], list[Any]]] = []
        results: list[Any] = []
        retried = False

        def resend_after_drop(reading: bool) -> None:
            # A connection error or timeout: reconnect and send again what was sent and not
            # answered yet (calls answered are done). Only once per stream. Those calls
            # may have run (their replies lost with the connection), so this is a replay,
            # for idempotent calls only; other calls get it only before any was answered
            # and only if nothing ran for sure (a failed first send).
            nonlocal retried
            if retried or (results and not replay):
                raise
            if not replay and (reading or sent):
                exc = sys.exc_info()[1]
                conn.disconnect()
                raise BackendError(
                    f"{type(exc).__name__} waiting for the server ({exc}): the outcome of "
                    f"{len(sent)} call(s) is unknown (the server may have run them); not sent "
                    "again, since a replay could apply them twice. Check the stored values "
                    "before trying again"
                ) from exc
            retried = True
            conn.disconnect()
            for k, a in sent[len(results) :]:
                conn.send_packed_command([pack("EVALSHA", self.sha, len(k), *k, *a)])

        def read_one() -> None:
            try:
                reply = conn.read_response()
            except redis.ResponseError as exc:
                # kept, not raised: the replies after it must still be read
                reply = exc
            except (redis.ConnectionError, redis.TimeoutError):
                resend_after_drop(reading=True)
                read_one()
                return
            else:
                if on_reply is not None:
                    on_reply(len(results), reply)
            results.append(reply)

        for keys, args in calls:
            # Packed by hiredis directly: redis-py's generic packing costs more than the
            # encoding of the rows themselves.
            packed = pack("EVALSHA", self.sha, len(keys), *keys, *args)
            try:
                conn.send_packed_command([packed])
            except (redis.ConnectionError, redis.TimeoutError):
                resend_after_drop(reading=False)
                conn.send_packed_command([packed])
            sent.append((keys, args))
            if len(sent) - len(results) > WINDOW:
                read_one()
        while len(results) < len(sent):
            read_one()
        failed = [i for i, r in enumerate(results) if isinstance(r, redis.exceptions.NoScriptError)]
        if failed:
            # NOSCRIPT calls did nothing: load the script and run them again, in order
            conn.send_command("SCRIPT", "LOAD", self.source)
            conn.read_response()
            for i in failed:
                keys, args = sent[i]
                conn.send_command("EVALSHA", self.sha, len(keys), *keys, *args)
                try:
                    results[i] = conn.read_response()
                except redis.ResponseError as exc:
                    results[i] = exc  # one reply per command: the connection is in step
                    continue
                if on_reply is not None:
                    on_reply(i, results[i])
        return results


def _check_idle(conn: Any) -> None:
    """Reconnect a connection the server closed while it sat idle (its timeout setting, a
    restart), found before anything is sent: a read error after sending could then only
    mean the outcome is unknown. One non-blocking recv; unexpected pending data (a reply
    nobody read) is dropped with the connection too."""
    if getattr(conn, "_sock", None) is None:
        return
    try:
        stale = conn.can_read(timeout=0)
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        stale = True
    if stale:
        conn.disconnect()


def read_all(conn: Any, n: int) -> list[Any]:
    """``n`` pipelined replies, error replies kept in the list rather than raised, so that
    a WRONGTYPE in the middle does not leave the later replies unread on the connection."""
    out: list[Any] = []
    for _ in range(n):
        try:
            out.append(conn.read_response())
        except redis.ResponseError as exc:
            out.append(exc)
    return out


def detect_capabilities(client: redis.Redis) -> dict[str, Any]:
    """Server name and version, and which optional commands it has (no module required)."""
    with wrap_redis("cannot read server info"):
        info = client.info("server")
    name = str(info.get("server_name") or "redis")
    version = str(info.get("valkey_version") or info.get("redis_version") or "0")
    caps: dict[str, Any] = {"server": name, "version": version}

    def has(cmd: str) -> bool:
        # Called without arguments, a known command answers "wrong number of arguments".
        try:
            client.execute_command(cmd)  # type: ignore[no-untyped-call]
        except redis.ResponseError as exc:
            return "unknown command" not in str(exc).lower()
        except redis.RedisError:
            return False
        return True

    caps["hash_field_expiry"] = has("HEXPIRE")
    caps["vector_search"] = has("FT.CREATE")
    caps["timeseries"] = has("TS.ADD")
    return caps
