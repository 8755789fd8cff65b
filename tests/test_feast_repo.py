"""The declarative repository: redfeat init, plan, apply (--allow-breaking), materialize,
materialize-incremental and services, run as a user would in the repository."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from redfeat import ConfigurationError, FeatureStore
from redfeat.core.embedded import EmbeddedServer
from redfeat.serve.cli import app

runner = CliRunner()


def run(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_init_plan_apply_materialize(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "driver_repo"
    assert "made a feature repository" in run("init", str(repo))
    assert {p.name for p in repo.iterdir()} >= {"redfeat.toml", "features.py", "data"}
    with pytest.raises(ConfigurationError, match="already"):
        runner.invoke(app, ["init", str(repo)], catch_exceptions=False)
    monkeypatch.chdir(repo)
    monkeypatch.delenv("REDFEAT_HOME", raising=False)
    monkeypatch.delenv("REDFEAT_URL", raising=False)

    out = run("plan")
    assert "+  entity" in out and "driver_hourly_stats" in out and "3 to add" in out
    assert "Applied: 3 to add" in run("apply")
    assert "Nothing to change: the registry matches the repository" in run("plan")

    out = run("materialize-incremental")
    assert "driver_hourly_stats: 840 rows from the first row" in out
    assert "840 versions written" in out
    assert "0 rows from" in run("materialize-incremental")
    out = run("materialize", "2000-01-01", "now")
    assert "0 versions written, 840 already stored" in out
    assert "driver_activity_v1" in run("services")

    defs = repo / "features.py"
    # a compatible change, then a breaking one refused without --allow-breaking
    edit(defs, 'Field("avg_daily_trips", t.Int, min=0),', 'Field("avg_daily_trips", t.Int, '
         'min=0),\n        Field("rating", t.Float),')  # fmt: skip
    assert "~  view" in run("plan")
    run("apply")
    edit(defs, 'Field("acc_rate", t.Float, min=0, max=1),', "")
    out = run("plan")
    assert "!  view" in out and "removes field(s) ['acc_rate']" in out
    result = runner.invoke(app, ["apply"])
    assert result.exit_code == 1 and "--allow-breaking" in result.output
    with FeatureStore(project="driver_repo", data_dir=repo / ".redfeat") as store:
        assert "acc_rate" in [f.name for f in store.view("driver_hourly_stats").fields]
    run("apply", "--allow-breaking")
    # a definition dropped from the repository is removed (with --allow-breaking)
    defs.write_text(defs.read_text() + "\ndel driver_activity_v1\n")
    out = run("plan")
    assert "-  feature service  driver_activity_v1" in out and "removed" in out
    assert runner.invoke(app, ["apply"]).exit_code == 1
    run("apply", "--allow-breaking")
    with FeatureStore(project="driver_repo", data_dir=repo / ".redfeat") as store:
        assert store.feature_services() == []
        assert store.get("driver_hourly_stats", 1001) is not None  # the data stayed
    assert "Nothing to change" in run("plan")
    assert EmbeddedServer(repo / ".redfeat").status() is None  # every command stopped it


def test_outside_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="redfeat init"):
        runner.invoke(app, ["plan"], catch_exceptions=False)
    (tmp_path / "redfeat.toml").write_text('[project]\nname = "x"\ndefinitions = ["nope.py"]\n')
    with pytest.raises(ConfigurationError, match="nope.py"):
        runner.invoke(app, ["plan"], catch_exceptions=False)
    (tmp_path / "redfeat.toml").write_text("[project\n")
    with pytest.raises(ConfigurationError, match="redfeat.toml"):
        runner.invoke(app, ["plan"], catch_exceptions=False)
