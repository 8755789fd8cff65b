"""Drift and health reports as rich tables (the CLI and the demo print these)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from ..quality.drift import DriftReport
from ..quality.health import HealthReport

# one style per verdict and health level; insufficient_data (drift not judged: too few
# values) is neither healthy green nor a warning
STYLE = {
    "ok": "green",
    "insufficient_data": "italic magenta",
    "warning": "yellow",
    "drift": "bold red",
    "critical": "bold red",
}


def _num(v: float | None, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def drift_table(report: DriftReport) -> Table:
    span = ""
    if report.start is not None and report.end is not None:
        span = f" {report.start:%Y-%m-%d %H:%M} .. {report.end:%Y-%m-%d %H:%M} UTC"
    verdict = f"[{STYLE[report.verdict]}]{report.verdict}[/]"
    table = Table(
        title=f"drift of {escape(repr(report.view))}{span}: {verdict}", title_justify="left"
    )
    table.add_column("feature", no_wrap=True)
    for col in ("verdict", "psi", "ks", "js", "null Δ", "out of range", "n"):
        table.add_column(col, justify="left" if col == "verdict" else "right")
    table.add_column("why", overflow="fold")
    for name, f in report.features.items():
        table.add_row(
            escape(name),
            f"[{STYLE[f.verdict]}]{f.verdict}[/]",
            _num(f.psi),
            _num(f.ks),
            _num(f.js),
            _num(f.null_rate_change, "+.3f"),
            _num(f.out_of_range_rate, ".1%"),
            f"{f.current_count:,}",
            escape("; ".join(f.reasons)),
        )
    return table


def health_table(report: HealthReport) -> Table:
    status = f"[{STYLE[report.status]}]{report.status}[/]"
    title = f"health at {report.at:%Y-%m-%d %H:%M:%S} UTC: {status}"
    table = Table(title=title, title_justify="left")
    table.add_column("view", no_wrap=True)
    table.add_column("status")
    for col in ("newest event age", "writes", "refused", "reads"):
        table.add_column(col, justify="right")
    table.add_column("why", overflow="fold")
    for name, v in report.views.items():
        status = f"[{STYLE[v.status]}]{v.status}[/]"
        if v.insufficient_data:  # not counted healthy: said beside the level
            status += f" [{STYLE['insufficient_data']}]({len(v.insufficient_data)} unjudged)[/]"
        table.add_row(
            escape(name),
            status,
            "-" if v.age_s is None else f"{v.age_s:,.0f} s",
            f"{v.writes:,}",
            f"{v.refused:,} ({v.failure_rate:.1%})",
            f"{v.reads:,}",
            escape("; ".join(v.reasons)),
        )
    return table
