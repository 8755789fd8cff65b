"""Feature quality: custom validators, profiles, baselines, drift and health (``store.quality``).

Every write is profiled by default (per view, per feature, per hour of event time) and a
sampled share of reads is profiled as the serving log; see ``profiles.py`` for what a
profile holds, ``drift.py`` for the metrics and ``health.py`` for the health rules.
"""

from __future__ import annotations

from .config import QualityConfig, Thresholds
from .drift import DriftReport, FeatureDrift
from .health import HealthReport, ViewHealth
from .profiles import FeatureProfile, Profile
from .service import Quality

__all__ = [
    "DriftReport",
    "FeatureDrift",
    "FeatureProfile",
    "HealthReport",
    "Profile",
    "Quality",
    "QualityConfig",
    "Thresholds",
    "ViewHealth",
]
