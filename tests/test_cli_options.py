"""The CLI's shared options are declared once (``redfeat.serve.options``): every command
that opens a store has the same ``--url --project --home --server-bin --durability``, and a
command from another module gets them by ``@connected`` alone."""

from __future__ import annotations

import json
from typing import Any

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.embedded import ServerInfo
from redfeat.serve.cli import app
from redfeat.serve.options import Conn, connected

SHARED = {"--url", "--project", "--home", "--server-bin", "--durability"}
OPENS_A_STORE = {
    "views", "get", "history", "export", "training-frame", "worker", "drift", "health",
    "serve", "demo", ("alerts", "run"), ("alerts", "list"), ("alerts", "history"),
}  # fmt: skip


def _commands() -> dict[object, Any]:
    root: Any = get_command(app)  # typer's own (vendored) click classes
    out: dict[object, Any] = {}
    for name, cmd in root.commands.items():
        subs = getattr(cmd, "commands", None)
        if subs:
            for sub, c in subs.items():
                out[(name, sub)] = c
        else:
            out[name] = cmd
    return out


def test_every_command_that_opens_a_store_has_the_shared_options() -> None:
    commands = _commands()
    for name in OPENS_A_STORE:
        opts = {o for p in commands[name].params for o in p.opts}
        assert opts >= SHARED, name
        envs = {p.name: getattr(p, "envvar", None) for p in commands[name].params}
        assert envs["url"] == "REDFEAT_URL" and envs["project"] == "REDFEAT_PROJECT", name
        assert envs["durability"] == "REDFEAT_DURABILITY", name
    # and the commands that do not open one do not pretend to
    assert not SHARED & {o for p in commands[("token", "create")].params for o in p.opts} - {
        "--home"
    }
    # `server start` has its own --durability (the server's setting), not a store's
    assert not {"--url", "--project"} & {
        o for p in commands[("server", "start")].params for o in p.opts
    }


def test_a_command_from_another_module_gets_them_by_connected(
    embedded: ServerInfo, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = typer.Typer()

    @other.command("size")
    @connected
    def size(
        conn: Conn,
        view: str,
        limit: int = typer.Option(3, help="at most this many"),
    ) -> None:
        """A command as redfeat/serve/size.py would define it."""
        with conn.open(quiet=True) as store:
            print(
                json.dumps(
                    {
                        "project": store.project,
                        "view": store.view(view).name,
                        "limit": limit,
                        "url": conn.url,
                    }
                )
            )

    with FeatureStore.from_url(embedded.url(), project=project) as store:
        store.apply(FeatureView("users", entity="user", fields=[Field("x", t.Int)]))
    runner = CliRunner()
    res = runner.invoke(
        other, ["users", "--url", embedded.url(), "--project", project, "--limit", "5"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {
        "project": project,
        "view": "users",
        "limit": 5,
        "url": embedded.url(),
    }
    monkeypatch.setenv("REDFEAT_URL", embedded.url())
    monkeypatch.setenv("REDFEAT_PROJECT", project)
    res = runner.invoke(other, ["users"])
    assert res.exit_code == 0 and json.loads(res.stdout)["limit"] == 3, res.output
    helped = runner.invoke(other, ["--help"])
    assert "--server-bin" in helped.stdout and "at most this many" in helped.stdout
    with FeatureStore.from_url(embedded.url(), project=project) as store:
        keys = list(store.client.scan_iter(match=f"rf:{project}:*"))
        if keys:
            store.client.unlink(*keys)
