"""Durability: the promise of a store (``durability=``) is kept on its server, after
restarts and reconnects, for the embedded server and for URL stores (issue 17, items 1-2).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redfeat import BackendError, ConfigurationError, FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.durability import MODES, Durability
from redfeat.core.embedded import EmbeddedServer

VIEW = FeatureView("v", entity="user", fields=[Field("x", t.Int)])
DEBIAN_REDIS = shutil.which("redis-server")


def _restart_elsewhere(data_dir: Path) -> None:
    """Another process starts the data dir's server with the default durability."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from redfeat.core.embedded import EmbeddedServer; "
            "print(EmbeddedServer(sys.argv[1]).ensure(keep_running=True).pid)",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert int(out.stdout)


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def test_always_outlives_a_restart_by_another_process(data_dir: Path) -> None:
    # Issue 17.1: a store opened with "always" reconnects to a server that another process
    # restarted with the default; it must still run "always", and say what it runs.
    store = FeatureStore(data_dir=data_dir, durability="always")
    try:
        store.apply(VIEW)
        store.write("v", "u", {"x": 1})
        assert store.server_info is not None
        _kill(store.server_info.pid)
        _restart_elsewhere(data_dir)
        store.write("v", "u", {"x": 2})  # reconnects by itself
        admin = EmbeddedServer(data_dir).status()
        assert admin is not None
        with admin.client() as c:
            assert c.config_get("appendfsync")["appendfsync"] == "always"
        assert store.server_info is not None and store.server_info.durability == "always"
        assert store.server_info.pid == admin.pid  # the server running now
        assert store.durability.mode == "always" and not store.durability.confirms
        assert (data_dir / "durability").read_text().strip() == "always"
        # a later default open of the same data dir keeps the stricter promise
        with FeatureStore(data_dir=data_dir) as other:
            assert other.durability.mode == "always"
            assert other.get("v", "u") == {"x": 2}
    finally:
        store.close()
        EmbeddedServer(data_dir).stop(force=True)


def test_a_lowered_setting_is_raised_again_at_reconnect(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FeatureStore(data_dir=data_dir, durability="always")
    try:
        store.apply(VIEW)
        info = EmbeddedServer(data_dir).status()
        assert info is not None
        with info.client() as c:
            c.config_set("appendfsync", "everysec")  # by hand, behind the store's back
            c.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            with caplog.at_level("WARNING", logger="redfeat.durability"):
                store.write("v", "u", {"x": 3})  # new connection: checked first
            assert c.config_get("appendfsync")["appendfsync"] == "always"
        assert "below the promised durability 'always'" in caplog.text
        assert store.get("v", "u") == {"x": 3}
    finally:
        store.close()


def test_attaching_with_always_raises_a_running_server(data_dir: Path) -> None:
    server = EmbeddedServer(data_dir)
    server.ensure(keep_running=True)
    try:
        with FeatureStore(data_dir=data_dir) as weak:
            assert weak.durability.mode == "everysec"
            assert weak.client.config_get("appendfsync")["appendfsync"] == "everysec"
        with FeatureStore(data_dir=data_dir, durability="always") as strict:
            assert strict.client.config_get("appendfsync")["appendfsync"] == "always"
            assert strict.server_info is not None and strict.server_info.durability == "always"
    finally:
        server.stop(force=True)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mode=st.one_of(st.text(max_size=12), st.integers(), st.none()))
def test_unknown_modes_are_refused_and_change_nothing(tmp_path: Path, mode: object) -> None:
    if mode in MODES:
        return
    home = tmp_path / f"h{abs(hash(repr(mode)))}"
    with pytest.raises(ConfigurationError, match="durability must be one of"):
        FeatureStore(data_dir=home, durability=mode)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="durability must be one of"):
        FeatureStore.from_url("redis://127.0.0.1:1/0", durability=mode)  # type: ignore[arg-type]
    assert not home.exists()  # no server started, nothing written


def test_valkey_waitaof_is_not_taken_as_an_fsync_under_everysec(data_dir: Path) -> None:
    # Valkey's WAITAOF answers before the fsync under everysec (redis/redis#13793, fixed in
    # Redis 8.0 only): "always" on such a server is refused, with the reason.
    server = EmbeddedServer(data_dir)
    info = server.ensure(keep_running=True)
    try:
        with pytest.raises(ConfigurationError, match="before the fsync") as err:
            FeatureStore.from_url(info.url(), durability="always")
        assert "valkey 9" in str(err.value) and "13793" in str(err.value)
        # the same server with appendfsync always keeps the promise by itself
        with info.client() as admin:
            admin.config_set("appendfsync", "always")
        with FeatureStore.from_url(info.url(), durability="always") as store:
            assert not store.durability.confirms
            assert "fsyncs every write" in store.durability.describe()
    finally:
        server.stop(force=True)


def test_waitaof_confirms_each_write_call_and_crosses_reconnects(data_dir: Path) -> None:
    # The WAITAOF path, on a server told to be trusted (trust_waitaof=True: what Redis
    # >= 8.0 gets by default): one WAITAOF per write call, on the connection that wrote;
    # after a reconnect inside a call, a barrier write first.
    server = EmbeddedServer(data_dir)
    info = server.ensure(keep_running=True)
    try:
        with info.client() as admin:

            def calls(cmd: str) -> int:
                stats = admin.info("commandstats").get(f"cmdstat_{cmd}") or {}
                return int(stats.get("calls", 0))

            dur = Durability("always", trust_waitaof=True)
            store = FeatureStore.from_url(info.url(), durability=dur)
            try:
                assert store.durability is dur and dur.confirms
                assert "WAITAOF" in dur.describe()
                store.apply(VIEW)
                before = calls("waitaof")
                store.write("v", "u", {"x": 1})
                store.write_many("v", [{"entity_id": f"e{i}", "x": i} for i in range(600)])
                store.update("v", "u", {"x": 2})
                store.increment("v", "u", {"x": 1})
                store.delete("v", "e0")
                assert calls("waitaof") - before == 5  # one per write call, not per entity
                assert store.get("v", "u") == {"x": 3}
                # a connection re-established during a call: WAITAOF alone would cover
                # only what the new connection wrote
                conn = store._ctx.direct.conn()
                mark = dur.mark(conn)
                conn.disconnect()
                conn.connect()  # the durability check runs again (the hook)
                sets = calls("set")
                dur.confirm(conn, mark, store.keys.durability)
                assert calls("set") == sets + 1
                assert admin.get(store.keys.durability) == b"always"
            finally:
                store.close()
            # everysec asks nothing more of the server
            with FeatureStore.from_url(info.url()) as relaxed:
                relaxed.apply(VIEW)
                before = calls("waitaof")
                relaxed.write("v", "u", {"x": 5})
                assert calls("waitaof") == before and not relaxed.durability.confirms
    finally:
        server.stop(force=True)


@pytest.mark.skipif(DEBIAN_REDIS is None, reason="no redis-server binary on this machine")
def test_url_store_refuses_what_a_redis_70_cannot_keep(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Redis 7.0 has no WAITAOF: "always" needs appendfsync always, checked at every connect.
    server = EmbeddedServer(data_dir, server_bin=DEBIAN_REDIS)
    info = server.ensure(keep_running=True)
    try:
        with info.client() as admin:
            with pytest.raises(ConfigurationError, match="appendfsync always") as err:
                FeatureStore.from_url(info.url(), durability="always")
            assert "appendfsync everysec" in str(err.value) and "no WAITAOF" in str(err.value)

            admin.config_set("appendfsync", "always")
            store = FeatureStore.from_url(info.url(), durability="always")
            try:
                assert not store.durability.confirms
                store.apply(VIEW)
                store.write("v", "u", {"x": 1})
                # lowered behind the store's back, then a reconnect: refused, not written
                admin.config_set("appendfsync", "everysec")
                admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
                with pytest.raises((ConfigurationError, BackendError), match="always"):
                    store.write("v", "u", {"x": 2})
            finally:
                store.close()
            with FeatureStore.from_url(info.url()) as relaxed:
                assert relaxed.get("v", "u") == {"x": 1}  # the refused write is not there

            # the machine's own kind of set-up: nothing on disk
            admin.config_set("appendonly", "no")
            log = caplog.at_level("WARNING", logger="redfeat.durability")
            with log, FeatureStore.from_url(info.url()) as weak:
                assert weak.durability.persistence is not None
                assert weak.durability.persistence.keeps_nothing
                assert "NOT kept" in weak.durability.describe()
            assert "keeps nothing on disk" in caplog.text
    finally:
        server.stop(force=True)


def test_the_test_url_server_is_described_truthfully(
    client: redis.Redis, project: str, caplog: pytest.LogCaptureFixture
) -> None:
    conf = client.config_get("appendonly", "appendfsync")
    try:
        client.execute_command("WAITAOF")  # type: ignore[no-untyped-call]
    except redis.ResponseError as exc:
        waitaof = "unknown command" not in str(exc).lower()
    url_kwargs = client.connection_pool.connection_kwargs
    path = url_kwargs.get("path")
    url = (
        f"unix://{path}"
        if path
        else f"redis://{url_kwargs.get('host')}:{url_kwargs.get('port')}/{url_kwargs.get('db', 0)}"
    )
    with caplog.at_level("WARNING", logger="redfeat.durability"):
        store = FeatureStore.from_url(url, project=project)
    try:
        p = store.durability.persistence
        assert p is not None
        assert p.appendonly == (conf["appendonly"] == "yes")
        assert p.appendfsync == conf["appendfsync"] and p.waitaof == waitaof
        if conf["appendonly"] == "no":
            assert "on disk" in caplog.text or "snapshots" in caplog.text
    finally:
        store.close()
    fsyncs = p.waitaof_fsyncs  # Redis >= 8.0 only
    can_keep = fsyncs or (conf["appendonly"] == "yes" and conf["appendfsync"] == "always")
    if can_keep:
        with FeatureStore.from_url(url, project=project, durability="always") as strict:
            assert strict.durability.mode == "always"
    else:
        with pytest.raises(ConfigurationError, match="durability='always'"):
            FeatureStore.from_url(url, project=project, durability="always")
