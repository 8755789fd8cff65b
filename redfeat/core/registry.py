"""The registry: definitions kept in Redis so every process sees the same views.

One hash per project (``rf:<project>:registry``): ``view:<name>``, ``entity:<name>`` and
``service:<name>`` hold JSON definitions, ``gen`` counts changes so processes notice them
cheaply, and ``offline`` is set once an offline log is attached to the project (writers
then put each version's payload in the change feed, which feeds the log). A view's
stored form adds its slot layout (see codec.py) and schema version; a feature service's
keeps every version of its feature list.
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
from .schema import Entity, FeatureService, FeatureView
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
    key: Entity  # the view's entity: its join keys encode and check ids

    @property
    def name(self) -> str:
        return self.view.name


def _resolve(stored: dict[str, Any], entities: dict[str, Entity] | None = None) -> Resolved:
    view = FeatureView.from_spec(stored)
    key = (entities or {}).get(view.entity) or Entity(view.entity)
    codec = ViewCodec(view, stored["slots"], stored["n_slots"], key)
    h = view.history
    if h.duration_us is not None:
        mode, value = "d", h.duration_us
    elif h.count:
        mode, value = "c", h.count
    else:
        mode, value = "n", 0
    ttl_ms = 0 if view.ttl_us is None else max(1, view.ttl_us // 1000)
    return Resolved(view, codec, mode, value, ttl_ms, 1 if mode == "n" else 2, key)


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
    """The stored form after applying ``view`` over ``old``; (None, why) when nothing changes.
    A breaking change raises ConflictError unless ``allow_breaking``."""
    stored, why, breaking = view_change(old, view)
    if breaking and not allow_breaking:
        raise ConflictError(
            f"view {view.name!r}: the new definition {' and '.join(breaking)}, which would "
            "break data already stored; pass allow_breaking=True to apply it anyway "
            "(the view's schema version is bumped and the affected fields read as null "
            "in rows written before)"
        )
    return stored, why


def view_change(
    old: dict[str, Any] | None, view: FeatureView
) -> tuple[dict[str, Any] | None, str, list[str]]:
    """(stored form after the change or None, what happens, what of it breaks stored data)."""
    spec = view.spec()
    now = now_us()
    if old is None:
        slots = {f["name"]: i for i, f in enumerate(spec["fields"])}
        return (
            {
                **spec,
                "schema_version": 1,
                "slots": slots,
                "n_slots": len(slots),
                "created_at_us": now,
                "updated_at_us": now,
            },
            "created",
            [],
        )
    defaults: dict[str, Any] = {
        "source": None,
        "transforms": [],
        "on_read": False,
        "batch_source": None,
    }
    old_spec = {k: old.get(k, defaults.get(k)) for k in spec}
    if old_spec == spec:
        return None, "unchanged", []
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
    slots = dict(old["slots"])
    n_slots = old["n_slots"]
    for name in removed:
        slots.pop(name)
    for name in new_fields:
        if name not in slots or name in retyped:
            slots[name] = n_slots  # slots are never reused: old rows can't be misread
            n_slots += 1
    return (
        {
            **spec,
            "schema_version": old["schema_version"] + (1 if breaking else 0),
            "slots": slots,
            "n_slots": n_slots,
            "created_at_us": old["created_at_us"],
            "updated_at_us": now,
        },
        ("breaking change: " + " and ".join(breaking)) if breaking else "updated",
        breaking,
    )


def entity_change(old: dict[str, Any] | None, entity: Entity, used: bool) -> tuple[str, list[str]]:
    """What applying ``entity`` over its stored form does, and what of it breaks the ids of
    views stored under it (``used``: some view names the entity)."""
    spec = entity.spec()
    if old is None:
        return "created", []
    if old == spec:
        return "unchanged", []
    before = Entity.from_spec(old)
    # renaming a key keeps every stored id; another count or type of keys does not
    if used and [k.dtype for k in before.join_keys] != [k.dtype for k in entity.join_keys]:
        was = [f"{k.name}:{k.dtype.kind}" for k in before.join_keys]
        now = [f"{k.name}:{k.dtype.kind}" for k in entity.join_keys]
        why = f"changes the join keys of entity {entity.name!r} from {was} to {now}"
        return "breaking change: " + why, [why]
    return "updated", []


def service_change(
    old: dict[str, Any] | None, service: FeatureService
) -> tuple[dict[str, Any] | None, str, list[str]]:
    """(stored form or None, what happens, what of it breaks readers of the service).
    Every change of the feature list is a new version; removing features breaks the
    models that read them."""
    now = now_us()
    spec = service.spec()
    if old is None:
        first = {"version": 1, "features": spec["features"], "applied_at_us": now}
        return (
            {**spec, "version": 1, "versions": [first], "created_at_us": now, "updated_at_us": now},
            "created",
            [],
        )
    same_meta = all(old.get(k) == spec[k] for k in ("description", "tags"))
    if old["features"] == spec["features"] and same_meta:
        return None, "unchanged", []
    stored = {**old, **spec, "updated_at_us": now}
    if old["features"] == spec["features"]:
        return stored, "updated", []
    version = int(old["version"]) + 1
    stored["version"] = version
    stored["versions"] = [
        *old.get("versions", []),
        {"version": version, "features": spec["features"], "applied_at_us": now},
    ]
    gone = [f for f in old["features"] if f not in spec["features"]]
    breaking = [f"removes feature(s) {gone}"] if gone else []
    why = f"version {version}" + (": breaking change: " + breaking[0] if breaking else "")
    return stored, why, breaking


class Registry:
    """Cached view of the project's definitions."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._key = keys.registry
        self._views: dict[str, Resolved] = {}
        self._entities: dict[str, Entity] = {}
        self._windows: dict[str, dict[str, Any]] = {}  # window features: stored specs
        self._services: dict[str, dict[str, Any]] = {}  # feature services: stored forms
        self._gen: int | None = None
        self._checked = 0.0
        self._offline = False

    def load(self) -> None:
        with wrap_redis(f"cannot read the registry {self._key!r}"):
            raw = self._client.hgetall(self._key)
        stored_views: list[dict[str, Any]] = []
        entities: dict[str, Entity] = {}
        windows: dict[str, dict[str, Any]] = {}
        services: dict[str, dict[str, Any]] = {}
        gen = 0
        offline = False
        for k, v in raw.items():
            name = k.decode() if isinstance(k, bytes) else str(k)
            if name == "gen":
                gen = int(v)
            elif name == "offline":
                offline = True
            elif name.startswith("view:"):
                stored_views.append(msgspec.json.decode(v))
            elif name.startswith("entity:"):
                entities[name[7:]] = Entity.from_spec(msgspec.json.decode(v))
            elif name.startswith("window:"):
                windows[name[7:]] = msgspec.json.decode(v)
            elif name.startswith("service:"):
                services[name[8:]] = msgspec.json.decode(v)
        views = {d["name"]: _resolve(d, entities) for d in stored_views}
        self._views, self._entities, self._gen = views, entities, gen
        self._offline = offline
        self._windows = windows
        self._services = services
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

    def offline_attached(self) -> bool:
        """Whether an offline log was ever attached to the project (cached like views: a
        writer opened before the attach learns it within REFRESH_SECONDS of its next use
        of the registry, e.g. its next write)."""
        self._maybe_refresh()
        return self._offline

    def attach_offline(self) -> None:
        """Record that the project has an offline log, once (bumps ``gen`` so every
        process re-reads the registry within REFRESH_SECONDS)."""
        with wrap_redis(f"cannot write the registry {self._key!r}"):
            if self._client.hsetnx(self._key, "offline", 1):
                self._client.hincrby(self._key, "gen", 1)
        self.load()

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

    def entity(self, name: str) -> Entity:
        """The entity ``name`` (one keyed ``entity_id`` if the registry has none so named)."""
        self._maybe_refresh()
        return self._entities.get(name) or Entity(name)

    def services(self) -> list[FeatureService]:
        """Every feature service, at its current version."""
        self.load()
        return [FeatureService.from_spec(self._services[n]) for n in sorted(self._services)]

    def service(self, name: str, version: int | None = None) -> FeatureService:
        """The feature service ``name`` (current version, or ``version``)."""
        self._maybe_refresh()
        stored = self._services.get(name)
        if stored is None:
            self.load()
            stored = self._services.get(name)
        if stored is None:
            known = sorted(self._services) or "none yet"
            raise NotFoundError(
                f"feature service {name!r} is not in the registry (known: {known}); define it "
                "with FeatureService(name, features=[...]) and store.apply(service)"
            )
        try:
            return FeatureService.from_spec(stored, version)
        except KeyError:
            have = [v["version"] for v in stored.get("versions", [])]
            raise NotFoundError(
                f"feature service {name!r} has no version {version!r} (versions: {have})"
            ) from None

    def service_specs(self) -> dict[str, dict[str, Any]]:
        """Stored forms of the feature services by name (with their versions)."""
        self._maybe_refresh()
        return self._services

    def apply(
        self, objects: tuple[Any, ...], *, allow_breaking: bool, dry_run: bool = False
    ) -> dict[str, str]:
        """Store definitions atomically (optimistic WATCH on the registry hash). Returns
        what happens to each (by name); ``dry_run`` says it without storing anything and
        without raising on breaking changes ("breaking change: ..." says what breaks)."""
        for obj in objects:
            if not isinstance(obj, Entity | FeatureView | FeatureService):
                raise ConfigurationError(
                    "apply() takes Entity, FeatureView, FeatureService and WindowFeatures "
                    f"objects, got {type(obj).__name__}"
                )
        for kind in (FeatureView, FeatureService, Entity):
            names = [o.name for o in objects if isinstance(o, kind)]
            if len(set(names)) != len(names):
                dupes = sorted({n for n in names if names.count(n) > 1})
                raise ConfigurationError(f"apply() got the same {kind.__name__} twice: {dupes}")
        with wrap_redis(f"cannot write the registry {self._key!r}"):
            pipe: Any
            with self._client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        pipe.watch(self._key)
                        result = self._plan_all(pipe, objects, allow_breaking or dry_run)
                        updates = {k: v for k, (v, _) in result.items() if v is not None}
                        if updates and not dry_run:
                            pipe.multi()
                            pipe.hset(self._key, mapping=updates)
                            pipe.hincrby(self._key, "gen", 1)
                            pipe.execute()
                        else:
                            pipe.unwatch()
                        break
                    except redis.WatchError:
                        continue
        if not dry_run:
            self.load()
        return {k.split(":", 1)[1]: why for k, (_, why) in result.items()}

    def _plan_all(
        self, pipe: Any, objects: tuple[Any, ...], allow_breaking: bool
    ) -> dict[str, tuple[bytes | None, str]]:
        result: dict[str, tuple[bytes | None, str]] = {}
        given = {o.name: o for o in objects if isinstance(o, Entity)}
        # An Entity object given to a view is applied with it when it declares join keys
        # (they decide the ids); one without keys only names its entity, as a str does.
        for obj in objects:
            ent_def = obj.entity_def if isinstance(obj, FeatureView) else None
            if ent_def is None or not ent_def.declared:
                continue
            ent = given.setdefault(obj.entity, ent_def)
            if ent != ent_def:
                raise ConfigurationError(
                    f"view {obj.name!r}: its entity {obj.entity!r} is given twice with "
                    f"different definitions ({ent} and {ent_def})"
                )
        stored_views = {
            name[5:]: msgspec.json.decode(raw)
            for name, raw in (
                (k.decode() if isinstance(k, bytes) else str(k), v)
                for k, v in pipe.hgetall(self._key).items()
            )
            if name.startswith("view:")
        }
        for ent in given.values():
            field = "entity:" + ent.name
            raw = pipe.hget(self._key, field)
            old = msgspec.json.decode(raw) if raw else None
            used = any(v["entity"] == ent.name for v in stored_views.values())
            why, breaking = entity_change(old, ent, used)
            if breaking and not allow_breaking:
                raise ConflictError(
                    f"entity {ent.name!r}: the new definition {breaking[0]}, under which ids "
                    "already stored would no longer be found; pass allow_breaking=True to "
                    "apply it anyway (then rewrite the views' data)"
                )
            changed = why != "unchanged"
            result[field] = (msgspec.json.encode(ent.spec()) if changed else None, why)
        for obj in objects:
            if isinstance(obj, Entity):
                continue
            if isinstance(obj, FeatureService):
                field = "service:" + obj.name
                raw = pipe.hget(self._key, field)
                stored, why, breaking = service_change(
                    msgspec.json.decode(raw) if raw else None, obj
                )
                if breaking and not allow_breaking:
                    raise ConflictError(
                        f"feature service {obj.name!r}: the new definition {breaking[0]}, "
                        "which models reading the service use; pass allow_breaking=True to "
                        "apply it anyway (earlier versions stay readable by version)"
                    )
                result[field] = (None if stored is None else msgspec.json.encode(stored), why)
                continue
            field = "view:" + obj.name
            old = stored_views.get(obj.name)
            if obj.entity not in given and not pipe.hexists(self._key, "entity:" + obj.entity):
                # Views name their entity; record it so the registry lists every entity.
                ent_spec = msgspec.json.encode((obj.entity_def or Entity(obj.entity)).spec())
                result["entity:" + obj.entity] = (ent_spec, "created")
            stored, why = _plan(old, obj, allow_breaking)
            result[field] = (None if stored is None else msgspec.json.encode(stored), why)
        return result

    def remove(self, kind: str, name: str) -> None:
        """Drop one definition: kind "view", "service", "entity" or "window"."""
        with wrap_redis(f"cannot write the registry {self._key!r}"):
            pipe = self._client.pipeline(transaction=True)
            pipe.hdel(self._key, f"{kind}:{name}")
            pipe.hincrby(self._key, "gen", 1)
            pipe.execute()
        self.load()

    def remove_view(self, name: str) -> None:
        self.remove("view", name)
