"""What a drift plot draws: both sides' shares in the bins the drift metrics use.

Numbers: the 10 bins of PSI, cut at the baseline's deciles, each side's share from its own
KLL CDF, exactly as ``quality.drift.psi`` computes them (without its 1e-4 floor, which only
keeps the logarithm finite). Categories: each side's share of every value, as Jensen-Shannon
compares them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ..quality.profiles import FeatureProfile, Profile
from ..schema import FeatureView

MAX_CATEGORIES = 12  # more would not read on a small plot: the rest share one bar


@dataclass(frozen=True, slots=True)
class Distribution:
    """One feature's baseline and current shares per bin (each side sums to 1, or to 0
    when it has no values). ``edges``: the inner bin edges (numbers only)."""

    feature: str
    kind: str
    labels: list[str]
    baseline: list[float]
    current: list[float]
    edges: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "labels": self.labels,
            "edges": self.edges,
            "baseline": self.baseline,
            "current": self.current,
        }


def _fmt(x: float, is_time: bool) -> str:
    if is_time:
        return datetime.fromtimestamp(x, UTC).strftime("%Y-%m-%d %H:%M")
    return f"{x:.3g}"


def _shares(prof: FeatureProfile, edges: list[float]) -> list[float]:
    if prof.count == 0:
        return [0.0] * (len(edges) + 1)
    return [float(s) for s in np.diff([0.0, *prof.cdf(edges), 1.0])]


def numeric(
    name: str, base: FeatureProfile, cur: FeatureProfile, bins: int = 10, is_time: bool = False
) -> Distribution | None:
    """Shares in the baseline-decile bins: [-inf, e1), [e1, e2), ..., [e_last, inf)."""
    if base.count == 0:
        return None
    qs = [i / bins for i in range(1, bins)]
    edges = sorted({e for e in base.quantiles(qs) if not math.isnan(e)})
    labels = [f"< {_fmt(edges[0], is_time)}"] if edges else ["all"]
    pairs = zip(edges, edges[1:], strict=False)
    labels += [f"{_fmt(a, is_time)} – {_fmt(b, is_time)}" for a, b in pairs]
    if edges:
        labels.append(f"≥ {_fmt(edges[-1], is_time)}")
    return Distribution(name, "numeric", labels, _shares(base, edges), _shares(cur, edges), edges)


def categorical(name: str, base: FeatureProfile, cur: FeatureProfile) -> Distribution | None:
    """Shares per value: the baseline's values by share, then values only the current
    side has; past MAX_CATEGORIES the rest are summed into '(others)'."""
    fb, fc = base.frequencies(), cur.frequencies()
    if not fb and not fc:
        return None
    names = sorted(fb, key=lambda k: (-fb[k], k))
    names += sorted((k for k in fc if k not in fb), key=lambda k: (-fc[k], k))
    shown, rest = names[:MAX_CATEGORIES], names[MAX_CATEGORIES:]
    b = [fb.get(k, 0.0) for k in shown]
    c = [fc.get(k, 0.0) for k in shown]
    if rest:
        shown = [*shown, "(others)"]
        b.append(sum(fb.get(k, 0.0) for k in rest))
        c.append(sum(fc.get(k, 0.0) for k in rest))
    return Distribution(name, "categorical", shown, b, c, [])


def distributions(
    view: FeatureView, baseline: Profile, current: Profile
) -> dict[str, Distribution]:
    """A Distribution per feature the baseline knows and that has one to draw."""
    out: dict[str, Distribution] = {}
    times = {f.name for f in view.fields if f.dtype.kind == "Timestamp"}
    for name in sorted(baseline.features):
        base = baseline.features[name]
        cur = current.features.get(name) or FeatureProfile(base.kind)
        dist = None
        if base.kind == "numeric":
            dist = numeric(name, base, cur, is_time=name in times)
        elif base.kind == "categorical":
            dist = categorical(name, base, cur)
        if dist is not None:
            out[name] = dist
    return out
