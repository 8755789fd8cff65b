"""The ``redfeat`` command line's root app and its shared options, declared once.

Environment variables are read here, at the edge:

REDFEAT_URL          use this server instead of the embedded one (redis://, rediss://, unix://)
REDFEAT_PROJECT      project name (default "default")
REDFEAT_HOME         data dir of the embedded server (default ./.redfeat; the library's
                     FeatureStore() follows the same rule)
REDFEAT_SERVER_BIN   a redis-server/valkey-server binary for the embedded server
REDFEAT_DURABILITY   what an acknowledged write promises: everysec (default) or always
                     (``FeatureStore.from_url(durability=)``; the embedded server's data dir)

A command that opens a store takes ``conn: Conn`` and is decorated with ``@connected``:
that adds ``--url --project --home --server-bin --durability`` to it. Commands may live in
other modules of this package: they import ``app`` (and ``connected``) from here, and
``cli.py`` imports the module once so that its commands are registered::

    from .options import Conn, app, connected

    @app.command("size")
    @connected
    def size(view: str, conn: Conn) -> None:
        with conn.open() as store:
            ...
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ..core.embedded import default_home, holds_data
from ..store import FeatureStore

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(help="redfeat: a feature store on Redis.", no_args_is_help=True)
console = Console()
# Where the data is goes to stderr, so that stdout stays what the command prints (JSON...).
notes = Console(stderr=True, highlight=False, soft_wrap=True)

Home = Annotated[
    str | None,
    typer.Option(envvar="REDFEAT_HOME", help="data dir [default: ./.redfeat]"),
]
Bin = Annotated[str | None, typer.Option(envvar="REDFEAT_SERVER_BIN", help="server binary to run")]
Url = Annotated[str | None, typer.Option(envvar="REDFEAT_URL", help="use this server instead")]
Project = Annotated[str, typer.Option(envvar="REDFEAT_PROJECT", help="project name")]
Durability = Annotated[
    str,
    typer.Option(
        envvar="REDFEAT_DURABILITY",
        help="everysec, or always: acknowledge a write only once it is on disk (checked "
        "against the server; refused where it cannot be kept)",
    ),
]


def home_dir(home: str | None) -> Path:
    return default_home() if not home else Path(home).expanduser().resolve()


def redact(url: str) -> str:
    """The URL without its password."""
    head, sep, tail = url.partition("://")
    creds, at, rest = tail.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{head}{sep}{creds.split(':', 1)[0]}:***@{rest}"


@dataclass(frozen=True, slots=True)
class Conn:
    """Where a command's store is: a server URL, or the embedded server of a data dir."""

    url: str | None = None
    project: str = "default"
    home: str | None = None
    server_bin: str | None = None
    durability: str = "everysec"

    @property
    def home_dir(self) -> Path:
        return home_dir(self.home)

    def open(
        self, project: str | None = None, quiet: bool = False, offline_dir: str | None = None
    ) -> FeatureStore:
        """The store (the data dir or server goes to stderr, unless ``quiet``)."""
        project = project or self.project
        if self.url:
            if not quiet:
                notes.print(escape(f"server: {redact(self.url)}, project {project!r}"))
            return FeatureStore.from_url(
                self.url,
                project=project,
                durability=self.durability,
                offline_dir=offline_dir,
            )
        path = self.home_dir
        if not quiet:
            empty = "" if holds_data(path) else " (holds no data yet: a new, empty store)"
            notes.print(escape(f"data: {path}{empty}, project {project!r}"))
        # the library says the same about an empty dir in a log line: printed once here
        logging.getLogger("redfeat.home").setLevel(logging.ERROR)
        return FeatureStore(
            project=project,
            data_dir=path,
            server_bin=self.server_bin,
            durability=self.durability,
            offline_dir=offline_dir,
        )


_SHARED = [
    inspect.Parameter("url", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Url),
    inspect.Parameter(
        "project", inspect.Parameter.KEYWORD_ONLY, default="default", annotation=Project
    ),
    inspect.Parameter("home", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Home),
    inspect.Parameter("server_bin", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Bin),
    inspect.Parameter(
        "durability", inspect.Parameter.KEYWORD_ONLY, default="everysec", annotation=Durability
    ),
]


def connected(fn: F) -> F:
    """Give a command the shared ``--url --project --home --server-bin --durability``
    options; it receives them as ``conn: Conn``."""
    sig = inspect.signature(fn, eval_str=True)  # the objects, not the strings of the source
    own = [p for p in sig.parameters.values() if p.name != "conn"]
    hints = {k: v for k, v in inspect.get_annotations(fn, eval_str=True).items() if k != "conn"}

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        conn = Conn(
            kwargs.pop("url"),
            kwargs.pop("project"),
            kwargs.pop("home"),
            kwargs.pop("server_bin"),
            kwargs.pop("durability"),
        )
        return fn(*args, conn=conn, **kwargs)

    params = own + _SHARED
    command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {**hints, **{p.name: p.annotation for p in _SHARED}}
    del command.__wrapped__  # typer must read the signature above, not fn's
    return command  # type: ignore[return-value]
