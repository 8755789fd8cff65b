"""A series' definition: name, labels, retention, rollups, duplicate policy.

Definitions live in the project's registry hash as ``series:<name>`` (JSON), beside the
views' ``view:<name>`` fields, so ``store.views()`` never sees them and every process reads
the same definition.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import redis

from ..core.args import text
from ..core.keys import MAX_ID_BYTES, Keys, escape_id
from ..core.time import MAX_US, MIN_US, Duration, duration_us, to_us
from ..errors import ConfigurationError, ConflictError, NotFoundError, wrap_redis

POLICIES = ("block", "first", "last", "min", "max", "sum")
MAX_BUCKET_MS = 30 * 86_400_000  # tiles keep first/last offsets in a uint32 of ms
DAY_MS = 86_400_000
# RedisTimeSeries-like defaults: finer rollups are kept for less time.
_DEFAULT_ROLLUP_RETENTION = ((60_000, 7), (300_000, 30), (3_600_000, 90))
FIELD_PREFIX = "series:"
_LABEL_FORBIDDEN = set("=!,()")


def duration_ms(value: Duration, *, what: str) -> int:
    us = duration_us(value, what=what)
    if us % 1000:
        raise ConfigurationError(f"{what}: {value!r} is not a whole number of milliseconds")
    return us // 1000


def label_of(ms: int) -> str:
    """60000 -> '1m', 86400000 -> '1d' (the largest unit that divides exactly)."""
    for unit, size in (("d", DAY_MS), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def default_rollup_retention(bucket_ms: int) -> int:
    for limit, days in _DEFAULT_ROLLUP_RETENTION:
        if bucket_ms <= limit:
            return days * DAY_MS
    return 365 * DAY_MS


def to_ms(value: Any, *, series: str, what: str = "timestamp") -> int:
    """A datetime (naive = UTC), numpy datetime64 or epoch seconds (Python or numpy
    numbers) -> int ms (floored)."""
    if isinstance(value, np.integer):
        value = int(value)
    elif isinstance(value, np.floating):
        value = float(value)
    try:
        return to_us(value, what=what) // 1000
    except ValueError as exc:
        raise ConfigurationError(f"series {series!r}: {exc}") from exc


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"a series name must be a non-empty string, got {name!r}")
    text("series name", name)
    if len(name.encode()) > MAX_ID_BYTES:
        raise ConfigurationError(f"series name is longer than {MAX_ID_BYTES} bytes: {name[:40]!r}")
    return name


def check_labels(name: str, labels: Mapping[str, Any] | None) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise ConfigurationError(f"series {name!r}: labels must be a dict of str -> str")
    out: dict[str, str] = {}
    for k, v in labels.items():
        if not isinstance(k, str) or not k or _LABEL_FORBIDDEN & set(k) or k != k.strip():
            raise ConfigurationError(
                f"series {name!r}: label name {k!r} must be a non-empty string without "
                "'=', '!', ',', '(', ')' or surrounding spaces (ambiguous in filters)"
            )
        if not isinstance(v, str | int | float) or isinstance(v, bool) or str(v) == "":
            raise ConfigurationError(
                f"series {name!r}: label {k!r} must have a non-empty str or number value "
                f"(an empty value means 'no such label' in filters), got {v!r}"
            )
        if str(v).startswith("(") and str(v).endswith(")"):
            raise ConfigurationError(
                f"series {name!r}: label {k!r} value {str(v)!r} is wrapped in parentheses; "
                "filters read l=(a,b) as a list, so they could never select it"
            )
        text(f"series {name!r}: label", k)
        out[k] = text(f"series {name!r}: label {k!r} value", str(v))
    return out


@dataclass(frozen=True)
class Rollup:
    bucket_ms: int
    retention_ms: int
    slots: int = 128  # buckets per tile page: small pages stay compact listpack hashes

    @property
    def label(self) -> str:
        return label_of(self.bucket_ms)

    @property
    def page_ms(self) -> int:
        return self.bucket_ms * self.slots


@dataclass(frozen=True)
class SeriesSpec:
    name: str
    retention_ms: int
    rollups: tuple[Rollup, ...]
    duplicate_policy: str
    labels: dict[str, str] = field(default_factory=dict)
    # Generation: a token set when the definition is created or changed, also kept in the
    # series' state hash. Writes carry it and the server refuses a mismatch, so a handle
    # holding an old definition (deleted, recreated, changed by another process) reloads
    # it instead of writing with stale rules. '' (series made before generations): no check.
    gen: str = ""
    max_points: int | None = None  # raw points kept: the newest ones (None: no count cap)
    precision: int | None = None  # values rounded to this many decimals on write (lossy)

    @property
    def escaped(self) -> str:
        return escape_id(self.name)

    def to_json(self) -> bytes:
        return msgspec.json.encode(
            {
                "name": self.name,
                "labels": self.labels,
                "retention_ms": self.retention_ms,
                "rollups": [[r.bucket_ms, r.retention_ms] for r in self.rollups],
                "duplicate_policy": self.duplicate_policy,
                "gen": self.gen,
                "max_points": self.max_points,
                "precision": self.precision,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> SeriesSpec:
        d = msgspec.json.decode(raw)
        return cls(
            d["name"],
            int(d["retention_ms"]),
            tuple(Rollup(int(b), int(r)) for b, r in d["rollups"]),
            d["duplicate_policy"],
            dict(d["labels"]),
            str(d.get("gen", "")),
            d.get("max_points"),
            d.get("precision"),
        )


def rollup_list(name: str, rollups: Any) -> list[Duration]:
    """``rollups=``: one duration or a list of them."""
    if isinstance(rollups, str | timedelta):
        return [rollups]
    if isinstance(rollups, bytes | Mapping) or not isinstance(rollups, Iterable):
        raise ConfigurationError(
            f"series {name!r}: rollups must be a list of durations like ['1m', '1h'], "
            f"got {rollups!r:.60}"
        )
    return list(rollups)


def build_spec(
    name: str,
    labels: Mapping[str, Any] | None,
    retention: Duration,
    rollups: Iterable[Duration],
    rollup_retention: Duration | Mapping[str, Duration] | None,
    duplicate_policy: str,
    max_points: int | None = None,
    precision: int | None = None,
) -> SeriesSpec:
    check_name(name)
    if max_points is not None and (
        isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1
    ):
        raise ConfigurationError(
            f"series {name!r}: max_points must be an int >= 1 (None: no cap), "
            f"got {max_points!r:.40}"
        )
    if precision is not None and (
        isinstance(precision, bool) or not isinstance(precision, int) or not 0 <= precision <= 15
    ):
        raise ConfigurationError(
            f"series {name!r}: precision must be an int of decimal places in 0 .. 15 (None: "
            f"values kept exactly), got {precision!r:.40}"
        )
    if not isinstance(duplicate_policy, str) or duplicate_policy not in POLICIES:
        raise ConfigurationError(
            f"series {name!r}: duplicate_policy {duplicate_policy!r} is not one of {POLICIES}"
        )
    ret = duration_ms(retention, what=f"series {name!r} retention")
    buckets: list[int] = []
    rollups = rollup_list(name, rollups)
    for r in rollups:
        b = duration_ms(r, what=f"series {name!r} rollup")
        if b > MAX_BUCKET_MS:
            raise ConfigurationError(f"series {name!r}: rollup {r!r} is longer than 30d")
        if b not in buckets:
            buckets.append(b)
    buckets.sort()
    per: dict[int, int] = {}
    if isinstance(rollup_retention, Mapping):
        for k, v in rollup_retention.items():
            b = duration_ms(k, what=f"series {name!r} rollup_retention key")
            if b not in buckets:
                raise ConfigurationError(
                    f"series {name!r}: rollup_retention names {k!r}, which is not a rollup "
                    f"(rollups: {[label_of(x) for x in buckets]})"
                )
            per[b] = duration_ms(v, what=f"series {name!r} rollup_retention[{k!r}]")
    elif rollup_retention is not None:
        one = duration_ms(rollup_retention, what=f"series {name!r} rollup_retention")
        per = dict.fromkeys(buckets, one)
    return SeriesSpec(
        name,
        ret,
        tuple(Rollup(b, per.get(b, default_rollup_retention(b))) for b in buckets),
        duplicate_policy,
        check_labels(name, labels),
        max_points=max_points,
        precision=precision,
    )


class SeriesRegistry:
    """Reads and writes ``series:<name>`` fields of the registry hash."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._key = keys.registry

    def _set_gen(self, spec: SeriesSpec) -> None:
        with wrap_redis(f"series {spec.name!r}: cannot write its state"):
            self._client.hset(self._keys.series(spec.escaped), "gen", spec.gen)

    def create(self, spec: SeriesSpec) -> bool:
        """Register a new series unless another process just did (HSETNX: the first
        definition wins); False when it did."""
        with wrap_redis(f"cannot write the registry {self._key!r}"):
            ok = self._client.hsetnx(self._key, FIELD_PREFIX + spec.name, spec.to_json())
        if ok:
            self._set_gen(spec)
        return bool(ok)

    def repair_gen(self, spec: SeriesSpec) -> None:
        """The registry holds ``spec`` but the state hash has no generation (created a
        moment ago by a process between its two steps, or its keys were removed by a
        delete that raced a re-creation): set it, unless set meanwhile."""
        with wrap_redis(f"series {spec.name!r}: cannot write its state"):
            self._client.hsetnx(self._keys.series(spec.escaped), "gen", spec.gen)

    def get(self, name: str) -> SeriesSpec | None:
        with wrap_redis(f"cannot read the registry {self._key!r}"):
            raw = self._client.hget(self._key, FIELD_PREFIX + name)
        if raw is None:
            return None
        return SeriesSpec.from_json(raw if isinstance(raw, bytes) else raw.encode())

    def require(self, name: str) -> SeriesSpec:
        spec = self.get(check_name(name))
        if spec is None:
            raise NotFoundError(
                f"series {name!r} is not in the registry; create it with store.series({name!r})"
            )
        return spec

    def put(self, spec: SeriesSpec, old: SeriesSpec | None) -> None:
        if old is not None and [r.bucket_ms for r in old.rollups] != [
            r.bucket_ms for r in spec.rollups
        ]:
            raise ConflictError(
                f"series {spec.name!r} has rollups {[r.label for r in old.rollups]}; "
                f"{[r.label for r in spec.rollups]} would leave tiles inconsistent: delete the "
                "series first (series.delete()) or keep its rollups"
            )
        with wrap_redis(f"cannot write the registry {self._key!r}"):
            self._client.hset(self._key, FIELD_PREFIX + spec.name, spec.to_json())
        self._set_gen(spec)

    def remove(self, name: str) -> None:
        with wrap_redis(f"cannot write the registry {self._key!r}"):
            self._client.hdel(self._key, FIELD_PREFIX + name)

    def all(self) -> list[SeriesSpec]:
        """Every series definition, by name (HSCAN: bounded batches, never KEYS)."""
        out: list[SeriesSpec] = []
        with wrap_redis(f"cannot read the registry {self._key!r}"):
            for _, raw in self._client.hscan_iter(self._key, match=FIELD_PREFIX + "*", count=500):
                out.append(SeriesSpec.from_json(bytes(raw)))
        return sorted(out, key=lambda s: s.name)


def as_ms_array(values: Any, *, series: str) -> np.ndarray:
    """Timestamps (datetimes, datetime64, epoch seconds, a DatetimeIndex) -> int64 ms."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ConfigurationError(f"series {series!r}: timestamps must be one-dimensional")
    if arr.dtype.kind == "M":
        if np.isnat(arr).any():
            raise ConfigurationError(f"series {series!r}: a timestamp is NaT")
        ms = np.floor_divide(arr.astype("datetime64[us]").astype(np.int64), 1000)
    elif arr.dtype.kind in "iu":
        _in_range_s(arr, series)  # before * 1000: int64 would wrap around silently
        ms = arr.astype(np.int64) * 1000
    elif arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ConfigurationError(f"series {series!r}: a timestamp is not finite")
        _in_range_s(arr, series)  # before * 1e6: 1e308 s would overflow
        ms = np.floor(np.round(arr * 1e6) / 1000).astype(np.int64)
    elif arr.dtype.kind == "O":
        if len(arr) and all(isinstance(x, datetime) for x in arr):
            ms = np.fromiter((to_ms(x, series=series) for x in arr), np.int64, len(arr))
        else:
            try:
                return as_ms_array(np.asarray(arr.tolist(), dtype=float), series=series)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(
                    f"series {series!r}: timestamps must be datetimes or epoch seconds"
                ) from exc
    else:
        raise ConfigurationError(
            f"series {series!r}: timestamps must be datetimes or epoch seconds, got {arr.dtype}"
        )
    lo, hi = MIN_US // 1000, MAX_US // 1000  # 1900 .. 2200, as every time of the store
    if len(ms) and (ms.min() < lo or ms.max() >= hi):
        raise ConfigurationError(f"series {series!r}: a timestamp is outside 1900..2200")
    return np.ascontiguousarray(ms, dtype=np.int64)


def _in_range_s(arr: np.ndarray, series: str) -> None:
    if len(arr) and (arr.min() < MIN_US // 1_000_000 or arr.max() >= MAX_US // 1_000_000):
        raise ConfigurationError(f"series {series!r}: a timestamp is outside 1900..2200")


def as_values(values: Any, n: int, *, series: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"series {series!r}: values must be numbers ({exc})") from exc
    if arr.ndim != 1 or len(arr) != n:
        raise ConfigurationError(
            f"series {series!r}: got {n} timestamps and {arr.size} values; they must match"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise ConfigurationError(
            f"series {series!r}: value {arr[i]!r} at position {i} is not finite; "
            "NaN and inf are refused (nothing was written)"
        )
    return np.ascontiguousarray(arr)


def finite_value(value: Any, *, series: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ConfigurationError(
            f"series {series!r}: a value must be a number, got {type(value).__name__}"
        )
    v = float(value)
    if not math.isfinite(v):
        raise ConfigurationError(
            f"series {series!r}: value {v!r} is not finite; NaN and inf are refused"
        )
    return v
