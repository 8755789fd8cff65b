"""Definitions: entities, fields and feature views."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .. import types as t
from ..errors import ConfigurationError
from .time import Duration, duration_us

# Names end up inside Redis keys and SCAN patterns: keep them free of glob and tag characters.
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigurationError(
            f"{kind} name {name!r} is not allowed: use letters, digits and '_' "
            "(start with a letter or '_', at most 128 characters)"
        )
    return name


def spec_of(transform: Any) -> dict[str, Any]:
    """A transform's spec as kept in a view definition (without created_at, so that
    applying the same view again is a no-op)."""
    spec = dict(transform.spec())
    spec.pop("created_at", None)
    return spec


@dataclass(frozen=True, slots=True)
class Entity:
    """What features describe (a user, a merchant...). Ids are strings or ints."""

    name: str
    description: str = ""

    def __post_init__(self) -> None:
        check_name("entity", self.name)

    def spec(self) -> dict[str, Any]:
        return {"kind": "entity", "name": self.name, "description": self.description}


@dataclass(frozen=True, slots=True)
class Field:
    """One typed feature with its constraints."""

    name: str
    dtype: t.DType
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    max_length: int | None = None
    pattern: str | None = None
    description: str = ""

    def __init__(
        self,
        name: str,
        dtype: t.DType,
        *,
        nullable: bool = True,
        min: float | None = None,
        max: float | None = None,
        categories: Iterable[str] | None = None,
        max_length: int | None = None,
        pattern: str | None = None,
        description: str = "",
    ) -> None:
        check_name("field", name)
        where = f"field {name!r}"
        if not isinstance(dtype, t.DType):
            raise ConfigurationError(f"{where}: dtype must be one of redfeat.types, got {dtype!r}")
        for label, bound in (("min", min), ("max", max)):
            if bound is None:
                continue
            if not dtype.numeric:
                raise ConfigurationError(f"{where}: {label}= applies to numeric types only")
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                raise ConfigurationError(f"{where}: {label}= must be a number, got {bound!r}")
            if not math.isfinite(bound):
                raise ConfigurationError(f"{where}: {label}= must be finite")
        if min is not None and max is not None and min > max:
            raise ConfigurationError(f"{where}: min={min} is greater than max={max}")
        cats: tuple[str, ...] | None = None
        if categories is not None:
            if dtype is not t.String:
                raise ConfigurationError(
                    f"{where}: categories= applies to String fields (or use t.Category)"
                )
            cats = tuple(categories)
            if not cats or not all(isinstance(c, str) for c in cats):
                raise ConfigurationError(f"{where}: categories= must be a non-empty list of str")
        if max_length is not None:
            if dtype is not t.String and not isinstance(dtype, t.List):
                raise ConfigurationError(f"{where}: max_length= applies to String and List")
            if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 0:
                raise ConfigurationError(f"{where}: max_length= must be an int >= 0")
        if pattern is not None:
            if dtype is not t.String:
                raise ConfigurationError(f"{where}: pattern= applies to String fields only")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigurationError(f"{where}: pattern {pattern!r} is invalid: {exc}") from exc
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "dtype", dtype)
        set_(self, "nullable", bool(nullable))
        set_(self, "min", min)
        set_(self, "max", max)
        set_(self, "categories", cats)
        set_(self, "max_length", max_length)
        set_(self, "pattern", pattern)
        set_(self, "description", description)

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype.spec(),
            "nullable": self.nullable,
            "min": self.min,
            "max": self.max,
            "categories": list(self.categories) if self.categories is not None else None,
            "max_length": self.max_length,
            "pattern": self.pattern,
            "description": self.description,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Field:
        return cls(
            spec["name"],
            t.from_spec(spec["dtype"]),
            nullable=spec.get("nullable", True),
            min=spec.get("min"),
            max=spec.get("max"),
            categories=spec.get("categories"),
            max_length=spec.get("max_length"),
            pattern=spec.get("pattern"),
            description=spec.get("description", ""),
        )


@dataclass(frozen=True, slots=True)
class History:
    """How many versions a view keeps per entity: a count, or a duration back from the newest."""

    count: int | None = None
    duration_us: int | None = None

    @classmethod
    def parse(cls, value: int | Duration, *, view: str) -> History:
        if isinstance(value, bool):
            raise ConfigurationError(f"view {view!r}: history= must be a count or a duration")
        if isinstance(value, int):
            if value < 0:
                raise ConfigurationError(f"view {view!r}: history= must be >= 0, got {value}")
            return cls(count=value)
        return cls(duration_us=duration_us(value, what=f"view {view!r} history"))

    @property
    def keeps_versions(self) -> bool:
        return self.duration_us is not None or bool(self.count)

    def spec(self) -> dict[str, int | None]:
        return {"count": self.count, "duration_us": self.duration_us}


@dataclass(frozen=True, slots=True, init=False)
class FeatureView:
    """A named group of typed features of one entity, versioned on every write.

    ``ttl``: values older than this (by event time) read as missing and their keys expire.
    ``history``: versions kept per entity, a count (0 = latest only) or a duration like "30d".
    """

    name: str
    entity: str
    fields: tuple[Field, ...]
    ttl_us: int | None
    history: History
    description: str
    tags: dict[str, str]
    schema_version: int
    source: str | None
    transforms: tuple[Any, ...]
    transform_specs: tuple[dict[str, Any], ...]
    on_read: bool

    def __init__(
        self,
        name: str,
        *,
        entity: Entity | str,
        fields: Iterable[Field] | None = None,
        ttl: Duration | None = None,
        history: int | Duration = 10,
        description: str = "",
        tags: dict[str, str] | None = None,
        schema_version: int = 1,
        source: str | None = None,
        transforms: Iterable[Any] = (),
        on_read: bool = False,
        transform_specs: Iterable[dict[str, Any]] | None = None,
    ) -> None:
        check_name("view", name)
        ent = entity.name if isinstance(entity, Entity) else check_name("entity", entity)
        tfs = tuple(transforms)
        if source is not None:
            check_name("view", source)
            specs = tuple(transform_specs or (spec_of(x) for x in tfs))
            if not specs:
                raise ConfigurationError(f"view {name!r}: a derived view needs transforms=[...]")
            if fields is None:
                fields = [Field.from_spec(o) for s in specs for o in s["outputs"]]
        else:
            if tfs or on_read:
                raise ConfigurationError(
                    f"view {name!r}: transforms= and on_read= need source='<view>'"
                )
            specs = ()
        if fields is None:
            raise ConfigurationError(
                f"view {name!r}: needs fields=[...] (or source= and transforms=)"
            )
        flds = tuple(fields)
        if not flds:
            raise ConfigurationError(f"view {name!r}: needs at least one field")
        for f in flds:
            if not isinstance(f, Field):
                raise ConfigurationError(f"view {name!r}: fields must be Field(...), got {f!r}")
        names = [f.name for f in flds]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigurationError(f"view {name!r}: duplicate field names {dupes}")
        ttl_us = None if ttl is None else duration_us(ttl, what=f"view {name!r} ttl")
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "entity", ent)
        set_(self, "fields", flds)
        set_(self, "ttl_us", ttl_us)
        set_(self, "history", History.parse(history, view=name))
        set_(self, "description", description)
        set_(self, "tags", dict(tags or {}))
        set_(self, "schema_version", schema_version)
        set_(self, "source", source)
        set_(self, "transforms", tfs)
        set_(self, "transform_specs", specs)
        set_(self, "on_read", bool(on_read))

    @property
    def ttl(self) -> timedelta | None:
        return None if self.ttl_us is None else timedelta(microseconds=self.ttl_us)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def spec(self) -> dict[str, Any]:
        """The definition as data (without registry bookkeeping)."""
        return {
            "kind": "view",
            "name": self.name,
            "entity": self.entity,
            "fields": [f.spec() for f in self.fields],
            "ttl_us": self.ttl_us,
            "history": self.history.spec(),
            "description": self.description,
            "tags": self.tags,
            "source": self.source,
            "transforms": list(self.transform_specs),
            "on_read": self.on_read,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> FeatureView:
        hist = spec["history"]
        history: int | timedelta = (
            hist["count"]
            if hist.get("count") is not None
            else timedelta(microseconds=hist["duration_us"])
        )
        ttl = spec.get("ttl_us")
        return cls(
            spec["name"],
            entity=spec["entity"],
            fields=[Field.from_spec(f) for f in spec["fields"]],
            ttl=None if ttl is None else timedelta(microseconds=ttl),
            history=history,
            description=spec.get("description", ""),
            tags=spec.get("tags") or {},
            schema_version=spec.get("schema_version", 1),
            source=spec.get("source"),
            on_read=spec.get("on_read", False),
            transform_specs=spec.get("transforms") or None,
        )
