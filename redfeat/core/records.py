"""The value types that public verbs return: versions, reads with metadata, write and
validation reports, change events, search matches. Plain data, no Redis."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from ..errors import Problem, ValidationError


@dataclass(frozen=True, slots=True)
class Version:
    """One stored version of an entity's features. ``expired`` (set by the write verbs
    only): its event time was already older than the view's ttl when it was written, so
    it is kept in history but reads as missing."""

    id: int
    event_time: datetime
    written_at: datetime
    values: dict[str, Any]
    expired: bool = field(default=False, compare=False)


def mark_expired(version: Version, ttl_us: int | None) -> Version:
    """``version`` with ``expired`` set if its event time was past the ttl at write time."""
    if ttl_us is None or version.id == 0:  # no ttl, or nothing was stored
        return version
    if version.written_at - version.event_time > timedelta(microseconds=ttl_us):
        return replace(version, expired=True)
    return version


def count_expired(
    ttl_us: int | None, ets: list[int], refused: Mapping[int, Any], flat: list[int]
) -> int:
    """How many rows a bulk write stored with an event time already past the ttl: ``ets``
    the event times (us) of every input row, ``refused`` the rows left out, ``flat`` the
    write step's (version id, status) per written row (status 0/1: a new version)."""
    if ttl_us is None or not flat:
        return 0
    kept = [et for i, et in enumerate(ets) if i not in refused] if refused else ets
    return sum(
        1
        for et, vid, status in zip(kept, flat[0::2], flat[1::2], strict=False)
        if status in (0, 1) and et < vid - ttl_us
    )


class Status(enum.StrEnum):
    """Whether a read found the entity: PRESENT, EXPIRED (older than the ttl) or MISSING."""

    PRESENT = "PRESENT"
    EXPIRED = "EXPIRED"
    MISSING = "MISSING"


@dataclass(frozen=True, slots=True)
class Record:
    """A read with metadata (``get_many(..., with_meta=True)``)."""

    entity_id: str
    status: Status
    event_time: datetime | None
    values: dict[str, Any] | None


@dataclass(slots=True)
class WriteReport:
    """What ``write_many`` did. ``written``: new versions; ``duplicates``: retries of versions
    already stored; ``late``: rows older than the entity's latest (kept in history only);
    ``dropped``: late rows for a view without history (nothing keeps them);
    ``expired``: rows written with an event time already older than the view's ttl (kept
    in history, but they read as missing);
    ``refused``: (row index, ValidationError) for rows that failed validation;
    ``warnings``: problems found by warning-level validators (those rows were written)."""

    written: int = 0
    duplicates: int = 0
    late: int = 0
    dropped: int = 0
    expired: int = 0
    refused: list[tuple[int, ValidationError]] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)  # from custom validators


@dataclass(frozen=True, slots=True)
class EntityStats:
    """What is stored for one entity of a view (``store.entity_stats``).

    ``fields``: every field of the view with its type; ``present``: the fields the latest
    version holds a value for; ``event_time`` / ``last_update``: the latest version's event
    time and when it was written (server clock); ``versions``: versions kept (history, or
    1 for a view without history); ``bytes``: server memory of the entity's keys (MEMORY
    USAGE); ``value_bytes``: the stored latest value; ``expires_in_s``: seconds before the
    latest key expires (None: no expiry); ``status``: PRESENT, EXPIRED (past the ttl) or
    MISSING."""

    view: str
    entity_id: str
    status: Status
    fields: dict[str, str]
    present: list[str]
    event_time: datetime | None
    last_update: datetime | None
    versions: int
    bytes: int
    value_bytes: int
    expires_in_s: float | None

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__slots__}
        out["status"] = str(self.status)
        for k in ("event_time", "last_update"):
            out[k] = None if out[k] is None else out[k].isoformat()
        return out


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """What ``store.validate`` found, without writing: every problem, and counts."""

    rows: int
    valid: int
    problems: list[Problem]
    warnings: list[Problem] = field(default_factory=list)  # rows that would be written anyway

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self, by: str = "rule") -> dict[str, int]:
        """Problems counted by "rule", "field" or "row"."""
        out: dict[str, int] = {}
        for p in self.problems:
            key = str(getattr(p, by))
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "valid": self.valid,
            "refused": self.rows - self.valid,
            "by_rule": self.counts("rule"),
            "by_field": self.counts("field"),
            "problems": [problem_dict(p) for p in self.problems],
            "warnings": [problem_dict(p) for p in self.warnings],
        }


def problem_dict(p: Problem) -> dict[str, Any]:
    return {
        "row": p.row,
        "entity": p.entity,
        "field": p.field,
        "rule": p.rule,
        "message": p.message,
    }


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One entity changed: a new version (kind "write"), a deletion ("delete"), or, on a
    subscription, "gap": the connection was lost and events up to ``cursor`` may have been
    missed live (they are replayed from the feed right after), or "trimmed": the feed no
    longer held some of those (its ``feed_cap``/``feed_retention``): events before
    ``cursor`` are lost, reload the view's state; the events kept follow."""

    view: str
    entity_id: str
    kind: str
    version_id: int
    event_time: datetime | None
    written_at: datetime | None
    fields: tuple[str, ...]
    cursor: str  # stream entry id: pass to changes(since=...) to resume after it


@dataclass(frozen=True, slots=True)
class Match:
    """One search result. ``score``: cosine similarity or inner product (higher is better),
    or Euclidean distance for ``l2`` (lower is better). ``values``: the entity's latest
    values when asked for (None if it was deleted between scoring and reading)."""

    entity_id: str
    score: float
    values: dict[str, Any] | None


@dataclass(slots=True)
class MaterializeReport:
    """What one materialize run did: the window it loaded (``start`` None: from the first
    row), rows read from the source (one per entity and event time), versions written
    (``late``: older than an entity's latest, kept in history), ``duplicates`` (already
    stored: a rerun writes none), ``dropped`` (older than the latest of a view without
    history), ``refused`` (bad rows, with ``on_error="skip"``), where it resumed from after
    an interrupted run, and the watermark after it."""

    view: str
    start: datetime | None
    end: datetime
    rows: int = 0
    written: int = 0
    late: int = 0
    duplicates: int = 0
    dropped: int = 0
    refused: int = 0
    seconds: float = 0.0
    resumed_from: datetime | None = None
    watermark: datetime | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0
