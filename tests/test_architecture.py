"""The layer rules of the package (see the README's Development section):

    L4  serve/                                    may import anything below
    L3  store.py reads.py writes.py stats.py      the facade: wiring and one-line verbs
    L2  realtime/ offline/ windows/ vectors/ quality/   capabilities
    L1  online/ transforms/ timeseries/           the read/write machinery
    L0  core/ errors.py types.py                  keys, schema, codec, registry, conn, records

Checked on the import graph of every module, counting imports at the top, inside
functions and under TYPE_CHECKING alike:
- a module imports only from lower layers or from its own package (L3 modules from each
  other too);
- no import cycle between modules, at any level;
- nothing below the facade imports ``store`` or ``serve``, or names ``FeatureStore``;
- no private name (``_x``) is imported from, or reached into, another module.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "redfeat"

# errors < types < core inside L0: the exceptions import nothing, the value types only them
LAYERS = {
    "errors": 0.0,
    "types": 0.1,
    "core": 0.2,
    "online": 1,
    "transforms": 1,
    "timeseries": 1,
    "realtime": 2,
    "offline": 2,
    "windows": 2,
    "vectors": 2,
    "quality": 2,
    "store": 3,
    "reads": 3,
    "writes": 3,
    "stats": 3,
    "__init__": 3,
    "serve": 4,
}


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in PKG.rglob("*.py"):
        parts = ("redfeat", *f.relative_to(PKG).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


MODULES = _modules()


def _unit(mod: str) -> str:
    """The top-level part a module belongs to: 'core', 'store', '__init__', ..."""
    parts = mod.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _layer(mod: str) -> float:
    return LAYERS[_unit(mod)]


def _resolve(mod: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_pkg = MODULES[mod].name == "__init__.py"
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _target(name: str) -> str | None:
    """The redfeat module a dotted name lives in (longest known prefix)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _edges() -> dict[str, set[tuple[str, str | None, int]]]:
    """module -> {(imported module, imported name or None, line)}."""
    out: dict[str, set[tuple[str, str | None, int]]] = defaultdict(set)
    for mod, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = _resolve(mod, node)
                if not base.startswith("redfeat"):
                    continue
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    if sub in MODULES:
                        out[mod].add((sub, None, node.lineno))
                    else:
                        tgt = _target(base)
                        if tgt is not None:
                            out[mod].add((tgt, a.name, node.lineno))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    tgt = _target(a.name)
                    if tgt is not None:
                        out[mod].add((tgt, None, node.lineno))
    return out


EDGES = _edges()


def _where(mod: str, line: int) -> str:
    return f"{MODULES[mod].relative_to(PKG.parent)}:{line}"


def test_layers_import_only_downwards() -> None:
    bad = []
    for mod, targets in EDGES.items():
        for tgt, _, line in targets:
            if tgt == "redfeat" and mod != "redfeat":
                bad.append(f"{_where(mod, line)}: {mod} imports the package root")
                continue
            same_unit = _unit(tgt) == _unit(mod)
            lower = _layer(tgt) < _layer(mod)
            facade = _layer(mod) == _layer(tgt) == 3
            if not (same_unit or lower or facade):
                bad.append(f"{_where(mod, line)}: {mod} (L{_layer(mod)}) -> {tgt} (L{_layer(tgt)})")
    assert not bad, "imports against the layers:\n" + "\n".join(sorted(bad))


def test_no_import_cycles() -> None:
    graph = {m: {t for t, _, _ in EDGES.get(m, ()) if t != m} for m in MODULES}
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(", ".join(c) for c in cycles)


def test_nothing_below_the_facade_knows_the_store() -> None:
    bad = []
    for mod, path in MODULES.items():
        if _layer(mod) >= 3:
            continue
        for tgt, _, line in EDGES.get(mod, ()):
            if _unit(tgt) in ("store", "serve"):
                bad.append(f"{_where(mod, line)}: imports {tgt}")
        for node in ast.walk(ast.parse(path.read_text())):
            named = (isinstance(node, ast.Name) and node.id == "FeatureStore") or (
                isinstance(node, ast.Attribute) and node.attr == "FeatureStore"
            )
            if named or (isinstance(node, ast.alias) and node.name == "FeatureStore"):
                bad.append(f"{_where(mod, getattr(node, 'lineno', 0))}: names FeatureStore")
            annotation = isinstance(node, ast.Constant) and node.value == "FeatureStore"
            if annotation:
                bad.append(f"{_where(mod, getattr(node, 'lineno', 0))}: names FeatureStore")
    assert not bad, "\n".join(bad)


def test_no_private_names_cross_modules() -> None:
    bad = []
    for mod, targets in EDGES.items():
        for tgt, name, line in targets:
            private = (name or "").startswith("_") and not (name or "").startswith("__")
            if tgt != mod and (private or tgt.rpartition(".")[2].startswith("_")):
                bad.append(f"{_where(mod, line)}: {mod} imports {name or tgt} from {tgt}")
    # reaching into another module's privates through an imported module or the store
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text())
        modules_here = {
            a.asname or a.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level
            for a in node.names
            if f"{_resolve(mod, node)}.{a.name}" in MODULES
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and (
                    node.value.id in modules_here
                    or (node.value.id == "store" and mod != "redfeat.store")
                )
            ):
                bad.append(f"{_where(mod, node.lineno)}: {node.value.id}.{node.attr}")
    assert not bad, "private names used across modules:\n" + "\n".join(sorted(bad))
