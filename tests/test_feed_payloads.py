"""Feed entries carry the versions' payloads only once an offline log is attached to the
project (issue 18): without one the feed costs no payload bytes; versions written before
the attach, or by a writer that did not know yet, still reach the log (read from Redis)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.registry import REFRESH_SECONDS
from redfeat.offline.feeder import LogFeeder
from redfeat.offline.log import OfflineLog

VIEW = FeatureView("v", entity="user", fields=[Field("x", t.Int)], history=3)


def _entries(client: redis.Redis, project: str) -> list[Any]:
    return [d for _, d in cast(list[Any], client.xrange(f"rf:{project}:feed:v"))]


def _logged(root: Path) -> set[tuple[str, int, int | None]]:
    table = OfflineLog(root).scan(VIEW)
    cols = [table[c].to_pylist() for c in ("entity_id", "version_id", "x")]
    return set(zip(*cols, strict=True))


def test_payloads_only_once_a_log_is_attached(
    client: redis.Redis, project: str, tmp_path: Path
) -> None:
    writer = FeatureStore(client=client, project=project)
    writer.apply(VIEW)
    writer.write_many("v", [{"entity_id": f"e{i}", "x": i} for i in range(5)])
    assert [b"p" in d for d in _entries(client, project)] == [False]
    root = tmp_path / "log"
    with FeatureStore(client=client, project=project, offline_dir=root) as logged:
        logged.write("v", "e0", {"x": 100})  # the attaching store knows at once
        assert b"p" in _entries(client, project)[-1]
        # the writer opened before the attach learns it within REFRESH_SECONDS
        time.sleep(REFRESH_SECONDS + 0.1)
        writer.write("v", "e1", {"x": 101})
        assert b"p" in _entries(client, project)[-1]
        want = {(e, v.id, v.values["x"])
                for e in ("e0", "e1", "e2", "e3", "e4")
                for v in logged.history("v", e)}  # fmt: skip
        assert logged._feeder is not None
        logged._feeder.drain()
        assert logged._feeder.gaps == 0
    rows = _logged(root)
    assert {(e, vid) for e, vid, _ in rows} == {(e, vid) for e, vid, _ in want}
    assert {x for _, _, x in rows} == {0, 1, 2, 3, 4, 100, 101}
    writer.close()


def test_a_writer_that_does_not_know_yet_loses_nothing(
    client: redis.Redis, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the writer does not re-read the registry during the test: it does not know yet
    monkeypatch.setattr("redfeat.core.registry.REFRESH_SECONDS", 3600.0)
    writer = FeatureStore(client=client, project=project)
    writer.apply(VIEW)
    writer.write("v", "a", {"x": 1})  # the writer has read the registry: no log yet
    root = tmp_path / "log"
    with FeatureStore(client=client, project=project, offline_dir=root) as logged:
        # within REFRESH_SECONDS of the attach the writer may still write without payloads
        # (single writes: write_many re-reads the registry first, so it knows at once)
        writer.write("v", "a", {"x": 2})
        writer.write("v", "b", {"x": 3})
        assert b"p" not in _entries(client, project)[-1]
        assert logged._feeder is not None
        logged._feeder.drain()
        assert logged._feeder.gaps == 0
    assert {(e, x) for e, _, x in _logged(root)} == {("a", 1), ("a", 2), ("b", 3)}
    writer.close()


def test_versions_no_longer_kept_are_a_gap_said_so(
    client: redis.Redis, project: str, tmp_path: Path
) -> None:
    with FeatureStore(client=client, project=project) as store:
        store.apply(VIEW)
        for i in range(6):  # history=3: the first 3 versions are gone from Redis
            store.write("v", "a", {"x": i}, event_time=1_700_000_000 + i)
    root = tmp_path / "log"
    with FeatureStore(client=client, project=project) as store:
        feeder = LogFeeder(store._ctx, OfflineLog(root))
        feeder.drain()
        assert feeder.gaps == 1
        assert feeder.counters()["versions_written"] == 3
    assert {x for _, _, x in _logged(root)} == {3, 4, 5}
