"""Definitions: entities, fields and feature views."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .. import types as t
from ..errors import ConfigurationError
from .sources import Source, source_from_spec
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


# What an entity id may be: a str or an int (one key), a tuple or list in join-key order or
# a mapping of join key to value (several), or a composite id's encoded str ("u1,9").
EntityId = str | int | tuple[Any, ...] | list[Any] | Mapping[str, Any]

DEFAULT_KEY = "entity_id"  # the one join key of an entity that names none (the id column)
MAX_JOIN_KEYS = 8


@dataclass(frozen=True, slots=True)
class JoinKey:
    """One column of an entity's key: its name and type (``t.String`` or ``t.Int``)."""

    name: str
    dtype: t.DType

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype.kind}


def _join_key(entity: str, key: object) -> JoinKey:
    where = f"entity {entity!r}"
    if isinstance(key, str):
        return JoinKey(check_name("join key", key), t.String)
    if isinstance(key, Field):
        name, dtype = key.name, key.dtype
    elif isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str):
        name, dtype = check_name("join key", key[0]), key[1]
    else:
        raise ConfigurationError(
            f"{where}: a join key is a name ('user_id'), a (name, type) pair or "
            f"Field(name, t.Int | t.String), got {key!r}"
        )
    if dtype is not t.Int and dtype is not t.String:
        raise ConfigurationError(
            f"{where}: join key {name!r} must be t.Int or t.String, got {dtype!r}"
        )
    return JoinKey(name, dtype)


@dataclass(frozen=True, slots=True, init=False)
class Entity:
    """What features describe (a user, a merchant, a (user, merchant) pair...).

    ``join_keys``: the columns that identify one, each ``t.String`` (the default for a bare
    name) or ``t.Int``: ``Entity("user_merchant", join_keys=["user_id", "merchant_id"])``.
    An entity with one key takes ids as a str or an int (today's ``get(view, "u1")``);
    with several, a tuple in key order, a mapping of key to value, or the encoded id
    (``"u1,m9"``: parts joined by ``,``, a ``,`` or ``%`` inside a part escaped as
    ``%2C`` / ``%25``). Without join keys the one key is ``entity_id``.
    """

    name: str
    description: str
    join_keys: tuple[JoinKey, ...]
    declared: bool  # join keys given (kept in the registry); else the default entity_id

    def __init__(
        self,
        name: str,
        description: str = "",
        *,
        join_keys: Iterable[str | Field | tuple[str, t.DType]] | None = None,
    ) -> None:
        check_name("entity", name)
        if join_keys is None:
            keys: tuple[JoinKey, ...] = (JoinKey(DEFAULT_KEY, t.String),)
        else:
            if isinstance(join_keys, str):
                raise ConfigurationError(
                    f"entity {name!r}: join_keys must be a list like ['user_id'], "
                    f"got the string {join_keys!r}"
                )
            keys = tuple(_join_key(name, k) for k in join_keys)
            if not 1 <= len(keys) <= MAX_JOIN_KEYS:
                raise ConfigurationError(
                    f"entity {name!r}: give 1 to {MAX_JOIN_KEYS} join keys, got {len(keys)}"
                )
            names = [k.name for k in keys]
            if len(set(names)) != len(names):
                raise ConfigurationError(f"entity {name!r}: join keys {names} repeat")
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "description", description)
        set_(self, "join_keys", keys)
        set_(self, "declared", join_keys is not None)

    @property
    def key_names(self) -> list[str]:
        """The join keys' names, in key order."""
        return [k.name for k in self.join_keys]

    @property
    def composite(self) -> bool:
        """Whether ids have more than one part."""
        return len(self.join_keys) > 1

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": "entity", "name": self.name}
        spec["description"] = self.description
        if self.declared:  # entities without join keys keep the form they always had
            spec["join_keys"] = [k.spec() for k in self.join_keys]
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Entity:
        keys = spec.get("join_keys")
        return cls(
            spec["name"],
            spec.get("description", ""),
            join_keys=None
            if keys is None
            else [(k["name"], t.from_spec({"kind": k["dtype"]})) for k in keys],
        )


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
    ``batch_source``: where ``store.materialize`` loads its rows from (ParquetSource,
    CsvSource, SqlSource). ``view[["a", "b"]]`` is the references ``["view:a", "view:b"]``.
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
    # the Entity given (apply registers its join keys), or None; not part of equality: a
    # view read back from the registry names its entity only
    entity_def: Entity | None = field(compare=False)
    batch_source: Source | None

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
        batch_source: Source | None = None,
    ) -> None:
        check_name("view", name)
        ent = entity.name if isinstance(entity, Entity) else check_name("entity", entity)
        if batch_source is not None:
            if not isinstance(batch_source, Source):
                raise ConfigurationError(
                    f"view {name!r}: batch_source must be a ParquetSource, CsvSource or "
                    f"SqlSource, got {type(batch_source).__name__}"
                )
            if source is not None:
                raise ConfigurationError(
                    f"view {name!r}: a derived view (source=) is computed from its source "
                    "view; give the batch_source to the source view"
                )
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
        set_(self, "entity_def", entity if isinstance(entity, Entity) else None)
        set_(self, "batch_source", batch_source)

    def __getitem__(self, features: str | Iterable[str]) -> list[str]:
        """``view[["a", "b"]]``: the references ``["view:a", "view:b"]`` (for get_features,
        training frames and FeatureService)."""
        names = [features] if isinstance(features, str) else list(features)
        known = {f.name for f in self.fields}
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise ConfigurationError(
                f"view {self.name!r} has no field(s) {unknown}; known: {sorted(known)}"
                if unknown
                else f"view {self.name!r}: name at least one field"
            )
        return [f"{self.name}:{n}" for n in names]

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
            "batch_source": None if self.batch_source is None else self.batch_source.spec(),
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
            batch_source=None
            if spec.get("batch_source") is None
            else source_from_spec(spec["batch_source"]),
        )


@dataclass(frozen=True, slots=True, init=False)
class FeatureService:
    """A named set of features read as one unit, online and offline: what a model was
    trained with and is served.

    ``features``: views (every field), ``view[["a", "b"]]``, ``"view:feature"`` references,
    ``"view"`` (every field, resolved when applied) and window features (every output, or
    ``"window:feature"``). Applying a changed list makes a new version; the registry
    keeps every version (``store.feature_service(name, version=n)``).
    """

    name: str
    features: tuple[str, ...]
    description: str
    tags: dict[str, str]
    version: int | None  # set on a service read from the registry

    def __init__(
        self,
        name: str,
        *,
        features: Iterable[Any],
        description: str = "",
        tags: dict[str, str] | None = None,
        version: int | None = None,
    ) -> None:
        check_name("feature service", name)
        if isinstance(features, str):
            raise ConfigurationError(
                f"feature service {name!r}: features must be a list like "
                "[view, 'view:feature', ...]"
            )
        refs: list[str] = []

        def add(item: Any) -> None:
            if isinstance(item, FeatureView):
                refs.extend(f"{item.name}:{f.name}" for f in item.fields)
            elif isinstance(item, str):
                view, sep, feat = item.partition(":")
                if not view or (sep and not feat):
                    raise ConfigurationError(
                        f"feature service {name!r}: {item!r} must look like 'view:feature' "
                        "or 'view'"
                    )
                refs.append(item)
            elif isinstance(item, list | tuple):
                for x in item:
                    add(x)
            elif isinstance(getattr(item, "name", None), str) and isinstance(
                getattr(item, "features", None), list
            ):  # window features: every output
                refs.extend(f"{item.name}:{f}" for f in item.features)
            else:
                raise ConfigurationError(
                    f"feature service {name!r}: cannot take {item!r} as features; give views, "
                    "window features or 'view:feature' references"
                )

        for item in features:
            add(item)
        if not refs:
            raise ConfigurationError(f"feature service {name!r}: needs at least one feature")
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "features", tuple(dict.fromkeys(refs)))  # once each, in the order given
        set_(self, "description", description)
        set_(self, "tags", dict(tags or {}))
        set_(self, "version", version)

    @property
    def unresolved(self) -> list[str]:
        """Bare view names, resolved into their fields when the service is applied."""
        return [r for r in self.features if ":" not in r]

    def spec(self) -> dict[str, Any]:
        return {
            "kind": "service",
            "name": self.name,
            "features": list(self.features),
            "description": self.description,
            "tags": self.tags,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any], version: int | None = None) -> FeatureService:
        """The service as stored; ``version``: an earlier version's feature list."""
        want = spec.get("version") if version is None else version
        features = spec["features"]
        if version is not None:
            for v in spec.get("versions", []):
                if v["version"] == version:
                    features = v["features"]
                    break
            else:
                raise KeyError(version)
        return cls(
            spec["name"],
            features=features,
            description=spec.get("description", ""),
            tags=spec.get("tags") or {},
            version=want,
        )
