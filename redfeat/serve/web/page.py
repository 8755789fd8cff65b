"""The web page at ``GET /``: views and their health, feature services (features and
what each version changed), an entity lookup (latest values, history with what each
version changed, as-of), a view's drift (table and plots), a time series (line chart with
anomalies). One HTML document rendered on the server, with inline
CSS and SVG: it needs no network; one small script (allowed by its nonce only) submits
the form when a selector changes.

Query parameters: ``e_view``, ``entity``, ``as_of``, ``limit`` (the lookup); ``view``,
``start``, ``end`` (the drift window; default the day up to the view's newest event);
``series``, ``s_start``, ``s_end``, ``bucket`` (or ``raw``), ``agg``. Every section keeps
its form: what it cannot show (no baseline, a bad time, an unknown id) it says beside the
form, with how to get it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core.time import duration_us, from_us, to_us
from ...errors import ConfigurationError, RedfeatError
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
MAX_VERSIONS = 200
MAX_SERVICE_VERSIONS = 10  # earlier versions of a feature service described on the page
SHOWN_ITEMS = 8  # elements of a vector or list shown in a cell

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f2d3d;color:#fff;padding:10px 20px;display:flex;gap:16px;align-items:center;
flex-wrap:wrap}header h1{font-size:18px;margin:0}header a{color:#cfe3ff}
nav{font-size:13px}main{padding:0 20px 30px}section{background:#fff;border:1px solid #e3e3e3;
border-radius:6px;margin:16px 0;padding:12px 16px}h2{font-size:16px;margin:4px 0 10px}
h3{font-size:14px;margin:12px 0 6px}
table{border-collapse:collapse;font-size:13px}th,td{padding:3px 8px;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#2e7d32}.warning{color:#b26a00}.drift,.critical{color:#c62828;font-weight:600}
.insufficient_data{color:#6a1b9a;font-style:italic}
.error{color:#c62828}.muted{color:#777}.plots{display:flex;flex-wrap:wrap;gap:12px}
.hint{background:#f4f7fb;border-left:3px solid #4e79a7;padding:6px 10px;margin:8px 0}
td.changed{background:#fff4d6}tr.asof td:first-child{border-left:3px solid #4e79a7}
figure{margin:0}figcaption{font-size:12px;font-weight:600}
.controls{display:flex;flex-wrap:wrap;gap:8px;align-items:end;margin-bottom:10px}
label{font-size:12px;color:#555;display:flex;flex-direction:column}
input,select{font:inherit;padding:2px 4px}code{background:#f2f2f2;padding:0 3px}
"""

# The one script: a selector submits the form at once (without script, Show does it);
# data-clear names inputs that belonged to the previous choice, so that its defaults apply.
SCRIPT = """
document.querySelectorAll("select[data-submit]").forEach(function (sel) {
  sel.addEventListener("change", function () {
    (sel.dataset.clear || "").split(",").filter(Boolean).forEach(function (name) {
      var el = document.querySelector('[name="' + name + '"]');
      if (el) { el.value = ""; }
    });
    document.getElementById("controls").submit();
  });
});
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


def _input(name: str, label: str, value: str, width: int = 25, placeholder: str = "") -> str:
    ph = f' placeholder="{_e(placeholder)}"' if placeholder else ""
    return (
        f'<label>{_e(label)}<input name="{_e(name)}" value="{_e(value)}" size="{width}" '
        f'form="controls"{ph}></label>'
    )


def _select(
    name: str, label: str, options: list[str], chosen: str | None, clear: tuple[str, ...] = ()
) -> str:
    opts = "".join(
        f'<option value="{_e(o)}"{" selected" if o == chosen else ""}>{_e(o)}</option>'
        for o in options
    )
    return (
        f'<label>{_e(label)}<select name="{_e(name)}" form="controls" data-submit '
        f'data-clear="{_e(",".join(clear))}">{opts}</select></label>'
    )


def _show() -> str:
    return '<button type="submit" form="controls">Show</button>'


def _hint(text: str) -> str:
    return f'<p class="hint">{text}</p>'


def _error(exc: BaseException) -> str:
    return f'<p class="error">{_e(exc)}</p>'


def _guarded(draw: Callable[[], str], title: str) -> str:
    """The part of a section below its form: a library error is said there, the form stays."""
    try:
        return draw()
    except RedfeatError as exc:
        return _error(exc)
    except Exception as exc:  # a bug in one section must not fail the page: logged
        log.exception("web page: section %r failed", title)
        return f'<p class="error">this section failed ({_e(type(exc).__name__)}); see the log</p>'


def _section(title: str, anchor: str, controls: str, draw: Callable[[], str]) -> str:
    form = f'<div class="controls">{controls}{_show()}</div>' if controls else ""
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{form}{_guarded(draw, title)}</section>'


def _cell(value: Any) -> str:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple):
        items = ", ".join(_short(v) for v in value[:SHOWN_ITEMS])
        more = f", … ({len(value)} in all)" if len(value) > SHOWN_ITEMS else ""
        return _e(f"[{items}{more}]")
    return _e(_short(value))


def _short(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, np.generic):
        return _short(v.item())
    return str(v)


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object)))
    except Exception:
        return bool(a == b)


# -- views and health -------------------------------------------------------------------


def views_section(store: FeatureStore, health: HealthReport) -> str:
    views = store.views()
    if not views:
        return _hint(
            "No views yet. Define one and write to it: <code>store.apply(FeatureView(...))</code> "
            "then <code>store.write(view, id, values)</code>, or <code>POST /views/{view}/write"
            '</code> (see <a href="docs">/docs</a>).'
        )
    rows = []
    for v in views:
        h = health.views.get(v.name)
        status = "-" if h is None else h.status
        unjudged = ""
        if h is not None and h.insufficient_data:  # neither healthy nor drifting: said apart
            n = len(h.insufficient_data)
            unjudged = (
                f' <span class="insufficient_data" title="too few values to judge drift: '
                f'{_e(", ".join(h.insufficient_data))}">{n} unjudged</span>'
            )
        rows.append(
            "<tr>"
            f"<td>{_e(v.name)}</td>"
            f'<td><a href="?e_view={_e(v.name)}#entity">look up</a> · '
            f'<a href="?view={_e(v.name)}#drift">drift</a></td>'
            f"<td>{_e(v.entity)}</td><td class='n'>{len(v.fields)}</td>"
            f'<td><span class="{_e(status)}">{_e(status)}</span>{unjudged}</td>'
            f"<td class='n'>{_age(None if h is None else h.age_s)}</td>"
            f"<td class='n'>{'-' if h is None else f'{h.writes:,}'}</td>"
            f"<td class='n'>{'-' if h is None else f'{h.refused:,} ({h.failure_rate:.1%})'}</td>"
            f"<td class='n'>{'-' if h is None else f'{h.reads:,}'}</td>"
            f"<td>{'' if h is None else _e('; '.join(h.reasons))}</td></tr>"
        )
    head = (
        "<tr><th>view</th><th></th><th>entity</th><th>fields</th><th>status</th><th>newest "
        "event age</th><th>writes</th><th>refused</th><th>reads</th><th>why</th></tr>"
    )
    return f'<table class="views-table">{head}{"".join(rows)}</table>'


# -- feature services --------------------------------------------------------------------


def _by_view(refs: list[str] | tuple[str, ...]) -> str:
    """``view: a, b`` per view, each view linked to its lookup."""
    groups: dict[str, list[str]] = {}
    for r in refs:
        view, _, feat = r.partition(":")
        groups.setdefault(view, []).append(feat or "*")
    return "<br>".join(
        f'<a href="?e_view={_e(v)}#entity">{_e(v)}</a>: {_e(", ".join(fs))}'
        for v, fs in groups.items()
    )


def _changes(store: FeatureStore, name: str, current: int, features: tuple[str, ...]) -> str:
    """What each version changed, newest first: ``v3: +a:x, -b:y``; the oldest ones beyond
    MAX_SERVICE_VERSIONS are counted, not read."""
    items = []
    newer = features
    low = max(1, current - MAX_SERVICE_VERSIONS)
    for v in range(current - 1, low - 1, -1):
        older = store.feature_service(name, version=v).features
        added = [f"+{r}" for r in newer if r not in older]
        removed = [f"-{r}" for r in older if r not in newer]
        items.append(f"v{v + 1}: {', '.join(added + removed) or 'reordered'}")
        newer = older
    items.append(f"v{low}: first" if low == 1 else f"v{low} and {low - 1} earlier")
    return "<br>".join(_e(i) for i in items)


def services_section(store: FeatureStore) -> str:
    services = store.feature_services()
    if not services:
        return _hint(
            "No feature services yet: group the features a model uses with "
            "<code>store.apply(FeatureService(name, features=[view, 'view:f', ...]))</code> "
            "(or in a repository: <code>redfeat apply</code>); read them with "
            "<code>get_features(service=name)</code> and <code>training_frame(..., "
            "service=name)</code>."
        )
    rows = []
    for svc in services:
        version = svc.version or 1
        rows.append(
            f"<tr><td>{_e(svc.name)}</td><td class='n'>{version}</td>"
            f"<td class='n'>{len(svc.features)}</td><td>{_by_view(svc.features)}</td>"
            f"<td class='versions'>{_changes(store, svc.name, version, svc.features)}</td>"
            f"<td>{_e(svc.description)}</td></tr>"
        )
    head = (
        "<tr><th>service</th><th>version</th><th>features</th><th>by view</th>"
        "<th>versions</th><th>description</th></tr>"
    )
    return f'<table class="services-table">{head}{"".join(rows)}</table>'


# -- entity lookup -----------------------------------------------------------------------


def entity_controls(names: list[str], params: dict[str, str], view: str | None) -> str:
    return (
        _select("e_view", "view", names, view, ("entity", "as_of"))
        + _input("entity", "entity id", params.get("entity", ""), 20, "e.g. user123")
        + _input("as_of", "as of (ISO, optional)", params.get("as_of", ""), 25, "latest")
        + _input("limit", "versions", params.get("limit", ""), 4, "20")
    )


def entity_section(store: FeatureStore, params: dict[str, str], view: str | None) -> str:
    if view is None:
        return _hint("No views yet: there is nothing to look up.")
    entity = params.get("entity", "").strip()
    if not entity:
        return _hint(
            f"Type an entity id of <b>{_e(view)}</b> and press Show: its latest values, "
            "its stored versions (what each one changed) and, with a time in <i>as of</i>, "
            "the values it had then."
        )
    as_of = _when(params, "as_of")
    limit = wire.parse_int(params.get("limit"), "versions", 20)
    if not 1 <= limit <= MAX_VERSIONS:
        raise ConfigurationError(f"versions must be in 1 .. {MAX_VERSIONS}, got {limit}")
    definition = store.view(view)
    names = [f.name for f in definition.fields]
    row = store.get(view, entity, as_of=as_of)
    versions = store.history(view, entity, limit=limit)
    out = []
    when = "" if as_of is None else f" as of {as_of.isoformat()}"
    if row is None:
        if versions and as_of is not None:
            msg = (
                f"Entity <b>{_e(entity)}</b> had no values in <b>{_e(view)}</b>{_e(when)}: its "
                "oldest kept version is later (or expired by the view's ttl). Clear "
                "<i>as of</i> for the latest values."
            )
        else:
            msg = (
                f"No values for entity <b>{_e(entity)}</b> in <b>{_e(view)}</b>{_e(when)}"
                " (or they expired with the view's ttl). Check the id, or write one: "
                f"<code>store.write({_e(repr(view))}, {_e(repr(entity))}, {{...}})</code> or "
                f"<code>POST /views/{_e(view)}/write</code>."
            )
        out.append(f'<p class="missing">{msg}</p>')
    else:
        cells = "".join(
            f"<tr><td>{_e(n)}</td><td class='value'>{_cell(row.get(n))}</td></tr>"
            for n in names
            if n in row
        )
        out.append(
            f"<h3>Values{_e(when) or ' (latest)'}</h3>"
            f'<table class="values-table"><tr><th>feature</th><th>value</th></tr>{cells}</table>'
        )
    if versions:
        out.append(_history_table(versions, names, as_of))
    elif row is not None:
        out.append('<p class="muted">No versions kept (the view keeps no history).</p>')
    return "".join(out)


def _history_table(versions: list[Any], names: list[str], as_of: datetime | None) -> str:
    """Newest first; a value that differs from the version before it is marked."""
    shown = [n for n in names if any(n in v.values for v in versions)]
    head = "".join(f"<th>{_e(n)}</th>" for n in shown)
    rows = []
    in_effect = None
    if as_of is not None:  # the version a read as of that time returns
        older = [v for v in versions if v.event_time <= as_of]
        in_effect = older[0].id if older else None
    for i, v in enumerate(versions):
        prev = versions[i + 1].values if i + 1 < len(versions) else None
        cells = []
        changed = 0
        for n in shown:
            val = v.values.get(n)
            if prev is not None and not _same(val, prev.get(n)):
                changed += 1
                was = _cell(prev.get(n))
                cells.append(f'<td class="changed" title="was {was}">{_cell(val)}</td>')
            else:
                cells.append(f"<td>{_cell(val)}</td>")
        what = "first kept" if prev is None else (f"{changed} changed" if changed else "no change")
        mark = ' class="asof"' if v.id == in_effect else ""
        rows.append(
            f"<tr{mark}><td class='n'>{v.id}</td><td>{_e(v.event_time.isoformat())}</td>"
            f"<td>{_e(v.written_at.isoformat())}</td><td>{_e(what)}</td>{''.join(cells)}</tr>"
        )
    note = ' <span class="muted">(the marked row is the one in effect as of that time)</span>'
    return (
        f"<h3>History: {len(versions)} version(s), newest first{note if in_effect else ''}</h3>"
        f'<table class="history-table"><tr><th>version</th><th>event time</th>'
        f"<th>written at</th><th>diff</th>{head}</tr>{''.join(rows)}</table>"
    )


# -- drift -------------------------------------------------------------------------------


def _default_view(store: FeatureStore, names: list[str]) -> str | None:
    for n in names:  # the first view with a baseline has a drift report to show
        if store.quality.baseline(n) is not None:
            return n
    return names[0] if names else None


def drift_controls(names: list[str], params: dict[str, str], view: str | None) -> str:
    return (
        _select("view", "view", names, view, ("start", "end"))
        + _input("start", "from (ISO)", params.get("start", ""), 25, "a day before 'to'")
        + _input("end", "to (ISO)", params.get("end", ""), 25, "the newest event")
    )


def drift_section(
    store: FeatureStore, health: HealthReport, params: dict[str, str], view: str | None
) -> str:
    if view is None:
        return _hint("No views yet: drift compares a view's recent values with a baseline.")
    end = _when(params, "end")
    start = _when(params, "start")
    if end is None:
        newest = health.views[view].newest_event if view in health.views else None
        # the day up to the newest event: live data ends now, a backfill ends earlier
        end = (newest + timedelta(seconds=1)) if newest is not None else datetime.now(UTC)
    if start is None:
        start = end - DAY
    window = f"{start.isoformat()} .. {end.isoformat()}"
    stored = store.quality.baseline(view)
    if stored is None:
        current = store.quality.profile(view, start=start, end=end)
        return _hint(
            f"<b>{_e(view)}</b> has no baseline yet, so there is nothing to compare "
            f"{_e(window)} ({current.rows:,} rows) with. Set one from a period of normal "
            f"data: <code>store.quality.set_baseline({_e(repr(view))}, start, end)</code>, "
            "or from the training frame: <code>store.quality.set_baseline_from("
            f"{_e(repr(view))}, frame)</code>."
        )
    report = store.quality.drift(view, start=start, end=end)
    current = store.quality.profile(view, start=start, end=end)
    dists = bins.distributions(store.view(view), stored[0], current)
    base = report.baseline
    out = [
        f'<p>Verdict: <span class="{_e(report.verdict)}">{_e(report.verdict)}</span> '
        f"for {_e(report.start)} .. {_e(report.end)} against the baseline "
        f'<span class="muted">({_e(base.get("from", ""))} {_e(base.get("start") or "")} .. '
        f"{_e(base.get('end') or '')})</span></p>"
    ]
    if current.rows == 0:
        out.append(
            _hint(
                f"No values of <b>{_e(view)}</b> were recorded in {_e(window)}: pick a window "
                "with writes (the views table shows the newest event's age)."
            )
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


def series_controls(names: list[str], params: dict[str, str], name: str | None) -> str:
    return (
        _select("series", "series", names, name, ("s_start", "s_end", "bucket"))
        + _input("s_start", "from (ISO)", params.get("s_start", ""), 25, "a day before 'to'")
        + _input("s_end", "to (ISO)", params.get("s_end", ""), 25, "the newest point")
        + _input("bucket", "bucket (or raw)", params.get("bucket", ""), 6, "auto")
        + _select("agg", "agg", sorted(AGGS), params.get("agg") or "avg")
    )


def series_section(store: FeatureStore, params: dict[str, str], name: str | None) -> str:
    if name is None:
        return _hint(
            "No time series yet: <code>store.series(name).add(value, ts)</code> creates one."
        )
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
    ts, vs = series.range(start, end, bucket=None if bucket == "raw" else bucket, agg=agg)
    marks, note = _anomalies(series, start, end)
    labels = ", ".join(f"{k}={v}" for k, v in sorted(spec.labels.items())) or "no labels"
    what = "raw points" if bucket == "raw" else f"{agg} per {bucket}"
    plot = svg.line(ts.astype("int64"), np.asarray(vs), marks, title=f"{name}: {what}")
    specs = store.timeseries.specs()
    matching = len(multi.select(specs, [f"{k}={v}" for k, v in spec.labels.items()]))
    empty = ""
    if len(ts) == 0:
        empty = _hint(
            f"No points of <b>{_e(name)}</b> in {_e(start.isoformat())} .. "
            f"{_e(end.isoformat())}: clear the times for its last day."
        )
    return (
        f"{empty}{plot}"
        f'<p class="muted">{_e(name)} ({_e(labels)}; {matching} series share them): '
        f"{len(ts):,} {_e(what)}; {_e(note)}.</p>"
    )


# -- the page ----------------------------------------------------------------------------


def _doc(title: str, body: str, nonce: str, script: bool = True) -> str:
    js = f'<script nonce="{_e(nonce)}">{SCRIPT}</script>' if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>{body}{js}</body></html>"
    )


def login_page(message: str | None, nonce: str) -> str:
    """The form a browser gets instead of the page while it has no accepted token."""
    note = f'<p class="error">{_e(message)}</p>' if message else ""
    body = (
        "<header><h1>redfeat</h1></header><main><section><h2>Sign in</h2>"
        "<p>This server needs an API token (<code>redfeat token create --scopes read</code>)."
        " It is kept in an HttpOnly cookie for this site only.</p>"
        f'{note}<form method="post" action="login" class="controls">'
        '<label>token<input name="token" type="password" size="50" autocomplete="off">'
        '</label><button type="submit">Sign in</button></form></section></main>'
    )
    return _doc("redfeat: sign in", body, nonce, script=False)


def render_page(store: FeatureStore, params: dict[str, str], nonce: str = "") -> str:
    """The whole page as one HTML string (blocking: it reads Redis)."""
    health = store.quality.health()
    names = [v.name for v in store.views()]

    def chosen(key: str, default: Callable[[], str | None]) -> str | None:
        v = params.get(key) or None
        return v if v in names else (default() if v is None else v)

    view = chosen("view", lambda: _default_view(store, names))
    e_view = chosen("e_view", lambda: view if view in names else None)
    series_names = [s.name for s in store.timeseries.specs()]
    series = params.get("series") or (series_names[0] if series_names else None)
    # an unknown choice stays in its selector, so the section can say it is unknown
    opts = names if e_view is None or e_view in names else [*names, e_view]
    vopts = names if view is None or view in names else [*names, view]
    sopts = series_names if series is None or series in series_names else [*series_names, series]
    sections = [
        _section("Views", "views", "", lambda: views_section(store, health)),
        _section("Feature services", "services", "", lambda: services_section(store)),
        _section(
            "Entity lookup",
            "entity",
            entity_controls(opts, params, e_view) if names else "",
            lambda: entity_section(store, params, e_view),
        ),
        _section(
            f"Drift of {view}" if view else "Drift",
            "drift",
            drift_controls(vopts, params, view) if names else "",
            lambda: drift_section(store, health, params, view),
        ),
        _section(
            "Time series",
            "series",
            series_controls(sopts, params, series) if series else "",
            lambda: series_section(store, params, series),
        ),
    ]
    status = health.status
    body = (
        f"<header><h1>redfeat · project {_e(store.project)} · health "
        f'<span class="{_e(status)}">{_e(status)}</span> '
        f'<span class="muted">at {health.at:%Y-%m-%d %H:%M:%S} UTC</span></h1>'
        '<nav><a href="#services">services</a> · <a href="#entity">lookup</a> · '
        '<a href="#drift">drift</a> · '
        '<a href="#series">series</a> · API: <a href="docs">/docs</a> '
        '<a href="openapi.json">/openapi.json</a> <a href="views">/views</a> '
        '<a href="services">/services</a> '
        '<a href="health">/health</a> <a href="metrics">/metrics</a></nav></header>'
        '<main><form id="controls" method="get"></form>'
        f"{''.join(sections)}</main>"
    )
    return _doc(f"redfeat: {store.project}", body, nonce)
