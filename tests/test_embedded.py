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

from redfeat import ConfigurationError, FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.cli import app
from redfeat.embedded import EmbeddedServer

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
    store.online.direct.close()
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
