"""Inline SVG plots drawn on the server: plain strings, no plotting library, no script.

Two kinds: grouped bars (a drift plot: baseline against current share per bin or value)
and a line chart with marked points (a time series and its anomalies).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

import numpy as np

from .bins import Distribution

BASELINE = "#4e79a7"
CURRENT = "#f28e2b"
LINE = "#4e79a7"
ANOMALY = "#e15759"
FONT = 'font-family="system-ui, sans-serif"'


def _svg(width: int, height: int, cls: str, label: str, body: list[str]) -> str:
    return (
        f'<svg class="plot {cls}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}" {FONT} font-size="10">'
        f"<title>{escape(label)}</title>{''.join(body)}</svg>"
    )


def _nice_top(x: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above x (an axis that reads easily)."""
    if x <= 0 or not math.isfinite(x):
        return 1.0
    scale = 10.0 ** math.floor(math.log10(x))
    for m in (1.0, 2.0, 2.5, 5.0):
        if m * scale >= x * (1 - 1e-9):
            return m * scale
    return 10.0 * scale


def _short(text: str, n: int = 16) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def bars(dist: Distribution, width: int = 380, height: int = 200) -> str:
    """Grouped bars: per bin (or value), the baseline's share beside the current share."""
    left, right, top, bottom = 38, 8, 22, 58
    pw, ph = width - left - right, height - top - bottom
    n = max(1, len(dist.labels))
    ymax = _nice_top(max([*dist.baseline, *dist.current, 0.01]))
    gw = pw / n
    bw = gw * 0.38

    def y(share: float) -> float:
        return top + ph * (1 - min(share, ymax) / ymax)

    body = [
        f'<rect x="{left}" y="6" width="9" height="9" fill="{BASELINE}"/>'
        f'<text x="{left + 12}" y="14">baseline</text>'
        f'<rect x="{left + 70}" y="6" width="9" height="9" fill="{CURRENT}"/>'
        f'<text x="{left + 82}" y="14">current</text>'
    ]
    for frac in (0.0, 0.5, 1.0):
        yy = y(ymax * frac)
        body.append(
            f'<line x1="{left}" x2="{width - right}" y1="{yy:.1f}" y2="{yy:.1f}" '
            f'stroke="#ddd"/><text x="{left - 4}" y="{yy + 3:.1f}" text-anchor="end">'
            f"{ymax * frac:.0%}</text>"
        )
    for i, label in enumerate(dist.labels):
        x0 = left + i * gw + gw * 0.1
        for j, (share, colour, side) in enumerate(
            ((dist.baseline[i], BASELINE, "baseline"), (dist.current[i], CURRENT, "current"))
        ):
            yy = y(share)
            tip = escape(f"{label}: {side} {share:.1%}")
            body.append(
                f'<rect class="bar {side}" x="{x0 + j * bw:.1f}" y="{yy:.1f}" '
                f'width="{bw:.1f}" height="{top + ph - yy:.1f}" fill="{colour}">'
                f"<title>{tip}</title></rect>"
            )
        cx, cy = left + (i + 0.5) * gw, top + ph + 8
        body.append(
            f'<text x="{cx:.1f}" y="{cy:.1f}" text-anchor="end" font-size="9" '
            f'transform="rotate(-35 {cx:.1f} {cy:.1f})"><title>{escape(label)}</title>'
            f"{escape(_short(label))}</text>"
        )
    what = "bins at the baseline's deciles" if dist.kind == "numeric" else "values"
    return _svg(width, height, "drift-plot", f"{dist.feature}: shares per {what}", body)


def _time_fmt(span_ms: float) -> str:
    if span_ms > 2 * 86_400_000:
        return "%m-%d %H:%M"
    if span_ms > 600_000:
        return "%H:%M"
    return "%H:%M:%S"


def line(
    timestamps_ms: np.ndarray,
    values: np.ndarray,
    marks: Sequence[tuple[int, float, str]] = (),
    *,
    title: str = "",
    width: int = 760,
    height: int = 260,
) -> str:
    """A line through (time, value) points, broken at NaN; ``marks`` (ms, value, tooltip)
    are drawn as red dots (anomalies)."""
    left, right, top, bottom = 58, 14, 12, 30
    pw, ph = width - left - right, height - top - bottom
    ts = np.asarray(timestamps_ms, dtype=np.float64)
    vs = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(vs)
    if not finite.any():
        empty = (
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#777">'
            "no points in this range</text>"
        )
        return _svg(width, height, "series-plot", title or "time series", [empty])
    mark_ts = np.array([m[0] for m in marks], dtype=np.float64)
    mark_vs = np.array([m[1] for m in marks], dtype=np.float64)
    t0 = float(min(ts.min(), mark_ts.min(initial=ts.min())))
    t1 = float(max(ts.max(), mark_ts.max(initial=ts.max())))
    all_v = np.concatenate([vs[finite], mark_vs[np.isfinite(mark_vs)]])
    lo, hi = float(all_v.min()), float(all_v.max())
    pad = (hi - lo) * 0.05 or max(abs(hi) * 0.05, 1.0)
    lo, hi = lo - pad, hi + pad
    tspan = (t1 - t0) or 1.0

    def px(t: float) -> float:
        return left + pw * (t - t0) / tspan

    def py(v: float) -> float:
        return top + ph * (1 - (v - lo) / (hi - lo))

    body: list[str] = []
    step = _nice_top((hi - lo) / 5)  # round values at the grid lines (10, 20, 25, 50...)
    for v in np.arange(math.ceil(lo / step) * step, hi, step).tolist():
        yy = py(v)
        body.append(
            f'<line x1="{left}" x2="{width - right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>'
            f'<text x="{left - 4}" y="{yy + 3:.1f}" text-anchor="end">{v:.6g}</text>'
        )
    fmt = _time_fmt(tspan)
    for i in range(6):
        t = t0 + tspan * i / 5
        label = datetime.fromtimestamp(t / 1000, UTC).strftime(fmt)
        body.append(f'<text x="{px(t):.1f}" y="{height - 10}" text-anchor="middle">{label}</text>')
    # one polyline per run of finite values, so a NaN bucket leaves a gap
    breaks = np.flatnonzero(np.diff(finite.astype(np.int8)) != 0) + 1
    for run in np.split(np.arange(len(vs)), breaks):
        if len(run) == 0 or not finite[run[0]]:
            continue
        pts = " ".join(f"{px(ts[i]):.1f},{py(vs[i]):.1f}" for i in run)
        if len(run) == 1:
            body.append(
                f'<circle cx="{px(ts[run[0]]):.1f}" cy="{py(vs[run[0]]):.1f}" r="1.5" '
                f'fill="{LINE}"/>'
            )
        else:
            body.append(
                f'<polyline class="series-line" points="{pts}" fill="none" stroke="{LINE}" '
                'stroke-width="1.5"/>'
            )
    for t, v, tip in marks:
        if math.isfinite(v):
            body.append(
                f'<circle class="anomaly" cx="{px(t):.1f}" cy="{py(v):.1f}" r="4" '
                f'fill="{ANOMALY}"><title>{escape(tip)}</title></circle>'
            )
    return _svg(width, height, "series-plot", title or "time series", body)
