"""The registry: definitions kept in Redis so every process sees the same views.

One hash per project (``rf:<project>:registry``): ``view:<name>`` and ``entity:<name>``
hold JSON definitions, ``gen`` counts changes so processes notice them cheaply.
A view's stored form adds its slot layout (see codec.py) and schema version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgspec
import redis

from ..errors import ConfigurationError, ConflictError, NotFoundError, wrap_redis
from .codec import ViewCodec
from .keys import Keys
from .schema import Entity, FeatureView
from .time import now_us

# How long a process trusts its cached definitions before re-reading the change counter.
REFRESH_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Resolved:
    """A view as the registry knows it, with everything the data path needs."""

    view: FeatureView
    codec: ViewCodec
    hist_mode: str  # "n" none, "c" count, "d" duration
    hist_value: int
    ttl_ms: int
    keys_per_entity: int

    @property
    def name(self) -> str:
        return self.view.name


def _resolve(stored: dict[str, Any]) -> Resolved:
    view = FeatureView.from_spec(stored)
    codec = ViewCodec(view, stored["slots"], stored["n_slots"])
    h = view.history
    if h.duration_us is not None:
        mode, value = "d", h.duration_us
    elif h.count:
        mode, value = "c", h.count
    else:
        mode, value = "n", 0
    ttl_ms = 0 if view.ttl_us is None else max(1, view.ttl_us // 1000)
    return Resolved(view, codec, mode, value, ttl_ms, 1 if mode == "n" else 2)


def _same_storage(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether stored values of the old type read correctly as the new one: the same type,
    a Category with other values (still strings), a Vector with another metric."""
    if old == new:
        return True
    if old["kind"] == new["kind"] == "Category":
        return True
    return bool(old["kind"] == new["kind"] == "Vector" and old["dim"] == new["dim"])


def _plan(
    old: dict[str, Any] | None, view: FeatureView, allow_breaking: bool
) -> tuple[dict[str, Any] | None, str]:
    """The stored form after applying ``view`` over ``old``; (None, why) when nothing changes."""
    spec = view.spec()
    now = now_us()
    if old is None:
        slots = {f["name"]: i for i, f in enumerate(spec["fields"])}
        return {
            **spec,
            "schema_version": 1,
            "slots": slots,
            "n_slots": len(slots),
            "created_at_us": now,
            "updated_at_us": now,
        }, "created"
    defaults: dict[str, Any] = {"source": None, "transforms": [], "on_read": False}
    old_spec = {k: old.get(k, defaults.get(k)) for k in spec}
    if old_spec == spec:
        return None, "unchanged"
    old_fields = {f["name"]: f for f in old["fields"]}
    new_fields = {f["name"]: f for f in spec["fields"]}
    breaking: list[str] = []
    removed = sorted(set(old_fields) - set(new_fields))
    if removed:
        breaking.append(f"removes field(s) {removed}")
    retyped = sorted(
        n
        for n in new_fields
        if n in old_fields and not _same_storage(old_fields[n]["dtype"], new_fields[n]["dtype"])
    )
    if retyped:
        breaking.append(f"changes the type of {retyped}")
    if spec["entity"] != old["entity"]:
        breaking.append(f"changes the entity from {old['entity']!r} to {spec['entity']!r}")
    if breaking and not allow_breaking:
        raise ConflictError(
            f"view {view.name!r}: the new definition {' and '.join(breaking)}, which would "
            "break data already stored; pass allow_breaking=True to apply it anyway "
            "(the view's schema version is bumped and the affected fields read as null "
            "in rows written before)"
        )
    slots = dict(old["slots"])
    n_slots = old["n_slots"]
    for name in removed:
        slots.pop(name)
    for name in new_fields:
        if name not in slots or name in retyped:
            slots[name] = n_slots  # slots are never reused: old rows can't be misread
            n_slots += 1
    return {
        **spec,
        "schema_version": old["schema_version"] + (1 if breaking else 0),
        "slots": slots,
        "n_slots": n_slots,
        "created_at_us": old["created_at_us"],
        "updated_at_us": now,
    }, ("breaking change: " + " and ".join(breaking)) if breaking else "updated"


class Registry:
    """Cached view of the project's definitions."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._key = keys.registry
        self._views: dict[str, Resolved] = {}
        self._entities: dict[str, Entity] = {}
        self._windows: dict[str, dict[str, Any]] = {}  # window features: stored specs
        self._gen: int | None = None
        self._checked = 0.0

    def load(self) -> None:
        with wrap_redis(f"cannot read the registry {self._key!r}"):
            raw = self._client.hgetall(self._key)
        views: dict[str, Resolved] = {}
        entities: dict[str, Entity] = {}
        windows: dict[str, dict[str, Any]] = {}
        gen = 0
        for k, v in raw.items():
            name = k.decode() if isinstance(k, bytes) else str(k)
            if name == "gen":
                gen = int(v)
            elif name.startswith("view:"):
                views[name[5:]] = _resolve(msgspec.json.decode(v))
            elif name.startswith("entity:"):
                d = msgspec.json.decode(v)
                entities[name[7:]] = Entity(d["name"], d.get("description", ""))
            elif name.startswith("window:"):
                windows[name[7:]] = msgspec.json.decode(v)
        self._views, self._entities, self._gen = views, entities, gen
        self._windows = windows
        deps: dict[str, list[Resolved]] = {}
        for r in views.values():  # built once per registry load, not per write
            if r.view.source is not None and not r.view.on_read:
                deps.setdefault(r.view.source, []).append(r)
        self._deps = deps
        self._checked = time.monotonic()

    def _maybe_refresh(self) -> None:
        if self._gen is None:
            self.load()
            return
        if time.monotonic() - self._checked < REFRESH_SECONDS:
            return
        with wrap_redis(f"cannot read the registry {self._key!r}"):
            gen = self._client.hget(self._key, "gen")
        self._checked = time.monotonic()
        if int(gen or 0) != self._gen:
            self.load()

    def refresh(self) -> None:
        """Re-check the change counter now (instead of at most once per REFRESH_SECONDS)."""
        self._checked = 0.0
        self._maybe_refresh()

    def get(self, name: str) -> Resolved:
        """The view ``name``; re-reads the registry once before giving up."""
        if not isinstance(name, str):
            raise ConfigurationError(f"a view name is a str, got {name!r:.60}")
        self._maybe_refresh()
        res = self._views.get(name)
        if res is None:
            self.load()
            res = self._views.get(name)
        if res is None and name in self._windows:
            raise NotFoundError(
                f"{name!r} is window features, not a view: read them with store.get, "
                "get_features or training_frame; see them with store.window(name), remove "
                "them with store.delete_window(name)"
            )
        if res is None:
            known = sorted(self._views) or "none yet"
            raise NotFoundError(
                f"view {name!r} is not in the registry (known: {known}); "
                "define it with FeatureView(...) and store.apply(view)"
            )
        return res

    def window_specs(self) -> dict[str, dict[str, Any]]:
        """Stored specs of window features by name (cached like views)."""
        self._maybe_refresh()
        return self._windows

    def is_window(self, name: str) -> bool:
        """Whether ``name`` is window features (not a view)."""
        return isinstance(name, str) and name in self.window_specs()

    def has(self, name: str) -> bool:
        """Whether view ``name`` exists (cached; re-read once before saying no)."""
        try:
            self.get(name)
        except NotFoundError:
            return False
        return True

    def dependents(self, source: str) -> list[Resolved]:
        """Materialised derived views computed from ``source`` (from the cached registry)."""
        self._maybe_refresh()
        return self._deps.get(source, []) if isinstance(source, str) else []

    def record_transform(self, spec: dict[str, Any]) -> None:
        """Keep a custom transform's spec (name, inputs, outputs, code hash, created_at)."""
        field = "transform:" + spec["name"]
        with wrap_redis(f"cannot write the registry {self._key!r}"):
            old = self._client.hget(self._key, field)
            if old and msgspec.json.decode(old).get("code_hash") == spec.get("code_hash"):
                return  # same code: keep the first created_at
            self._client.hset(self._key, field, msgspec.json.encode(spec))

    def views(self) -> list[FeatureView]:
        self.load()
        return [self._views[n].view for n in sorted(self._views)]

    def entities(self) -> list[Entity]:
        self.load()
        return [self._entities[n] for n in sorted(self._entities)]

    def apply(self, objects: tuple[Any, ...], *, allow_breaking: bool) -> dict[str, str]:
        """Store definitions atomically (optimistic WATCH on the registry hash)."""
        for obj in objects:
            if not isinstance(obj, Entity | FeatureView):
                raise ConfigurationError(
                    f"apply() takes Entity and FeatureView objects, got {type(obj).__name__}"
                )
        names = [o.name for o in objects if isinstance(o, FeatureView)]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"apply() got the same view twice: {sorted(names)}")
        with wrap_redis(f"cannot write the registry {self._key!r}"):
            pipe: Any
            with self._client.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(self._key)
                        result = self._plan_all(pipe, objects, allow_breaking)
                        updates = {k: v for k, (v, _) in result.items() if v is not None}
                        if updates:
                            pipe.multi()
                            pipe.hset(self._key, mapping=updates)
                            pipe.hincrby(self._key, "gen", 1)
                            pipe.execute()
                        else:
                            pipe.unwatch()
                        break
                    except redis.WatchError:
                        continue
        self.load()
        return {k.split(":", 1)[1]: why for k, (_, why) in result.items()}

    def _plan_all(
        self, pipe: Any, objects: tuple[Any, ...], allow_breaking: bool
    ) -> dict[str, tuple[bytes | None, str]]:
        result: dict[str, tuple[bytes | None, str]] = {}
        entity_names = {o.name for o in objects if isinstance(o, Entity)}
        for obj in objects:
            field = ("entity:" if isinstance(obj, Entity) else "view:") + obj.name
            raw = pipe.hget(self._key, field)
            old = msgspec.json.decode(raw) if raw else None
            if isinstance(obj, Entity):
                spec = obj.spec()
                changed = old != spec
                result[field] = (
                    msgspec.json.encode(spec) if changed else None,
                    "created" if old is None else ("updated" if changed else "unchanged"),
                )
                continue
            if obj.entity not in entity_names and not pipe.hexists(
                self._key, "entity:" + obj.entity
            ):
                # Views name their entity; record it so the registry lists every entity.
                ent = msgspec.json.encode(Entity(obj.entity).spec())
                result["entity:" + obj.entity] = (ent, "created")
            stored, why = _plan(old, obj, allow_breaking)
            result[field] = (None if stored is None else msgspec.json.encode(stored), why)
        return result

    def remove_view(self, name: str) -> None:
        with wrap_redis(f"cannot write the registry {self._key!r}"):
            pipe = self._client.pipeline(transaction=True)
            pipe.hdel(self._key, "view:" + name)
            pipe.hincrby(self._key, "gen", 1)
            pipe.execute()
        self.load()
