"""Drift between two profiles: PSI, KS, Jensen-Shannon, null rates, out-of-range values.

- PSI (numbers): 10 bins at the baseline's deciles (from its KLL sketch); each side's share
  per bin from its KLL CDF; ``sum((c - b) * ln(c / b))`` with shares floored at 1e-4.
- KS statistic (numbers): ``max |F_base(x) - F_current(x)|`` over both sketches' quantiles.
- Jensen-Shannon distance (categories, Bool): ``sqrt(JSD)`` with natural logs, as
  ``scipy.spatial.distance.jensenshannon``; 0 = same distribution, 1 = disjoint (ln 2 max
  divergence, so the distance tops out at ~0.83).
- null-rate change: current share of nulls minus the baseline's.
- out-of-range rate: share of current values outside the baseline's [min, max] (numbers) or
  in categories the baseline never saw.

Verdicts, from best to worst: ``ok``, ``insufficient_data`` (fewer than ``min_count``
values on either side: the distributions are not compared, so nothing says the feature is
fine), ``warning``, ``drift``. A report's verdict is its worst feature's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from .config import Thresholds
from .profiles import FeatureProfile, Profile

VERDICTS = ("ok", "insufficient_data", "warning", "drift")  # best to worst
PSI_FLOOR = 1e-4


POINT_MASS = 0.01  # an edge value holding this share (either side) gets a bin of its own


def psi_bins(
    base: FeatureProfile, cur: FeatureProfile, bins: int = 10
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Bins at the baseline's quantiles and each side's share of them.

    Bins are [e_i, e_i+1) between distinct decile edges; an edge value that holds a real
    share of either side (ties: a zero-inflated or few-valued feature) gets a bin of its
    own, so that mass moving onto or off it is seen."""
    qs = [i / bins for i in range(1, bins)]
    edges = sorted(set(base.quantiles(qs)))
    b_lo, b_at = np.array(base.cdf(edges)), np.array(base.cdf(edges, inclusive=True))
    c_lo, c_at = np.array(cur.cdf(edges)), np.array(cur.cdf(edges, inclusive=True))
    labels: list[str] = []
    b_sh: list[float] = []
    c_sh: list[float] = []
    b_prev = c_prev = 0.0
    prev = "-inf"
    for i, e in enumerate(edges):
        point = max(b_at[i] - b_lo[i], c_at[i] - c_lo[i]) >= POINT_MASS
        if point:  # (prev, e) then [e]
            labels += [f"({prev}, {e:g})", f"[{e:g}]"]
            b_sh += [b_lo[i] - b_prev, b_at[i] - b_lo[i]]
            c_sh += [c_lo[i] - c_prev, c_at[i] - c_lo[i]]
            b_prev, c_prev, prev = b_at[i], c_at[i], f"{e:g}"
        else:  # [prev, e)
            labels.append(f"[{prev}, {e:g})")
            b_sh.append(b_lo[i] - b_prev)
            c_sh.append(c_lo[i] - c_prev)
            b_prev, c_prev, prev = b_lo[i], c_lo[i], f"{e:g}"
    labels.append(f"[{prev}, inf)")
    b_sh.append(1.0 - b_prev)
    c_sh.append(1.0 - c_prev)
    return labels, np.maximum(np.array(b_sh), 0.0), np.maximum(np.array(c_sh), 0.0)


def psi(base: FeatureProfile, cur: FeatureProfile, bins: int = 10) -> float:
    """Population stability index of ``cur`` against ``base`` (bins at base quantiles)."""
    _, b, c = psi_bins(base, cur, bins)
    b = np.maximum(b, PSI_FLOOR)
    c = np.maximum(c, PSI_FLOOR)
    return float(((c - b) * np.log(c / b)).sum())


def category_shares(
    base: FeatureProfile, cur: FeatureProfile
) -> tuple[dict[str, float], dict[str, float]]:
    """Both sides' shares over the values either side knows the count of; the rest of each
    side (values a free-string sketch cannot vouch for) is one shared "__other__"."""
    keys = sorted(set(base.frequent()) | set(cur.frequent()))
    return base.frequencies(keys), cur.frequencies(keys)


def ks(base: FeatureProfile, cur: FeatureProfile, points: int = 201) -> float:
    """Two-sample Kolmogorov-Smirnov statistic from the two CDFs."""
    grid = list(np.linspace(0.0, 1.0, points))
    xs = sorted(set(base.quantiles(grid)) | set(cur.quantiles(grid)))
    fb = np.asarray(base.cdf(xs, inclusive=True))
    fc = np.asarray(cur.cdf(xs, inclusive=True))
    return float(np.abs(fb - fc).max())


def js_distance(p: dict[str, float], q: dict[str, float]) -> float:
    """Jensen-Shannon distance between two categorical distributions (natural log)."""
    names = sorted(set(p) | set(q))
    a = np.array([p.get(n, 0.0) for n in names])
    b = np.array([q.get(n, 0.0) for n in names])
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2

    def kl(x: np.ndarray[Any, Any]) -> float:
        nz = x > 0
        return float((x[nz] * np.log(x[nz] / m[nz])).sum())

    return math.sqrt(max(0.0, (kl(a) + kl(b)) / 2))


def _out_of_range(base: FeatureProfile, cur: FeatureProfile) -> float:
    if base.kind == "numeric":
        if base.min is None or base.max is None or cur.count == 0:
            return 0.0
        below = cur.cdf([base.min])[0]
        above = 1.0 - cur.cdf([base.max], inclusive=True)[0]
        return max(0.0, below + above)
    return sum(s for k, s in cur.frequencies().items() if k != "__other__" and base.never_saw(k))


@dataclass(slots=True)
class FeatureDrift:
    """Drift of one feature. Metrics that do not apply to its kind are None."""

    name: str
    kind: str
    verdict: str
    psi: float | None = None
    ks: float | None = None
    js: float | None = None
    null_rate_change: float | None = None
    out_of_range_rate: float | None = None
    baseline_count: int = 0
    current_count: int = 0
    reasons: list[str] = field(default_factory=list)


@dataclass(slots=True)
class DriftReport:
    """Drift of a view's features in [start, end) against a baseline; plain data."""

    view: str
    start: datetime | None
    end: datetime | None
    verdict: str
    features: dict[str, FeatureDrift]
    thresholds: Thresholds
    baseline: dict[str, Any] = field(default_factory=dict)

    @property
    def drifting(self) -> list[str]:
        return [n for n, f in self.features.items() if f.verdict == "drift"]

    @property
    def warnings(self) -> list[str]:
        return [n for n, f in self.features.items() if f.verdict == "warning"]

    @property
    def insufficient(self) -> list[str]:
        """Features with too few values (either side) to be judged."""
        return [n for n, f in self.features.items() if f.verdict == "insufficient_data"]

    def at_least(self, verdict: str) -> bool:
        """Whether the report is ``verdict`` or worse (``VERDICTS`` order), e.g. for a
        ``--fail-on`` switch."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
        return VERDICTS.index(self.verdict) >= VERDICTS.index(verdict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "start": None if self.start is None else self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "verdict": self.verdict,
            "baseline": self.baseline,
            "thresholds": asdict(self.thresholds),
            "features": {n: asdict(f) for n, f in self.features.items()},
        }


def _worst(verdicts: list[str]) -> str:
    return max(verdicts, key=VERDICTS.index, default="ok")


def compare_feature(
    name: str, base: FeatureProfile, cur: FeatureProfile, th: Thresholds
) -> FeatureDrift:
    out = FeatureDrift(name, base.kind, "ok", baseline_count=base.count, current_count=cur.count)
    levels: list[str] = []

    def judge(metric: str, value: float, warn: float | None, drift: float | None) -> None:
        if drift is not None and value >= drift:
            levels.append("drift")
            out.reasons.append(f"{metric} {value:.3f} >= {drift}")
        elif warn is not None and value >= warn:
            levels.append("warning")
            out.reasons.append(f"{metric} {value:.3f} >= {warn}")

    if cur.total and cur.kind != base.kind:
        out.reasons.append(
            f"the field's kind changed ({base.kind} in the baseline, {cur.kind} now): set a "
            "new baseline"
        )
        out.verdict = "warning"
        return out
    if cur.total == 0:
        out.reasons.append("no values in the window")
        out.verdict = "warning"
        return out
    if base.total >= th.min_count and cur.total >= th.min_count:
        out.null_rate_change = cur.null_rate - base.null_rate
        judge(
            "null rate change", abs(out.null_rate_change), th.null_rate_warning, th.null_rate_drift
        )
    enough = base.count >= th.min_count and cur.count >= th.min_count
    if base.kind == "numeric" and enough:
        out.psi = psi(base, cur)
        out.ks = ks(base, cur)
        judge("psi", out.psi, th.psi_warning, th.psi_drift)
        judge("ks", out.ks, th.ks_warning, th.ks_drift)
    elif base.kind == "categorical" and enough:
        out.js = js_distance(*category_shares(base, cur))
        judge("js", out.js, th.js_warning, th.js_drift)
    if enough and base.kind in ("numeric", "categorical"):
        out.out_of_range_rate = _out_of_range(base, cur)
        judge("out of range rate", out.out_of_range_rate, th.out_of_range_warning, None)
    if not enough and base.kind != "other":
        out.reasons.append(
            f"too few values to compare distributions ({base.count} in the baseline, "
            f"{cur.count} now; need {th.min_count})"
        )
        levels.append("insufficient_data")  # no verdict: never "ok" (a null-rate one wins)
    out.verdict = _worst(levels)
    return out


def compare(
    baseline: Profile,
    current: Profile,
    th: Thresholds,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    features: list[str] | None = None,
) -> DriftReport:
    """Compare every feature the baseline knows (or ``features``)."""
    names = features if features is not None else sorted(baseline.features)
    out: dict[str, FeatureDrift] = {}
    for name in names:
        base = baseline.features.get(name)
        if base is None:
            continue
        cur = current.features.get(name) or FeatureProfile(base.kind)
        out[name] = compare_feature(name, base, cur, th)
    for name in sorted(set(current.features) - set(baseline.features)):
        out[name] = FeatureDrift(
            name,
            current.features[name].kind,
            "ok",
            current_count=current.features[name].count,
            reasons=["not in the baseline (a field added since): set a new baseline to judge it"],
        )
    verdict = _worst([f.verdict for f in out.values()])
    return DriftReport(baseline.view, start, end, verdict, out, th)
