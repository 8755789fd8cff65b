"""The README's examples run, the public surface is pinned, the demo runs."""

from __future__ import annotations

import code
import re
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import redfeat
from redfeat.core.embedded import EmbeddedServer
from redfeat.serve.cli import app

ROOT = Path(__file__).resolve().parent.parent


class _Repl(code.InteractiveConsole):
    """The plain Python REPL, fed one line at a time as a paste would; records errors."""

    def __init__(self) -> None:
        super().__init__({"__name__": "__main__"})
        self.errors: list[str] = []

    def showsyntaxerror(self, filename: str | None = None, **kwargs: Any) -> None:
        self.errors.append("".join(traceback.format_exception_only(*sys.exc_info()[:2])))

    def showtraceback(self) -> None:
        self.errors.append("".join(traceback.format_exception(*sys.exc_info())))


def test_readme_blocks_each_run_alone_pasted_into_a_repl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every python block of the README, in order, each in a fresh REPL (its own imports,
    no names from earlier blocks; a blank line inside an indented block would end it)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 10
    monkeypatch.chdir(tmp_path)  # FeatureStore() puts its server under ./.redfeat
    monkeypatch.delenv("REDFEAT_HOME", raising=False)
    for n, block in enumerate(blocks, 1):
        repl = _Repl()
        for line in block.splitlines():
            repl.push(line)
        repl.push("")  # the paste ends: close any open block
        store = repl.locals.get("store")
        if isinstance(store, redfeat.FeatureStore):
            store.close()
        assert not repl.errors, f"README python block {n}:\n{block}\n{repl.errors[0]}"
    assert EmbeddedServer(tmp_path / ".redfeat").status() is None


def test_demo_runs(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo"], env={"REDFEAT_HOME": str(tmp_path / "home")})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "'00123'" in out and "str" in out
    assert "ValidationError" in out and "user999 exists: False" in out
    assert "as of" in out and "income 72000.0" in out
    assert "50,000 rows" in out
    assert EmbeddedServer(tmp_path / "home").status() is None
