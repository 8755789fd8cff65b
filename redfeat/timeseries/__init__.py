"""Time series on core Redis types: compressed raw chunks, rollup tiles, retention,
anomalies, alerts. See ``FeatureStore.series`` and ``FeatureStore.alerts``. The names
below load on first use (pandas, pcodec)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .alert_rules import AlertRule, AlertStatus, AlertTransition
    from .alerts import Alerts
    from .analysis import Baseline, InsufficientDataError
    from .series import Series
    from .service import TimeSeriesAdmin
    from .spec import SeriesSpec

_WHERE = {
    "AlertRule": ".alert_rules",
    "AlertStatus": ".alert_rules",
    "AlertTransition": ".alert_rules",
    "Alerts": ".alerts",
    "Baseline": ".analysis",
    "InsufficientDataError": ".analysis",
    "Series": ".series",
    "SeriesSpec": ".spec",
    "TimeSeriesAdmin": ".service",
}
__all__ = [
    "AlertRule",
    "AlertStatus",
    "AlertTransition",
    "Alerts",
    "Baseline",
    "InsufficientDataError",
    "Series",
    "SeriesSpec",
    "TimeSeriesAdmin",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(where, __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
