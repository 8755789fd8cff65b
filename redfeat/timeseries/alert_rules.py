"""Alert rules: their parameters, validation, stored form, and the state machine.

Nothing here talks to Redis: ``step`` is a pure function of (rule, state, measurement,
now), so every evaluator computes the same next state from the same stored one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import msgspec

from ..core.time import Duration, from_us
from ..errors import ConfigurationError
from .analysis import METHODS, default_threshold
from .spec import duration_ms, label_of
from .tiles import AGGS

RULE_TYPES = ("threshold", "anomaly")
CONDITIONS = ("above", "below", "outside", "equals")
NO_DATA = ("keep", "ok", "alerting")
STATES = ("ok", "pending", "firing", "resolved")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_ZERO = re.compile(r"^\s*0+(\.0*)?\s*(us|ms|s|m|h|d|w)?\s*$")

Threshold = float | tuple[float, float] | None


def check_alert_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigurationError(
            f"alert name {name!r} is not allowed: use 1-128 ASCII letters, digits, '_', '-' "
            "or '.' (it names keys and channels; nothing was changed)"
        )
    return name


def span_ms(value: Duration | None, *, what: str) -> int:
    """A duration in ms where 0 (or None, "0s", timedelta(0)) means "none"."""
    if value is None or (isinstance(value, timedelta) and value == timedelta(0)):
        return 0
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return 0
    if isinstance(value, str) and _ZERO.match(value):
        return 0
    return duration_ms(value, what=what)


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(f"{what} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class AlertRule:
    """One rule's plain parameters (what is stored: never code)."""

    name: str
    series: str
    rule: str  # "threshold" or "anomaly"
    condition: str  # one of CONDITIONS; "anomaly" for anomaly rules
    threshold: Threshold  # (lo, hi) for "outside"; the score limit for anomaly rules
    tolerance: float
    window_ms: int
    agg: str
    for_ms: int
    cooldown_ms: int
    no_data: str
    method: str | None = None
    baseline_ms: int = 0

    def holds(self, value: float) -> bool:
        """Whether a threshold rule's condition is true for ``value``."""
        t = self.threshold
        if self.condition == "outside":
            assert isinstance(t, tuple)
            return value < t[0] or value > t[1]
        assert isinstance(t, float)
        if self.condition == "above":
            return value > t
        if self.condition == "below":
            return value < t
        return abs(value - t) <= self.tolerance

    def describe(self) -> str:
        """'avg(5m) > 90', 'max(1m) outside [10, 20]', 'zscore(5m) > 3 vs 1d'."""
        w = label_of(self.window_ms)
        if self.rule == "anomaly":
            return f"{self.method}({w}) > {self.threshold:g} vs {label_of(self.baseline_ms)}"
        t = self.threshold
        if isinstance(t, tuple):
            return f"{self.agg}({w}) outside [{t[0]:g}, {t[1]:g}]"
        assert t is not None
        if self.condition == "equals":
            return f"{self.agg}({w}) == {t:g} ± {self.tolerance:g}"
        return f"{self.agg}({w}) {'>' if self.condition == 'above' else '<'} {t:g}"

    def to_json(self) -> bytes:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        if isinstance(self.threshold, tuple):
            d["threshold"] = list(self.threshold)
        return msgspec.json.encode(d)

    @classmethod
    def from_json(cls, raw: bytes) -> AlertRule:
        d = msgspec.json.decode(raw)
        if isinstance(d["threshold"], list):
            d["threshold"] = (float(d["threshold"][0]), float(d["threshold"][1]))
        elif d["threshold"] is not None:
            d["threshold"] = float(d["threshold"])
        return cls(**d)


def build_rule(
    name: str,
    series: str,
    *,
    rule: str,
    condition: str | None,
    threshold: Any,
    tolerance: Any,
    window: Duration,
    agg: str,
    for_: Duration | None,
    cooldown: Duration | None,
    no_data: str,
    method: str | None,
    baseline: Duration,
) -> AlertRule:
    """Check every parameter; raise ConfigurationError naming the rule and the fix."""
    check_alert_name(name)
    what = f"alert {name!r}"
    if rule not in RULE_TYPES:
        raise ConfigurationError(f"{what}: rule {rule!r} is not one of {RULE_TYPES}")
    if no_data not in NO_DATA:
        raise ConfigurationError(f"{what}: no_data {no_data!r} is not one of {NO_DATA}")
    window_ms = duration_ms(window, what=f"{what} window")
    for_ms = span_ms(for_, what=f"{what} for_")
    cooldown_ms = span_ms(cooldown, what=f"{what} cooldown")
    tol = _finite(tolerance, f"{what}: tolerance")
    if tol < 0:
        raise ConfigurationError(f"{what}: tolerance must be >= 0, got {tolerance!r}")
    common = dict(
        name=name,
        series=series,
        rule=rule,
        window_ms=window_ms,
        for_ms=for_ms,
        cooldown_ms=cooldown_ms,
        no_data=no_data,
    )
    if rule == "anomaly":
        if condition is not None:
            raise ConfigurationError(
                f"{what}: an anomaly rule takes no condition (it fires when a point's score "
                "passes the threshold); drop condition= or use rule='threshold'"
            )
        m = "zscore" if method is None else method
        if m not in METHODS:
            raise ConfigurationError(f"{what}: method {m!r} is not one of {METHODS}")
        limit = default_threshold(m)
        if threshold is not None:
            limit = _finite(threshold, f"{what}: threshold")
        if limit <= 0:
            raise ConfigurationError(f"{what}: an anomaly threshold must be > 0, got {limit!r}")
        return AlertRule(
            **common,  # type: ignore[arg-type]
            condition="anomaly",
            threshold=limit,
            tolerance=0.0,
            agg="avg",
            method=m,
            baseline_ms=duration_ms(baseline, what=f"{what} baseline"),
        )
    if method is not None:
        raise ConfigurationError(f"{what}: method= is for rule='anomaly' only")
    cond = "above" if condition is None else condition
    if cond not in CONDITIONS:
        raise ConfigurationError(f"{what}: condition {cond!r} is not one of {CONDITIONS}")
    if agg not in AGGS:
        raise ConfigurationError(f"{what}: agg {agg!r} is not one of {AGGS}")
    if tol and cond != "equals":
        raise ConfigurationError(f"{what}: tolerance applies to condition 'equals' only")
    t: Threshold
    if cond == "outside":
        if not isinstance(threshold, tuple | list) or len(threshold) != 2:
            raise ConfigurationError(
                f"{what}: condition 'outside' needs threshold=(lo, hi), got {threshold!r}"
            )
        lo = _finite(threshold[0], f"{what}: threshold lo")
        hi = _finite(threshold[1], f"{what}: threshold hi")
        if lo > hi:
            raise ConfigurationError(f"{what}: threshold (lo, hi) has lo {lo:g} > hi {hi:g}")
        t = (lo, hi)
    else:
        if threshold is None:
            raise ConfigurationError(f"{what}: condition {cond!r} needs a threshold")
        t = _finite(threshold, f"{what}: threshold")
    return AlertRule(**common, condition=cond, threshold=t, tolerance=tol, agg=agg)  # type: ignore[arg-type]


@dataclass(frozen=True)
class AlertState:
    """A rule's stored state. ``since_ms``: when it entered ``state``; ``resolved_ms``:
    the last resolve (the cooldown counts from it); ``no_data``: the last evaluation
    found nothing to judge."""

    state: str = "ok"
    since_ms: int | None = None
    value: float | None = None
    no_data: bool = False
    resolved_ms: int | None = None
    evaluated_ms: int | None = None

    def to_json(self) -> bytes:
        return msgspec.json.encode({k: getattr(self, k) for k in self.__dataclass_fields__})

    @classmethod
    def from_json(cls, raw: bytes | None) -> AlertState:
        return cls() if raw is None else cls(**msgspec.json.decode(raw))


def step(
    rule: AlertRule, st: AlertState, holds: bool | None, value: float | None, now_ms: int
) -> AlertState:
    """The next state. ``holds`` None: no data in the window (handled by ``rule.no_data``).

    ok/resolved --true--> pending (firing at once when for_ is 0 and no cooldown runs);
    pending --true for for_, cooldown over--> firing; pending --false--> ok;
    firing --false--> resolved; resolved --false--> ok. A cooldown holds the rule in
    pending: it fires when the cooldown ends if the condition still holds."""
    if holds is None:
        if rule.no_data == "keep":
            return replace(st, value=None, no_data=True, evaluated_ms=now_ms)
        holds = rule.no_data == "alerting"
    cur = st.state
    if holds:
        if cur == "firing":
            new = "firing"
        else:
            since = st.since_ms if cur == "pending" and st.since_ms is not None else now_ms
            cooled = st.resolved_ms is None or now_ms >= st.resolved_ms + rule.cooldown_ms
            new = "firing" if now_ms - since >= rule.for_ms and cooled else "pending"
    else:
        new = {"firing": "resolved", "pending": "ok", "resolved": "ok"}.get(cur, "ok")
    if new == cur:
        return replace(st, value=value, no_data=False, evaluated_ms=now_ms)
    return AlertState(
        state=new,
        since_ms=now_ms,
        value=value,
        no_data=False,
        resolved_ms=now_ms if new == "resolved" else st.resolved_ms,
        evaluated_ms=now_ms,
    )


@dataclass(frozen=True, slots=True)
class AlertTransition:
    """One state change of one rule, as published and kept in its history."""

    rule: str
    series: str
    from_state: str
    to_state: str
    at: datetime
    value: float | None
    threshold: Threshold
    id: str = ""  # the history stream entry id ("" until stored)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "series": self.series,
            "from": self.from_state,
            "to": self.to_state,
            "at_ms": int((self.at - from_us(0)) / timedelta(milliseconds=1)),
            "value": self.value,
            "threshold": list(self.threshold)
            if isinstance(self.threshold, tuple)
            else self.threshold,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], id: str = "") -> AlertTransition:
        t = d.get("threshold")
        return cls(
            rule=d["rule"],
            series=d["series"],
            from_state=d["from"],
            to_state=d["to"],
            at=from_us(int(d["at_ms"]) * 1000),
            value=None if d.get("value") is None else float(d["value"]),
            threshold=(float(t[0]), float(t[1])) if isinstance(t, list) else t,
            id=id,
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> AlertTransition:
        """Decode a message of the ``rf:<project>:alerts:events`` channel."""
        return cls.from_dict(msgspec.json.decode(raw))


@dataclass(frozen=True)
class AlertStatus:
    """A rule with its current state (``alerts.list()``)."""

    rule: AlertRule
    state: str
    since: datetime | None
    value: float | None
    no_data: bool
    evaluated_at: datetime | None

    @property
    def name(self) -> str:
        return self.rule.name
