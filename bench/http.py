"""HTTP serving benchmark: `redfeat serve` against the same reads in process and against a
bare Starlette endpoint on the same uvicorn (the floor any Python ASGI app stands on).

Command:

    .venv/bin/python bench/http.py [--rounds 3000] [--load-seconds 30] [--clients 8]

Starts a private embedded server in a temporary directory (or uses --url), writes 10,000
entities of 20 float features, then serves them with `redfeat serve` in its own process,
exactly as a user runs it (a token configured: every request is authenticated and counted
in /metrics). The client is a keep-alive connection (http.client) in this process; the
servers run in their own processes, so client and server do not share a GIL.

Measured, p50 and p99 in ms:
  - in process: store.get (1 entity), store.get_many (100 entities), no HTTP;
  - floor: a bare Starlette endpoint answering the same bytes (no store, no auth);
  - redfeat: GET /views/{view}/entities/{id} and POST /views/{view}/get_many (100 ids).
Then a bounded load test: --clients processes, each a keep-alive client sending reads (90%
one entity, 10% 100 entities) for --load-seconds: throughput, p50/p99, errors.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's folder leads sys.path, and its name would hide the standard
# library's http package from everything imported below (http.client, uvicorn, httpx2).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx2  # noqa: E402

from redfeat import FeatureStore, FeatureView, Field  # noqa: E402
from redfeat import types as t  # noqa: E402
from redfeat.core.embedded import EmbeddedServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "rf_bench-token-0123456789abcdefghij"
VIEW = "bench_user"
N_ENTITIES = 10_000

FLOOR_APP = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
one, many = open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read()
async def get(request: Request) -> Response:
    return Response(one, media_type="application/json")
async def post(request: Request) -> Response:
    await request.body()
    return Response(many, media_type="application/json")
app = Starlette(routes=[Route("/one", get), Route("/many", post, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            loop="uvloop", http="httptools")
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def quantiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.99) - 1)]


def timed(fn: Any, rounds: int) -> tuple[float, float]:
    for _ in range(min(200, rounds)):
        fn()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return quantiles(out)


class Client:
    """One keep-alive connection; raises on any answer but 200."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = headers

    def get(self, path: str) -> bytes:
        self.conn.request("GET", path, headers=self.headers)
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: {resp.status} {body[:200]!r}")
        return body

    def post(self, path: str, body: bytes) -> bytes:
        h = {**self.headers, "content-type": "application/json"}
        self.conn.request("POST", path, body=body, headers=h)
        resp = self.conn.getresponse()
        out = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"POST {path}: {resp.status} {out[:200]!r}")
        return out


def wait_up(port: int, path: str, proc: subprocess.Popen[Any], headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx2.get(f"http://127.0.0.1:{port}{path}", headers=headers).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server on {port} did not start")
        time.sleep(0.1)


def load_worker(port: int, seconds: float, seed: int, out: Any) -> None:
    rng = random.Random(seed)
    client = Client(port, {"authorization": f"Bearer {TOKEN}"})
    ones: list[float] = []
    manys: list[float] = []
    errors = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter_ns()
        try:
            if rng.random() < 0.9:
                client.get(f"/views/{VIEW}/entities/e{rng.randrange(N_ENTITIES)}")
                ones.append((time.perf_counter_ns() - t0) / 1e6)
            else:
                ids = [f"e{rng.randrange(N_ENTITIES)}" for _ in range(100)]
                client.post(f"/views/{VIEW}/get_many", json.dumps({"ids": ids}).encode())
                manys.append((time.perf_counter_ns() - t0) / 1e6)
        except Exception:
            errors += 1
            client = Client(port, {"authorization": f"Bearer {TOKEN}"})
    out.put((ones, manys, errors))


def load_test(port: int, clients: int, seconds: float) -> None:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=load_worker, args=(port, seconds, i, q)) for i in range(clients)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    results = [q.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    wall = time.monotonic() - t0
    ones = [x for r in results for x in r[0]]
    manys = [x for r in results for x in r[1]]
    errors = sum(r[2] for r in results)
    n = len(ones) + len(manys)
    p50, p99 = quantiles(ones)
    m50, m99 = quantiles(manys) if manys else (float("nan"), float("nan"))
    print(
        f"load: {clients} clients x {seconds:g} s: {n:,} requests ({n / wall:,.0f}/s), "
        f"errors {errors}\n"
        f"  1 entity    p50 {p50:.3f} ms  p99 {p99:.3f} ms  ({len(ones):,})\n"
        f"  100 entities p50 {m50:.3f} ms  p99 {m99:.3f} ms  ({len(manys):,})"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3000)
    ap.add_argument("--load-seconds", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1, help="redfeat serve --workers")
    ap.add_argument("--url", help="a Redis URL instead of a private embedded server")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        url = args.url
        if url is None:
            server = EmbeddedServer(Path(tmp) / "data")
            url = server.ensure(keep_running=True).url()
        try:
            run(url, Path(tmp), args)
        finally:
            if server is not None:
                server.stop(force=True)


def run(url: str, tmp: Path, args: argparse.Namespace) -> None:
    project = f"bench{os.getpid()}"
    store = FeatureStore.from_url(url, project=project)
    procs: list[subprocess.Popen[Any]] = []
    try:
        store.apply(
            FeatureView(VIEW, entity="user", fields=[Field(f"f{i}", t.Float) for i in range(20)])
        )
        rows = [
            {"entity_id": f"e{i}", **{f"f{j}": i + j / 10 for j in range(20)}}
            for i in range(N_ENTITIES)
        ]
        store.write_many(VIEW, rows)
        rng = random.Random(1)
        ids100 = [f"e{rng.randrange(N_ENTITIES)}" for _ in range(100)]
        many_body = json.dumps({"ids": ids100}).encode()

        # in process
        g50, g99 = timed(lambda: store.get(VIEW, f"e{rng.randrange(N_ENTITIES)}"), args.rounds)
        m50, m99 = timed(lambda: store.get_many(VIEW, ids100), args.rounds)

        # redfeat serve, as a user runs it
        port = free_port()
        env = {
            **os.environ,
            "REDFEAT_TOKENS": f"{TOKEN}:read",
            "REDFEAT_URL": url,
            "REDFEAT_PROJECT": project,
        }
        exe = Path(sys.executable).with_name("redfeat")
        cmd = [str(exe), "serve", "--port", str(port), "--workers", str(args.workers)]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        auth = {"authorization": f"Bearer {TOKEN}"}
        wait_up(port, "/livez", procs[-1], {})
        client = Client(port, auth)
        one_body = client.get(f"/views/{VIEW}/entities/e1")
        many_answer = client.post(f"/views/{VIEW}/get_many", many_body)

        # the floor: the same bytes from a bare Starlette endpoint
        (tmp / "one.json").write_bytes(one_body)
        (tmp / "many.json").write_bytes(many_answer)
        fport = free_port()
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    FLOOR_APP,
                    str(fport),
                    str(tmp / "one.json"),
                    str(tmp / "many.json"),
                ]
            )
        )
        wait_up(fport, "/one", procs[-1], {})
        floor = Client(fport, {})
        f50, f99 = timed(lambda: floor.get("/one"), args.rounds)
        fm50, fm99 = timed(lambda: floor.post("/many", many_body), args.rounds)

        client = Client(port, auth)  # a fresh connection: the first may have idled out
        h50, h99 = timed(
            lambda: client.get(f"/views/{VIEW}/entities/e{rng.randrange(N_ENTITIES)}"),
            args.rounds,
        )
        hm50, hm99 = timed(lambda: client.post(f"/views/{VIEW}/get_many", many_body), args.rounds)
        print(f"keep-alive client, {args.rounds:,} sequential requests each; 20 float features")
        print("1 entity, p50 / p99 ms")
        print(f"  in process store.get      {g50:.3f} / {g99:.3f}")
        print(f"  bare Starlette (floor)    {f50:.3f} / {f99:.3f}")
        print(
            f"  redfeat HTTP              {h50:.3f} / {h99:.3f}   "
            f"target p50 <= 0.6: {'met' if h50 <= 0.6 else 'NOT met'}; "
            f"HTTP adds {h50 - g50:.3f} ms; {h50 / f50:.2f}x the floor"
        )
        print("100 entities, p50 / p99 ms")
        print(f"  in process store.get_many {m50:.3f} / {m99:.3f}")
        print(f"  bare Starlette (floor)    {fm50:.3f} / {fm99:.3f}")
        print(
            f"  redfeat HTTP              {hm50:.3f} / {hm99:.3f}   "
            f"target p50 <= 2.0: {'met' if hm50 <= 2.0 else 'NOT met'}; "
            f"HTTP adds {hm50 - m50:.3f} ms; {hm50 / fm50:.2f}x the floor"
        )
        floor.conn.close()
        procs[-1].terminate()
        if args.load_seconds > 0:
            load_test(port, args.clients, args.load_seconds)
        client.conn.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        keys = list(store.client.scan_iter(match=f"rf:{project}:*", count=1000))
        for i in range(0, len(keys), 500):
            store.client.unlink(*keys[i : i + 500])
        store.close()


if __name__ == "__main__":
    main()
