"""Client work per operation, counted in CPU instructions (valgrind callgrind), which the
load of the machine does not change: for comparing two trees of redfeat on a busy machine.

Command:

    .venv/bin/python bench/instructions.py [--tree PATH]   # PATH: another checkout

For each operation the client runs N1 and N2 times under callgrind (the server runs apart, not
counted); (count(N2) - count(N1)) / (N2 - N1) is the cost of one operation. The baseline in the
same run is raw redis-py doing the same round trips (GET, MGET, pipelined HSET of the rows).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

OPS = {"get": (200, 1200), "get_many": (20, 120), "write_many": (5, 25)}

CHILD = r"""
import sys
import redis
from redfeat import Entity, FeatureStore, FeatureView, Field
from redfeat import types as t
op, n = sys.argv[1], int(sys.argv[2])
with FeatureStore(project="instr") as fs:
    user = Entity("user")
    fs.apply(FeatureView("wide", entity=user, fields=[Field(f"f{i}", t.Float) for i in range(20)]))
    narrow = [Field(f"f{i}", t.Float) for i in range(3)]
    fs.apply(FeatureView("narrow", entity=user, fields=narrow, history=10))
    ids = [str(j) for j in range(100)]
    small = [{"entity_id": str(j), "f0": 1.0, "f1": 2.0, "f2": 3.0} for j in range(256)]
    if op == "setup":
        wide = [{f"f{i}": float(j + i) for i in range(20)} for j in range(200)]
        fs.write_many("wide", [{"entity_id": str(j), **row} for j, row in enumerate(wide)])
    r = fs.client
    keys = [fs.keys.latest("wide", e) for e in ids]
    for _ in range(n):
        if op == "get": fs.get("wide", "7")
        elif op == "get_many": fs.get_many("wide", ids)
        elif op == "write_many": fs.write_many("narrow", small)
        elif op == "raw_get": r.get(keys[7])
        elif op == "raw_get_many": r.mget(keys)
        elif op == "raw_write_many":
            p = r.pipeline(transaction=False)
            for row in small:
                p.hset("rawbench:" + row["entity_id"], mapping={"f0": 1.0, "f1": 2.0, "f2": 3.0})
            p.execute()
"""


def count(tree: Path, op: str, n: int, env: dict[str, str]) -> int:
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            CHILD,
            op,
            str(n),
        ],
        env={**env, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    m = re.search(r"Collected : (\d+)", out)
    if m is None:
        raise SystemExit(f"no callgrind count in:\n{out}")
    return int(m.group(1))


def per_op(tree: Path, op: str, env: dict[str, str]) -> float:
    n1, n2 = OPS[op.removeprefix("raw_")]
    return (count(tree, op, n2, env) - count(tree, op, n1, env)) / (n2 - n1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", type=Path, help="another checkout to count beside this one")
    a = ap.parse_args()
    here = Path(__file__).resolve().parents[1]
    trees = [here] + ([a.tree.resolve()] if a.tree else [])
    home = tempfile.mkdtemp(prefix="rf-instr-")
    env = {**os.environ, "REDFEAT_HOME": home}
    redfeat = [str(Path(sys.executable).parent / "redfeat")]
    subprocess.run([*redfeat, "server", "start"], env=env, check=True, capture_output=True)
    try:
        subprocess.run(
            [sys.executable, "-c", CHILD, "setup", "0"],
            env={**env, "PYTHONPATH": str(here)},
            check=True,
        )
        print("client instructions per operation (valgrind callgrind; the server is not counted)")
        for op in OPS:
            raw = per_op(here, "raw_" + op, env)
            cells = [f"{op:<11} raw redis-py {raw:>12,.0f}"]
            for tree in trees:
                mine = per_op(tree, op, env)
                cells.append(f"{tree.name}: {mine:>12,.0f} ({mine / raw:.2f}x raw)")
            print("   ".join(cells), flush=True)
    finally:
        subprocess.run([*redfeat, "server", "stop", "--force"], env=env, capture_output=True)


if __name__ == "__main__":
    main()
