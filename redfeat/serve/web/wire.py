"""JSON on the wire: encoding results, reading times and typed values from requests."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from ...core.records import EntityStats, Record, Version, WriteReport
from ...core.schema import FeatureView
from ...errors import ConfigurationError, Problem, ValidationError

# -- request bodies (msgspec checks them; unknown keys are refused, so typos show) --------
# These Structs are also the OpenAPI document's schemas (redfeat.serve.openapi): the types
# the handlers decode with are the types the document describes.

EntityId = Annotated[str, msgspec.Meta(min_length=1)] | int
Time = Annotated[str, msgspec.Meta(description="ISO 8601 (naive = UTC) or epoch seconds")]
Values = dict[str, Any]


class GetManyBody(msgspec.Struct, forbid_unknown_fields=True):
    """Latest (or as-of) values of many entities of one view."""

    ids: list[EntityId]
    features: list[str] | None = None
    as_of: Time | float | None = None
    with_meta: bool = False
    cache: bool = True  # false: read Redis, not the near cache


class FeaturesBody(msgspec.Struct, forbid_unknown_fields=True):
    """Features of several views (``view:feature``) or a feature service (``name`` or
    ``name@version``), for the ids of one entity (a composite id as a list of its parts or
    ``"u1,9"``) or for entity rows (``{join key: value}``) mixing views of several."""

    ids: list[EntityId | list[EntityId]] | None = None
    entity_rows: list[dict[str, EntityId]] | None = None
    features: list[str] | None = None
    service: str | None = None
    full_feature_names: bool = False
    cache: bool = True  # false: read Redis, not the near cache


class WriteBody(msgspec.Struct, forbid_unknown_fields=True):
    """One entity's values (a Timestamp field takes ISO 8601 text)."""

    entity_id: EntityId
    values: Values
    event_time: Time | float | None = None


class WriteManyBody(msgspec.Struct, forbid_unknown_fields=True):
    """Rows with an entity id (and an event time) each."""

    rows: list[Values]
    on_error: Literal["raise", "skip"] = "raise"
    entity_column: str = "entity_id"
    event_time_column: str | None = None


class Range(msgspec.Struct, forbid_unknown_fields=True):
    min: float | None = None
    max: float | None = None


class SimilarBody(msgspec.Struct, forbid_unknown_fields=True):
    """Nearest neighbours of ``query`` in a vector field, optionally filtered."""

    field: str
    query: list[float]
    k: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 10
    where: dict[str, Any] | None = None
    include_values: bool = False
    index: Literal["exact", "hnsw", "server", "auto"] = "exact"
    consistent: bool = False  # catch up with the view's change feed first (any writer)


# -- query parameters -------------------------------------------------------------------


class NoQuery(msgspec.Struct):
    pass


class HealthQuery(msgspec.Struct):
    window: str = "24h"


class StatsQuery(msgspec.Struct):
    storage: bool = True


class LatestQuery(msgspec.Struct):
    as_of: Time | None = None
    features: Annotated[str, msgspec.Meta(description="comma-separated names")] | None = None
    cache: Annotated[bool, msgspec.Meta(description="false: bypass the near cache")] = True


class HistoryQuery(msgspec.Struct):
    limit: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] = 10


class WindowQuery(msgspec.Struct):
    start: Time | None = None
    end: Time | None = None


class DriftQuery(msgspec.Struct):
    start: Time | None = None
    end: Time | None = None
    bins: bool = False


class ProfileQuery(msgspec.Struct):
    start: Time | None = None
    end: Time | None = None
    source: Literal["write", "read"] = "write"


class SeriesListQuery(msgspec.Struct):
    filter: list[str] = []


class RangeQuery(msgspec.Struct):
    start: Time | None = None
    end: Time | None = None
    bucket: str | None = None
    agg: Annotated[
        str,
        msgspec.Meta(
            description="an aggregate, or several comma-separated (avg,min,max: needs a bucket)"
        ),
    ] = "avg"
    limit: Annotated[int, msgspec.Meta(ge=1)] | None = None
    time_format: Literal["iso", "ms"] = "iso"


class AnomaliesQuery(msgspec.Struct):
    start: Time | None = None
    end: Time | None = None
    method: str = "zscore"
    threshold: float | None = None
    baseline: str = "1d"
    time_format: Literal["iso", "ms"] = "iso"


# -- responses --------------------------------------------------------------------------


class ProblemOut(msgspec.Struct):
    view: str | None
    entity: str | None
    field: str | None
    rule: str
    value: Any
    message: str
    row: int | None
    severity: str


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """Every error: the exception's class and message (and what else it carries)."""

    error: str
    message: str
    problems: list[ProblemOut] | None = None
    needed: int | None = None
    found: int | None = None


class Live(msgspec.Struct):
    status: str


class Health(msgspec.Struct):
    status: str
    project: str
    quality: dict[str, Any]


class ViewList(msgspec.Struct):
    views: list[dict[str, Any]]


class Latest(msgspec.Struct):
    view: str
    entity_id: str
    values: Values


class VersionOut(msgspec.Struct):
    """One version. ``expired`` (a write's answer): the event time was already past the
    view's ttl, so the version is kept in history but reads as missing (404)."""

    id: int
    event_time: datetime
    written_at: datetime
    values: Values
    expired: bool = False


class History(msgspec.Struct):
    view: str
    entity_id: str
    versions: list[VersionOut]


class Rows(msgspec.Struct):
    view: str
    rows: list[Values | None]


class FeatureRows(msgspec.Struct, omit_defaults=True):
    rows: list[Values]
    ids: list[EntityId | list[EntityId]] | None = None  # as asked: ids, or entity rows
    entity_rows: list[dict[str, EntityId]] | None = None


class ServiceList(msgspec.Struct):
    """Feature services at their current version (``features``: ``view:feature``)."""

    services: list[dict[str, Any]]


class RefusedRow(msgspec.Struct):
    row: int
    message: str
    problems: list[ProblemOut]


class WriteReportOut(msgspec.Struct):
    """What a bulk write did; ``expired``: rows stored with an event time already past the
    view's ttl (kept in history, read as missing)."""

    written: int
    duplicates: int
    late: int
    dropped: int
    expired: int
    refused: list[RefusedRow]
    warnings: list[ProblemOut]


class MatchOut(msgspec.Struct):
    entity_id: str
    score: float | None
    values: Values | None


class Matches(msgspec.Struct):
    view: str
    matches: list[MatchOut]


class SeriesInfo(msgspec.Struct):
    name: str
    labels: dict[str, str]
    retention_ms: int | None
    rollups: list[str]
    duplicate_policy: str


class SeriesList(msgspec.Struct):
    series: list[SeriesInfo]


class Points(msgspec.Struct):
    """Points of a series; with several aggregates (``agg=avg,min,max``), ``agg`` lists
    them and ``values`` holds one list per aggregate, keyed by its name."""

    name: str
    bucket: str | None
    agg: str | list[str] | None
    timestamps: list[str | int]
    values: list[float | None] | dict[str, list[float | None]]


class EntityStatsOut(msgspec.Struct):
    """``store.entity_stats``: what is stored for one entity (status PRESENT, EXPIRED or
    MISSING; ``bytes`` the server memory of its keys)."""

    view: str
    entity_id: str
    status: Literal["PRESENT", "EXPIRED", "MISSING"]
    fields: dict[str, str]
    present: list[str]
    event_time: datetime | None
    last_update: datetime | None
    versions: int
    bytes: int
    value_bytes: int
    expires_in_s: float | None


class Anomalies(msgspec.Struct):
    name: str
    timestamps: list[str | int]
    values: list[float | None]
    scores: list[float | None]


Report = dict[str, Any]  # drift, profile and stats reports: documented in the README


def where(where: dict[str, Any] | None) -> dict[str, Any] | None:
    """JSON has no tuples: {"min": lo, "max": hi} is the inclusive range (lo, hi)."""
    if where is None:
        return None
    out: dict[str, Any] = {}
    for name, cond in where.items():
        if isinstance(cond, dict):
            extra = set(cond) - {"min", "max"}
            if extra:
                raise ConfigurationError(
                    f"where[{name!r}]: a range is {{'min': lo, 'max': hi}}, "
                    f"got keys {sorted(extra)}"
                )
            out[name] = (cond.get("min"), cond.get("max"))
        else:
            out[name] = cond
    return out


def _hook(obj: Any) -> Any:
    """What msgspec cannot encode by itself: numpy values, datetime subclasses, the rest."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "M":
            return np.datetime_as_string(obj, unit="ms", timezone="UTC").tolist()
        return obj.tolist()  # float32 vectors become lists; NaN in them becomes null
    if isinstance(obj, np.datetime64):
        return None if np.isnat(obj) else str(np.datetime_as_string(obj, timezone="UTC"))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, datetime):  # pandas.Timestamp and other subclasses
        return None if obj != obj else obj.isoformat()
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    # A value nobody planned for (a problem's offending input, say) must not turn an
    # answer into a 500: its text is what a caller can use.
    return repr(obj)


_ENCODER = msgspec.json.Encoder(enc_hook=_hook)


def encode(data: Any) -> bytes:
    """JSON bytes; datetimes in ISO 8601, numpy arrays as lists, NaN and inf as null."""
    return _ENCODER.encode(data)


def decode(raw: bytes, typ: type[Any], what: str = "request body") -> Any:
    """Decode and check a JSON body against a msgspec type; ConfigurationError if unfit."""
    try:
        return msgspec.json.decode(raw or b"null", type=typ)
    except msgspec.ValidationError as exc:
        raise ConfigurationError(f"{what}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigurationError(f"{what} is not valid JSON: {exc}") from None


def parse_time(value: str | float | int | None, what: str) -> datetime | float | None:
    """ISO 8601 (naive = UTC, 'Z' allowed) or epoch seconds, as the library takes them."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigurationError(f"{what}: expected a finite time, got {value!r}")
        return float(value)
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ConfigurationError(f"{what}: expected a finite time, got {text!r}")
        return seconds
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(
            f"{what}: {text!r} is neither an ISO 8601 time nor epoch seconds"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def parse_int(value: str | None, what: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(f"{what} must be an integer, got {value!r}") from None


def parse_float(value: str | None, what: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise ConfigurationError(f"{what} must be a number, got {value!r}") from None


def parse_list(value: str | None) -> list[str] | None:
    """'a,b' -> ['a', 'b']; None or '' -> None."""
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_bool(value: str | None, what: str) -> bool:
    if value is None or value == "":
        return False
    low = value.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{what} must be true or false, got {value!r}")


def typed_values(view: FeatureView, values: Mapping[str, Any]) -> dict[str, Any]:
    """JSON has no timestamps: ISO strings in Timestamp fields become datetimes. A string
    that does not parse is left alone, so that validation refuses it with its rule."""
    out = dict(values)
    for f in view.fields:
        v = out.get(f.name)
        if f.dtype.kind == "Timestamp" and isinstance(v, str):
            try:
                when = datetime.fromisoformat(v)
            except ValueError:
                continue
            out[f.name] = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return out


def problem(p: Problem) -> ProblemOut:
    return ProblemOut(p.view, p.entity, p.field, p.rule, p.value, p.message, p.row, p.severity)


def validation_error(exc: ValidationError) -> dict[str, Any]:
    return {"message": str(exc), "problems": [problem(p) for p in exc.problems]}


def version(v: Version) -> VersionOut:
    return VersionOut(v.id, v.event_time, v.written_at, v.values, v.expired)


def entity_stats(s: EntityStats) -> EntityStatsOut:
    return EntityStatsOut(
        s.view,
        s.entity_id,
        str(s.status),  # type: ignore[arg-type]  # a Status is one of the three names
        s.fields,
        s.present,
        s.event_time,
        s.last_update,
        s.versions,
        s.bytes,
        s.value_bytes,
        s.expires_in_s,
    )


def record(r: Record) -> dict[str, Any]:
    return {
        "entity_id": r.entity_id,
        "status": str(r.status),
        "event_time": r.event_time,
        "values": r.values,
    }


def write_report(r: WriteReport) -> WriteReportOut:
    return WriteReportOut(
        written=r.written,
        duplicates=r.duplicates,
        late=r.late,
        dropped=r.dropped,
        expired=r.expired,
        refused=[
            RefusedRow(i, str(exc), [problem(p) for p in exc.problems]) for i, exc in r.refused
        ],
        warnings=[problem(p) for p in r.warnings],
    )
