"""Alerts on time series: rules, state and history kept in Redis, evaluated on demand.

Keys (``rf:<project>:alerts:``): ``rules`` and ``state`` (hashes, rule name -> JSON of
plain parameters / state), ``ver`` (hash, rule name -> state version), ``history:<name>``
(a stream capped at ~1000 transitions) and the pub/sub channel ``events`` (JSON). A
version only grows: ``remove`` increments it rather than deleting it (one small field per
name ever used), so a remove and re-add never brings an old version back.

Every evaluator reads rule, state and version together, computes the next state, and
writes it with a compare-and-set on the version (one Lua step that also appends the
history entry and publishes the event). Two evaluators on one rule: one wins, the other
changes nothing, so each transition is stored, published and called back once.

``start(interval)`` evaluates in a background thread, once per round: rounds are aligned
to the clock (multiples of the interval), and each rule of a round is claimed first in the
``rounds`` hash (rule name -> start of the last round claimed), so that several processes
running it evaluate each rule once per round between them.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np

from ..core.conn import Script
from ..core.context import Ctx
from ..core.time import Duration, from_us, now_us, to_us
from ..errors import (
    ConfigurationError,
    ConflictError,
    NotFoundError,
    RedfeatError,
    wrap_redis,
)
from . import analysis, lua
from .alert_rules import (
    AlertRule,
    AlertState,
    AlertStatus,
    AlertTransition,
    build_rule,
    check_alert_name,
    step,
)
from .analysis import InsufficientDataError
from .query import bucketed, read_tiles
from .spec import SeriesRegistry, SeriesSpec, duration_ms
from .storage import raw_points
from .tiles import aggregate, aggregate_points, coarsen

log = logging.getLogger("redfeat.alerts")
HISTORY_MAXLEN = 1000
ERRORS_KEPT = 1000
FUTURE_TOLERANCE_MS = 60_000  # how far an explicit ``now`` may run ahead of the clock

_ADD = Script(lua.ALERT_ADD)
_CAS = Script(lua.ALERT_CAS)


# KEYS: rounds. ARGV: round start ms, rule names... Claims each rule for the round unless
# this round (or a later one) is claimed already; returns the names claimed.
_CLAIM = Script("""
local out = {}
local round = tonumber(ARGV[1])
for i = 2, #ARGV do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if cur < round then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
    out[#out + 1] = ARGV[i]
  end
end
return out
""")


def _now_ms(now: Any, clock_ms: int) -> int:
    if now is None:
        return clock_ms
    try:
        ms = to_us(now, what="now") // 1000
    except ValueError as exc:
        raise ConfigurationError(f"alerts.evaluate: {exc}") from exc
    if ms > clock_ms + FUTURE_TOLERANCE_MS:
        # stored as the rule's last evaluation, a future instant would make every
        # real-time evaluation before it a skip
        raise ConfigurationError(
            f"alerts.evaluate: now={now!r} is {(ms - clock_ms) / 1000:.0f} s ahead of this "
            f"machine's clock (at most {FUTURE_TOLERANCE_MS // 1000} s is accepted); "
            "evaluate at the present or in the past"
        )
    return ms


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def window_value(ctx: Ctx, spec: SeriesSpec, lo: int, hi: int, agg: str) -> float | None:
    """``agg`` over the points in [lo, hi]: raw points (an exact sliding window) while the
    raw retention holds ``lo``; past it, the rollup buckets lying wholly inside, from tiles.
    None when there is nothing (or the aggregate is undefined, e.g. std of one point)."""
    ts, vs, newest = raw_points(ctx, spec, lo, hi)
    if newest is not None and lo < newest - spec.retention_ms and spec.rollups:
        # the finest rollup still holding lo (retention counted back from newest)
        held = [
            r for r in spec.rollups if lo >= (newest - r.retention_ms) // r.bucket_ms * r.bucket_ms
        ]
        r = held[0] if held else spec.rollups[-1]
        b = r.bucket_ms
        tiles = read_tiles(ctx, spec, r, -(-lo // b) * b, hi - b + 1)
        if len(tiles) == 0:
            return None
        # one tile for the whole window: every bucket id floors to group 0
        v = float(aggregate(coarsen(tiles, 1 << 62), agg)[0])
    else:
        if len(ts) == 0:
            return None
        # shifted so every point falls in bucket 0 of a bucket longer than the window
        _, out = aggregate_points(ts - lo, vs, hi - lo + 1, agg)
        v = float(out[0])
    return v if math.isfinite(v) else None


def anomaly_score(ctx: Ctx, spec: SeriesSpec, rule: AlertRule, lo: int, hi: int) -> float | None:
    """The most extreme score in [lo, hi] against the baseline before ``lo`` (as
    ``Series.anomalies``); None when the window is empty or the baseline too thin."""
    assert rule.method is not None and isinstance(rule.threshold, float)
    try:
        base = analysis.baseline_from_tiles(ctx, spec, lo - rule.baseline_ms, lo)
        if rule.method == "mad":
            r = next(r for r in spec.rollups if r.label == base.rollup)
            _, vs, _ = bucketed(ctx, spec, lo, hi, r.bucket_ms, "avg")
        else:
            _, vs, _ = raw_points(ctx, spec, lo, hi)
        if len(vs) == 0:
            return None
        scores = analysis.score(base, vs, rule.method, rule.threshold)
    except InsufficientDataError:
        return None
    return float(scores[int(np.argmax(np.abs(scores)))])


class Alerts:
    """``store.alerts``: threshold and anomaly rules on series, evaluated by ``evaluate``
    (or ``redfeat alerts run``); see the README's "Alerts"."""

    def __init__(self, ctx: Ctx, registry: SeriesRegistry) -> None:
        self._ctx = ctx
        self._registry = registry
        self._callbacks: builtins.list[Callable[[AlertTransition], None]] = []
        self._lock = threading.Lock()
        # (rule name, exception): what a rule's evaluation or a callback raised (also
        # logged); the last ERRORS_KEPT, so a long-running evaluator does not grow it
        self.errors: deque[tuple[str, Exception]] = deque(maxlen=ERRORS_KEPT)
        self.evaluated = 0  # rule evaluations this process made (by evaluate or start)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._interval_ms = 0

    @property
    def _keys(self) -> builtins.list[str]:
        k = self._ctx.keys
        return [k.alerts("rules"), k.alerts("state"), k.alerts("ver")]

    @property
    def channel(self) -> str:
        """The pub/sub channel of transitions (JSON; ``AlertTransition.from_json``)."""
        return self._ctx.keys.alerts("events")

    def add(
        self,
        name: str,
        series: str,
        *,
        rule: str = "threshold",
        condition: str | None = None,
        threshold: Any = None,
        tolerance: float = 0.0,
        window: Duration = "5m",
        agg: str = "avg",
        for_: Duration | None = "1m",
        cooldown: Duration | None = "10m",
        no_data: str = "keep",
        method: str | None = None,
        baseline: Duration = "1d",
        replace: bool = False,
    ) -> AlertRule:
        """Define a rule on an existing series; it starts in state ``ok``.

        Threshold rules (default): ``agg`` over the last ``window`` compared by
        ``condition`` ("above" (default), "below", "outside" with threshold=(lo, hi),
        "equals" within ``tolerance``). Anomaly rules (rule="anomaly"): the window's points
        scored by ``method`` (zscore, mad, ewma) against ``baseline`` before the window;
        threshold None: the method's default. The condition must hold for ``for_`` before
        the rule fires; after a resolve it cannot fire again for ``cooldown``. ``no_data``:
        "keep" the state, or treat an empty window as "ok" or "alerting". An existing name
        raises ConflictError unless ``replace`` (the replaced rule restarts at ok)."""
        r = build_rule(
            name,
            series,
            rule=rule,
            condition=condition,
            threshold=threshold,
            tolerance=tolerance,
            window=window,
            agg=agg,
            for_=for_,
            cooldown=cooldown,
            no_data=no_data,
            method=method,
            baseline=baseline,
        )
        spec = self._registry.require(series)
        if r.rule == "anomaly" and not spec.rollups:
            raise ConfigurationError(
                f"alert {name!r}: series {series!r} keeps no rollups; anomaly baselines are "
                "read from tiles (create the series with rollups=...)"
            )
        ok = self._ctx.run(
            _ADD,
            self._keys,
            [name, r.to_json(), "1" if replace else "0", AlertState().to_json()],
            what=f"alert {name!r}",
        )
        if not ok:
            raise ConflictError(
                f"alert {name!r} already exists; remove it first or pass replace=True"
            )
        return r

    def remove(self, name: str) -> None:
        """Remove the rule, its state and its history (its version counter stays)."""
        check_alert_name(name)
        rules, state, ver = self._keys
        with wrap_redis(f"alert {name!r}: cannot remove"):
            pipe = self._ctx.client.pipeline(transaction=True)
            pipe.hdel(rules, name)
            pipe.hdel(state, name)
            # the version moves on (never deleted): a rule added again under this name
            # continues from it, so an evaluator still holding the removed rule's
            # version cannot pass the compare-and-set on the new rule
            pipe.hincrby(ver, name, 1)
            pipe.hdel(self._ctx.keys.alerts("rounds"), name)
            pipe.unlink(self._ctx.keys.alert_history(name))
            gone = pipe.execute()[0]
        if not gone:
            raise NotFoundError(f"alert {name!r} does not exist (alerts.list() shows them)")

    def _read(self) -> tuple[dict[str, bytes], dict[str, bytes], dict[str, int]]:
        rules, state, ver = self._keys
        with wrap_redis("cannot read the alert rules"):
            # one MULTI: rule, state and version are a consistent snapshot
            pipe = self._ctx.client.pipeline(transaction=True)
            pipe.hgetall(rules)
            pipe.hgetall(state)
            pipe.hgetall(ver)
            r, s, v = pipe.execute()

        def text(d: dict[Any, Any]) -> dict[str, Any]:
            return {(k.decode() if isinstance(k, bytes) else k): x for k, x in d.items()}

        return text(r), text(s), {k: int(x) for k, x in text(v).items()}

    def list(self) -> builtins.list[AlertStatus]:
        """Every rule with its state, by name."""
        rules, states, _ = self._read()
        out = []
        for name in sorted(rules):
            rule = AlertRule.from_json(rules[name])
            st = AlertState.from_json(states.get(name))
            out.append(
                AlertStatus(
                    rule,
                    st.state,
                    None if st.since_ms is None else from_us(st.since_ms * 1000),
                    st.value,
                    st.no_data,
                    None if st.evaluated_ms is None else from_us(st.evaluated_ms * 1000),
                )
            )
        return out

    def get(self, name: str) -> AlertStatus:
        check_alert_name(name)
        for s in self.list():
            if s.name == name:
                return s
        raise NotFoundError(f"alert {name!r} does not exist (alerts.list() shows them)")

    def history(self, name: str, limit: int = 100) -> builtins.list[AlertTransition]:
        """The rule's last ``limit`` transitions, oldest first (~1000 are kept)."""
        check_alert_name(name)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"alert {name!r}: history limit must be an int >= 1")
        with wrap_redis(f"alert {name!r}: cannot read the history"):
            rows: builtins.list[Any] = self._ctx.client.xrevrange(  # type: ignore[assignment]
                self._ctx.keys.alert_history(name), "+", "-", count=limit
            )
        out = []
        for entry, data in reversed(rows):
            event = {_text(k): v for k, v in (data or {}).items()}["e"]
            out.append(AlertTransition.from_dict(msgspec.json.decode(event), _text(entry)))
        return out

    def on_transition(
        self, callback: Callable[[AlertTransition], None]
    ) -> Callable[[AlertTransition], None]:
        """Call ``callback`` with each transition this process's evaluations make (it can
        decorate). A callback that raises is logged and kept in ``alerts.errors`` as
        (rule name, exception)."""
        with self._lock:
            self._callbacks.append(callback)
        return callback

    def evaluate(self, now: Any = None) -> builtins.list[AlertTransition]:
        """Evaluate every rule at ``now`` (None: the clock; a datetime or epoch seconds
        otherwise) and return the transitions this call made, in rule-name order. A rule
        already evaluated at ``now`` or later is skipped. ``now`` more than a minute ahead
        of this machine's clock raises ConfigurationError (stored as the last evaluation,
        it would stop real-time evaluation of every rule until then). A rule whose evaluation fails
        (e.g. its series was re-created without the rollups an anomaly rule reads) is
        logged, kept in ``alerts.errors`` as (name, exception) and skipped; the other
        rules are still evaluated. A failure reading the rules themselves raises."""
        clock_ms = now_us() // 1000
        return self._evaluate(_now_ms(now, clock_ms), clock_ms, None)

    def _evaluate(
        self, now_ms: int, clock_ms: int, round_ms: int | None
    ) -> builtins.list[AlertTransition]:
        """Evaluate every rule at ``now_ms``; with ``round_ms``, only the rules this process
        claims for that round."""
        rules, states, vers = self._read()
        names = sorted(rules)
        if round_ms is not None and names:
            claimed = self._ctx.run(
                _CLAIM, [self._ctx.keys.alerts("rounds")], [round_ms, *names], what="alerts"
            )
            mine = {_text(n) for n in claimed or []}
            names = [n for n in names if n in mine]
        out: builtins.list[AlertTransition] = []
        for name in names:
            self.evaluated += 1
            try:
                t = self._evaluate_one(
                    rules[name], states.get(name), vers.get(name, 0), now_ms, clock_ms
                )
            except Exception as exc:  # one broken rule must not stop the rules after it
                if isinstance(exc, RedfeatError):  # says what is wrong: no traceback each round
                    log.warning("alert %r: evaluation failed: %s", name, exc)
                else:
                    log.exception("alert %r: evaluation failed", name)
                self.errors.append((name, exc))
                continue
            if t is not None:
                out.append(t)
                self._notify(t)
        return out

    # -- evaluating in the background ----------------------------------------------------

    def start(self, interval: Duration = "10s") -> None:
        """Evaluate every rule every ``interval`` in a background thread of this process
        (until ``stop()`` or the store's ``close()``), like ``redfeat alerts run``. Rounds
        are aligned to the clock; each rule is claimed per round in Redis, so several
        processes running this evaluate each rule once per round between them. Failures
        are logged and kept in ``errors``; transitions go to ``on_transition`` callbacks.
        Raises ConfigurationError when already running."""
        ms = duration_ms(interval, what="alerts.start: interval")
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise ConfigurationError(
                    "alerts.start: the evaluator is already running here; stop() it first"
                )
            self._stop = threading.Event()
            self._interval_ms = ms
            self._thread = threading.Thread(
                target=self._run, args=(ms, self._stop), name="redfeat-alerts", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background evaluator (waits for a round in progress)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether ``start`` runs an evaluator in this process."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self, interval_ms: int, stop: threading.Event) -> None:
        last: int | None = None
        while not stop.is_set():
            clock_ms = now_us() // 1000
            round_ms = clock_ms // interval_ms * interval_ms
            if round_ms != last:
                last = round_ms
                try:
                    self._evaluate(round_ms, clock_ms, round_ms)
                except Exception as exc:  # the server may be back next round
                    log.warning("alerts: a background round failed: %s", exc)
                    self.errors.append(("*", exc))
            wait_ms = round_ms + interval_ms - now_us() // 1000
            stop.wait(max(wait_ms, 1) / 1000)

    def _evaluate_one(
        self, raw_rule: bytes, raw_state: bytes | None, ver: int, now_ms: int, clock_ms: int
    ) -> AlertTransition | None:
        rule = AlertRule.from_json(raw_rule)
        old = AlertState.from_json(raw_state)
        last = old.evaluated_ms
        if last is not None and now_ms <= last <= clock_ms + FUTURE_TOLERANCE_MS:
            # evaluated at this instant or later already (another evaluator on the same
            # tick, or a clock behind): time only moves forward, once per instant. A
            # stored time far ahead of the clock (written before future ``now`` values
            # were refused) is not trusted: it would stop the rule until then.
            return None
        holds, value = self._measure(rule, now_ms)
        new = step(rule, old, holds, value, now_ms)
        return self._commit(rule, old, new, ver)

    def _measure(self, rule: AlertRule, now_ms: int) -> tuple[bool | None, float | None]:
        spec = self._registry.get(rule.series)
        if spec is None:
            return None, None  # the series was deleted: nothing to judge
        lo, hi = now_ms - rule.window_ms + 1, now_ms  # (now - window, now]
        if rule.rule == "anomaly":
            score = anomaly_score(self._ctx, spec, rule, lo, hi)
            if score is None:
                return None, None
            assert isinstance(rule.threshold, float)
            return abs(score) > rule.threshold, _finite_or_none(score)
        value = window_value(self._ctx, spec, lo, hi, rule.agg)
        if value is None:
            return None, None
        return rule.holds(value), value

    def _commit(
        self, rule: AlertRule, old: AlertState, new: AlertState, ver: int
    ) -> AlertTransition | None:
        moved = new.state != old.state
        t = None
        args: builtins.list[Any] = [rule.name, ver, new.to_json(), self.channel]
        if moved:
            assert new.since_ms is not None
            t = AlertTransition(
                rule.name,
                rule.series,
                old.state,
                new.state,
                from_us(new.since_ms * 1000),
                new.value,
                rule.threshold,
            )
            d = t.to_dict()
            event = msgspec.json.encode(d)
            # readable fields for redis-cli, plus the event itself for exact decoding
            args += [event, HISTORY_MAXLEN, "from", d["from"], "to", d["to"]]
            args += ["at_ms", d["at_ms"], "value", "" if t.value is None else repr(t.value)]
            args += ["e", event]
        else:
            args += ["", HISTORY_MAXLEN]
        reply = self._ctx.run(
            _CAS,
            [*self._keys, self._ctx.keys.alert_history(rule.name)],
            args,
            what=f"alert {rule.name!r}",
        )
        if t is None or not isinstance(reply, bytes | str):
            return None  # no transition, or another evaluator (or a remove) came first
        return dataclasses.replace(t, id=_text(reply))

    def _notify(self, t: AlertTransition) -> None:
        with self._lock:
            callbacks = builtins.list(self._callbacks)
        for cb in callbacks:
            try:
                cb(t)
            except Exception as exc:  # the transition is stored; one bad callback stops nothing
                log.exception("alert %r: an on_transition callback failed", t.rule)
                self.errors.append((t.rule, exc))


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


__all__ = ["AlertRule", "AlertStatus", "AlertTransition", "Alerts"]
