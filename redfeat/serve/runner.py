"""``redfeat serve``: uvicorn in one process, or ``--workers N`` processes on one port.

One worker: the store and the app live in this process. Several: uvicorn's supervisor
spawns N processes, each builds its app with ``worker_app()`` (an app factory) from the
settings this process leaves in ``REDFEAT_SERVE_CONFIG`` (token digests only, never a
token); each opens its own store, and with the embedded server they all attach to the one
server this process keeps running until they have stopped. Prometheus metrics are shared
through a temporary ``PROMETHEUS_MULTIPROC_DIR`` (``redfeat.serve.prom``).

Shutdown (SIGTERM or Ctrl-C): uvicorn stops accepting, lets requests in flight finish for
up to ``graceful_timeout`` seconds, then each app closes its store.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

import msgspec

from . import auth
from .options import Conn

ENV = "REDFEAT_SERVE_CONFIG"


class Settings(msgspec.Struct, frozen=True):
    """What every worker needs to build the same app (JSON in ``REDFEAT_SERVE_CONFIG``)."""

    url: str | None = None
    project: str = "default"
    home: str | None = None
    server_bin: str | None = None
    durability: str = "everysec"
    tokens: str = '{"tokens": []}'  # digests and scopes (auth.Tokens.to_json)
    allowed_hosts: list[str] | None = None
    cors_origins: list[str] = []
    access_log: bool = False


@dataclass
class Plan:
    host: str
    port: int
    workers: int
    graceful_timeout: float
    settings: Settings
    extra: dict[str, Any] = field(default_factory=dict)


def _log_access(on: bool) -> None:
    """JSON lines on stderr, one per request (the message is the JSON itself)."""
    logger = logging.getLogger("redfeat.access")
    logger.propagate = False
    logger.setLevel(logging.INFO if on else logging.WARNING)
    if on and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)


def build(settings: Settings, *, quiet: bool = False) -> Any:
    """The app of one process: its own store, closed when the server shuts down."""
    from .http import create_app

    conn = Conn(
        settings.url, settings.project, settings.home, settings.server_bin, settings.durability
    )
    store = conn.open(quiet=quiet)
    try:
        tokens = auth.from_env(settings.tokens, "the serve settings")
        _log_access(settings.access_log)
        return create_app(
            store,
            close_store=True,
            tokens=tokens,
            allowed_hosts=settings.allowed_hosts,
            cors_origins=settings.cors_origins,
            access_log=settings.access_log,
        )
    except BaseException:
        store.close()
        raise


def worker_app() -> Any:
    """uvicorn's app factory in each worker process."""
    raw = os.environ.get(ENV)
    if not raw:
        raise RuntimeError(f"{ENV} is not set: start workers with `redfeat serve --workers N`")
    return build(msgspec.json.decode(raw, type=Settings), quiet=True)


def _fast() -> dict[str, str]:
    """uvloop and httptools where installed (about half the time per request)."""
    out = {}
    if importlib.util.find_spec("uvloop") is not None:
        out["loop"] = "uvloop"
    if importlib.util.find_spec("httptools") is not None:
        out["http"] = "httptools"
    return out


def run(plan: Plan) -> None:
    import uvicorn

    common: dict[str, Any] = {
        "host": plan.host,
        "port": plan.port,
        "log_level": "warning",
        "timeout_graceful_shutdown": plan.graceful_timeout,
        "access_log": False,  # ours is JSON (--access-log)
        **_fast(),
        **plan.extra,
    }
    s = plan.settings
    if plan.workers == 1:
        app = build(s)
        # uvicorn ends the process by re-raising SIGTERM/SIGINT: the app's lifespan closes
        # the store first; if the server never starts (port taken) nothing else would
        try:
            uvicorn.run(app, **common)
        except BaseException:
            app.state.store.close()  # closing twice is harmless
            raise
        return
    # Several processes. The embedded server stays up while any worker runs: this process
    # attaches first and detaches last.
    keeper = Conn(s.url, s.project, s.home, s.server_bin, s.durability).open()
    shared = tempfile.mkdtemp(prefix="redfeat-metrics-")
    env = {ENV: msgspec.json.encode(s).decode(), "PROMETHEUS_MULTIPROC_DIR": shared}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        uvicorn.run("redfeat.serve.runner:worker_app", factory=True, workers=plan.workers, **common)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(shared, ignore_errors=True)
        keeper.close()
