"""Durability: what a store promises about the writes it acknowledges, and how it keeps
that promise on the server it talks to.

Modes, weakest first (``MODES``):

    everysec  the server appends every write to its append-only file (AOF) and fsyncs that
              file about once a second. A killed server process loses nothing in most
              kills, but a write acknowledged while a background fsync was still running
              can be lost (measured: a few ms of writes in ~2 % of kills); a machine crash
              or power loss loses up to ~1-2 s of acknowledged writes.
    always    a write is acknowledged only once it is on disk: the server runs
              ``appendfsync always`` (fsync before it answers), or, where it does not,
              ``WAITAOF`` after each write call confirms the fsync. Only where WAITAOF
              really waits for it: under ``appendfsync everysec`` it acknowledges before the
              fsync on Valkey (9.1.2 measured: ~0.1 ms after a write) and Redis 7.2-7.4,
              fixed in Redis 8.0 (redis/redis#13793); ``trust_waitaof=True`` overrides.

A store checks the server when it opens and on every (re)connect, before anything is sent
on the new connection: a server below the promise is raised to it when the store runs it
(the embedded server), confirmed write by write with WAITAOF where it has that, or refused
(``ConfigurationError``).

    replicated  (issue 13) a view write is acknowledged only once ``WAIT`` confirms that
              ``replicas`` replicas (default 1) of the master that took it have it, within
              ``replica_timeout_ms`` (default 1000): a master killed after the answer loses
              nothing its replica takes over with. On a cluster, each node's part of a
              write call is confirmed on its own connection. The server's own persistence
              is checked as for "everysec". Not met: BackendError saying the write was
              applied on the master and may still be lost (retrying it is safe).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from ..errors import BackendError, ConfigurationError, backend_error

MODES = ("everysec", "always", "replicated")  # weakest first
CONFIRM_TIMEOUT_MS = 5000  # how long a write waits for WAITAOF before it is refused

_log = logging.getLogger("redfeat.durability")


def check_mode(mode: object) -> str:
    """``mode`` if it is a durability mode, else ConfigurationError."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ConfigurationError(f"durability must be one of {list(MODES)}, got {mode!r}")
    return mode


def check_replicas(client: Any, replicas: int) -> None:
    """For durability "replicated", when a store opens: every master (each one of a
    cluster) has at least ``replicas`` replicas connected, else ConfigurationError saying
    what to do (a write would otherwise be applied, then refused by WAIT)."""
    from redis.cluster import RedisCluster

    try:
        if isinstance(client, RedisCluster):
            reply = client.info("replication", target_nodes=RedisCluster.PRIMARIES)
            if "role" in reply:  # one master: its reply as it is
                reply = {str(client.get_primaries()[0].name): reply}  # type: ignore[no-untyped-call]
            infos = dict(reply)
        else:
            infos = {"": client.info("replication")}
    except redis.RedisError as exc:
        raise backend_error("cannot read the replication state (INFO replication)", exc) from exc
    short = {
        node: int(info.get("connected_slaves") or 0)
        for node, info in infos.items()
        if int(info.get("connected_slaves") or 0) < replicas
    }
    if short:
        where = ", ".join(
            f"{'the server' if not node else 'master ' + node} has {n}" for node, n in short.items()
        )
        raise ConfigurationError(
            f"durability='replicated' needs {replicas} replica(s) connected to every master; "
            f"{where}. Add replicas (CLUSTER REPLICATE on a cluster, REPLICAOF on one "
            "server; `redfeat server start --cluster 3` gives each master one), open with "
            "Durability('replicated', replicas=N) for fewer, or use durability='everysec'"
        )


def strictest(*modes: str) -> str:
    """The strictest of some modes."""
    return max(modes, key=MODES.index)


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


@dataclass(frozen=True, slots=True)
class Persistence:
    """What a server says it keeps on disk; None where it would not say (CONFIG GET not
    allowed, as on many managed services)."""

    appendonly: bool | None
    appendfsync: str | None
    save: str | None  # RDB snapshot points ("" = none)
    waitaof: bool  # the server has WAITAOF (Redis >= 7.2, Valkey)
    server: str = "?"  # "redis 7.0.15", "valkey 9.1.2"

    @property
    def waitaof_fsyncs(self) -> bool:
        """Whether its WAITAOF waits for the fsync under ``appendfsync everysec`` too:
        Redis >= 8.0 (redis/redis#13793). Valkey (up to 9.1.2 at least) and Redis 7.2-7.4
        acknowledge once the write reached the file, before its fsync."""
        name, _, version = self.server.partition(" ")
        try:
            major = int(version.split(".")[0])
        except ValueError:
            return False
        return self.waitaof and name == "redis" and major >= 8

    def describe(self) -> str:
        if self.appendonly is None:
            known = "its settings are unknown (CONFIG GET is not allowed)"
        elif self.appendonly:
            known = f"appendonly yes, appendfsync {self.appendfsync}"
        elif self.save:
            known = f"appendonly no, only snapshots (save {self.save!r})"
        else:
            known = 'appendonly no, save "": nothing on disk'
        return f"{self.server}: {known}" + ("; has WAITAOF" if self.waitaof else "; no WAITAOF")

    @property
    def keeps_nothing(self) -> bool:
        return self.appendonly is False and self.save == ""


def probe(conn: Any) -> Persistence:
    """Ask the server on a raw connection (``send_command``/``read_response``)."""
    conn.send_command("CONFIG", "GET", "appendonly", "appendfsync", "save")
    try:
        reply = conn.read_response()
    except redis.ResponseError:  # CONFIG renamed, disabled or not allowed by an ACL
        reply = None
    conf: dict[str, str] = {}
    if isinstance(reply, dict):  # RESP3
        conf = {_text(k): _text(v) for k, v in reply.items()}
    elif isinstance(reply, list):
        conf = {_text(k): _text(v) for k, v in zip(reply[0::2], reply[1::2], strict=True)}
    conn.send_command("COMMAND", "INFO", "WAITAOF")
    try:
        info = conn.read_response()
    except redis.ResponseError:
        info = None
    conn.send_command("INFO", "server")
    try:
        lines = _text(conn.read_response()).splitlines()
    except redis.ResponseError:
        lines = []
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    if "valkey_version" in fields:
        server = f"valkey {fields['valkey_version'].strip()}"
    else:
        name = fields.get("server_name", "redis").strip()
        server = f"{name} {fields.get('redis_version', '?').strip()}"
    aof = conf.get("appendonly")
    return Persistence(
        appendonly=None if aof is None else aof == "yes",
        appendfsync=conf.get("appendfsync"),
        save=conf.get("save"),
        waitaof=bool(info) and info[0] is not None,
        server=server,
    )


class Durability:
    """One store's promise (``mode``) and how it is kept on its server.

    ``managed``: the store runs the server (embedded) and raises its setting when it finds
    it below the promise, e.g. after another process restarted it with a weaker one.
    ``connected`` is the redis-py ``redis_connect_func`` of the store's connections: every
    new connection is checked before its first command. ``confirm`` runs after each write
    call where the server's own setting does not already keep the promise."""

    def __init__(
        self,
        mode: str,
        *,
        managed: bool = False,
        trust_waitaof: bool | None = None,
        replicas: int = 1,
        replica_timeout_ms: int = 1000,
    ) -> None:
        self.mode = check_mode(mode)
        self.managed = managed
        for name, v, lo in (
            ("replicas", replicas, 1),
            ("replica_timeout_ms", replica_timeout_ms, 1),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigurationError(f"{name} must be an int >= {lo}, got {v!r}")
        self.replicas = replicas
        self.replica_timeout_ms = replica_timeout_ms
        # None: trust WAITAOF where the server is known to wait for the fsync (Redis >=
        # 8.0); True for a server you know does (a patched build), False never to use it
        self.trust_waitaof = trust_waitaof
        self._lock = threading.Lock()
        self._persistence: Persistence | None = None
        self._confirm = False
        self._warned: set[str] = set()
        # connection -> how many times it connected: a write call that spans a reconnect
        # cannot rely on WAITAOF alone (see confirm)
        self._epochs: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    # -- what the store reports -----------------------------------------------------------

    @property
    def persistence(self) -> Persistence | None:
        """The server's settings as last checked (None before the first check)."""
        return self._persistence

    @property
    def confirms(self) -> bool:
        """True when each write call waits for WAITAOF (the server's setting alone does
        not keep the promise)."""
        return self._confirm

    def describe(self) -> str:
        """One line: the promise, how this server keeps it, and its settings."""
        p = self._persistence
        if p is None:
            how = "not checked yet"
        elif self._confirm:
            how = "each write call is confirmed on disk by WAITAOF"
        elif p.appendonly and p.appendfsync == "always":
            how = "the server fsyncs every write before it answers"
        elif p.appendonly and p.appendfsync == "everysec":
            how = "the server fsyncs its append-only file about once a second"
        elif p.appendonly is None:
            how = "not verified: the server does not say how it persists"
        else:
            how = "NOT kept: the server would lose acknowledged writes in a crash"
        server = "?" if p is None else p.describe()
        return f"durability {self.mode!r}: {how} (server: {server})"

    def __repr__(self) -> str:
        return f"<Durability {self.describe()}>"

    # -- the checks ---------------------------------------------------------------------

    def connected(self, conn: Any) -> None:
        """redis-py ``redis_connect_func``: the usual handshake (AUTH, SELECT, name), then
        the durability check; raising here closes the connection unused."""
        conn.on_connect()
        opened = self._persistence is not None
        try:
            self.verify(conn)
        except ConfigurationError as exc:
            if not opened:
                raise  # the store cannot open on this server
            # the server changed under an open store: it fails like an unusable server
            raise BackendError(f"refused to use a reconnected server: {exc}") from exc
        with self._lock:
            self._epochs[conn] = self._epochs.get(conn, 0) + 1

    def verify(self, conn: Any) -> Persistence:
        """Check the server behind ``conn`` keeps the promise (raising a managed server's
        setting first); ConfigurationError if it cannot be kept."""
        p = probe(conn)
        if self.managed and self._below(p):
            # Our own server, restarted by someone with a weaker setting: the data dir's
            # promise wins (the setting takes effect at once, no restart).
            if p.appendonly is False:
                conn.send_command("CONFIG", "SET", "appendonly", "yes")
                conn.read_response()
            conn.send_command("CONFIG", "SET", "appendfsync", self.mode)
            conn.read_response()
            _log.warning(
                "redfeat: the embedded server ran %s below the promised durability %r; raised it",
                p.describe(),
                self.mode,
            )
            p = probe(conn)
        confirm = self._plan(p)
        with self._lock:
            self._persistence = p
            self._confirm = confirm
        return p

    def _below(self, p: Persistence) -> bool:
        if p.appendonly is None:
            return False  # cannot tell; _plan decides
        if not p.appendonly:
            return True
        return self.mode == "always" and p.appendfsync != "always"

    def _plan(self, p: Persistence) -> bool:
        """Whether each write call must be confirmed with WAITAOF; raises when the promise
        cannot be kept on this server."""
        if self.mode in ("everysec", "replicated"):
            if p.keeps_nothing:
                self._warn(
                    "nothing",
                    'redfeat: the server keeps nothing on disk (appendonly no, save ""): '
                    "every write is lost when it stops or crashes. Set appendonly yes on it "
                    "to keep what durability='everysec' promises",
                )
            elif p.appendonly is False:
                self._warn(
                    "snapshots",
                    f"redfeat: the server keeps only snapshots (save {p.save!r}): writes "
                    "since the last one are lost when it crashes. Set appendonly yes on it "
                    "to keep what durability='everysec' promises",
                )
            elif p.appendfsync == "no":
                self._warn(
                    "fsync-no",
                    "redfeat: the server leaves fsync to the OS (appendfsync no): a machine "
                    "crash can lose ~30 s of acknowledged writes",
                )
            elif p.appendonly is None:
                self._warn(
                    "unknown",
                    "redfeat: could not check the server's persistence (CONFIG GET is not "
                    "allowed): durability='everysec' is what the server's operator set",
                )
            return False
        if p.appendonly and p.appendfsync == "always":
            return False
        trusted = p.waitaof_fsyncs if self.trust_waitaof is None else self.trust_waitaof
        if p.waitaof and trusted and p.appendonly is not False:
            return True
        why = ""
        if p.waitaof and not trusted:
            why = (
                " Its WAITAOF cannot confirm an fsync under appendfsync everysec: it "
                "acknowledges once the write reached the file, before the fsync (Valkey, "
                "Redis 7.2-7.4; fixed in Redis 8.0, redis/redis#13793)."
            )
        raise ConfigurationError(
            "durability='always' needs a server that fsyncs each write before it is "
            f"acknowledged; this one runs {p.describe()}.{why} Set appendonly yes and "
            "appendfsync always on it, use Redis >= 8.0 (WAITAOF after each write), or "
            "open the store with durability='everysec'"
        )

    def _warn(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        _log.warning(message)

    # -- after a write ------------------------------------------------------------------

    def mark(self, conn: Any) -> int:
        """Taken before a write call on ``conn``; pass it to ``confirm`` after."""
        return self._epochs.get(conn, 0)

    def confirm(self, conn: Any, mark: int, barrier_key: str) -> None:
        """After a write call on ``conn``: return once the server has fsynced it (WAITAOF),
        or raise BackendError; nothing to do where the server's setting keeps the promise.

        WAITAOF covers the writes made on its own connection. If the connection was
        re-established during the call (a retried write that found its version already
        stored writes nothing), a small write to ``barrier_key`` first moves this
        connection past everything written before it."""
        if not self._confirm:
            return
        epoch = self._epochs.get(conn, 0)
        reconnected = mark < 0 or epoch - mark > (1 if mark == 0 else 0)
        try:
            if reconnected:
                conn.send_command("SET", barrier_key, self.mode)
                conn.read_response()
            conn.send_command("WAITAOF", 1, 0, CONFIRM_TIMEOUT_MS)
            numlocal = int(conn.read_response()[0])
        except redis.RedisError as exc:
            conn.disconnect()
            raise backend_error(
                "the write was sent but its fsync could not be confirmed (WAITAOF); it may "
                "or may not be on disk, and retrying the same write is safe",
                exc,
            ) from exc
        if numlocal < 1:
            raise BackendError(
                f"the server did not fsync the write within {CONFIRM_TIMEOUT_MS} ms "
                "(WAITAOF): durability='always' cannot acknowledge it. The disk may be "
                "slow or full; retrying the same write is safe"
            )

    @contextlib.contextmanager
    def on_node(self, conn: Any, key: str, barrier: str) -> Iterator[None]:
        """Around the writes of one call on ``conn``, one cluster node's connection (or the
        one node's, for "replicated"): once they are sent, WAIT for the replicas
        ("replicated") or WAITAOF on that node ("always", where it needs it), so that
        every node a write call touched confirms it. ``barrier``: a key on the slot of
        ``key``, written first when ``conn`` reconnected during the call."""
        mark = self.mark(conn)
        yield
        if self.replicated:
            self.replicate(conn)
        else:
            self.confirm(conn, mark, barrier)

    def confirm_node(self, conn: Any, barrier: str) -> None:
        """``sync`` for one node's raw connection: a write to ``barrier`` (on that node),
        then WAITAOF, covers every write the node took before it."""
        if not self._confirm:
            return
        self.confirm(conn, -1, barrier)  # mark -1: always write the barrier first

    @property
    def replicated(self) -> bool:
        return self.mode == "replicated"

    def replicate(self, conn: Any) -> None:
        """After writes on ``conn`` (durability "replicated"): return once ``replicas``
        replicas have them (WAIT), else raise BackendError."""
        try:
            conn.send_command("WAIT", self.replicas, self.replica_timeout_ms)
            got = int(conn.read_response())
        except redis.RedisError as exc:
            conn.disconnect()
            raise backend_error(
                "the write was applied on the master but its replication could not be "
                "confirmed (WAIT): it may be lost if that master fails now; retrying the same "
                "write is safe",
                exc,
            ) from exc
        if got < self.replicas:
            raise BackendError(
                f"durability='replicated': the write was applied on the master, but only {got} "
                f"of {self.replicas} replica(s) confirmed it within {self.replica_timeout_ms} ms "
                "(WAIT): it may still be lost if that master fails before its replicas catch "
                "up. Retrying the same write is safe; check the replicas (a failover just "
                "happened, or a replica is down) or raise replica_timeout_ms"
            )

    def sync(self, client: redis.Redis, barrier_key: str) -> None:
        """``confirm`` for writes made on the client's pool (push, window events): a write
        to ``barrier_key`` and WAITAOF on one connection cover everything written before."""
        if not self._confirm:
            return
        try:
            pipe = client.pipeline(transaction=False)
            pipe.set(barrier_key, self.mode)
            pipe.execute_command("WAITAOF", 1, 0, CONFIRM_TIMEOUT_MS)  # type: ignore[no-untyped-call]
            _, (numlocal, _replicas) = pipe.execute()
        except redis.RedisError as exc:
            what = "the fsync of the write could not be confirmed (WAITAOF)"
            raise backend_error(what, exc) from exc
        if int(numlocal) < 1:
            raise BackendError(
                f"the server did not fsync the write within {CONFIRM_TIMEOUT_MS} ms "
                "(WAITAOF): durability='always' cannot acknowledge it"
            )
