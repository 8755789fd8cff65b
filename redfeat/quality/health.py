"""Health of each view and of the store, from counters, freshness and drift.

Rules (each adds a reason; the worst level wins):
- critical: stale (the newest event is older than the view's ``max_age``, or its ttl when
  no max_age is set); 10 % or more of written rows refused by validation;
- warning: no write ever recorded; 1 % or more refused; any feature drifting against the
  baseline (when one is set).
Features with too few values to judge drift are listed (``insufficient_data``) with a
reason; they are not counted as healthy, nor do they change the level.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..core.schema import FeatureView
from ..core.time import from_us
from .drift import DriftReport

if TYPE_CHECKING:
    from .config import QualityConfig

LEVELS = ("ok", "warning", "critical")
FAIL_WARNING = 0.01
FAIL_CRITICAL = 0.10


@dataclass(slots=True)
class ViewHealth:
    """One view's health over the window (volumes count rows; reads count requests)."""

    view: str
    status: str
    newest_event: datetime | None
    age_s: float | None
    max_age_s: float | None
    last_write: datetime | None
    writes: int
    refused: int
    warnings: int
    reads: int
    failure_rate: float
    drifting: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    insufficient_data: list[str] = field(default_factory=list)  # drift not judged


@dataclass(slots=True)
class HealthReport:
    status: str
    at: datetime
    views: dict[str, ViewHealth]

    @classmethod
    def of(cls, at: datetime, views: dict[str, ViewHealth]) -> HealthReport:
        status = max((v.status for v in views.values()), key=LEVELS.index, default="ok")
        return cls(status, at, views)

    def to_dict(self) -> dict[str, Any]:
        def clean(d: dict[str, Any]) -> dict[str, Any]:
            return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in d.items()}

        return {
            "status": self.status,
            "at": self.at.isoformat(),
            "views": {n: clean(asdict(v)) for n, v in self.views.items()},
        }


def assess(
    view: FeatureView,
    config: QualityConfig,
    at_us: int,
    newest_us: int | None,
    written_us: int | None,
    counts: Counter[str],
    drift: DriftReport | None,
) -> ViewHealth:
    levels: list[str] = ["ok"]
    reasons: list[str] = []
    if view.on_read:  # computed from its source on each read: nothing is written
        reads = counts.get("reads", 0)
        return ViewHealth(view.name, "ok", None, None, None, None, 0, 0, 0, reads, 0.0)
    max_age = config.max_age_s
    if max_age is None and view.ttl_us is not None:
        max_age = view.ttl_us / 1e6
    age = None if newest_us is None else (at_us - newest_us) / 1e6
    if newest_us is None:
        levels.append("warning")
        reasons.append("no write recorded")
    elif max_age is not None and age is not None and age > max_age:
        levels.append("critical")
        reasons.append(f"stale: newest event {age:.0f} s old, max age {max_age:.0f} s")
    writes, refused = counts.get("writes", 0), counts.get("refused", 0)
    rate = refused / (writes + refused) if writes + refused else 0.0
    if rate >= FAIL_CRITICAL:
        levels.append("critical")
        reasons.append(f"{rate:.1%} of rows refused by validation")
    elif rate >= FAIL_WARNING:
        levels.append("warning")
        reasons.append(f"{rate:.1%} of rows refused by validation")
    drifting: list[str] = []
    if drift is not None and drift.drifting:
        drifting = drift.drifting
        levels.append("warning")
        reasons.append(f"drifting: {', '.join(drifting)}")
    unjudged = [] if drift is None else drift.insufficient
    if unjudged:
        reasons.append(f"too few values to judge drift: {', '.join(unjudged)}")
    return ViewHealth(
        view=view.name,
        status=max(levels, key=LEVELS.index),
        newest_event=None if newest_us is None else from_us(newest_us),
        age_s=age,
        max_age_s=max_age,
        last_write=None if written_us is None else from_us(written_us),
        writes=writes,
        refused=refused,
        warnings=counts.get("warnings", 0),
        reads=counts.get("reads", 0),
        failure_rate=rate,
        drifting=drifting,
        reasons=reasons,
        insufficient_data=unjudged,
    )
