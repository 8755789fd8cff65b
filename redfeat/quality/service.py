"""Feature quality: custom validators, profiles, baselines, drift and health (``store.quality``).

Every write is profiled by default (per view, per feature, per hour of event time) and a
sampled share of reads is profiled as the serving log; see ``profiles.py`` for what a
profile holds, ``drift.py`` for the metrics and ``health.py`` for the health rules.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, replace
from datetime import timedelta
from typing import Any

import msgspec

from ..core import args
from ..core.codec import decoder_for
from ..core.columns import validate as validate_rows
from ..core.context import Ctx
from ..core.records import Record, ValidationReport, Version
from ..core.registry import Resolved
from ..core.schema import Field
from ..core.time import duration_us, from_us, now_us, to_us
from ..errors import (
    BackendError,
    ConfigurationError,
    NotFoundError,
    Problem,
    RedfeatError,
    ValidationError,
    wrap_redis,
)
from ..online.scan import unlink_matching
from . import baselines as _baselines
from . import validators as _v
from .config import QualityConfig, Thresholds
from .drift import DriftReport, FeatureDrift, compare
from .health import HealthReport, ViewHealth, assess
from .profiles import FeatureProfile, Profile
from .recorder import HOUR_US, Recorder

__all__ = [
    "DriftReport",
    "FeatureDrift",
    "FeatureProfile",
    "HealthReport",
    "Profile",
    "Monitor",
    "Quality",
    "QualityConfig",
    "Thresholds",
    "ViewHealth",
]

_DEFAULT_CONFIG = QualityConfig()  # frozen: shared, not built on every read
log = logging.getLogger("redfeat.quality")
# The serving log's sampling draws from its own generator: the module-level one belongs to
# the program (a library must not move its seeded sequence, from any thread).
_SAMPLING = random.Random()
CONFIG_TTL = 1.0  # seconds a process trusts its copy of the per-view settings


def _us(value: Any, what: str) -> int:
    try:
        return to_us(value, what=what)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _readable(f: Field, col: list[Any]) -> list[Any]:
    """Checked bulk values as a read returns them (the codec's decoders: datetimes, numpy
    vectors), as validators see them on every path."""
    decode = decoder_for(f.dtype)
    if decode is None:
        return col
    return [None if v is None else decode(v) for v in col]


class Monitor:
    """What the store calls on every write and read (a ``WriteObserver``): custom
    validators, profiles and counters. Users reach it through ``store.quality``."""

    def __init__(self, ctx: Ctx) -> None:
        self._ctx = ctx
        self.recorder = Recorder(ctx.client, ctx.keys)
        self.validators: dict[str, list[_v.Validator]] = {}
        self._config: dict[str, QualityConfig] = {}
        self._config_at = -math.inf
        self.lock = threading.Lock()
        self.failures = 0  # monitoring errors swallowed so that writes and reads never fail

    # -- settings -----------------------------------------------------------------------

    def config(self, view: str) -> QualityConfig:
        if time.monotonic() - self._config_at > CONFIG_TTL:
            try:
                self.load_config()
            except BackendError as exc:
                # the write path must not fail on monitoring: keep the last known settings
                # (or the defaults) and try again after CONFIG_TTL
                self._config_at = time.monotonic()
                self._failed("reading settings", exc)
        return self._config.get(view) or _DEFAULT_CONFIG

    def _failed(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        log.warning("quality monitoring: %s failed (the write itself is done): %s", what, exc)

    def load_config(self) -> None:
        """Read every view's settings from Redis now (BackendError if it cannot)."""
        with wrap_redis("reading quality settings failed"):
            raw: dict[bytes, bytes] = self._ctx.client.hgetall(self._ctx.keys.quality_config)  # type: ignore[assignment]
        conf = {}
        for k, v in raw.items():
            d = msgspec.msgpack.decode(v)
            d["thresholds"] = Thresholds(**d.get("thresholds", {}))
            conf[k.decode()] = QualityConfig(**d)
        self._config, self._config_at = conf, time.monotonic()

    def reload(self) -> None:
        """Read the settings again at the next use (they were changed)."""
        self._config_at = -math.inf

    def _checks(self, view: str) -> list[_v.Validator]:
        checks = self.validators.get(view)
        if not checks or not self.config(view).validators:
            return []
        return checks

    def check_row(self, res: Resolved, entity: str, payload: bytes) -> None:
        """Run custom validators on one encoded row (decoded, so that they see the values a
        read returns, as on the bulk path): raise on errors, count and log warnings."""
        checks = self._checks(res.name)
        if not checks:
            return
        row = res.codec.decode(payload)
        errors, warnings = _v.run_rows(checks, [(None, entity, row)])
        if errors:
            raise ValidationError(errors[None])
        self._warn(res.name, warnings)

    def check_columns(
        self, res: Resolved, ids: list[str], checked: dict[str, list[Any]], problems: Any
    ) -> list[Problem]:
        """batch.ColumnCheck: custom validators over the rows that passed the schema."""
        checks = self._checks(res.name)
        if not checks:
            return []
        names = list(checked)
        cols = [_readable(res.codec.fields[n], c) for n, c in checked.items()]
        rows = [
            (i, ids[i], dict(zip(names, vals, strict=True)))
            for i, vals in enumerate(zip(*cols, strict=True))
            if i not in problems
        ]
        errors, warnings = _v.run_rows(checks, rows)  # type: ignore[arg-type]
        for i, ps in errors.items():
            problems.setdefault(i, []).extend(ps)
        return [w for w in warnings if w.row not in errors]  # a refused row is not written

    def _warn(self, view: str, warnings: list[Problem]) -> None:
        if warnings:
            self.recorder.count(view, "warnings", len(warnings))
            for p in warnings[:5]:  # reported in WriteReport.warnings and counted too
                log.info("%s", p)

    # -- recording hooks (called by the store) -----------------------------------------

    def written(self, res: Resolved, version: Version, et: int) -> None:
        """One new version stored (not a retry, not dropped late data), event time ``et`` us."""
        try:
            self.recorder.count(res.name, "writes")
            self.recorder.saw(res.name, et)
            if self.config(res.name).profile:
                self.recorder.add_row(res.name, res.codec.fields, version.values, et)
        except Exception as exc:
            self._failed("recording a write", exc)

    def written_columns(
        self, res: Resolved, out: Mapping[str, Any], refused: Any, flat: list[int]
    ) -> None:
        """Profile the rows of a bulk write the server stored as new versions (``flat``:
        the WRITE statuses of the valid rows, in order; retries and dropped late rows are
        not new data)."""
        try:
            ets: list[int] = out["ets"]
            checked: dict[str, list[Any]] = out["checked"]
            statuses = flat[1::2]
            rows = [i for i in range(len(ets)) if i not in refused]  # in the order written
            keep = [i for i, s in zip(rows, statuses, strict=True) if s in (0, 1)]
            self.recorder.count(res.name, "writes", len(keep))
            self.recorder.count(res.name, "refused", len(refused))
            self._warn(res.name, out.get("warnings", []))
            if not keep:
                return
            if len(keep) < len(ets):
                checked = {k: [c[i] for i in keep] for k, c in checked.items()}
                ets = [ets[i] for i in keep]
            self.recorder.saw(res.name, max(ets))
            if self.config(res.name).profile:
                self.recorder.add_columns(res.name, res.codec.fields, checked, ets)
        except Exception as exc:
            self._failed("recording a bulk write", exc)

    def read_hit(self, view: str) -> None:
        """Count a read served by the near cache (no values to profile)."""
        try:
            self.recorder.count(view, "reads")
        except Exception as exc:
            self._failed("recording a read", exc)

    def refused(self, view: str, n: int = 1) -> None:
        try:
            self.recorder.count(view, "refused", n)
        except Exception as exc:
            self._failed("counting refused rows", exc)

    @contextlib.contextmanager
    def refusals(self, view: str) -> Iterator[None]:
        """Count a refused single write (ValidationError) and let it through."""
        try:
            yield
        except ValidationError:
            self.refused(view)
            raise

    def read(self, res: Resolved, rows: list[Any], features: Any = None) -> None:
        """Count a read request; profile it if it falls in the sample (the serving log):
        each request is sampled independently, only the features it read are profiled."""
        try:
            self.recorder.count(res.name, "reads")
            rate = self.config(res.name).sample_rate
            if rate <= 0 or _SAMPLING.random() >= rate:
                return
            fields = res.codec.fields
            if features is not None:
                fields = {f: fields[f] for f in features if f in fields}
            now = now_us()
            for r in rows:
                values = r.values if isinstance(r, Record) else r  # with_meta reads
                if isinstance(values, Mapping):
                    self.recorder.add_row(res.name, fields, values, now, source="read")
        except Exception as exc:
            self._failed("recording a read", exc)

    def forget(self, view: str) -> int:
        """Remove a view's quality data, settings and freshness (it is being deleted);
        returns the number of keys removed."""
        self.recorder.forget(view)
        k = self._ctx.keys
        with wrap_redis(f"view {view!r}: removing its quality data failed"):
            pipe = self._ctx.client.pipeline(transaction=False)
            pipe.hdel(k.quality_config, view)
            pipe.zrem(k.newest_event, view)
            pipe.zrem(k.last_write, view)
            pipe.execute()
        self._config_at = -math.inf
        return unlink_matching(self._ctx, k.quality_pattern(view), what=f"view {view!r}")

    def flush(self) -> None:
        """Send buffered profiles and counters to Redis now (also done every ~2 s)."""
        self.recorder.flush()

    def close(self) -> None:
        """Flush and stop recording (the store closes)."""
        self.recorder.close()


class Quality:
    """``store.quality``: settings, custom validators, profiles, baselines, drift and health
    of one store's views."""

    def __init__(self, ctx: Ctx, monitor: Monitor) -> None:
        self._ctx = ctx
        self._monitor = monitor
        self.recorder = monitor.recorder  # counters and profiles as stored

    @property
    def failures(self) -> int:
        """Monitoring errors swallowed so far (writes and reads never fail on them)."""
        return self._monitor.failures

    def config(self, view: str) -> QualityConfig:
        """A view's quality settings (re-read from Redis at most every second)."""
        return self._monitor.config(view)

    def configure(
        self,
        view: str,
        *,
        profile: bool | None = None,
        validators: bool | None = None,
        sample_rate: float | None = None,
        max_age: Any = None,
        thresholds: Thresholds | None = None,
    ) -> QualityConfig:
        """Change a view's quality settings (kept in Redis: every process sees them)."""
        self._ctx.registry.get(view)
        self._monitor.load_config()
        cur = self._monitor.config(view)
        changes: dict[str, Any] = {}
        for name, val in (("profile", profile), ("validators", validators)):
            if val is not None:
                if not isinstance(val, bool):
                    raise ConfigurationError(f"{name} must be True or False, got {val!r}")
                changes[name] = val
        if sample_rate is not None:
            if (
                isinstance(sample_rate, bool)
                or not isinstance(sample_rate, int | float)
                or not 0 <= sample_rate <= 1
            ):
                raise ConfigurationError(f"sample_rate must be in [0, 1], got {sample_rate!r}")
            changes["sample_rate"] = float(sample_rate)
        if max_age is not None:
            changes["max_age_s"] = duration_us(max_age, what="max_age") / 1e6
        if thresholds is not None:
            if not isinstance(thresholds, Thresholds):
                raise ConfigurationError("thresholds must be a redfeat.quality.Thresholds")
            changes["thresholds"] = thresholds
        new = replace(cur, **changes)
        with wrap_redis(f"view {view!r}: saving quality settings failed"):
            self._ctx.client.hset(
                self._ctx.keys.quality_config, view, msgspec.msgpack.encode(asdict(new))
            )
        self._monitor.reload()
        return new

    # -- validators ---------------------------------------------------------------------

    def validator(
        self, view: str, *, severity: str = "error", name: str | None = None
    ) -> Callable[[_v.RowCheck], _v.RowCheck]:
        """Decorator: ``@store.quality.validator("view", severity="warning")``."""

        def decorate(fn: _v.RowCheck) -> _v.RowCheck:
            self.add_validator(view, fn, severity=severity, name=name)
            return fn

        return decorate

    def add_validator(
        self, view: str, fn: _v.RowCheck, *, severity: str = "error", name: str | None = None
    ) -> None:
        self._ctx.registry.get(view)
        v = _v.make(view, fn, severity, name)
        with self._monitor.lock:
            rest = [x for x in self._monitor.validators.get(view, []) if x.name != v.name]
            self._monitor.validators[view] = [*rest, v]

    def remove_validator(self, view: str, name: str) -> None:
        with self._monitor.lock:
            rest = [x for x in self._monitor.validators.get(view, []) if x.name != name]
            if len(rest) == len(self._monitor.validators.get(view, [])):
                raise NotFoundError(f"view {view!r} has no validator {name!r}")
            self._monitor.validators[view] = rest

    def validators(self, view: str) -> list[tuple[str, str]]:
        """(name, severity) of the view's validators in this process."""
        return [(v.name, v.severity) for v in self._monitor.validators.get(view, [])]

    def validate(
        self,
        view: str,
        rows: Any,
        *,
        entity_column: str = "entity_id",
        event_time_column: str | None = None,
    ) -> ValidationReport:
        """Dry run of write_many: every problem of every row, nothing written."""
        res = self._ctx.registry.get(view)
        return validate_rows(
            res.codec,
            rows,
            entity_column=entity_column,
            event_time_column=event_time_column,
            check=functools.partial(self._monitor.check_columns, res),
        )

    def flush(self) -> None:
        """Send buffered profiles and counters to Redis now (also done every ~2 s)."""
        self._monitor.flush()

    # -- profiles and baselines ---------------------------------------------------------

    def _span(self, start: Any, end: Any, default: timedelta) -> tuple[int, int]:
        hi = now_us() + 1 if end is None else _us(end, "end")
        lo = hi - default // timedelta(microseconds=1) if start is None else _us(start, "start")
        if lo >= hi:
            raise ConfigurationError(
                f"start must be before end, got {from_us(lo)} .. {from_us(hi)}"
            )
        return lo, hi

    def profile(
        self, view: str, *, start: Any = None, end: Any = None, source: str = "write"
    ) -> Profile:
        """Merged profile of the hours overlapping [start, end) (default: the last 24 h).
        ``source="read"`` gives the sampled serving log."""
        if source not in ("write", "read"):
            raise ConfigurationError(f"source must be 'write' or 'read', got {source!r}")
        self._ctx.registry.get(view)
        lo, hi = self._span(start, end, timedelta(days=1))
        prof = self._monitor.recorder.load(view, lo, hi, source)
        prof.start, prof.end = from_us(lo // HOUR_US * HOUR_US), from_us(hi)
        return prof

    def set_baseline(self, view: str, start: Any, end: Any) -> Profile:
        """Make the recorded profile of [start, end) the view's baseline."""
        prof = self.profile(view, start=start, end=end)
        if prof.rows == 0:
            raise NotFoundError(
                f"view {view!r}: no profiled writes between {start} and {end}; write data "
                "first, or use set_baseline_from(view, frame)"
            )
        self._save_baseline(view, prof, {"from": "profiles"})
        return prof

    def set_baseline_from(self, view: str, frame: Any) -> Profile:
        """Make a frame (e.g. the training frame) the view's baseline. Columns may be named
        ``field``, ``view:field`` or ``view__field``; values go through the schema's checks
        and conversions as a write would (a bad value: ValidationError, nothing set)."""
        res = self._ctx.registry.get(view)
        prof = _baselines.profile_of_frame(res, args.rows("set_baseline_from: frame", frame))
        self._save_baseline(view, prof, {"from": "frame", "rows": prof.rows})
        return prof

    def _save_baseline(self, view: str, prof: Profile, meta: dict[str, Any]) -> None:
        _baselines.save(self._ctx.client, self._ctx.keys, view, prof, meta)

    def baseline(self, view: str) -> tuple[Profile, dict[str, Any]] | None:
        """The stored baseline and its description, or None."""
        return _baselines.load(self._ctx.client, self._ctx.keys, view)

    # -- drift and health ---------------------------------------------------------------

    def drift(
        self,
        view: str,
        *,
        start: Any = None,
        end: Any = None,
        baseline: Profile | tuple[Any, Any] | None = None,
        thresholds: Thresholds | None = None,
        source: str = "write",
    ) -> DriftReport:
        """Drift of [start, end) (default: the last 24 h) against the stored baseline, a
        Profile, or the profile of a (start, end) pair."""
        self._ctx.registry.get(view)
        if thresholds is not None and not isinstance(thresholds, Thresholds):
            raise ConfigurationError("thresholds must be a redfeat.quality.Thresholds")
        th = thresholds or self._monitor.config(view).thresholds
        if baseline is None:
            stored = self.baseline(view)
            if stored is None:
                raise NotFoundError(
                    f"view {view!r} has no baseline: set one with "
                    "store.quality.set_baseline(view, start, end) or set_baseline_from(view, "
                    "frame), or pass baseline=(start, end)"
                )
            base, meta = stored
        elif isinstance(baseline, Profile):
            base, meta = baseline, {"from": "argument"}
        elif isinstance(baseline, tuple | list) and len(baseline) == 2:
            b_start, b_end = baseline
            base = self.profile(view, start=b_start, end=b_end)
            meta = {"from": "profiles", "start": str(b_start), "end": str(b_end)}
        else:
            raise ConfigurationError(
                f"view {view!r}: baseline must be None (the stored one), a Profile or a "
                f"(start, end) pair, got {type(baseline).__name__}"
            )
        if base.rows == 0:
            raise NotFoundError(
                f"view {view!r}: the baseline holds no profiled rows ({meta}); pick a time "
                "range with data, or set_baseline_from(view, frame)"
            )
        cur = self.profile(view, start=start, end=end, source=source)
        report = compare(base, cur, th, start=cur.start, end=cur.end)
        report.baseline = meta
        return report

    def health(self, *, window: Any = "24h", now: Any = None) -> HealthReport:
        """Per view: freshness, volumes, validation failure rate, drifting features; and one
        overall status ("ok", "warning" or "critical")."""
        at = now_us() if now is None else _us(now, "now")
        span = duration_us(window, what="window")
        newest, written = self._monitor.recorder.freshness()
        views: dict[str, ViewHealth] = {}
        for v in self._ctx.registry.views():
            counts = self._monitor.recorder.counters(v.name, at - span, at + 1)
            report, problem = None, None
            try:
                stored = self.baseline(v.name)  # read once, handed to drift
                if stored is not None:
                    report = self.drift(
                        v.name, start=from_us(at - span), end=from_us(at + 1), baseline=stored[0]
                    )
            except (RedfeatError, ValueError) as exc:  # one view's bad baseline: a reason
                problem = f"drift check failed: {exc}"
            views[v.name] = assess(
                v,
                self._monitor.config(v.name),
                at,
                newest.get(v.name),
                written.get(v.name),
                counts,
                report,
            )
            if problem is not None:
                views[v.name].reasons.append(problem)
                if views[v.name].status == "ok":
                    views[v.name].status = "warning"
        return HealthReport.of(from_us(at), views)
