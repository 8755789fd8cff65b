"""Monitoring of the store itself: operation counters and latency histograms, in process
(``store.stats()["operations"]``; storage accounting is ``redfeat.stats``).

Latencies go into fixed log-spaced buckets (20 per decade from 1 us to 100 s: a quantile
reads as its bucket's upper bound, up to 12 % high; anything over 100 s reads as 100 s), so
recording is a bisect and an increment, and histograms from many processes could be summed.
Only the outermost timed call of a thread is recorded: a verb that calls another (get on an
on-read view reading its source, put_text writing) counts once.
"""

from __future__ import annotations

import bisect
import functools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

# bucket upper bounds in ns: 1 us .. 100 s, 20 per decade
_BOUNDS = [int(1_000 * 10 ** (i / 20)) for i in range(0, 161)]
BOUNDS_NS: tuple[int, ...] = tuple(_BOUNDS)  # bucket i counts latencies <= BOUNDS_NS[i]


@dataclass(slots=True)
class OpStats:
    count: int = 0
    errors: int = 0
    total_ns: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(_BOUNDS) + 1))

    def quantile(self, q: float) -> float | None:
        """Latency in ms at quantile q (the upper bound of its bucket)."""
        n = sum(self.buckets)
        if n == 0:
            return None
        rank = max(1, math.ceil(q * n))
        seen = 0
        for i, c in enumerate(self.buckets):
            seen += c
            if seen >= rank:
                return (_BOUNDS[i] if i < len(_BOUNDS) else _BOUNDS[-1]) / 1e6
        return _BOUNDS[-1] / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "errors": self.errors,
            "mean_ms": self.total_ns / self.count / 1e6 if self.count else None,
            "p50_ms": self.quantile(0.5),
            "p99_ms": self.quantile(0.99),
        }


class Metrics:
    """Per-operation counters and latency histograms of one store."""

    def __init__(self) -> None:
        self._ops: dict[str, OpStats] = {}
        self._lock = threading.Lock()

    def record(self, op: str, ns: int, failed: bool) -> None:
        i = bisect.bisect_left(_BOUNDS, ns)
        with self._lock:
            s = self._ops.get(op)
            if s is None:
                s = self._ops[op] = OpStats()
            s.count += 1
            s.total_ns += ns
            s.buckets[i] += 1
            if failed:
                s.errors += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {op: s.to_dict() for op, s in sorted(self._ops.items())}

    def histograms(self) -> dict[str, OpStats]:
        """A copy of every operation's counters and buckets (``BOUNDS_NS``; the last
        bucket holds what is over 100 s), for exporters such as Prometheus."""
        with self._lock:
            return {
                op: OpStats(s.count, s.errors, s.total_ns, list(s.buckets))
                for op, s in sorted(self._ops.items())
            }

    def reset(self) -> None:
        with self._lock:
            self._ops.clear()


_depth = threading.local()


def timed(op: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Count and time a store method under ``op`` (errors: calls that raised)."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            if getattr(_depth, "busy", False):  # inside another timed verb: not a new call
                return fn(*args, **kwargs)
            _depth.busy = True
            t0 = time.perf_counter_ns()
            failed = True
            try:
                out = fn(*args, **kwargs)
                failed = False
                return out
            finally:
                _depth.busy = False
                metrics: Metrics | None = getattr(args[0], "metrics", None)
                if metrics is not None:
                    metrics.record(op, time.perf_counter_ns() - t0, failed)

        return inner

    return wrap
