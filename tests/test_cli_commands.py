"""CLI commands through the real entry point (``python -m redfeat.serve.cli``, what the
``redfeat`` script runs) in a subprocess, against the suite's servers: ``drift --fail-on``
with verdicts too thin to judge (issue 17 item 11), ``--durability`` (items 1-2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.embedded import EmbeddedServer, ServerInfo

T0 = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.fixture
def url(backend_url: str) -> str:
    """The URL of the ``store`` fixture's server, for a CLI in another process."""
    return backend_url


def redfeat(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``redfeat ARGV...`` in a new process (the environment's REDFEAT_* left out)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("REDFEAT_")}
    full.update({"COLUMNS": "200", "NO_COLOR": "1", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "redfeat.serve.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full,
    )


@pytest.fixture
def thin(store: FeatureStore) -> Iterator[list[str]]:
    """A view whose drift cannot be judged: 12 values on each side (min_count is 30)."""
    store.apply(FeatureView("thin", entity="user", fields=[Field("x", t.Float)]))
    rows = [
        {"entity_id": f"u{i}", "x": float(i), "event_time": T0 + timedelta(minutes=i)}
        for i in range(12)
    ]
    store.write_many("thin", rows, event_time_column="event_time")
    store.quality.set_baseline("thin", T0, T0 + timedelta(hours=1))
    store.quality.flush()  # another process reads the profiles
    yield ["--since", T0.isoformat(), "--until", (T0 + timedelta(hours=1)).isoformat()]


def test_drift_fail_on_follows_the_reports_order_and_names_unjudged_features(
    store: FeatureStore, url: str, thin: list[str]
) -> None:
    conn = ["--url", url, "--project", store.project]
    shown = redfeat("drift", "thin", *thin, *conn)
    assert shown.returncode == 0, shown.stderr
    assert "insufficient_data" in shown.stdout and "too few values" in shown.stdout
    as_json = redfeat("drift", "thin", *thin, *conn, "--json")
    assert json.loads(as_json.stdout)["verdict"] == "insufficient_data"
    # warning and worse: not failed, but never silently passed
    for level in ("warning", "drift"):
        passed = redfeat("drift", "thin", *thin, *conn, "--fail-on", level)
        assert passed.returncode == 0, passed.stderr
        assert "not judged (too few values; need 30): x" in passed.stderr
    failed = redfeat("drift", "thin", *thin, *conn, "--fail-on", "insufficient_data")
    assert failed.returncode == 1, failed.stderr
    assert "is insufficient_data (--fail-on insufficient_data)" in failed.stderr
    bad = redfeat("drift", "thin", *thin, *conn, "--fail-on", "ok")
    assert bad.returncode == 2 and "--fail-on takes insufficient_data, warning, drift" in (
        bad.stderr
    )


# -- --durability on every command that opens a store (issue 17 items 1-2) ------------------


def test_durability_always_is_kept_in_the_data_dir(tmp_path: Path) -> None:
    home = tmp_path / "home"
    try:
        out = redfeat("views", "--home", str(home), "--durability", "always")
        assert out.returncode == 0, out.stderr
        # the data dir promises it from now on, whoever starts its server next
        assert (home / "durability").read_text().strip() == "always"
    finally:
        EmbeddedServer(home).stop(force=True)  # it stops with its last user; never left over


def test_durability_always_is_refused_by_a_url_server_that_cannot_keep_it(
    embedded: ServerInfo,
) -> None:
    probe = embedded.client()
    try:
        assert probe.config_get("appendfsync")["appendfsync"] == "everysec"
    finally:
        probe.close()
    url = embedded.url()
    for argv, env in (
        (["views", "--url", url, "--durability", "always"], {}),
        (["views", "--url", url], {"REDFEAT_DURABILITY": "always"}),
        (["serve", "--url", url, "--port", "1", "--durability", "always"], {}),
    ):
        out = redfeat(*argv, env=env)
        assert out.returncode == 2, (argv, out.stdout, out.stderr)
        assert "always" in out.stdout + out.stderr and "Traceback" not in out.stderr, argv
    # everysec, the default, is what the server keeps
    assert redfeat("views", "--url", url, "--durability", "everysec").returncode == 0
    bad = redfeat("views", "--url", url, "--durability", "sometimes")
    assert bad.returncode == 2 and "durability must be one of" in bad.stdout + bad.stderr


# -- training-frame --service (issue 15 item 2) ----------------------------------------------


def test_training_frame_by_feature_service(store: FeatureStore, url: str, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from redfeat import FeatureService

    store.apply(FeatureView("v", entity="user", fields=[Field("x", t.Int), Field("y", t.Float)]))
    store.apply(FeatureService("model", features=["v:x"]))
    store.apply(FeatureService("model", features=["v:x", "v:y"]))  # version 2
    for i in range(3):
        store.write("v", "u", {"x": i, "y": i / 2}, event_time=T0 + timedelta(hours=i))
    entities = tmp_path / "entities.parquet"
    pq.write_table(
        pa.table(
            {
                "entity_id": ["u", "u"],
                "event_time": [T0 + timedelta(hours=1), T0 + timedelta(days=1)],
            }
        ),
        entities,
    )
    conn = ["--url", url, "--project", store.project]
    out = tmp_path / "tf.parquet"
    done = redfeat("training-frame", str(entities), "--service", "model", "-o", str(out), *conn)
    assert done.returncode == 0, done.stderr
    assert "2 rows x 2 features of service 'model'" in done.stdout
    frame = pq.read_table(out)
    assert frame.column_names == ["entity_id", "event_time", "x", "y"]
    assert frame.column("x").to_pylist() == [1, 2] and frame.column("y").to_pylist() == [0.5, 1.0]
    # an earlier version of the service: what a model trained then used
    old = redfeat("training-frame", str(entities), "--service", "model@1", "-o", str(out), *conn)
    assert old.returncode == 0, old.stderr
    assert pq.read_table(out).column_names == ["entity_id", "event_time", "x"]
    # the same frame as --features gives
    same = redfeat("training-frame", str(entities), "--features", "v:x", "-o", str(out), *conn)
    assert same.returncode == 0 and pq.read_table(out).column("x").to_pylist() == [1, 2]
    # read and joined one row at a time: the same file
    one = redfeat(
        "training-frame", str(entities), "--features", "v:x", "--chunk-rows", "1", "-o",
        str(out), *conn,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    assert "2 rows x 1 features" in one.stdout
    assert pq.read_table(out).column("x").to_pylist() == [1, 2]
    for argv in ([], ["--service", "model", "--features", "v:x"]):
        bad = redfeat("training-frame", str(entities), "-o", str(out), *argv, *conn)
        assert bad.returncode == 2 and "--service NAME (one of them)" in bad.stderr, argv
    unknown = redfeat("training-frame", str(entities), "--service", "nope", "-o", str(out), *conn)
    assert unknown.returncode == 2 and "nope" in unknown.stdout + unknown.stderr
    assert "Traceback" not in unknown.stderr
