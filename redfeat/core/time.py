"""Durations and timestamps: one parser for every API that takes them."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import ConfigurationError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d|w)\s*$")
_UNIT_US = {
    "us": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "w": 604_800_000_000,
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Event times are kept as integer microseconds and used as sorted-set scores (doubles), which
# are exact only below 2**53 us (~year 2255): refuse anything outside a sane window.
MIN_US = -2_208_988_800_000_000  # 1900-01-01
MAX_US = 7_258_118_400_000_000  # 2200-01-01
# The longest duration any option takes: the whole window above (~300 years). Longer ones
# (``ttl=1e308``) are refused before they are turned into integers.
MAX_DURATION_US = MAX_US - MIN_US

Duration = str | timedelta | int | float


def duration_us(value: Duration, *, what: str = "duration") -> int:
    """Parse "90s", "5m", "24h", "7d", a timedelta or seconds into microseconds."""
    if isinstance(value, timedelta):
        us = value // timedelta(microseconds=1)
    elif isinstance(value, bool):
        raise ConfigurationError(f"{what}: expected a duration like '24h', got {value!r}")
    elif isinstance(value, int | float):
        if not math.isfinite(value):
            raise ConfigurationError(f"{what}: expected a finite duration, got {value!r}")
        if abs(value) > MAX_DURATION_US / 1_000_000:
            raise ConfigurationError(_too_long(what, value))
        us = int(round(value * 1_000_000))
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ConfigurationError(
                f"{what}: cannot read {value!r}; write a number and a unit "
                "(us, ms, s, m, h, d, w), e.g. '90s', '5m', '24h', '7d'"
            )
        amount = float(m.group(1)) * _UNIT_US[m.group(2)]
        if not amount <= MAX_DURATION_US:  # also inf: "1e999" digits overflow a float
            raise ConfigurationError(_too_long(what, value))
        us = int(round(amount))
    else:
        raise ConfigurationError(f"{what}: expected a duration like '24h', got {value!r}")
    if us <= 0:
        raise ConfigurationError(f"{what}: must be positive, got {value!r}")
    if us > MAX_DURATION_US:
        raise ConfigurationError(_too_long(what, value))
    return us


def _too_long(what: str, value: Any) -> str:
    return f"{what}: {str(value)[:40]!r} is longer than 300 years (the longest duration taken)"


def now_us() -> int:
    return time.time_ns() // 1_000


def to_us(value: Any, *, what: str = "timestamp") -> int:
    """Turn a datetime (naive = UTC) or epoch seconds into integer microseconds since the epoch.

    Raises ValueError with a readable message; callers wrap it in their own error type.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        us = (value - EPOCH) // timedelta(microseconds=1)
    elif isinstance(value, bool):
        raise ValueError(f"{what} must be a datetime or epoch seconds, got a bool")
    elif isinstance(value, int):
        us = value * 1_000_000
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what} must be finite, got {value!r}")
        if not MIN_US <= value * 1_000_000 < MAX_US:  # before int(): 1e308 s overflows
            raise ValueError(f"{what} {value!r} is outside 1900-01-01 .. 2200-01-01")
        us = int(round(value * 1_000_000))
    elif hasattr(value, "dtype") and str(getattr(value, "dtype", "")).startswith("datetime64"):
        import numpy as np

        us = int(np.datetime64(value, "us").astype("int64"))
    else:
        raise ValueError(
            f"{what} must be a datetime (naive means UTC) or epoch seconds, "
            f"got {type(value).__name__}"
        )
    if not MIN_US <= us < MAX_US:
        raise ValueError(f"{what} {value!r} is outside 1900-01-01 .. 2200-01-01")
    return int(us)


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)
