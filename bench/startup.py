"""Start and stop: opening a store, closing it, and CLI commands, beside raw baselines.

Command (what `make bench` runs):

    .venv/bin/python bench/startup.py [--rounds 7]

Each measure is the median of ``--rounds`` runs, in fresh processes where a user would
start one. Baselines in the same run: the server binary started and answering PING by
itself (no redfeat), a raw redis-py connection + PING, SHUTDOWN by redis-py, and a Python
process that only imports redis and sends one GET (the floor of any Python CLI). Targets
(issue 11): attach <= 50 ms, first open <= 0.5 s, close of the last user <= 0.2 s, CLI
commands <= 1 s on a running server.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.embedded import EmbeddedServer, default_binary

BIN = Path(sys.executable).parent


def median(fn: Callable[[], float], rounds: int) -> float:
    return statistics.median(fn() for _ in range(rounds))


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def raw_server_start(tmp: Path) -> float:
    """The binary alone: daemonized with the same AOF settings, until it answers PING."""
    d = Path(tempfile.mkdtemp(dir=tmp))
    sock = d / "s.sock"
    conf = d / "c.conf"
    conf.write_text(
        f'daemonize yes\npidfile "{d}/pid"\ndir "{d}"\nappendonly yes\nsave ""\nport 0\n'
        f'unixsocket "{sock}"\nlogfile "{d}/log"\n'
    )
    t0 = time.perf_counter()
    subprocess.run([default_binary(), str(conf)], check=True, capture_output=True)
    c = redis.Redis(unix_socket_path=str(sock), retry=Retry(NoBackoff(), 0))
    while True:
        try:
            c.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.002)
    took = time.perf_counter() - t0
    pid = int((d / "pid").read_text())
    t1 = time.perf_counter()
    with contextlib.suppress(redis.ConnectionError):
        c.execute_command("SHUTDOWN")  # type: ignore[no-untyped-call]
    raw_stop.append(time.perf_counter() - t1)
    while Path(f"/proc/{pid}").exists() and b") Z" not in Path(f"/proc/{pid}/stat").read_bytes():
        time.sleep(0.001)
    return took


raw_stop: list[float] = []


def first_open_and_close(tmp: Path) -> tuple[float, float]:
    d = Path(tempfile.mkdtemp(dir=tmp))
    t0 = time.perf_counter()
    store = FeatureStore(data_dir=d)
    opened = time.perf_counter() - t0
    t1 = time.perf_counter()
    store.close()
    return opened, time.perf_counter() - t1


def cli(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "redfeat"), *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    logging.getLogger("redfeat.home").setLevel(logging.ERROR)  # every first open is empty
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    n = ap.parse_args().rounds
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        # -- a server's life: first open (starts it), close of its last user (stops it)
        pairs = [first_open_and_close(tmp) for _ in range(n)]
        first = statistics.median(p[0] for p in pairs)
        close = statistics.median(p[1] for p in pairs)
        raw_start = median(lambda: raw_server_start(tmp), n)
        print("server life (median of", n, "runs)")
        print(
            f"  first open (starts the server)  {first * 1e3:7.1f} ms   raw binary start + "
            f"PING {raw_start * 1e3:6.1f} ms   ratio {first / raw_start:.2f}x   target <= 500 ms"
        )
        print(
            f"  close of the last user          {close * 1e3:7.1f} ms   raw SHUTDOWN       "
            f"{statistics.median(raw_stop) * 1e3:6.1f} ms   target <= 200 ms"
        )

        # -- a running server (redfeat server start): attach, and CLI commands
        home = tmp / "home"
        server = EmbeddedServer(home)
        info = server.ensure(keep_running=True)
        try:
            with FeatureStore(data_dir=home) as store:
                store.apply(FeatureView("v", entity="user", fields=[Field("x", t.Int)]))
                store.write("v", "u", {"x": 1})
            FeatureStore(data_dir=home).close()  # warm
            attach = median(lambda: timed(lambda: FeatureStore(data_dir=home).close()), n * 5)

            def raw_attach() -> None:
                c = redis.Redis(unix_socket_path=info.unix_socket)
                c.ping()
                c.close()

            raw = median(lambda: timed(raw_attach), n * 5)
            print("running server")
            print(
                f"  open + close a store            {attach * 1e3:7.1f} ms   raw connect + "
                f"PING {raw * 1e3:6.2f} ms   ratio {attach / raw:.1f}x   target <= 50 ms"
            )

            env = {**os.environ, "REDFEAT_HOME": str(home)}
            floor_code = (
                f"import redis; r = redis.Redis(unix_socket_path={info.unix_socket!r}); r.get('x')"
            )

            def floor() -> None:
                subprocess.run([sys.executable, "-c", floor_code], check=True)

            base = median(lambda: timed(floor), n)
            imp = median(
                lambda: timed(
                    lambda: subprocess.run([sys.executable, "-c", "import redfeat"], check=True)
                ),
                n,
            )
            print(f"  python: import redis + one GET  {base * 1e3:7.0f} ms (the floor)")
            print(
                f"  python: import redfeat          {imp * 1e3:7.0f} ms   ratio {imp / base:.2f}x"
            )
            for args in (["get", "v", "u"], ["views"], ["history", "v", "u"], ["server", "status"]):
                took = median(lambda a=args: cli(a, env), n)  # type: ignore[misc]
                print(
                    f"  redfeat {' '.join(args):22} {took * 1e3:7.0f} ms   "
                    f"ratio {took / base:.2f}x   target <= 1000 ms"
                )
        finally:
            server.stop(force=True)


if __name__ == "__main__":
    main()
