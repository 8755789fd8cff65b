"""Per-view quality settings, kept in Redis so that every process sees them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a feature is flagged. KS is reported but only judged if given thresholds."""

    psi_warning: float = 0.1
    psi_drift: float = 0.2
    js_warning: float = 0.05
    js_drift: float = 0.1
    ks_warning: float | None = None
    ks_drift: float | None = None
    null_rate_warning: float = 0.05
    null_rate_drift: float = 0.2
    out_of_range_warning: float = 0.05
    min_count: int = 30  # fewer values than this on either side: no judgement


@dataclass(frozen=True, slots=True)
class QualityConfig:
    """Per-view quality settings (``store.quality.configure``)."""

    profile: bool = True  # profile writes
    validators: bool = True  # run custom validators
    sample_rate: float = 0.01  # share of read requests profiled (the serving log)
    max_age_s: float | None = None  # stale when the newest event is older (default: ttl)
    thresholds: Thresholds = field(default_factory=Thresholds)
