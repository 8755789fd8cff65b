"""Time series as a service: series, series_list, mrange, correlate, maintenance, and
the store's alert rules."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from ..core.context import Ctx
from ..core.time import Duration
from ..errors import ConfigurationError
from . import multi
from .alerts import Alerts
from .series import Series
from .spec import (
    SeriesRegistry,
    SeriesSpec,
    build_spec,
    check_labels,
    check_name,
    duration_ms,
    rollup_list,
)
from .storage import trim

_DEFAULT_ROLLUPS = ("1m", "5m", "1h", "1d")


def _kept_rollup_retention(
    name: str,
    old: SeriesSpec,
    rollups: Iterable[Duration] | None,
    given: Duration | Mapping[str, Duration] | None,
) -> Duration | Mapping[Any, Duration] | None:
    """The rollup retention of a reopened series: the stored one for every rollup not
    named in ``given`` (reopening without it must not reset retention to the defaults,
    or the next trim deletes tiles). Changed rollups are refused by the registry anyway."""
    if rollups is not None:
        wanted = rollup_list(name, rollups)
        buckets = {duration_ms(r, what=f"series {name!r} rollup") for r in wanted}
        if buckets != {r.bucket_ms for r in old.rollups}:
            return given
    if given is not None and not isinstance(given, Mapping):
        return given  # one retention for every rollup
    out: dict[Any, Duration] = {
        timedelta(milliseconds=r.bucket_ms): timedelta(milliseconds=r.retention_ms)
        for r in old.rollups
    }
    # given keys go after the stored ones: build_spec applies them last, so they win
    out.update(given or {})
    return out


class TimeSeriesAdmin:
    """``store.timeseries``: maintenance over every series of the project."""

    def __init__(self, ctx: Ctx, registry: SeriesRegistry) -> None:
        self._ctx = ctx
        self._registry = registry

    def specs(self, filters: Iterable[str] | str = ()) -> list[SeriesSpec]:
        """The definitions of the series whose labels match every filter, by name."""
        return multi.select(self._registry.all(), filters)

    def open(self, name: str) -> Series:
        """An existing series (NotFoundError otherwise: unlike ``store.series``, this never
        creates one)."""
        return Series(self._ctx, self._registry, self._registry.require(name))

    def cleanup(self) -> int:
        """Apply retention to every series in the registry now (writes also do it, amortised);
        returns the number of chunks and tile pages removed. Walks the registry, never KEYS."""
        return sum(trim(self._ctx, spec) for spec in self._registry.all())


class SeriesService:
    """The time series and alert rules of one store."""

    def __init__(self, ctx: Ctx) -> None:
        self._ctx = ctx
        self._registry = SeriesRegistry(ctx.client, ctx.keys)
        self.admin = TimeSeriesAdmin(ctx, self._registry)
        # one instance per store, so callbacks registered with on_transition are kept
        self.alerts = Alerts(ctx, self._registry)

    def _ts(self) -> tuple[Ctx, SeriesRegistry]:
        return self._ctx, self._registry

    def series(
        self,
        name: str,
        *,
        labels: Mapping[str, Any] | None = None,
        retention: Duration | None = None,
        rollups: Iterable[Duration] | None = None,
        rollup_retention: Duration | Mapping[str, Duration] | None = None,
        duplicate_policy: str | None = None,
        max_points: int | None = None,
        precision: int | None = None,
    ) -> Series:
        """Create or open the time series ``name`` (its definition lives in the registry).

        On creation, None means the default: no labels, retention "7d" (raw points, counted
        back from the newest), rollups ("1m", "5m", "1h", "1d") kept 7d/30d/90d/365d,
        duplicate_policy "last" (block, first, last, min, max, sum), no count cap, values
        kept exactly. Opening an existing series keeps what is not given and updates what
        is (rollup_retention per rollup: a mapping naming one rollup leaves the others as
        stored); its rollups cannot change."""
        ctx, reg = self._ts()
        old = reg.get(check_name(name))
        if old is None:
            spec = build_spec(
                name,
                labels,
                "7d" if retention is None else retention,
                _DEFAULT_ROLLUPS if rollups is None else rollups,
                rollup_retention,
                "last" if duplicate_policy is None else duplicate_policy,
                max_points,
                precision,
            )
            spec = replace(spec, gen=uuid.uuid4().hex[:16])
            if reg.create(spec):
                return Series(ctx, reg, spec)
            # another process created it between our read and write: open its definition
            old = reg.require(name)

        def ms(x: int) -> timedelta:
            return timedelta(milliseconds=x)

        kept_retention = _kept_rollup_retention(name, old, rollups, rollup_retention)
        spec = build_spec(
            name,
            old.labels if labels is None else check_labels(name, labels),
            ms(old.retention_ms) if retention is None else retention,
            [ms(r.bucket_ms) for r in old.rollups] if rollups is None else rollups,
            kept_retention,
            old.duplicate_policy if duplicate_policy is None else duplicate_policy,
            old.max_points if max_points is None else max_points,
            old.precision if precision is None else precision,
        )
        spec = replace(spec, gen=old.gen)
        if spec != old:
            # a new generation: live handles elsewhere see it on their next write
            spec = replace(spec, gen=uuid.uuid4().hex[:16])
            reg.put(spec, old)
        return Series(ctx, reg, spec)

    def series_list(self, filters: Iterable[str] | str = ()) -> list[str]:
        """Names of the series whose labels match every filter (``l=v``, ``l!=v``,
        ``l=(a,b)``, ``l!=(a,b)``, ``l=`` no such label, ``l!=`` has it); sorted."""
        _, reg = self._ts()
        return [s.name for s in multi.select(reg.all(), filters)]

    def mrange(
        self,
        filters: Iterable[str] | str,
        start: Any = None,
        end: Any = None,
        *,
        bucket: Any = None,
        agg: str = "avg",
        group_by: str | None = None,
        reduce: str | None = None,
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``range`` over every series matching the filters, like TS.MRANGE: a dict of
        series name -> (timestamps, values), by name. With ``group_by`` (a label) and
        ``reduce`` (avg, sum, min, max, range, count, std, var), one entry per label value,
        keyed ``"<label>=<value>"``, reducing the group's series per timestamp."""
        ctx, reg = self._ts()
        specs = multi.select(reg.all(), filters)
        if (group_by is None) != (reduce is None):
            raise ConfigurationError("mrange: group_by and reduce go together")
        results: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for spec in specs:
            results[spec.name] = Series(ctx, reg, spec).range(start, end, bucket=bucket, agg=agg)
        if group_by is None or reduce is None:
            return results
        return multi.group(results, specs, group_by, reduce)

    def correlate(
        self, names: Iterable[str], start: Any, end: Any, *, bucket: Any = "1m"
    ) -> pd.DataFrame:
        """Pearson correlation matrix of the series' bucket means over the buckets they all
        have (read from tiles when a rollup fits). Raises InsufficientDataError below 3."""
        ctx, reg = self._ts()
        if isinstance(names, str | bytes) or not isinstance(names, Iterable):
            raise ConfigurationError(f"correlate: names must be a list, got {names!r:.60}")
        names = list(names)
        if len(names) < 2:
            raise ConfigurationError("correlate needs at least two series")
        cols: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for n in names:
            spec: SeriesSpec = reg.require(n)
            cols[n] = Series(ctx, reg, spec).range(start, end, bucket=bucket, agg="avg")
        return multi.pearson(cols)
