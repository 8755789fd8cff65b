"""The public surface: what ``redfeat`` exports is exactly ``__all__``, and every type a
public verb or property of FeatureStore takes or returns is among it (as httpx's
tests/test_exported_members.py pins its own)."""

from __future__ import annotations

import ast
import builtins
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import redfeat

ROOT = Path(__file__).resolve().parent.parent


def test_all_is_exactly_what_the_package_exposes() -> None:
    for name in redfeat.__all__:
        getattr(redfeat, name)  # the lazily exported ones too
    exposed = sorted(
        name
        for name, value in vars(redfeat).items()
        if (not name.startswith("_") or name == "__version__")
        and (not isinstance(value, ModuleType) or name == "types")
    )
    assert exposed == sorted(redfeat.__all__)
    assert sorted(dir(redfeat)) == sorted(set(dir(redfeat)))  # __dir__ lists each once
    for exc in ("BackendError", "ConfigurationError", "ConflictError", "NotFoundError"):
        assert issubclass(getattr(redfeat, exc), redfeat.RedfeatError)
    assert issubclass(redfeat.ValidationError, redfeat.RedfeatError)
    assert (ROOT / "redfeat" / "py.typed").exists()


# names in annotations that are not ours to export
_FOREIGN = {
    *dir(builtins),
    *dir(__import__("typing")),
    *dir(__import__("collections.abc", fromlist=["x"])),
    "DataFrame",  # pandas
    "Redis",  # redis-py
    "PathLike",  # os
    "Progress",  # Callable aliases: (done, total) -> None
    "RowCheck",  # (row) -> message | None, documented with validator()
}


def _annotation_names() -> dict[str, set[str]]:
    """Capitalised names in the signatures of FeatureStore's public methods and
    properties, by member."""
    tree = ast.parse((ROOT / "redfeat" / "store.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FeatureStore")
    out: dict[str, set[str]] = {}
    for fn in cls.body:
        if not isinstance(fn, ast.FunctionDef) or fn.name.startswith("_"):
            continue
        args = [*fn.args.args, *fn.args.kwonlyargs]
        texts = [ast.unparse(a.annotation) for a in args if a.annotation is not None]
        if fn.returns is not None:
            texts.append(ast.unparse(fn.returns))
        out[fn.name] = {n for t in texts for n in re.findall(r"\b[A-Z]\w*", t)}
    return out


def test_every_type_of_a_public_verb_is_exported() -> None:
    missing = {
        f"{member}: {name}"
        for member, names in _annotation_names().items()
        for name in names - _FOREIGN
        if name not in redfeat.__all__
    }
    assert not missing, f"types in FeatureStore's public signatures not exported: {missing}"


def test_import_stays_light() -> None:
    # a CLI command is a new process: the heavy libraries load with the capability using them
    code = (
        "import sys, redfeat\n"
        "heavy = [m for m in ('pandas', 'pyarrow', 'duckdb', 'pcodec') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
