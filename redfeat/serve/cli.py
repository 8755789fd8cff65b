"""The ``redfeat`` command line. Environment variables are read here, at the edge:

REDFEAT_URL          use this server instead of the embedded one (redis://, rediss://, unix://)
REDFEAT_PROJECT      project name (default "default")
REDFEAT_HOME         data dir of the embedded server (default ./.redfeat; the library's
                     FeatureStore() follows the same rule)
REDFEAT_SERVER_BIN   a redis-server/valkey-server binary for the embedded server
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import MofNCompleteColumn, Progress
from rich.table import Table
from rich.text import Text

from ..core.embedded import EmbeddedServer, default_home, holds_data
from ..core.time import duration_us
from ..errors import RedfeatError
from ..store import FeatureStore
from . import repo

app = typer.Typer(help="redfeat: a feature store on Redis.", no_args_is_help=True)
server_app = typer.Typer(help="The embedded server.", no_args_is_help=True)
app.add_typer(server_app, name="server")
alerts_app = typer.Typer(help="Alert rules on time series.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")
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


def _home(home: str | None) -> Path:
    return default_home() if not home else Path(home).expanduser().resolve()


def _open(url: str | None, project: str, home: str | None, server_bin: str | None) -> FeatureStore:
    if url:
        notes.print(escape(f"server: {_redact(url)}, project {project!r}"))
        return FeatureStore.from_url(url, project=project)
    path = _home(home)
    empty = "" if holds_data(path) else " (holds no data yet: a new, empty store)"
    notes.print(escape(f"data: {path}{empty}, project {project!r}"))
    # the library says the same about an empty dir in a log line: printed once here
    logging.getLogger("redfeat.home").setLevel(logging.ERROR)
    return FeatureStore(project=project, data_dir=path, server_bin=server_bin)


def _redact(url: str) -> str:
    """The URL without its password."""
    head, sep, tail = url.partition("://")
    creds, at, rest = tail.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{head}{sep}{creds.split(':', 1)[0]}:***@{rest}"


@server_app.command("start")
def server_start(
    home: Home = None,
    server_bin: Bin = None,
    durability: Annotated[str, typer.Option(help="everysec or always")] = "everysec",
) -> None:
    """Start the embedded server and keep it running until `redfeat server stop`."""
    server = EmbeddedServer(_home(home), server_bin=server_bin, durability=durability)
    info = server.ensure(keep_running=True)
    console.print(escape(f"data: {server.dir}"), soft_wrap=True)
    console.print(f"running: pid {info.pid}, {escape(info.url())}, durability {info.durability}")


@server_app.command("stop")
def server_stop(
    home: Home = None,
    force: Annotated[
        bool, typer.Option("--force", help="stop even while other processes are attached")
    ] = False,
) -> None:
    """Stop the embedded server (the append-only file is flushed first).

    Refuses while other processes use it, and names them; --force stops it anyway (their
    stores then fail with BackendError until the server runs again)."""
    server = EmbeddedServer(_home(home))
    console.print(escape(f"data: {server.dir}"), soft_wrap=True)
    stopped = server.stop(force=force)
    console.print("stopped" if stopped else "not running")


@server_app.command("status")
def server_status(home: Home = None) -> None:
    """Show whether the embedded server runs, where, and who is attached."""
    server = EmbeddedServer(_home(home))
    empty = "" if holds_data(server.dir) else " (holds no data yet)"
    console.print(escape(f"data: {server.dir}{empty}"), soft_wrap=True)
    info = server.status()
    if info is None:
        console.print("not running")
        raise typer.Exit(1)
    console.print(
        f"running: pid {info.pid}, {escape(info.url())}, durability {info.durability}, "
        f"{'kept running' if info.keep_running else 'stops with its last user'}"
    )
    for line in server.attached():
        console.print(escape(f"  attached: {line}"))


@app.command("views")
def views(
    url: Url = None, project: Project = "default", home: Home = None, server_bin: Bin = None
) -> None:
    """List the registered feature views."""
    with _open(url, project, home, server_bin) as store:
        table = Table("view", "entity", "fields", "ttl", "history", "schema")
        for v in store.views():
            h = v.history
            hist = str(h.count) if h.count is not None else f"{(h.duration_us or 0) / 86.4e9:g}d"
            table.add_row(
                escape(v.name),
                escape(v.entity),
                escape(", ".join(f"{f.name}:{f.dtype!r}" for f in v.fields)),
                str(v.ttl or "-"),
                hist,
                str(v.schema_version),
            )
        console.print(table)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


@app.command("get")
def get(
    view: str,
    entity_id: str,
    url: Url = None,
    project: Project = "default",
    home: Home = None,
    server_bin: Bin = None,
) -> None:
    """Print the latest values of one entity as JSON."""
    with _open(url, project, home, server_bin) as store:
        row = store.get(view, entity_id)
        if row is None:
            console.print(escape(f"no values for {entity_id!r} in {view!r}"))
            raise typer.Exit(1)
        print(json.dumps({k: _jsonable(v) for k, v in row.items()}, indent=2))


@app.command("history")
def history(
    view: str,
    entity_id: str,
    limit: int = 10,
    url: Url = None,
    project: Project = "default",
    home: Home = None,
    server_bin: Bin = None,
) -> None:
    """Show the stored versions of one entity, newest first."""
    with _open(url, project, home, server_bin) as store:
        versions = store.history(view, entity_id, limit=limit)
        if not versions:
            console.print(escape(f"no versions for {entity_id!r} in {view!r}"))
            raise typer.Exit(1)
        table = Table("version", "event time", "written at", *map(escape, versions[0].values))
        for v in versions:
            table.add_row(
                str(v.id),
                v.event_time.isoformat(),
                v.written_at.isoformat(),
                *(escape(str(_jsonable(x))) for x in v.values.values()),
            )
        console.print(table)


def _when(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO date or datetime") from None


@app.command("export")
def export(
    view: str,
    out: Path,
    start: Annotated[str | None, typer.Option(help="ISO time, inclusive")] = None,
    end: Annotated[str | None, typer.Option(help="ISO time, inclusive")] = None,
    url: Url = None,
    project: Project = "default",
    home: Home = None,
    server_bin: Bin = None,
) -> None:
    """Write every version of VIEW (event time in [start, end]) to a Parquet file."""
    with _open(url, project, home, server_bin) as store, _progress() as bar:
        task = bar.add_task(escape(f"reading {view}"), total=None)
        n = store.export(
            view,
            out,
            start=_when(start),
            end=_when(end),
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    console.print(escape(f"{n:,} versions of {view!r} written to {out}"))


@app.command("training-frame")
def training_frame_cmd(
    entities: Annotated[Path, typer.Argument(help="Parquet or CSV with entity_id, event_time")],
    features: Annotated[str, typer.Option(help="comma-separated view:feature list")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write")],
    entity_column: str = "entity_id",
    event_time_column: str = "event_time",
    full_feature_names: bool = False,
    filter_by_written_at: bool = False,
    url: Url = None,
    project: Project = "default",
    home: Home = None,
    server_bin: Bin = None,
) -> None:
    """Point-in-time correct features for each (entity, time) row of ENTITIES."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from ..offline.transfer import write_parquet

    table = pacsv.read_csv(entities) if entities.suffix == ".csv" else pq.read_table(entities)
    refs = [f.strip() for f in features.split(",") if f.strip()]
    with _open(url, project, home, server_bin) as store, _progress() as bar:
        tasks: dict[str, Any] = {}

        def step(view: str, done: int, total: int) -> None:
            if view not in tasks:
                tasks[view] = bar.add_task(escape(f"reading {view}"), total=total)
            bar.update(tasks[view], completed=done)

        result = store.training_frame(
            table,
            refs,
            entity_column=entity_column,
            event_time_column=event_time_column,
            full_feature_names=full_feature_names,
            filter_by_written_at=filter_by_written_at,
            as_arrow=True,
            progress=step,
        )
    write_parquet(result, out)
    console.print(escape(f"{result.num_rows:,} rows x {len(refs)} features written to {out}"))


@app.command("worker")
def worker_cmd(
    views: Annotated[str | None, typer.Option(help="comma-separated views (default: all)")] = None,
    group: str = "redfeat",
    url: Url = None,
    project: Project = "default",
    home: Home = None,
    server_bin: Bin = None,
) -> None:
    """Consume the ingest streams (store.push): validate, transform, write; Ctrl-C stops."""
    from rich.live import Live

    names = None if views is None else [v.strip() for v in views.split(",") if v.strip()]
    with _open(url, project, home, server_bin) as store:
        worker = store.worker(names, group=group)
        console.print(
            escape(f"worker {worker.consumer} on {', '.join(worker.views) or 'no views'}")
        )
        with Live(console=console, refresh_per_second=4) as live:

            def show(stats: Any) -> None:
                lag = ", ".join(f"{v}: {n}" for v, n in stats.lag.items()) or "-"
                live.update(
                    Text(
                        f"rows {stats.rows:,}  ({stats.rows_per_second:,.0f}/s)  batches "
                        f"{stats.batches:,}  dead letters {stats.dead:,}  claimed {stats.claimed:,}"
                        f"  lag {lag}"
                    )
                )

            try:
                worker.run(on_progress=show)
            except KeyboardInterrupt:
                worker.stop()


def _since(text: str) -> datetime:
    """'24h', '7d' (back from now) or an ISO date/datetime."""
    try:
        return datetime.now(UTC) - timedelta(microseconds=duration_us(text, what="--since"))
    except RedfeatError:
        when = _when(text)
        assert when is not None
        return when


@app.command("drift")
def drift_cmd(
    view: str,
    since: Annotated[str, typer.Option(help="window start: '24h', '7d' or an ISO time")] = "24h",
    until: Annotated[str | None, typer.Option(help="window end (ISO; default now)")] = None,
    baseline_start: Annotated[str | None, typer.Option(help="baseline from profiles")] = None,
    baseline_end: Annotated[str | None, typer.Option(help="(with --baseline-start)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    fail_on: Annotated[str | None, typer.Option(help="exit 1 at 'warning' or 'drift'")] = None,
    url: Url = None,
    project: Project = "default",
    home: Home = None,
    server_bin: Bin = None,
) -> None:
    """Drift of a view's features since a time, against its baseline."""
    if fail_on not in (None, "warning", "drift"):
        raise typer.BadParameter(f"--fail-on takes 'warning' or 'drift', got {fail_on!r}")
    with _open(url, project, home, server_bin) as store:
        baseline = None
        if baseline_start is not None:
            baseline = (_when(baseline_start), _when(baseline_end) or datetime.now(UTC))
        report = store.quality.drift(view, start=_since(since), end=_when(until), baseline=baseline)
        if as_json:
            print(json.dumps(report.to_dict(), indent=2))
        else:
            from .tables import drift_table

            console.print(drift_table(report))
    levels = ["ok", "warning", "drift"]
    if fail_on is not None and levels.index(report.verdict) >= levels.index(fail_on):
        raise typer.Exit(1)


@app.command("health")
def health_cmd(
    window: Annotated[str, typer.Option(help="volumes and drift over this window")] = "24h",
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    url: Url = None,
    project: Project = "default",
    home: Home = None,
    server_bin: Bin = None,
) -> None:
    """Freshness, volumes, validation failures and drift of every view; exit 1 if critical."""
    with _open(url, project, home, server_bin) as store:
        report = store.quality.health(window=window)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        from .tables import health_table

        console.print(health_table(report))
    if report.status == "critical":
        raise typer.Exit(1)


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    url: Url = None,
    project: Project = "default",
    home: Home = None,
    server_bin: Bin = None,
) -> None:
    """Serve the HTTP API and the web page (uvicorn) until Ctrl-C or SIGTERM."""
    import uvicorn

    from .http import create_app

    store = _open(url, project, home, server_bin)
    shown = f"[{host}]" if ":" in host else host
    # plain print, flushed: a supervisor or a test reads the URL from the first line
    print(f"redfeat serving project {project!r} on http://{shown}:{port}/", flush=True)
    # One process: the store (and an embedded server) belong to it. The app closes the
    # store at shutdown, because uvicorn ends the process by re-raising SIGTERM/SIGINT.
    app = create_app(store, close_store=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    except BaseException:
        store.close()  # it never started (port taken): close here
        raise


def _progress() -> Progress:
    return Progress(
        *Progress.get_default_columns(), MofNCompleteColumn(), console=console, transient=True
    )


def _ts(when: datetime | None) -> str:
    return "-" if when is None else when.strftime("%Y-%m-%d %H:%M:%S")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


_STATE_STYLE = {"ok": "green", "pending": "yellow", "firing": "bold red", "resolved": "cyan"}


@alerts_app.command("run")
def alerts_run(
    interval: Annotated[str, typer.Option(help="time between evaluations, e.g. '10s'")] = "10s",
    once: Annotated[bool, typer.Option("--once", help="evaluate once and exit")] = False,
    url: Url = None,
    project: Project = "default",
    home: Home = None,
    server_bin: Bin = None,
) -> None:
    """Evaluate every alert rule every INTERVAL and print the transitions; Ctrl-C stops."""
    try:
        seconds = duration_us(interval, what="--interval") / 1e6
    except RedfeatError as exc:
        raise typer.BadParameter(str(exc)) from None
    with _open(url, project, home, server_bin) as store:
        alerts = store.alerts
        if not once:
            n = len(alerts.list())
            console.print(escape(f"evaluating {n} rule(s) every {interval}; Ctrl-C stops"))
        try:
            while True:
                started = time.monotonic()
                alerts.errors.clear()
                try:
                    done = alerts.evaluate()
                except RedfeatError as exc:
                    if once:
                        raise
                    # a server hiccup must not end the evaluator: report, try next round
                    console.print(f"[red]error:[/red] {escape(str(exc))}")
                    done = []
                for rule, err in alerts.errors:  # rules that failed (the others ran)
                    console.print(
                        Text.assemble(("error:", "red"), f" alert {rule!r}: {err}"), soft_wrap=True
                    )
                for t in done:
                    style = _STATE_STYLE.get(t.to_state, "")
                    console.print(
                        escape(f"{_ts(t.at)}  {t.rule} ({t.series}): {t.from_state} -> ")
                        + f"[{style}]{t.to_state}[/{style}]  value {_num(t.value)}"
                    )
                if once:
                    break
                time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        except KeyboardInterrupt:
            console.print("stopped")


@alerts_app.command("list")
def alerts_list(
    url: Url = None, project: Project = "default", home: Home = None, server_bin: Bin = None
) -> None:
    """The alert rules: series, condition, state, since when, last value."""
    with _open(url, project, home, server_bin) as store:
        table = Table("name", "series", "condition", "for", "state", "since", "last value")
        for a in store.alerts.list():
            style = _STATE_STYLE.get(a.state, "")
            state = f"[{style}]{a.state}[/{style}]" + (" (no data)" if a.no_data else "")
            table.add_row(
                escape(a.name),
                escape(a.rule.series),
                escape(a.rule.describe()),
                f"{a.rule.for_ms / 1000:g}s",
                state,
                _ts(a.since),
                _num(a.value),
            )
        console.print(table)


@alerts_app.command("history")
def alerts_history(
    name: str,
    limit: int = 20,
    url: Url = None,
    project: Project = "default",
    home: Home = None,
    server_bin: Bin = None,
) -> None:
    """The last transitions of alert NAME, oldest first."""
    with _open(url, project, home, server_bin) as store:
        rows = store.alerts.history(name, limit=limit)
        if not rows:
            console.print(escape(f"no transitions for alert {name!r}"))
            return
        table = Table("at", "from", "to", "value", "threshold")
        for t in rows:
            th = t.threshold
            table.add_row(
                _ts(t.at),
                t.from_state,
                t.to_state,
                _num(t.value),
                f"({th[0]:g}, {th[1]:g})" if isinstance(th, tuple) else _num(th),
            )
        console.print(table)


@app.command("demo")
def demo(home: Home = None, server_bin: Bin = None, url: Url = None) -> None:
    """Run the end-to-end demo (embedded server unless REDFEAT_URL is set)."""
    from .demo import run

    run(console, _open(url, "demo", home, server_bin))


repo.register(app)  # init, plan, apply, materialize, materialize-incremental, services


def main() -> None:
    try:
        app()
    except RedfeatError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
