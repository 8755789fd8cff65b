"""The ``redfeat`` command line (environment variables: ``redfeat.serve.options``).

The shared options (``--url --project --home --server-bin --durability``) are declared once, in
``options.py``: a command that opens a store takes ``conn: Conn`` and is decorated with
``@connected``. Commands defined in other modules register themselves on ``app`` when this
module imports them (one line each, at the end of this file).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import MofNCompleteColumn, Progress
from rich.table import Table
from rich.text import Text

from ..core.cluster import LocalCluster
from ..core.embedded import EmbeddedServer, holds_data
from ..core.time import duration_us
from ..errors import ConfigurationError, RedfeatError
from .options import Bin, Conn, Home, app, connected, console, home_dir, notes

server_app = typer.Typer(help="The embedded server.", no_args_is_help=True)
app.add_typer(server_app, name="server")
alerts_app = typer.Typer(help="Alert rules on time series.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")
token_app = typer.Typer(help="API tokens for `redfeat serve`.", no_args_is_help=True)
app.add_typer(token_app, name="token")
offline_app = typer.Typer(help="The Parquet offline log.", no_args_is_help=True)
app.add_typer(offline_app, name="offline")

__all__ = ["app", "main"]


@server_app.command("start")
def server_start(
    home: Home = None,
    server_bin: Bin = None,
    durability: Annotated[str, typer.Option(help="everysec or always")] = "everysec",
    cluster: Annotated[
        int,
        typer.Option(
            "--cluster",
            help="start a local Redis Cluster of this many masters (each with one replica) "
            "under <home>/cluster instead",
        ),
    ] = 0,
) -> None:
    """Start the embedded server and keep it running until `redfeat server stop`."""
    if cluster:
        local = LocalCluster(home_dir(home) / "cluster", masters=cluster, durability=durability)
        cinfo = local.start()
        console.print(escape(f"data: {local.dir}"), soft_wrap=True)
        console.print(
            f"cluster running: {cinfo.masters} masters + {len(cinfo.ports) - cinfo.masters} "
            f"replicas, pids {', '.join(map(str, cinfo.pids))}"
        )
        console.print(escape(f"url: {cinfo.url()}"), soft_wrap=True)
        return
    server = EmbeddedServer(home_dir(home), server_bin=server_bin, durability=durability)
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
    """Stop the embedded server (the append-only file is flushed first), and the local
    cluster of `server start --cluster` if one runs under the same home.

    Refuses while other processes use it, and names them; --force stops it anyway (their
    stores then fail with BackendError until the server runs again)."""
    local = LocalCluster(home_dir(home) / "cluster")
    if local.status() is not None or local.info_path.exists():
        console.print("cluster stopped" if local.stop() else "cluster not running")
    server = EmbeddedServer(home_dir(home))
    console.print(escape(f"data: {server.dir}"), soft_wrap=True)
    stopped = server.stop(force=force)
    console.print("stopped" if stopped else "not running")


@server_app.command("status")
def server_status(home: Home = None) -> None:
    """Show whether the embedded server runs, where, and who is attached."""
    server = EmbeddedServer(home_dir(home))
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


@app.command("size")
def size_cmd(
    entities: Annotated[int, typer.Option(min=0, help="entities of the view")],
    features: Annotated[int, typer.Option(min=1, help="Float features per entity")],
    history: Annotated[int, typer.Option(min=1, help="versions kept per entity")] = 1,
    server: Annotated[str, typer.Option(help="redis (7.0) or valkey (9)")] = "redis",
    feed_cap: Annotated[int, typer.Option(min=0, help="the store's feed_cap")] = 100_000,
    master_gb: Annotated[
        float, typer.Option(help="memory per cluster master, GB, for the masters needed")
    ] = 25.0,
) -> None:
    """Estimate the memory one view needs (the README's sizing model, measured constants)."""
    from ..core.sizing import constants_for, estimate

    try:
        total = estimate(
            constants_for(server),
            entities=entities,
            features=features,
            history=history,
            feed_cap=feed_cap,
        )
    except ConfigurationError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    per = total / entities if entities else 0.0
    # keep a quarter free on each master: fragmentation, replication and fork copy-on-write
    masters = max(1, -(-total // int(master_gb * 0.75 * 1e9)))
    console.print(
        f"{entities:,} entities x {features} features x {history} version(s) on {server}: "
        f"{total / 1e9:,.2f} GB ({per:,.0f} B per entity); "
        f"{masters:,} master(s) of {master_gb:g} GB at 75 % use"
    )


@app.command("views")
@connected
def views(conn: Conn) -> None:
    """List the registered feature views."""
    with conn.open() as store:
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
@connected
def get(conn: Conn, view: str, entity_id: str) -> None:
    """Print the latest values of one entity as JSON."""
    with conn.open() as store:
        row = store.get(view, entity_id)
        if row is None:
            console.print(escape(f"no values for {entity_id!r} in {view!r}"))
            raise typer.Exit(1)
        print(json.dumps({k: _jsonable(v) for k, v in row.items()}, indent=2))


@app.command("history")
@connected
def history(conn: Conn, view: str, entity_id: str, limit: int = 10) -> None:
    """Show the stored versions of one entity, newest first."""
    with conn.open() as store:
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
@connected
def export(
    conn: Conn,
    view: str,
    out: Path,
    start: Annotated[str | None, typer.Option(help="ISO time, inclusive")] = None,
    end: Annotated[str | None, typer.Option(help="ISO time, inclusive")] = None,
) -> None:
    """Write every version of VIEW (event time in [start, end]) to a Parquet file."""
    with conn.open() as store, _progress() as bar:
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
@connected
def training_frame_cmd(
    conn: Conn,
    entities: Annotated[
        Path,
        typer.Argument(help="Parquet (a file or a directory) or CSV with entity_id, event_time"),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write")],
    features: Annotated[
        str | None, typer.Option(help="comma-separated view:feature list (or --service)")
    ] = None,
    service: Annotated[
        str | None, typer.Option(help="a feature service: NAME or NAME@VERSION (or --features)")
    ] = None,
    entity_column: str = "entity_id",
    event_time_column: str = "event_time",
    full_feature_names: bool = False,
    filter_by_written_at: bool = False,
    chunk_rows: Annotated[
        int, typer.Option(min=1, help="rows joined at a time (memory holds one chunk)")
    ] = 1_000_000,
) -> None:
    """Point-in-time correct features for each (entity, time) row of ENTITIES: the
    --features listed, or those of a feature --service. ENTITIES (a Parquet file, a directory
    of them, or a CSV) is read --chunk-rows rows at a time, so it may exceed memory."""
    import pyarrow.parquet as pq

    if (features is None) == (service is None):
        raise typer.BadParameter(
            "give the features to join: --features view:f,... or --service NAME (one of them)"
        )
    refs = None if features is None else [f.strip() for f in features.split(",") if f.strip()]
    with conn.open() as store, _progress() as bar:
        task = bar.add_task("joining rows", total=None)
        rows = store.write_training_frame(
            out,
            entities,
            refs,
            service=service,
            entity_column=entity_column,
            event_time_column=event_time_column,
            full_feature_names=full_feature_names,
            filter_by_written_at=filter_by_written_at,
            chunk_rows=chunk_rows,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    n = len(pq.read_schema(out).names) - len(_input_columns(entities))
    what = "" if service is None else f" of service {service!r}"
    console.print(escape(f"{rows:,} rows x {n} features{what} written to {out}"))


def _input_columns(path: Path) -> list[str]:
    if path.suffix.lower() == ".csv":
        import pyarrow.csv as pacsv

        with pacsv.open_csv(path) as reader:
            return list(reader.schema.names)
    import pyarrow.dataset as ds

    return list(ds.dataset(path, format="parquet").schema.names)


@app.command("worker")
@connected
def worker_cmd(
    conn: Conn,
    views: Annotated[str | None, typer.Option(help="comma-separated views (default: all)")] = None,
    group: str = "redfeat",
) -> None:
    """Consume the ingest streams (store.push): validate, transform, write; Ctrl-C stops."""
    from rich.live import Live

    names = None if views is None else [v.strip() for v in views.split(",") if v.strip()]
    with conn.open() as store:
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


@offline_app.command("run")
@connected
def offline_run(
    conn: Conn,
    directory: Annotated[Path, typer.Argument(help="the log's root directory")],
    every: Annotated[float, typer.Option(help="seconds between status lines")] = 5.0,
) -> None:
    """Feed the offline log from every view's change feed (a consumer group: killed at any
    point, a restart loses and duplicates nothing); Ctrl-C stops after logging what the
    feeds hold."""
    with conn.open(offline_dir=str(directory)) as store:
        console.print(escape(f"offline log: {directory}"), soft_wrap=True)
        try:
            while True:
                time.sleep(every)
                off = store.stats(storage=False)["offline"]
                lag = ", ".join(f"{v}: {s['lag']}+{s['pending']}" for v, s in off["views"].items())
                console.print(
                    f"versions written {off['versions_written']:,}  gaps {off['gaps']}  "
                    f"lag {lag or '-'}"
                )
        except KeyboardInterrupt:
            console.print("stopping: logging what the feeds hold")


def _since(text: str) -> datetime:
    """'24h', '7d' (back from now) or an ISO date/datetime."""
    try:
        return datetime.now(UTC) - timedelta(microseconds=duration_us(text, what="--since"))
    except RedfeatError:
        when = _when(text)
        assert when is not None
        return when


@app.command("drift")
@connected
def drift_cmd(
    conn: Conn,
    view: str,
    since: Annotated[str, typer.Option(help="window start: '24h', '7d' or an ISO time")] = "24h",
    until: Annotated[str | None, typer.Option(help="window end (ISO; default now)")] = None,
    baseline_start: Annotated[str | None, typer.Option(help="baseline from profiles")] = None,
    baseline_end: Annotated[str | None, typer.Option(help="(with --baseline-start)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    fail_on: Annotated[
        str | None,
        typer.Option(help="exit 1 at this verdict or worse: insufficient_data, warning, drift"),
    ] = None,
) -> None:
    """Drift of a view's features since a time, against its baseline.

    With --fail-on, the exit status follows the report's own order of verdicts (ok <
    insufficient_data < warning < drift); features too thin to judge are named on stderr
    whenever they do not fail the run, so that a pass never hides them."""
    from ..quality.drift import VERDICTS

    if fail_on is not None and fail_on not in VERDICTS[1:]:
        raise typer.BadParameter(
            f"--fail-on takes {', '.join(VERDICTS[1:])}, got {fail_on!r}", param_hint="--fail-on"
        )
    with conn.open() as store:
        baseline = None
        if baseline_start is not None:
            baseline = (_when(baseline_start), _when(baseline_end) or datetime.now(UTC))
        report = store.quality.drift(view, start=_since(since), end=_when(until), baseline=baseline)
        if as_json:
            print(json.dumps(report.to_dict(), indent=2))
        else:
            from .tables import drift_table

            console.print(drift_table(report))
    failed = fail_on is not None and report.at_least(fail_on)
    if report.insufficient and not failed:
        notes.print(
            escape(
                f"not judged (too few values; need {report.thresholds.min_count}): "
                f"{', '.join(report.insufficient)}"
            )
        )
    if failed:
        notes.print(escape(f"drift of {view!r} is {report.verdict} (--fail-on {fail_on})"))
        raise typer.Exit(1)


@app.command("health")
@connected
def health_cmd(
    conn: Conn,
    window: Annotated[str, typer.Option(help="volumes and drift over this window")] = "24h",
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Freshness, volumes, validation failures and drift of every view; exit 1 if critical."""
    with conn.open() as store:
        report = store.quality.health(window=window)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        from .tables import health_table

        console.print(health_table(report))
    if report.status == "critical":
        raise typer.Exit(1)


@app.command("serve")
@connected
def serve(
    conn: Conn,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="processes serving the port")] = 1,
    token_file: Annotated[
        Path | None,
        typer.Option(
            envvar="REDFEAT_TOKEN_FILE",
            help="JSON tokens file [default: tokens.json in the data dir, if there]",
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(help="a Host name clients use (repeat; '*' any) [default: loopback]"),
    ] = None,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="an origin browsers may call from (repeat)")
    ] = None,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="a JSON line per request on stderr")
    ] = False,
    graceful_timeout: Annotated[
        float, typer.Option(help="seconds requests in flight get at shutdown")
    ] = 10.0,
) -> None:
    """Serve the HTTP API and the web page (uvicorn) until Ctrl-C or SIGTERM.

    With tokens (--token-file, REDFEAT_TOKENS, or the data dir's tokens.json that `redfeat
    token create` writes) every route but /livez needs one; without, only a loopback
    address is served."""
    import os

    from . import auth
    from .http import is_loopback
    from .runner import Plan, Settings, run

    tokens = auth.Tokens()
    default_file = conn.home_dir / TOKEN_FILE
    source = token_file or (default_file if default_file.exists() else None)
    if source is not None:
        tokens = tokens + auth.from_file(source)
    env_tokens = os.environ.get("REDFEAT_TOKENS", "")
    if env_tokens.strip():
        tokens = tokens + auth.from_env(env_tokens)
    wildcard = host in ("0.0.0.0", "::", "")
    if not tokens and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve {host!r} without tokens: anyone who reaches the port could "
            "read and write. Create one (`redfeat token create --scopes read,write`) or pass "
            "--token-file / REDFEAT_TOKENS; or serve 127.0.0.1 only."
        )
    hosts: list[str] | None = list(allowed_host) if allowed_host else None
    if hosts is None and not is_loopback(host):
        # tokens are required off loopback, which is what stops a rebound name there
        hosts = ["*"] if wildcard else [*LOOPBACK, host]
    settings = Settings(
        url=conn.url,
        project=conn.project,
        home=str(conn.home_dir) if not conn.url else None,
        server_bin=conn.server_bin,
        durability=conn.durability,
        tokens=tokens.to_json(),
        allowed_hosts=hosts,
        cors_origins=list(cors_origin or []),
        access_log=access_log,
    )
    shown = f"[{host}]" if ":" in host else host
    auth_note = (
        f"{len(tokens)} token(s) from {', '.join(tokens.sources)}" if tokens else "no tokens"
    )
    notes.print(escape(f"auth: {auth_note}; {workers} worker(s)"))
    # plain print, flushed: a supervisor or a test reads the URL from the first line
    print(f"redfeat serving project {conn.project!r} on http://{shown}:{port}/", flush=True)
    run(Plan(host, port, workers, graceful_timeout, settings))


LOOPBACK = ["localhost", "127.0.0.1", "::1"]
TOKEN_FILE = "tokens.json"
TokenFile = Annotated[
    Path | None,
    typer.Option(
        "--file", envvar="REDFEAT_TOKEN_FILE", help="[default: tokens.json in the data dir]"
    ),
]


def _token_file(file: Path | None, home: str | None) -> Path:
    return file if file is not None else home_dir(home) / TOKEN_FILE


@token_app.command("create")
def token_create(
    scopes: Annotated[str, typer.Option(help="comma-separated: read, write, admin")] = "read",
    name: Annotated[str | None, typer.Option(help="a name to list and revoke it by")] = None,
    file: TokenFile = None,
    home: Home = None,
) -> None:
    """Create a token; it is printed once (the file keeps its SHA-256 only)."""
    from . import auth

    path = _token_file(file, home)
    raw, token = auth.create(path, [s for s in scopes.split(",") if s.strip()], name)
    notes.print(
        escape(f"token {token.name!r} ({', '.join(token.scopes)}) added to {path}; ")
        + "it is shown this once: send it as 'Authorization: Bearer <token>'"
    )
    print(raw, flush=True)


@token_app.command("list")
def token_list(file: TokenFile = None, home: Home = None) -> None:
    """The tokens of the file: name, scopes, created, digest prefix (never the token)."""
    from . import auth

    path = _token_file(file, home)
    if not path.exists():
        console.print(escape(f"no tokens: {path} does not exist"))
        return
    table = Table("name", "scopes", "created", "sha256")
    for t in auth.from_file(path).tokens:
        table.add_row(escape(t.name), ", ".join(t.scopes), t.created or "-", t.sha256[:12])
    console.print(table)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="the token's name (or 8+ digits of its sha256)")],
    file: TokenFile = None,
    home: Home = None,
) -> None:
    """Remove a token from the file (a running server reads the file at start: restart it)."""
    from . import auth

    path = _token_file(file, home)
    n = auth.revoke(path, name)
    if not n:
        console.print(escape(f"no token {name!r} in {path}"))
        raise typer.Exit(1)
    console.print(escape(f"revoked {n} token(s) named {name!r} in {path}"))


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
@connected
def alerts_run(
    conn: Conn,
    interval: Annotated[str, typer.Option(help="time between evaluations, e.g. '10s'")] = "10s",
    once: Annotated[bool, typer.Option("--once", help="evaluate once and exit")] = False,
) -> None:
    """Evaluate every alert rule every INTERVAL and print the transitions; Ctrl-C stops."""
    try:
        seconds = duration_us(interval, what="--interval") / 1e6
    except RedfeatError as exc:
        raise typer.BadParameter(str(exc)) from None
    with conn.open() as store:
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
@connected
def alerts_list(conn: Conn) -> None:
    """The alert rules: series, condition, state, since when, last value."""
    with conn.open() as store:
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
@connected
def alerts_history(conn: Conn, name: str, limit: int = 20) -> None:
    """The last transitions of alert NAME, oldest first."""
    with conn.open() as store:
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
@connected
def demo(conn: Conn) -> None:
    """Run the end-to-end demo (embedded server unless REDFEAT_URL is set; project 'demo')."""
    from .demo import run

    run(console, conn.open(project="demo" if conn.project == "default" else None))


# Commands defined in other modules (``@app.command(...)`` with ``@connected`` from
# ``.options``) are registered by importing their module here, one line each, e.g.
#     from . import size  # noqa: E402, F401  -- redfeat size ...
from . import repo  # noqa: E402, F401  -- init, plan, apply, materialize(-incremental), services


def main() -> None:
    try:
        app()
    except RedfeatError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
