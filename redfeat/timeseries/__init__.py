"""Time series on core Redis types: compressed raw chunks, rollup tiles, retention,
anomalies, alerts. See ``FeatureStore.series`` and ``FeatureStore.alerts``."""

from __future__ import annotations

from .alert_rules import AlertRule, AlertStatus, AlertTransition
from .alerts import Alerts
from .analysis import Baseline, InsufficientDataError
from .series import Series
from .spec import SeriesSpec

__all__ = [
    "AlertRule",
    "AlertStatus",
    "AlertTransition",
    "Alerts",
    "Baseline",
    "InsufficientDataError",
    "Series",
    "SeriesSpec",
]
