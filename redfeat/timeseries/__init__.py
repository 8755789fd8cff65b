"""Time series on core Redis types: compressed raw chunks, rollup tiles, retention,
anomalies. See ``FeatureStore.series``."""

from __future__ import annotations

from .analysis import Baseline, InsufficientDataError
from .series import Series
from .spec import SeriesSpec

__all__ = ["Baseline", "InsufficientDataError", "Series", "SeriesSpec"]
