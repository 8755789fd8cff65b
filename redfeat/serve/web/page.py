"""The web page at ``GET /``: views and their health, a view's drift (table and plots), a
time series (line chart with anomalies). One HTML document rendered on the server, with
inline CSS and SVG: it needs no network and no script.

Query parameters: ``view``, ``start``, ``end`` (the drift window; default the day up to
the view's newest event), ``series``, ``s_start``, ``s_end``, ``bucket`` (or ``raw``),
``agg``. A section that cannot be drawn shows why instead of failing the page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core.time import duration_us, from_us, to_us
from ...errors import ConfigurationError, NotFoundError, RedfeatError
from ...quality.service import HealthReport
from ...timeseries import multi
from ...timeseries.analysis import InsufficientDataError
from ...timeseries.series import Series
from ...timeseries.tiles import AGGS
from . import bins, svg, wire

if TYPE_CHECKING:
    from ...store import FeatureStore

log = logging.getLogger("redfeat.serve.web")
DAY = timedelta(days=1)
BUCKETS = ("1s", "5s", "10s", "30s", "1m", "5m", "15m", "30m", "1h", "3h", "6h", "12h", "1d")
MAX_BUCKETS = 400  # points on the line: enough detail for 760 px
MAX_MARKS = 200

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f2d3d;color:#fff;padding:10px 20px}header h1{font-size:18px;margin:0}
main{padding:0 20px 30px}section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;
margin:16px 0;padding:12px 16px}h2{font-size:16px;margin:4px 0 10px}
table{border-collapse:collapse;font-size:13px}th,td{padding:3px 8px;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#2e7d32}.warning{color:#b26a00}.drift,.critical{color:#c62828;font-weight:600}
.error{color:#c62828}.muted{color:#777}.plots{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0}figcaption{font-size:12px;font-weight:600}
.controls{display:flex;flex-wrap:wrap;gap:8px;align-items:end;margin-bottom:10px}
label{font-size:12px;color:#555;display:flex;flex-direction:column}
input,select{font:inherit;padding:2px 4px}
"""


def _e(x: Any) -> str:
    return escape(str(x))


def _num(v: float | None, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _when(params: dict[str, str], key: str) -> datetime | None:
    """The time in ``params[key]`` (ISO or epoch seconds), in the range the library takes
    (1900 .. 2200); anything else raises ConfigurationError, shown in the section."""
    v = wire.parse_time(params.get(key), key)
    if v is None:
        return None
    try:
        return from_us(to_us(v, what=key))
    except (ValueError, OverflowError) as exc:
        raise ConfigurationError(f"{exc} (use ISO 8601 or epoch seconds)") from None


def _input(name: str, label: str, value: str, width: int = 25) -> str:
    return (
        f'<label>{_e(label)}<input name="{_e(name)}" value="{_e(value)}" size="{width}" '
        'form="controls"></label>'
    )


def _select(
    name: str, label: str, options: list[str], chosen: str, clear: tuple[str, ...] = ()
) -> str:
    opts = "".join(
        f'<option value="{_e(o)}"{" selected" if o == chosen else ""}>{_e(o)}</option>'
        for o in options
    )
    # onchange submits at once (without script the Show button does the same); ``clear``
    # empties inputs that belonged to the previous choice, so its defaults apply
    wipe = "".join(f"this.form.elements['{c}'].value='';" for c in clear)
    return (
        f'<label>{_e(label)}<select name="{_e(name)}" form="controls" '
        f'onchange="{wipe}this.form.submit()">{opts}</select></label>'
    )


def _guarded(title: str, anchor: str, draw: Callable[[], str]) -> str:
    try:
        inner = draw()
    except RedfeatError as exc:
        inner = f'<p class="error">{_e(exc)}</p>'
    except Exception as exc:  # a bug in one section must not fail the page: logged
        log.exception("web page: section %r failed", title)
        inner = f'<p class="error">this section failed ({_e(type(exc).__name__)}); see the log</p>'
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{inner}</section>'


# -- views and health -------------------------------------------------------------------


def views_section(store: FeatureStore, health: HealthReport) -> str:
    views = store.views()
    if not views:
        return '<p class="muted">No views yet: <code>store.apply(FeatureView(...))</code>.</p>'
    rows = []
    for v in views:
        h = health.views.get(v.name)
        status = "-" if h is None else h.status
        rows.append(
            "<tr>"
            f'<td><a href="?view={_e(v.name)}#drift">{_e(v.name)}</a></td>'
            f"<td>{_e(v.entity)}</td><td class='n'>{len(v.fields)}</td>"
            f'<td class="{_e(status)}">{_e(status)}</td>'
            f"<td class='n'>{_age(None if h is None else h.age_s)}</td>"
            f"<td class='n'>{'-' if h is None else f'{h.writes:,}'}</td>"
            f"<td class='n'>{'-' if h is None else f'{h.refused:,} ({h.failure_rate:.1%})'}</td>"
            f"<td class='n'>{'-' if h is None else f'{h.reads:,}'}</td>"
            f"<td>{'' if h is None else _e('; '.join(h.reasons))}</td></tr>"
        )
    head = (
        "<tr><th>view</th><th>entity</th><th>fields</th><th>status</th><th>newest event age"
        "</th><th>writes</th><th>refused</th><th>reads</th><th>why</th></tr>"
    )
    return f'<table class="views-table">{head}{"".join(rows)}</table>'


# -- drift -------------------------------------------------------------------------------


def _default_view(store: FeatureStore, names: list[str]) -> str | None:
    for n in names:  # the first view with a baseline has a drift report to show
        if store.quality.baseline(n) is not None:
            return n
    return names[0] if names else None


def drift_section(
    store: FeatureStore, health: HealthReport, params: dict[str, str], view: str | None
) -> str:
    names = [v.name for v in store.views()]
    if view is None:
        return '<p class="muted">No views.</p>'
    end = _when(params, "end")
    start = _when(params, "start")
    if end is None:
        newest = health.views[view].newest_event if view in health.views else None
        # the day up to the newest event: live data ends now, a backfill ends earlier
        end = (newest + timedelta(seconds=1)) if newest is not None else datetime.now(UTC)
    if start is None:
        start = end - DAY
    controls = (
        _select("view", "view", names, view, ("start", "end"))
        + _input("start", "from (ISO)", start.isoformat())
        + _input("end", "to (ISO)", end.isoformat())
    )
    out = [f'<div class="controls">{controls}</div>']
    report = store.quality.drift(view, start=start, end=end)
    stored = store.quality.baseline(view)
    if stored is None:  # removed since drift() read it
        raise NotFoundError(f"view {view!r} has no baseline any more")
    current = store.quality.profile(view, start=start, end=end)
    dists = bins.distributions(store.view(view), stored[0], current)
    base = report.baseline
    out.append(
        f'<p>Verdict: <span class="{_e(report.verdict)}">{_e(report.verdict)}</span> '
        f"for {_e(report.start)} .. {_e(report.end)} against the baseline "
        f'<span class="muted">({_e(base.get("from", ""))} {_e(base.get("start") or "")} .. '
        f"{_e(base.get('end') or '')})</span></p>"
    )
    head = (
        "<tr><th>feature</th><th>verdict</th><th>psi</th><th>ks</th><th>js</th>"
        "<th>null Δ</th><th>out of range</th><th>baseline n</th><th>current n</th>"
        "<th>why</th></tr>"
    )
    rows = [
        "<tr>"
        f"<td>{_e(n)}</td><td class='{_e(f.verdict)}'>{_e(f.verdict)}</td>"
        f"<td class='n'>{_num(f.psi)}</td><td class='n'>{_num(f.ks)}</td>"
        f"<td class='n'>{_num(f.js)}</td><td class='n'>{_num(f.null_rate_change, '+.3f')}</td>"
        f"<td class='n'>{_num(f.out_of_range_rate, '.1%')}</td>"
        f"<td class='n'>{f.baseline_count:,}</td><td class='n'>{f.current_count:,}</td>"
        f"<td>{_e('; '.join(f.reasons))}</td></tr>"
        for n, f in report.features.items()
    ]
    out.append(f'<table class="drift-table">{head}{"".join(rows)}</table>')
    figures = [
        f'<figure><figcaption>{_e(n)} <span class="{_e(report.features[n].verdict)}">'
        f"{_e(report.features[n].verdict)}</span></figcaption>{svg.bars(d)}</figure>"
        for n, d in dists.items()
        if n in report.features
    ]
    if figures:
        out.append(f'<div class="plots">{"".join(figures)}</div>')
    return "".join(out)


# -- time series -------------------------------------------------------------------------


def auto_bucket(span: timedelta) -> str:
    """The finest bucket that keeps the line under MAX_BUCKETS points."""
    span_us = span // timedelta(microseconds=1)
    for b in BUCKETS:
        if span_us / duration_us(b) <= MAX_BUCKETS:
            return b
    return "7d"


def _anomalies(
    series: Series, start: datetime, end: datetime
) -> tuple[list[tuple[int, float, str]], str]:
    """Anomalies of the window against the day before it; when that day holds too little,
    the window's second half against its first (a young series still gets marks)."""
    try:
        frame, how = series.anomalies(start, end), "z-score against the day before"
    except InsufficientDataError:
        half = timedelta(milliseconds=(end - start) // timedelta(milliseconds=2))
        try:
            frame = series.anomalies(end - half, end, baseline=half)
            how = "z-score of the second half against the first"
        except InsufficientDataError as exc:
            return [], f"no anomaly check: {exc}"
    marks = [
        (int(ts.timestamp() * 1000), float(v), f"{ts:%Y-%m-%d %H:%M:%S}: {v:.4g}, score {s:.1f}")
        for ts, v, s in zip(frame.index, frame["value"], frame["score"], strict=True)
    ]
    shown = "" if len(marks) <= MAX_MARKS else f", the first {MAX_MARKS} marked"
    return marks[:MAX_MARKS], f"{len(marks)} anomalies ({how}{shown})"


def series_section(store: FeatureStore, params: dict[str, str]) -> str:
    specs = store.timeseries.specs()
    if not specs:
        return '<p class="muted">No time series yet: <code>store.series(name)</code>.</p>'
    names = [s.name for s in specs]
    name = params.get("series") or names[0]
    series = store.timeseries.open(name)
    spec = series.spec
    end = _when(params, "s_end")
    start = _when(params, "s_start")
    if end is None:
        latest = series.latest()
        end = (latest[0] + timedelta(milliseconds=1)) if latest else datetime.now(UTC)
    if start is None:
        start = end - DAY
    bucket = params.get("bucket") or auto_bucket(end - start)
    agg = params.get("agg") or "avg"
    controls = (
        _select("series", "series", names, name, ("s_start", "s_end", "bucket"))
        + _input("s_start", "from (ISO)", start.isoformat())
        + _input("s_end", "to (ISO)", end.isoformat())
        + _input("bucket", "bucket (or raw)", bucket, 6)
        + _select("agg", "agg", sorted(AGGS), agg)
    )
    ts, vs = series.range(start, end, bucket=None if bucket == "raw" else bucket, agg=agg)
    marks, note = _anomalies(series, start, end)
    labels = ", ".join(f"{k}={v}" for k, v in sorted(spec.labels.items())) or "no labels"
    what = "raw points" if bucket == "raw" else f"{agg} per {bucket}"
    plot = svg.line(ts.astype("int64"), np.asarray(vs), marks, title=f"{name}: {what}")
    matching = len(multi.select(specs, [f"{k}={v}" for k, v in spec.labels.items()]))
    return (
        f'<div class="controls">{controls}</div>{plot}'
        f'<p class="muted">{_e(name)} ({_e(labels)}; {matching} series share them): '
        f"{len(ts):,} {_e(what)}; {_e(note)}.</p>"
    )


# -- the page ----------------------------------------------------------------------------


def render_page(store: FeatureStore, params: dict[str, str]) -> str:
    """The whole page as one HTML string (blocking: it reads Redis)."""
    health = store.quality.health()
    view = params.get("view") or _default_view(store, [v.name for v in store.views()])
    sections = [
        _guarded("Views", "views", lambda: views_section(store, health)),
        _guarded(
            f"Drift of {view}" if view else "Drift",
            "drift",
            lambda: drift_section(store, health, params, view),
        ),
        _guarded("Time series", "series", lambda: series_section(store, params)),
    ]
    status = health.status
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>redfeat: {_e(store.project)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>redfeat · project {_e(store.project)} · health "
        f'<span class="{_e(status)}">{_e(status)}</span> '
        f'<span class="muted">at {health.at:%Y-%m-%d %H:%M:%S} UTC</span></h1></header>'
        '<main><form id="controls" class="controls" method="get">'
        '<button type="submit">Show</button> <span class="muted">JSON: '
        '<a href="views">/views</a> <a href="health">/health</a> '
        '<a href="stats">/stats</a> <a href="series">/series</a></span></form>'
        f"{''.join(sections)}</main></body></html>"
    )
