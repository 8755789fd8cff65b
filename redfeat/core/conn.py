"""Per-thread raw connections for the hot paths.

redis-py's ``execute_command`` costs ~25 us per call in pool checkout, retries and
observability hooks; on a ~55 us loopback round trip that is the difference between meeting
and missing a 0.1 ms single-entity read. The hot paths (latest reads, the write step) send
on a connection of their own, one per thread, built from the client's pool settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import redis
from hiredis import pack_command
from redis.cluster import RedisCluster
from redis.crc import key_slot

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


T = TypeVar("T")

# Errors after which a cluster's slot map is read again and the step sent again: a slot
# moved (MOVED, ASK during a migration), a master failing over (CLUSTERDOWN, TRYAGAIN, a
# refused or dropped connection, a replica that cannot take writes yet).
REDIRECTS = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.ReadOnlyError,
    redis.ConnectionError,
    redis.TimeoutError,
)
RETRY_WINDOW = 20.0  # seconds a step keeps retrying through a failover before it gives up


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def mget(client: redis.Redis | RedisCluster, keys: Sequence[str]) -> list[Any]:
    """MGET through the client; split by slot on a cluster (keys of many slots)."""
    if not keys:
        return []
    if isinstance(client, RedisCluster):
        return list(client.mget_nonatomic(keys))
    return list(client.mget(keys))


class Direct:
    """One raw connection per thread (and per process after a fork), per node on a Redis
    Cluster: ``conn(key)`` is the connection to the master that holds ``key``'s slot."""

    def __init__(self, client: redis.Redis | RedisCluster) -> None:
        self.client = client
        self.cluster: RedisCluster | None = client if isinstance(client, RedisCluster) else None
        self._pool = client.connection_pool if isinstance(client, redis.Redis) else None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._executor: ThreadPoolExecutor | None = None

    def _held(self, name: str, make: Callable[[], Any]) -> Any:
        conns: dict[str, _Held] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        held = conns.get(name)
        if held is None or held.pid != os.getpid():
            held = conns[name] = _Held(make())
            with self._lock:
                self._all.add(held)
        return held.conn

    def conn(self, key: str | bytes | None = None) -> Any:
        """This thread's raw connection (to the node of ``key``'s slot on a cluster; with no
        key, to the node of slot 0)."""
        if self.cluster is None:  # the hot path of one node: one attribute read
            held: _Held | None = getattr(self._local, "held", None)
            if held is None or held.pid != os.getpid():
                pool = self._pool
                assert pool is not None
                held = _Held(pool.connection_class(**pool.connection_kwargs))
                self._local.held = held
                with self._lock:
                    self._all.add(held)
            return held.conn
        return self.node_conn(self.node_of(key if key is not None else "{0}"))

    def node_of(self, key: str | bytes) -> str:
        """The name ("host:port") of the master serving ``key`` ("" on one node)."""
        if self.cluster is None:
            return ""
        raw = key.encode() if isinstance(key, str) else key
        node = self.cluster.nodes_manager.get_node_from_slot(key_slot(raw))
        return str(node.name)

    def node_conn(self, name: str) -> Any:
        if self.cluster is None:
            return self.conn()
        cluster = self.cluster

        def make() -> Any:
            node = cluster.get_node(node_name=name)  # type: ignore[no-untyped-call]
            if node is None or node.redis_connection is None:
                raise redis.ConnectionError(f"no connection to cluster node {name}")
            pool = node.redis_connection.connection_pool
            return pool.connection_class(**pool.connection_kwargs)

        return self._held(name, make)

    def group(self, keys: Sequence[str]) -> dict[str, list[int]]:
        """Indices of ``keys`` by the node that serves them (one group on one node)."""
        if self.cluster is None:
            return {"": list(range(len(keys)))}
        out: dict[str, list[int]] = {}
        slots: dict[int, str] = {}
        get = self.cluster.nodes_manager.get_node_from_slot
        for i, k in enumerate(keys):
            slot = key_slot(k.encode())
            name = slots.get(slot)
            if name is None:
                name = slots[slot] = str(get(slot).name)
            out.setdefault(name, []).append(i)
        return out

    def parallel(self, fn: Callable[[str], T], names: Sequence[str]) -> list[T]:
        """``fn(node name)`` for every node, on threads when there are several."""
        if len(names) <= 1:
            return [fn(n) for n in names]
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(16, thread_name_prefix="redfeat-node")
            ex = self._executor
        return list(ex.map(fn, names))

    def refresh(self) -> None:
        """Read the cluster's slot map again (after MOVED, ASK or a failover) and drop the
        connections to nodes that left it."""
        if self.cluster is None:
            return
        with contextlib.suppress(redis.RedisError):  # the next try finds out again
            self.cluster.nodes_manager.initialize()

    def retrying(self, step: Callable[[], T], *, what: str) -> T:
        """Run ``step``; on a cluster, after a redirection or a failover, read the slot map
        again and run it again, within RETRY_WINDOW. Only for steps that are safe to repeat
        (a write step dedupes a repeated version; a read is a read)."""
        if self.cluster is None:
            return step()
        deadline = time.monotonic() + RETRY_WINDOW
        pause = 0.05
        while True:
            try:
                try:
                    return step()
                except BackendError as wrapped:  # a redirection wrapped by the step
                    if isinstance(wrapped.__cause__, REDIRECTS):
                        raise wrapped.__cause__ from wrapped
                    raise
            except REDIRECTS as exc:
                if time.monotonic() > deadline:
                    raise BackendError(
                        f"{what}: the cluster did not settle within {RETRY_WINDOW:.0f} s "
                        f"({type(exc).__name__}: {exc})"
                    ) from exc
                if not isinstance(exc, redis.exceptions.MovedError | redis.exceptions.AskError):
                    time.sleep(pause)
                    pause = min(pause * 2, 0.5)
                self.refresh()

    def call(self, *args: Any, key: str | None = None) -> Any:
        """Send one command and read its reply; reconnects once after a dropped connection.
        On a cluster it goes to the node of ``key`` (default: the command's first argument)."""
        if self.cluster is not None:
            target = key if key is not None else str(args[1]) if len(args) > 1 else None
            return self.retrying(lambda: self._call(self.conn(target), args), what=str(args[0]))
        return self._call(self.conn(), args)

    @staticmethod
    def _call(c: Any, args: Sequence[Any]) -> Any:
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

    def routed(
        self,
        keys: Sequence[str],
        run: Callable[[Any, list[int]], Sequence[T]],
        *,
        retry: bool = True,
        what: str = "read",
    ) -> list[T]:
        """``run(connection, indices)`` -> one result per index, for the keys each node
        serves (one call on one node), nodes in parallel; results in the order of ``keys``.
        ``retry``: run a node's part again after a redirection or a failover (reads and
        steps that are safe to repeat)."""
        if self.cluster is None:
            return list(run(self.conn(), list(range(len(keys)))))
        out: list[Any] = [None] * len(keys)
        groups = self.group(keys)

        def node(name: str) -> None:
            idx = groups[name]

            def step() -> None:
                sub = self.group([keys[i] for i in idx])  # again: slots may have moved
                for nm, js in sub.items():
                    part = [idx[j] for j in js]
                    for i, r in zip(part, run(self.node_conn(nm), part), strict=True):
                        out[i] = r

            if retry:
                self.retrying(step, what=what)
            else:
                step()

        self.parallel(node, list(groups))
        return out

    def slot_groups(self, keys: Sequence[str]) -> list[list[int]]:
        """Indices of ``keys`` by hash slot (all of them together on one node)."""
        if self.cluster is None:
            return [list(range(len(keys)))]
        out: dict[int, list[int]] = {}
        for i, k in enumerate(keys):
            out.setdefault(key_slot(k.encode()), []).append(i)
        return list(out.values())

    def pipelined(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Commands ``(key, args)``, each sent to the node of its key's slot: every node's
        commands in one buffer (one send; redis-py sends a list item by item), all sent
        before any reply is read, so the nodes work at once without a thread each (a
        thread hand-off costs more than a node's share of a small batch). Replies in
        order, error replies as exception objects. Not retried: see ``retrying``."""
        by_conn: dict[int, tuple[Any, list[int]]] = {}
        for i, (key, _) in enumerate(calls):
            c = self.conn(key)
            by_conn.setdefault(id(c), (c, []))[1].append(i)
        out: list[Any] = [None] * len(calls)
        try:
            for c, idx in by_conn.values():
                c.send_packed_command([b"".join(pack(*calls[i][1]) for i in idx)])
            for c, idx in by_conn.values():
                for i, reply in zip(idx, read_all(c, len(idx)), strict=True):
                    out[i] = reply
        except BaseException:
            for c, _ in by_conn.values():  # replies may be left unread on any of them
                c.disconnect()
            raise
        return out

    def mget(self, keys: Sequence[str]) -> list[Any]:
        """GET of many keys: one MGET per slot, pipelined per node, the nodes at once."""
        if self.cluster is None:
            if len(keys) == 1:
                return [self._call(self.conn(), ("GET", keys[0]))]
            return list(self._call(self.conn(), ("MGET", *keys)))
        out: list[Any] = [None] * len(keys)

        def step() -> None:
            # regrouped on every try: after a failover or a migration a slot may be served
            # by another node
            by_slot: dict[int, list[int]] = {}
            for i, k in enumerate(keys):
                by_slot.setdefault(key_slot(k.encode()), []).append(i)
            parts = list(by_slot.values())
            calls = [(keys[part[0]], ("MGET", *[keys[i] for i in part])) for part in parts]
            for part, reply in zip(parts, self.pipelined(calls), strict=True):
                if isinstance(reply, Exception):
                    raise reply
                for i, v in zip(part, reply, strict=True):
                    out[i] = v

        self.retrying(step, what="MGET")
        return out

    def close(self) -> None:
        with self._lock:
            for held in list(self._all):
                held.conn.disconnect()
            self._all.clear()
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None
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


def cluster_from_url(url: str, **kwargs: Any) -> RedisCluster:
    """A redis-py cluster client from ``redis+cluster://[user:pass@]h1:p1,h2:p2/?opts``
    (``rediss+cluster://`` for TLS): every listed node is a startup node, the options are
    redis-py's URL options."""
    from urllib.parse import urlsplit

    from redis.cluster import ClusterNode
    from redis.connection import parse_url

    scheme, _, rest = url.partition("+cluster://")
    if scheme not in ("redis", "rediss") or not rest:
        raise ValueError("expected redis+cluster://host:port[,host:port...]/")
    parts = urlsplit("//" + rest)
    auth, _, hosts = parts.netloc.rpartition("@")
    nodes: list[ClusterNode] = []
    for hp in hosts.split(","):
        host, _, port = hp.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{hp!r} is not host:port")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))  # type: ignore[no-untyped-call]
    first = f"{scheme}://{auth + '@' if auth else ''}{hosts.split(',')[0]}"
    first += parts.path if parts.path not in ("", "/") else ""
    opts = parse_url(first + ("?" + parts.query if parts.query else ""))  # type: ignore[no-untyped-call]
    opts.pop("host", None)
    opts.pop("port", None)
    if opts.pop("db", 0):
        raise ValueError("a Redis Cluster has only database 0")
    opts.pop("connection_class", None)
    if scheme == "rediss":
        opts["ssl"] = True
    return RedisCluster(startup_nodes=nodes, **{**opts, **kwargs})


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
    # on a cluster: one master answers for all (they run one binary)
    target: dict[str, Any] = {}
    if isinstance(client, RedisCluster):
        target = {"target_nodes": RedisCluster.RANDOM}
    with wrap_redis("cannot read server info"):
        info = client.info("server", **target)
    name = str(info.get("server_name") or "redis")
    version = str(info.get("valkey_version") or info.get("redis_version") or "0")
    caps: dict[str, Any] = {"server": name, "version": version, "cluster": bool(target)}

    def has(cmd: str) -> bool:
        # Called without arguments, a known command answers "wrong number of arguments".
        try:
            client.execute_command(cmd, **target)  # type: ignore[no-untyped-call]
        except redis.ResponseError as exc:
            return "unknown command" not in str(exc).lower()
        except redis.RedisError:
            return False
        return True

    caps["hash_field_expiry"] = has("HEXPIRE")
    caps["vector_search"] = has("FT.CREATE")
    caps["timeseries"] = has("TS.ADD")
    return caps
