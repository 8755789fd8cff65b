"""Per-view quality settings, kept in Redis so that every process sees them."""

from __future__ import annotations

from dataclasses import dataclass, field

from .drift import Thresholds


@dataclass(frozen=True, slots=True)
class QualityConfig:
    """Per-view quality settings (``store.quality.configure``)."""

    profile: bool = True  # profile writes
    validators: bool = True  # run custom validators
    sample_rate: float = 0.01  # share of read requests profiled (the serving log)
    max_age_s: float | None = None  # stale when the newest event is older (default: ttl)
    thresholds: Thresholds = field(default_factory=Thresholds)
