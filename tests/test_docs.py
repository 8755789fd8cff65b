"""The README's examples run, the public surface is pinned, the demo runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import redfeat
from redfeat.cli import app

ROOT = Path(__file__).resolve().parent.parent


def test_readme_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)  # FeatureStore() puts its server under ./.redfeat
    namespace: dict[str, object] = {}
    try:
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own docs
    finally:
        store = namespace.get("store")
        if isinstance(store, redfeat.FeatureStore):
            store.close()
    assert redfeat.embedded.EmbeddedServer(tmp_path / ".redfeat").status() is None


def test_public_surface_is_pinned() -> None:
    assert sorted(redfeat.__all__) == sorted(
        [
            "BackendError",
            "ConfigurationError",
            "ConflictError",
            "Entity",
            "FeatureStore",
            "FeatureView",
            "Field",
            "Match",
            "NotFoundError",
            "Problem",
            "Record",
            "RedfeatError",
            "Status",
            "ValidationError",
            "ValidationReport",
            "Version",
            "WindowFeatures",
            "WriteReport",
            "__version__",
            "types",
        ]
    )
    for name in redfeat.__all__:
        assert hasattr(redfeat, name)
    for exc in (
        "BackendError",
        "ConfigurationError",
        "ConflictError",
        "NotFoundError",
        "ValidationError",
    ):
        assert issubclass(getattr(redfeat, exc), redfeat.RedfeatError)
    assert (ROOT / "redfeat" / "py.typed").exists()


def test_demo_runs(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo"], env={"REDFEAT_HOME": str(tmp_path / "home")})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "'00123'" in out and "str" in out
    assert "ValidationError" in out and "user999 exists: False" in out
    assert "as of" in out and "income 72000.0" in out
    assert "50,000 rows" in out
    assert redfeat.embedded.EmbeddedServer(tmp_path / "home").status() is None
