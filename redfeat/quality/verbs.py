"""FeatureStore verbs for quality and monitoring: dry-run validation, custom validators,
and the store's own statistics (``store.quality`` holds profiles, drift and health)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from ..core import columns as _batch
from ..core import metrics as _metrics
from ..core.columns import ValidationReport

if TYPE_CHECKING:
    from ..core.metrics import Metrics
    from ..core.registry import Registry
    from ..store import FeatureStore
    from .service import Quality
    from .validators import RowCheck


class QualityVerbs:
    """Mixed into FeatureStore."""

    # provided by FeatureStore
    registry: Registry
    quality: Quality
    metrics: Metrics

    def _fs(self) -> FeatureStore:
        return cast("FeatureStore", self)

    def validator(
        self, view: str, *, severity: str = "error", name: str | None = None
    ) -> Callable[[RowCheck], RowCheck]:
        """Register a custom row check: ``@store.validator("view", severity="warning")``
        (see ``store.quality.validator``)."""
        return self.quality.validator(view, severity=severity, name=name)

    def validate(
        self,
        view: str,
        rows: Any,
        *,
        entity_column: str = "entity_id",
        event_time_column: str | None = None,
    ) -> ValidationReport:
        """Dry run of write_many: every problem of every row (view, entity, field, rule,
        value, message), nothing written."""
        res = self.registry.get(view)
        return _batch.validate(
            res.codec,
            rows,
            entity_column=entity_column,
            event_time_column=event_time_column,
            check=functools.partial(self.quality.check_columns, res),
        )

    def stats(self, *, storage: bool = True) -> dict[str, Any]:
        """Per operation in this process: count, errors, mean/p50/p99 latency (ms); and, with
        ``storage``, server memory and this project's keys and bytes per view, series and
        quality data (sampled MEMORY USAGE; a bounded SCAN or RANDOMKEY sample, never KEYS)."""
        out: dict[str, Any] = {"operations": self.metrics.snapshot()}
        if storage:
            self.quality.flush()  # buffered profiles count as stored data
            out["storage"] = _metrics.storage(self._fs())
        return out
