"""A declarative feature repository: a directory with ``redfeat.toml`` and the Python
modules that define its entities, views, sources, window features and feature services.

    redfeat init DIR                  scaffold one (with a small example that runs)
    redfeat plan                      what apply would change in the registry, nothing changed
    redfeat apply [--allow-breaking]  make the registry match the repository
    redfeat materialize START END     load the views' batch sources for [START, END)
    redfeat materialize-incremental [END]   from each view's watermark to END (default now)
    redfeat services                  the feature services and their versions

The repository is the whole project: a definition in the registry that no module defines
any more is *removed* by apply (a view with its data), which, like every breaking change,
needs ``--allow-breaking``. Commands run in the repository (or take ``--repo DIR``).

``redfeat.toml``::

    [project]
    name = "shop"                      # the store's project (keys start rf:shop:)
    definitions = ["features.py"]      # modules, relative to the repository

    [store]
    url = "redis://localhost:6379/0"   # or leave it out: the embedded server in data_dir
    data_dir = ".redfeat"
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from ..core.schema import NAME_RE, Entity, FeatureService, FeatureView
from ..core.sources import redact
from ..errors import ConfigurationError
from ..store import FeatureStore
from .options import app, console, notes

CONFIG = "redfeat.toml"

Repo = Annotated[
    Path | None, typer.Option("--repo", help="the repository [default: this directory]")
]


@dataclass
class Repository:
    """A repository as read from disk: its settings and the definitions its modules hold."""

    root: Path
    project: str
    url: str | None
    data_dir: Path
    objects: list[Any] = field(default_factory=list)

    def open(self) -> FeatureStore:
        if self.url:
            notes.print(escape(f"server: {redact(self.url)}, project {self.project!r}"))
            return FeatureStore.from_url(self.url, project=self.project)
        notes.print(escape(f"data: {self.data_dir}, project {self.project!r}"))
        logging.getLogger("redfeat.home").setLevel(logging.ERROR)
        return FeatureStore(project=self.project, data_dir=self.data_dir)

    def views(self) -> list[FeatureView]:
        return [o for o in self.objects if isinstance(o, FeatureView)]


def _from_env() -> Repository:
    import os

    from ..core.embedded import default_home

    home = os.environ.get("REDFEAT_HOME")
    return Repository(
        Path.cwd(),
        os.environ.get("REDFEAT_PROJECT", "default"),
        os.environ.get("REDFEAT_URL") or None,
        Path(home).expanduser().resolve() if home else default_home(),
    )


def _find(repo: Path | None) -> Path:
    start = (repo or Path.cwd()).resolve()
    for d in (start, *start.parents):
        if (d / CONFIG).is_file():
            return d
        if repo is not None:
            break
    raise ConfigurationError(
        f"no {CONFIG} in {start}"
        + ("" if repo is not None else " or above it")
        + ": run `redfeat init DIR` to make a repository, or pass --repo DIR"
    )


def load(repo: Path | None = None) -> Repository:
    """Read ``redfeat.toml`` and import the definition modules (their module-level Entity,
    FeatureView, FeatureService and WindowFeatures objects are the repository)."""
    from ..windows.spec import WindowFeatures

    root = _find(repo)
    try:
        conf = tomllib.loads((root / CONFIG).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{root / CONFIG}: {exc}") from None
    proj = conf.get("project", {})
    store = conf.get("store", {})
    name = proj.get("name", "default")
    modules = proj.get("definitions", ["features.py"])
    if isinstance(modules, str) or not isinstance(modules, list) or not modules:
        raise ConfigurationError(f"{root / CONFIG}: [project] definitions must list modules")
    out = Repository(
        root,
        str(name),
        store.get("url"),
        (root / store.get("data_dir", ".redfeat")).resolve(),
    )
    seen: dict[tuple[str, str], str] = {}
    sys.path.insert(0, str(root))  # definition modules may import each other
    try:
        for rel in modules:
            path = (root / rel).resolve()
            if not path.is_file():
                raise ConfigurationError(f"{root / CONFIG}: no definitions module {rel!r}")
            mod_name = f"redfeat_repo_{path.stem}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                raise ConfigurationError(f"cannot import {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
            for obj in vars(module).values():
                if not isinstance(obj, Entity | FeatureView | FeatureService | WindowFeatures):
                    continue
                kind = type(obj).__name__
                where = seen.setdefault((kind, obj.name), rel)
                if any(o is obj for o in out.objects):
                    continue
                if where != rel or any(
                    type(o) is type(obj) and o.name == obj.name for o in out.objects
                ):
                    raise ConfigurationError(
                        f"{kind} {obj.name!r} is defined twice (in {where} and {rel})"
                    )
                out.objects.append(obj)
    finally:
        sys.path.remove(str(root))
    return out


@dataclass(frozen=True)
class Change:
    kind: str  # "entity", "view", "window features", "feature service"
    name: str
    what: str  # created, unchanged, updated, version N, breaking change: ..., removed

    @property
    def breaking(self) -> bool:
        return "breaking change" in self.what or self.what.startswith("removed")

    @property
    def mark(self) -> str:
        if self.what == "unchanged":
            return "="
        if self.what == "created":
            return "+"
        if self.what.startswith("removed"):
            return "-"
        return "!" if self.breaking else "~"


def _kind(obj: Any) -> str:
    if isinstance(obj, Entity):
        return "entity"
    if isinstance(obj, FeatureView):
        return "view"
    if isinstance(obj, FeatureService):
        return "feature service"
    return "window features"


def plan(store: FeatureStore, repo: Repository) -> list[Change]:
    """Every definition of the repository with what apply would do to it, then what apply
    would remove (registry definitions no module defines any more)."""
    result = store.plan(*repo.objects)
    changes = [Change(_kind(o), o.name, result.get(o.name, "unchanged")) for o in repo.objects]
    names = {(c.kind, c.name) for c in changes}
    for v in store.views():
        if ("view", v.name) not in names:
            changes.append(Change("view", v.name, "removed (with its data)"))
    for w in store.window_features():
        if ("window features", w.name) not in names:
            changes.append(Change("window features", w.name, "removed (with its tiles)"))
    for s in store.feature_services():
        if ("feature service", s.name) not in names:
            changes.append(Change("feature service", s.name, "removed (every version)"))
    # entities stay: ids of other projects' or removed views' data may still name them
    return changes


def _show(changes: list[Change], verbose: bool) -> None:
    table = Table("", "kind", "name", "change", box=None, pad_edge=False)
    style = {"+": "green", "~": "yellow", "!": "bold red", "-": "red", "=": "dim"}
    for c in changes:
        if c.mark == "=" and not verbose:
            continue
        s = style[c.mark]
        table.add_row(f"[{s}]{c.mark}[/{s}]", c.kind, escape(c.name), escape(c.what))
    console.print(table)


def _summary(changes: list[Change]) -> str:
    counts = {m: sum(1 for c in changes if c.mark == m) for m in "+~!-="}
    return (
        f"{counts['+']} to add, {counts['~']} to change, {counts['!']} breaking, "
        f"{counts['-']} to remove, {counts['=']} unchanged"
    )


def _time(text: str | None, what: str) -> datetime | None:
    if text is None or text == "now":
        return None if text is None else datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{what} {text!r} is not an ISO date or datetime") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)  # naive: UTC, as everywhere


# -- the commands -------------------------------------------------------------------------

_EXAMPLE = '''"""The definitions of this feature repository: `redfeat plan` shows what
`redfeat apply` would change in the registry. Every Entity, FeatureView, FeatureService
and WindowFeatures at module level belongs to the repository."""

from pathlib import Path

from redfeat import Entity, FeatureService, FeatureView, Field, ParquetSource
from redfeat import types as t

HERE = Path(__file__).parent

# One entity per join key, or several keys for a pair: (driver, rider).
driver = Entity("driver", join_keys=[("driver_id", t.Int)], description="a driver")

driver_stats_source = ParquetSource(
    HERE / "data" / "driver_stats.parquet",
    event_time_column="event_timestamp",
    created_column="created",
)

driver_stats = FeatureView(
    "driver_hourly_stats",
    entity=driver,
    fields=[
        Field("conv_rate", t.Float, min=0, max=1),
        Field("acc_rate", t.Float, min=0, max=1),
        Field("avg_daily_trips", t.Int, min=0),
    ],
    ttl="1d",
    history="30d",
    batch_source=driver_stats_source,
)

driver_activity_v1 = FeatureService(
    "driver_activity_v1",
    features=[driver_stats[["conv_rate", "avg_daily_trips"]]],
    description="what the ranking model v1 reads",
)
'''

_CONFIG_TEXT = """# A redfeat feature repository: `redfeat plan`, then `redfeat apply`.
[project]
name = "{name}"                     # the store's project: its keys start rf:{name}:
definitions = ["features.py"]        # modules defining entities, views and services

[store]
# url = "redis://localhost:6379/0"  # a Redis or Valkey server; without it the embedded
data_dir = ".redfeat"               # server keeps its data here
"""


def _example_data(path: Path) -> None:
    """A week of hourly stats for five drivers (what the example view loads)."""
    from datetime import timedelta

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rows: dict[str, list[Any]] = {
        k: [] for k in ("driver_id", "event_timestamp", "created", "conv_rate", "acc_rate")
    }
    rows["avg_daily_trips"] = []
    for driver in range(1001, 1006):
        for h in range(24 * 7, 0, -1):
            ts = end - timedelta(hours=h)
            rows["driver_id"].append(driver)
            rows["event_timestamp"].append(ts)
            rows["created"].append(ts + timedelta(minutes=5))
            rows["conv_rate"].append(float(rng.random()))
            rows["acc_rate"].append(float(rng.random()))
            rows["avg_daily_trips"].append(int(rng.integers(0, 1000)))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), path)


@app.command("init")
def init(
    directory: Annotated[Path, typer.Argument(help="where to make the repository")],
    example: Annotated[
        bool, typer.Option(help="with an example entity, source, view and service")
    ] = True,
) -> None:
    """Make a feature repository: redfeat.toml and a definitions module."""
    root = directory.resolve()
    if (root / CONFIG).exists():
        raise ConfigurationError(f"{root} is a repository already ({CONFIG} exists)")
    root.mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in root.name) or "default"
    if not NAME_RE.match(name):
        name = "repo_" + name
    (root / CONFIG).write_text(_CONFIG_TEXT.format(name=name[:64]))
    defs = root / "features.py"
    if not defs.exists():
        defs.write_text(_EXAMPLE if example else '"""Definitions of this repository."""\n')
    if example:
        _example_data(root / "data" / "driver_stats.parquet")
    (root / ".gitignore").write_text(".redfeat/\n__pycache__/\n")
    console.print(escape(f"made a feature repository in {root}"))
    console.print(
        escape(f"next: cd {directory} && redfeat plan && redfeat apply && ")
        + "redfeat materialize-incremental"
    )


@app.command("plan")
def plan_cmd(
    repo: Repo = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="list unchanged too")] = False,
) -> None:
    """Show what `redfeat apply` would change in the registry; changes nothing."""
    r = load(repo)
    with r.open() as store:
        changes = plan(store, r)
    if all(c.mark == "=" for c in changes):
        console.print(
            f"Nothing to change: the registry matches the repository ({len(changes)} definitions)."
        )
        return
    _show(changes, verbose)
    console.print(_summary(changes))
    if any(c.breaking for c in changes):
        console.print("Breaking changes and removals are applied only with --allow-breaking.")


@app.command("apply")
def apply_cmd(
    repo: Repo = None,
    allow_breaking: Annotated[
        bool,
        typer.Option(
            "--allow-breaking", help="apply breaking changes and remove what the repo dropped"
        ),
    ] = False,
) -> None:
    """Make the registry match the repository."""
    r = load(repo)
    with r.open() as store:
        changes = plan(store, r)
        if all(c.mark == "=" for c in changes):
            console.print("Nothing to change: the registry matches the repository.")
            return
        breaking = [c for c in changes if c.breaking]
        if breaking and not allow_breaking:
            _show(breaking, False)
            console.print(
                "[red]Not applied:[/red] these changes break stored data or readers; "
                "run `redfeat apply --allow-breaking` to apply them."
            )
            raise typer.Exit(1)
        store.apply(*r.objects, allow_breaking=allow_breaking)
        for c in changes:
            if not c.what.startswith("removed"):
                continue
            if c.kind == "view":
                store.delete_view(c.name)
            elif c.kind == "window features":
                store.delete_window(c.name)
            else:
                store.delete_feature_service(c.name)
    _show(changes, False)
    console.print("Applied: " + _summary(changes))


def _materialize(
    repo: Path | None,
    start: datetime | None,
    end: datetime | None,
    views: str | None,
    incremental: bool,
) -> None:
    r = load(repo)
    wanted = None if views is None else [v.strip() for v in views.split(",") if v.strip()]
    chosen = [v for v in r.views() if v.batch_source is not None]
    if wanted is not None:
        unknown = sorted(set(wanted) - {v.name for v in chosen})
        if unknown:
            raise ConfigurationError(
                f"no view(s) {unknown} with a batch_source in this repository "
                f"(those: {sorted(v.name for v in chosen)})"
            )
        chosen = [v for v in chosen if v.name in wanted]
    if not chosen:
        console.print("No view of this repository has a batch_source: nothing to load.")
        return
    with (
        r.open() as store,
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as bar,
    ):
        for view in chosen:
            task = bar.add_task(escape(view.name), total=None)

            def step(done: int, total: int, task: Any = task) -> None:
                bar.update(task, completed=done, total=total)

            if incremental:
                rep = store.materialize_incremental(view, end, progress=step)
            else:
                rep = store.materialize(view, start, end, progress=step)
            bar.update(task, completed=rep.rows, total=rep.rows)
            since = "the first row" if rep.start is None else rep.start.isoformat()
            bar.console.print(
                escape(
                    f"{view.name}: {rep.rows:,} rows from {since} to {rep.end.isoformat()}: "
                    f"{rep.written:,} versions written, {rep.duplicates:,} already stored"
                    + (f", {rep.refused:,} refused" if rep.refused else "")
                    + (
                        f" (resumed from {rep.resumed_from.isoformat()})"
                        if rep.resumed_from
                        else ""
                    )
                    + f" in {rep.seconds:.1f} s"
                )
            )


@app.command("materialize")
def materialize_cmd(
    start: Annotated[str, typer.Argument(help="ISO time: rows with event time >= START")],
    end: Annotated[str, typer.Argument(help="ISO time or 'now': rows before END")],
    views: Annotated[str | None, typer.Option(help="comma-separated views [all]")] = None,
    repo: Repo = None,
) -> None:
    """Load the views' batch sources for [START, END)."""
    _materialize(repo, _time(start, "start"), _time(end, "end"), views, False)


@app.command("materialize-incremental")
def materialize_incremental_cmd(
    end: Annotated[str, typer.Argument(help="ISO time or 'now'")] = "now",
    views: Annotated[str | None, typer.Option(help="comma-separated views [all]")] = None,
    repo: Repo = None,
) -> None:
    """Load the views' batch sources from each view's watermark to END."""
    _materialize(repo, None, _time(end, "end"), views, True)


@app.command("services")
def services_cmd(repo: Repo = None) -> None:
    """List the feature services in the registry, with their versions (the repository's
    store; outside one, REDFEAT_URL / REDFEAT_PROJECT / REDFEAT_HOME as elsewhere)."""
    try:
        r = load(repo)
    except ConfigurationError:
        if repo is not None:
            raise
        r = _from_env()
    with r.open() as store:
        table = Table("feature service", "version", "features", "description")
        for s in store.feature_services():
            table.add_row(
                escape(s.name), str(s.version), escape(", ".join(s.features)), escape(s.description)
            )
        console.print(table)
