"""The embedded server: persistence, attaching, stale pids, permissions, the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from redfeat import ConfigurationError, ConflictError, FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.embedded import EmbeddedServer
from redfeat.serve.cli import app

VIEW = FeatureView("v", entity="user", fields=[Field("x", t.Int), Field("s", t.String)])
DEBIAN_REDIS = shutil.which("redis-server")


def run_python(code: str, cwd: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_restart_keeps_every_write(data_dir: Path) -> None:
    with FeatureStore(data_dir=data_dir) as store:
        store.apply(VIEW)
        store.write_many("v", [{"entity_id": f"e{i}", "x": i, "s": "0"} for i in range(500)])
        store.write("v", "zip", {"x": 1, "s": "00123"})
        pid = store.server_info.pid if store.server_info else 0
    assert EmbeddedServer(data_dir).status() is None  # the last user closed: server stopped
    with FeatureStore(data_dir=data_dir) as store:
        assert store.server_info is not None and store.server_info.pid != pid
        assert store.get("v", "zip") == {"x": 1, "s": "00123"}
        assert store.get("v", "e499") == {"x": 499, "s": "0"}
        assert len(store.history("v", "zip")) == 1


def test_strict_durability_survives_a_killed_server(data_dir: Path) -> None:
    store = FeatureStore(data_dir=data_dir, durability="always")
    store.apply(VIEW)
    store.write("v", "u", {"x": 42})
    assert store.server_info is not None
    os.kill(store.server_info.pid, signal.SIGKILL)
    time.sleep(0.2)
    store._online.direct.close()
    with FeatureStore(data_dir=data_dir) as again:  # stale pid file: recovered, restarted
        assert again.get("v", "u") == {"x": 42, "s": None}
    store.close()


def test_second_process_attaches_to_the_running_server(data_dir: Path, tmp_path: Path) -> None:
    with FeatureStore(data_dir=data_dir) as store:
        store.apply(VIEW)
        assert store.server_info is not None
        out = run_python(
            f"""
            from redfeat import FeatureStore
            with FeatureStore(data_dir={str(data_dir)!r}) as s:
                s.write("v", "from-child", {{"x": 7}})
                print(s.server_info.pid)
            """,
            tmp_path,
        )
        assert int(out) == store.server_info.pid
        assert store.get("v", "from-child") == {"x": 7, "s": None}
        assert EmbeddedServer(data_dir).status() is not None  # still used by this store


def test_store_never_closed_stops_server_at_exit(data_dir: Path, tmp_path: Path) -> None:
    run_python(
        f"""
        from redfeat import FeatureStore
        s = FeatureStore(data_dir={str(data_dir)!r})
        """,
        tmp_path,
    )
    assert EmbeddedServer(data_dir).status() is None


def test_stale_pid_file_is_recovered(data_dir: Path) -> None:
    server = EmbeddedServer(data_dir)
    info = server.ensure()
    server.stop()
    # a server.json whose pid is long gone (or reused by something else that won't answer)
    stale = dataclasses.replace(info, pid=999_999)
    (data_dir / "server.json").write_text(json.dumps(dataclasses.asdict(stale)))
    new = server.ensure()
    try:
        assert new.pid != 999999 and server.status() is not None
    finally:
        server.stop()


def test_files_and_socket_are_private(data_dir: Path) -> None:
    server = EmbeddedServer(data_dir)
    info = server.ensure()
    try:
        assert info.unix_socket is not None and info.port is None
        assert stat.S_IMODE(os.stat(data_dir / "run").st_mode) == 0o700
        assert stat.S_IMODE(os.stat(data_dir / "server.json").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(data_dir / "server.conf").st_mode) == 0o600
        with info.client() as c:
            assert c.config_get("port")["port"] == "0"  # no TCP listener at all
            assert c.config_get("appendonly")["appendonly"] == "yes"
    finally:
        server.stop()


def test_long_paths_fall_back_to_loopback_tcp_with_a_password(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = EmbeddedServer(deep)
    info = server.ensure()
    try:
        assert info.port is not None and info.password and info.unix_socket is None
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=info.port).ping()
        with info.client() as c:
            assert c.config_get("bind")["bind"] == "127.0.0.1"
        with FeatureStore(data_dir=deep) as store:  # attaches with the stored password
            store.apply(VIEW)
            store.write("v", "u", {"x": 1})
            assert store.server_info is not None and store.server_info.pid == info.pid
    finally:
        server.stop()


def test_durability_setting(data_dir: Path) -> None:
    with pytest.raises(ConfigurationError):
        EmbeddedServer(data_dir, durability="sometimes")
    with FeatureStore(data_dir=data_dir, durability="always") as store:
        assert store.client.config_get("appendfsync")["appendfsync"] == "always"


def test_missing_binary_is_a_configuration_error(data_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="binary"):
        FeatureStore(data_dir=data_dir, server_bin="/nonexistent/redis-server")


@pytest.mark.skipif(DEBIAN_REDIS is None, reason="no redis-server binary on this machine")
def test_another_binary_can_serve(data_dir: Path) -> None:
    with FeatureStore(data_dir=data_dir, server_bin=DEBIAN_REDIS) as store:
        assert store.capabilities["server"] == "redis"
        store.apply(VIEW)
        store.write("v", "u", {"x": 3, "s": "007"})
        assert store.get("v", "u") == {"x": 3, "s": "007"}


def test_cli_server_start_status_stop(data_dir: Path) -> None:
    runner = CliRunner()
    env = {"REDFEAT_HOME": str(data_dir)}
    result = runner.invoke(app, ["server", "start"], env=env)
    assert result.exit_code == 0, result.output
    assert "running" in result.output
    with FeatureStore(data_dir=data_dir) as store:
        store.apply(VIEW)
        store.write("v", "u", {"x": 5})
    # started with `server start`: closing the last store leaves it running
    status = runner.invoke(app, ["server", "status"], env=env)
    assert status.exit_code == 0 and "kept running" in status.output
    got = runner.invoke(app, ["get", "v", "u"], env=env)
    assert got.exit_code == 0 and '"x": 5' in got.output
    hist = runner.invoke(app, ["history", "v", "u"], env=env)
    assert hist.exit_code == 0 and "5" in hist.output
    views = runner.invoke(app, ["views"], env=env)
    assert views.exit_code == 0 and "v" in views.output
    stop = runner.invoke(app, ["server", "stop"], env=env)
    assert stop.exit_code == 0 and "stopped" in stop.output
    status = runner.invoke(app, ["server", "status"], env=env)
    assert status.exit_code == 1 and "not running" in status.output


# -- attached processes, stop refusal, fast close, the data-dir rule --------------------

_HOLDER = """
import sys, time
from redfeat import BackendError, FeatureStore
store = FeatureStore(data_dir=sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:  # each line: read entity u and report what happened, and how fast
    t0 = time.monotonic()
    try:
        got = store.get("v", "u")
        print("ok", got["x"] if got else None, flush=True)
    except BackendError as exc:
        print("backend", round(time.monotonic() - t0, 3), str(exc).replace("\\n", " "), flush=True)
store.close()
"""


def _ask(proc: subprocess.Popen[str]) -> list[str]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("get\n")
    proc.stdin.flush()
    return proc.stdout.readline().split()


def test_server_stop_refuses_while_attached_and_force_fails_fast(data_dir: Path) -> None:
    runner = CliRunner()
    env = {"REDFEAT_HOME": str(data_dir)}
    assert runner.invoke(app, ["server", "start"], env=env).exit_code == 0
    with FeatureStore(data_dir=data_dir) as store:
        store.apply(VIEW)
        store.write("v", "u", {"x": 1})
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        assert _ask(holder) == ["ok", "1"]
        status = runner.invoke(app, ["server", "status"], env=env)
        assert f"pid {holder.pid}" in status.output
        refused = runner.invoke(app, ["server", "stop"], env=env)
        assert refused.exit_code != 0
        assert isinstance(refused.exception, ConflictError)
        assert f"pid {holder.pid}" in str(refused.exception)
        assert "--force" in str(refused.exception)
        assert EmbeddedServer(data_dir).status() is not None  # still running
        assert _ask(holder) == ["ok", "1"]

        forced = runner.invoke(app, ["server", "stop", "--force"], env=env)
        assert forced.exit_code == 0 and "stopped" in forced.output
        answer = _ask(holder)
        assert answer[0] == "backend" and float(answer[1]) < 2.0, answer  # fails fast
        # started again: the attached store reconnects by itself
        assert runner.invoke(app, ["server", "start"], env=env).exit_code == 0
        assert _ask(holder) == ["ok", "1"]
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
        EmbeddedServer(data_dir).stop(force=True)


def test_close_returns_at_once_and_a_new_process_reads_every_write(
    data_dir: Path, tmp_path: Path
) -> None:
    # Each round: a process writes, closes (the last user: the server shuts down) and exits;
    # the next process, started at once, must find every acknowledged write.
    for rnd in range(4):
        out = run_python(
            f"""
            from redfeat import FeatureStore, FeatureView, Field, types as t
            s = FeatureStore(data_dir={str(data_dir)!r})
            s.apply(FeatureView("v", entity="user", fields=[Field("x", t.Int)]))
            seen = [s.get("v", "e1999")["x"], s.get("v", "last")["x"]] if {rnd} else []
            rows = [{{"entity_id": f"e{{i}}", "x": {rnd} * 1000 + i}} for i in range(2000)]
            s.write_many("v", rows)
            s.write("v", "last", {{"x": {rnd}}})
            s.close()
            print(seen)
            """,
            tmp_path,
        )
        if rnd:
            assert out.strip() == f"[{(rnd - 1) * 1000 + 1999}, {rnd - 1}]"  # the last round's
        assert EmbeddedServer(data_dir).status() is None
    with FeatureStore(data_dir=data_dir) as store:
        assert store.get("v", "last") == {"x": 3}
        got = store.get_many("v", [f"e{i}" for i in range(2000)])
        assert [r["x"] for r in got] == [3000 + i for i in range(2000)]
        assert len(store.history("v", "e0")) == 4


def test_a_zombie_server_counts_as_stopped() -> None:
    # An exited daemon stays a zombie until init reaps it (a second or more in some
    # containers); waiting for that made close() take over a second.
    from redfeat.core.embedded import pid_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while pid_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert not pid_alive(child.pid)  # not reaped yet: a zombie
        assert Path(f"/proc/{child.pid}").exists()
    finally:
        child.wait()
    assert pid_alive(os.getpid())


def test_data_dir_rule_is_shared_by_library_and_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("REDFEAT_HOME", str(home))
    with caplog.at_level("WARNING", logger="redfeat.home"), FeatureStore() as store:
        assert store.server is not None and store.server.dir == home.resolve()
        assert "holds no data yet" in caplog.text and str(home) in caplog.text
        store.apply(VIEW)
        store.write("v", "u", {"x": 9})
    assert not (elsewhere / ".redfeat").exists()
    caplog.clear()
    with caplog.at_level("WARNING", logger="redfeat.home"), FeatureStore() as store:
        assert store.get("v", "u") == {"x": 9, "s": None}
    assert "holds no data" not in caplog.text  # it has data now: nothing to say

    runner = CliRunner()
    got = runner.invoke(app, ["get", "v", "u"])  # REDFEAT_HOME from the environment
    assert got.exit_code == 0, got.output
    assert f"data: {home.resolve()}" in got.stderr and "no data" not in got.stderr
    assert json.loads(got.stdout) == {"x": 9, "s": None}  # stdout stays JSON
    status = runner.invoke(app, ["server", "status"])
    assert f"data: {home.resolve()}" in status.output

    # without REDFEAT_HOME: ./.redfeat of the current directory, and the CLI says it is empty
    monkeypatch.delenv("REDFEAT_HOME")
    views = runner.invoke(app, ["views"])
    assert views.exit_code == 0, views.output
    assert f"data: {(elsewhere / '.redfeat').resolve()} (holds no data yet" in views.stderr
    assert EmbeddedServer(elsewhere / ".redfeat").status() is None


def test_http_server_answers_503_while_stopped_then_recovers(data_dir: Path) -> None:
    import socket

    import httpx2

    runner = CliRunner()
    env = {"REDFEAT_HOME": str(data_dir)}
    assert runner.invoke(app, ["server", "start"], env=env).exit_code == 0
    with FeatureStore(data_dir=data_dir) as store:
        store.apply(VIEW)
        store.write("v", "u", {"x": 4})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    exe = Path(sys.executable).with_name("redfeat")
    proc = subprocess.Popen(
        [str(exe), "serve", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/views/v/entities/u"
    try:
        assert proc.stdout is not None and "serving" in proc.stdout.readline()
        deadline = time.monotonic() + 20
        while True:
            try:
                resp = httpx2.get(url, timeout=2)
                break
            except httpx2.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        assert resp.status_code == 200 and resp.json()["values"]["x"] == 4
        assert runner.invoke(app, ["server", "stop"], env=env).exit_code != 0  # in use
        assert runner.invoke(app, ["server", "stop", "--force"], env=env).exit_code == 0
        t0 = time.monotonic()
        down = httpx2.get(url, timeout=10)
        assert down.status_code == 503 and down.json()["error"] == "BackendError"
        assert time.monotonic() - t0 < 2.0  # fails fast, never hangs
        assert runner.invoke(app, ["server", "start"], env=env).exit_code == 0
        again = httpx2.get(url, timeout=10)
        assert again.status_code == 200 and again.json()["values"]["x"] == 4
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        EmbeddedServer(data_dir).stop(force=True)
