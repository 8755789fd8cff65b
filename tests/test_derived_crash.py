"""kill -9 of a writer between a source version and its derived versions: every source
version still gets its derived version, with no repair step (issue 17, item 4). Also a
backfill cut short by a kill resumes by itself (item 6).

Writers run in child processes killed with SIGKILL at a random moment; each test is a few
rounds of about a second.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pyarrow.compute as pc
import pytest
import redis
from crash_transforms import register

from redfeat import FeatureStore, FeatureView, Field, writes
from redfeat import types as t
from redfeat.transforms.builtins import bucketize, min_max

SOURCE = FeatureView(
    "p", entity="user", fields=[Field("age", t.Int), Field("income", t.Float)], history="1h"
)
DERIVED = FeatureView(
    "d",
    entity="user",
    source="p",
    transforms=[
        bucketize("age", [25, 55], ["young", "adult", "senior"], output="group"),
        min_max("income", 0, 2000, output="scaled"),
    ],
    history="1h",  # keeps every version, as the source does: they must match one to one
)

# A child process: open the store, then write in a loop (bulk calls, single writes,
# updates, deletes) until it is killed. MIDWAY: it kills itself in its fourth bulk call,
# once the source rows are written and before their derived rows are.
WRITER = """
import json, os, signal, sys
import redis
from redfeat import FeatureStore
kwargs, project = json.loads(sys.argv[1]), sys.argv[2]
store = FeatureStore(client=redis.Redis(**kwargs), project=project)
print("ready", flush=True)

def midway(done, total):
    if done == total:
        os.kill(os.getpid(), signal.SIGKILL)

i = 0
while True:
    rows = [
        {"entity_id": f"e{(i * 7 + j) % 900}", "age": (i + j) % 90, "income": float(j)}
        for j in range(300)
    ]
    store.write_many("p", rows, progress=midway if MIDWAY and i == 3 else None)
    store.write("p", f"s{i % 40}", {"age": i % 90, "income": 1.0})
    store.update("p", f"s{(i + 1) % 40}", {"income": float(i % 100)})
    if i % 5 == 4:
        store.delete("p", f"e{i % 900}")
    i += 1
"""


def _kwargs(client: redis.Redis) -> dict[str, Any]:
    conn = client.connection_pool.connection_kwargs
    out: dict[str, Any] = {k: conn[k] for k in ("host", "port", "db", "password") if k in conn}
    if "path" in conn:
        out = {"unix_socket_path": conn["path"]}
    return out


def _run_and_kill(code: str, client: redis.Redis, project: str, seconds: float | None) -> None:
    """Run ``code`` in a child; kill -9 it ``seconds`` after it is ready (None: it kills
    itself)."""
    here = os.path.dirname(__file__)  # crash_transforms
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), json.dumps(_kwargs(client)), project],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        if seconds is None:
            proc.wait(60)
        else:
            time.sleep(seconds)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
        if proc.stdout is not None:
            proc.stdout.close()


def _pending(store: FeatureStore) -> list[str]:
    """What is left to catch up: spans of dead writers, unfinished backfills."""
    fields = [
        k.decode() if isinstance(k, bytes) else k for k in store.client.hkeys(store.keys.derive)
    ]
    return [k for k in fields if not k.startswith("L:")]


def _pairs(store: FeatureStore, view: str) -> set[tuple[str, int]]:
    table = store.versions(view)
    us = pc.cast(table["event_time"], "int64").to_pylist()
    return set(zip(table["entity_id"].to_pylist(), us, strict=True))


def _assert_consistent(store: FeatureStore) -> None:
    src, der = _pairs(store, "p"), _pairs(store, "d")
    assert src == der, (len(src - der), len(der - src))
    ids = sorted({e for e, _ in src})
    for e, s, d in zip(ids, store.get_many("p", ids), store.get_many("d", ids), strict=True):
        assert s is not None and d is not None, e
        age = s["age"]
        group = None if age is None else "young" if age < 25 else "adult" if age < 55 else "senior"
        assert d["group"] == group, (e, s, d)
    gone = [f"e{i}" for i in range(900) if f"e{i}" not in ids]
    assert store.get_many("d", gone) == [None] * len(gone)  # deleted in both views


def test_a_killed_writer_leaves_no_source_version_underived(
    store: FeatureStore, client: redis.Redis, project: str
) -> None:
    store.apply(SOURCE, DERIVED)
    # killed right after the source rows of a bulk call were stored
    _run_and_kill(WRITER.replace("MIDWAY", "True"), client, project, None)
    src, der = _pairs(store, "p"), _pairs(store, "d")
    assert len(src - der) == 300  # the last call's source versions, underived
    with FeatureStore(client=client, project=project) as again:  # no repair step: open
        _assert_consistent(again)
    # killed at random moments (in a write, an update, a delete, or between them)
    rng = random.Random(17)
    for _ in range(2):
        _run_and_kill(WRITER.replace("MIDWAY", "False"), client, project, rng.uniform(0.4, 1.2))
        with FeatureStore(client=client, project=project) as again:
            _assert_consistent(again)
    assert not _pending(store)


CUSTOM_WRITER = """
import json, sys
import redis
from crash_transforms import register
from redfeat import FeatureStore
kwargs, project = json.loads(sys.argv[1]), sys.argv[2]
store = FeatureStore(client=redis.Redis(**kwargs), project=project)
register(store)
print("ready", flush=True)
i = 0
while True:
    rows = [{"entity_id": f"e{j}", "age": i % 50, "income": 1.0} for j in range(500)]
    store.write_many("p", rows)
    i += 1
"""


def test_a_span_waits_for_a_process_that_has_the_custom_transform(
    store: FeatureStore,
    client: redis.Redis,
    project: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    register(store)
    store.apply(
        SOURCE,
        FeatureView(
            "d", entity="user", source="p", transforms=[store.transforms.get("twice")], history="1h"
        ),
    )
    _run_and_kill(CUSTOM_WRITER, client, project, 0.8)
    # a process without the transform cannot derive: the span stays pending
    log = caplog.at_level("WARNING", logger="redfeat.derived")
    with log, FeatureStore(client=client, project=project) as plain:
        assert _pending(plain)
    assert "cannot catch" in caplog.text and "twice" in caplog.text
    # one that has it catches up on its next bulk write (the stream worker does the same)
    monkeypatch.setattr(writes, "RECOVER_EVERY", 0.0)
    store.write_many("p", [{"entity_id": "late", "age": 1, "income": 1.0}])
    assert not _pending(store)
    assert _pairs(store, "p") == _pairs(store, "d")
    for e, got in zip(["e0", "e499"], store.get_many("p", ["e0", "e499"]), strict=True):
        assert got is not None
        assert store.get("d", e) == {"age2": got["age"] * 2}


BACKFILLER = """
import json, os, signal, sys
import redis
from redfeat import FeatureStore, FeatureView
from redfeat.transforms.builtins import bucketize
kwargs, project = json.loads(sys.argv[1]), sys.argv[2]
store = FeatureStore(client=redis.Redis(**kwargs), project=project)
print("ready", flush=True)

def die(view, done, total):
    if done > 0:  # one batch of entities derived: killed in the middle of the backfill
        os.kill(os.getpid(), signal.SIGKILL)

store.apply(
    FeatureView("late", entity="user", source="p",
                transforms=[bucketize("age", [50], ["low", "high"], output="half")]),
    progress=die,
)
"""


def test_a_backfill_cut_short_resumes_at_the_next_open(
    store: FeatureStore, client: redis.Redis, project: str
) -> None:
    store.apply(SOURCE)
    n = writes.CHUNK * 2 + 10
    store.write_many("p", [{"entity_id": f"e{i}", "age": i % 100, "income": 1.0} for i in range(n)])
    _run_and_kill(BACKFILLER, client, project, None)  # kills itself, mid-backfill
    half = store.get_many("late", [f"e{i}" for i in range(n)])
    assert 0 < sum(1 for h in half if h is not None) < n  # cut short
    with FeatureStore(client=client, project=project) as again:
        full = again.get_many("late", [f"e{i}" for i in range(n)])
        assert full == [{"half": "low" if i % 100 < 50 else "high"} for i in range(n)]
        assert not _pending(again)
