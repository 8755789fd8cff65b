"""What a drift plot draws: both sides' shares in the bins the drift metrics compare.

Numbers: the PSI bins (``quality.drift.psi_bins``: the baseline's deciles, an edge value
holding a real share in a bin of its own), so the bars are exactly what PSI summed.
Categories: the shares Jensen-Shannon compares (``quality.drift.category_shares``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...core.schema import FeatureView
from ...quality.drift import category_shares, psi_bins
from ...quality.profiles import FeatureProfile, Profile

MAX_CATEGORIES = 12  # more would not read on a small plot: the rest share one bar


@dataclass(frozen=True, slots=True)
class Distribution:
    """One feature's baseline and current shares per bin or value (each side sums to 1,
    or is all 0 when it has no values)."""

    feature: str
    kind: str
    labels: list[str]
    baseline: list[float]
    current: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "labels": self.labels,
            "baseline": self.baseline,
            "current": self.current,
        }


def _clean(shares: Any) -> list[float]:
    # a side without values has NaN CDFs: it draws as no bars
    return [0.0 if math.isnan(s) else float(s) for s in shares]


def numeric(name: str, base: FeatureProfile, cur: FeatureProfile) -> Distribution | None:
    """Shares in the PSI bins; None when the baseline has no values to cut bins from."""
    if base.count == 0:
        return None
    labels, b, c = psi_bins(base, cur)
    return Distribution(name, "numeric", labels, _clean(b), _clean(c))


def categorical(name: str, base: FeatureProfile, cur: FeatureProfile) -> Distribution | None:
    """Shares per value: the baseline's values by share, then values only the current
    side has; past MAX_CATEGORIES the rest (and "__other__") are summed into one bar."""
    fb, fc = category_shares(base, cur)
    if not fb and not fc:
        return None
    names = sorted(fb, key=lambda k: (k == "__other__", -fb[k], k))
    names += sorted((k for k in fc if k not in fb), key=lambda k: (k == "__other__", -fc[k], k))
    shown = [k for k in names if k != "__other__"][:MAX_CATEGORIES]
    rest = [k for k in names if k not in shown]
    b = [fb.get(k, 0.0) for k in shown]
    c = [fc.get(k, 0.0) for k in shown]
    if rest:
        shown = [*shown, "(others)"]
        b.append(sum(fb.get(k, 0.0) for k in rest))
        c.append(sum(fc.get(k, 0.0) for k in rest))
    return Distribution(name, "categorical", shown, b, c)


def distributions(
    view: FeatureView, baseline: Profile, current: Profile
) -> dict[str, Distribution]:
    """A Distribution per feature the baseline knows and that has one to draw (``view``
    limits it to fields the view still has)."""
    fields = {f.name for f in view.fields}
    out: dict[str, Distribution] = {}
    for name in sorted(baseline.features):
        if name not in fields:
            continue
        base = baseline.features[name]
        cur = current.features.get(name) or FeatureProfile(base.kind)
        dist = None
        if base.kind == "numeric" and cur.kind == "numeric":
            dist = numeric(name, base, cur)
        elif base.kind == "categorical" and cur.kind == "categorical":
            dist = categorical(name, base, cur)
        if dist is not None:
            out[name] = dist
    return out
