"""FeatureStore: the one entry object. A thin facade over the modules that do the work."""

from __future__ import annotations

import contextlib
import os
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis

from . import history as _history
from .codec import normalize_id
from .embedded import EmbeddedServer, ServerInfo
from .errors import BackendError, ConfigurationError, NotFoundError, Problem, ValidationError
from .history import Version
from .keys import Keys, escape_id
from .online import Online, Progress, Record, WriteReport
from .registry import Registry
from .schema import Entity, FeatureView


def _close_embedded(server: EmbeddedServer, client: redis.Redis, name: str) -> None:
    # Runs at close() or at interpreter exit for a store nobody closed.
    with contextlib.suppress(Exception):
        client.close()
    with contextlib.suppress(Exception):
        server.stop(only_if_unused_by=name)


class FeatureStore:
    """Typed, versioned features on Redis.

    ``FeatureStore()`` starts (or attaches to) a private server under ``./.redfeat``;
    ``FeatureStore.from_url(url)`` uses any Redis >= 7.0 or Valkey; ``FeatureStore(client=...)``
    takes an existing redis-py client (and leaves closing it to you).
    """

    def __init__(
        self,
        *,
        project: str = "default",
        data_dir: str | os.PathLike[str] = ".redfeat",
        server_bin: str | None = None,
        durability: str = "everysec",
        client: redis.Redis | None = None,
    ) -> None:
        self.keys = Keys(project)
        self.project = project
        self.server: EmbeddedServer | None = None
        self.server_info: ServerInfo | None = None
        self._owns_client = client is None
        self._finalizer: weakref.finalize[Any, FeatureStore] | None = None
        if client is None:
            self.server = EmbeddedServer(data_dir, server_bin=server_bin, durability=durability)
            self.server_info = self.server.ensure()
            name = f"redfeat-{os.getpid()}-{uuid.uuid4().hex[:12]}"
            client = self.server_info.client(client_name=name)
            self._finalizer = weakref.finalize(self, _close_embedded, self.server, client, name)
        self.client = client
        try:
            self.client.ping()
        except redis.RedisError as exc:
            self.close()
            raise BackendError(f"cannot reach the server: {exc}") from exc
        self.registry = Registry(client, self.keys)
        self.online = Online(client, self.keys)
        self._caps: dict[str, Any] | None = None

    @classmethod
    def from_url(cls, url: str, *, project: str = "default", **redis_kwargs: Any) -> FeatureStore:
        """Connect to redis://, rediss:// or unix:// (extra keywords go to redis-py)."""
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"unsupported URL {url!r}: use redis://host:port/db, rediss://... or unix:///path"
            )
        try:
            client = redis.Redis.from_url(url, **redis_kwargs)
        except ValueError as exc:
            raise ConfigurationError(f"cannot use URL {url!r}: {exc}") from exc
        store = cls(project=project, client=client)
        store._owns_client = True
        return store

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Close connections this store opened; an embedded server stops with its last user."""
        if hasattr(self, "online"):
            self.online.direct.close()
        if self._finalizer is not None:
            self._finalizer()
        elif self._owns_client and hasattr(self, "client"):
            self.client.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def capabilities(self) -> dict[str, Any]:
        """What the server offers (server name and version, optional commands, modules)."""
        if self._caps is None:
            self._caps = _detect(self.client)
        return self._caps

    # -- definitions --------------------------------------------------------------------

    def apply(self, *objects: Entity | FeatureView, allow_breaking: bool = False) -> dict[str, str]:
        """Register entities and views; returns what happened to each (created, unchanged...)."""
        return self.registry.apply(objects, allow_breaking=allow_breaking)

    def views(self) -> list[FeatureView]:
        return self.registry.views()

    def view(self, name: str) -> FeatureView:
        return self.registry.get(name).view

    def entities(self) -> list[Entity]:
        return self.registry.entities()

    # -- writes -------------------------------------------------------------------------

    def write(
        self, view: str, entity_id: str | int, values: Mapping[str, Any], *, event_time: Any = None
    ) -> Version:
        """Write one version of an entity's features (event_time: datetime or epoch s; now)."""
        return self.online.write(self.registry.get(view), entity_id, values, event_time)

    def write_many(
        self,
        view: str,
        rows: Any,
        *,
        entity_column: str = "entity_id",
        event_time_column: str | None = None,
        on_error: str = "raise",
        progress: Progress | None = None,
    ) -> WriteReport:
        """Write many rows (list of dicts, pandas.DataFrame or pyarrow.Table), pipelined.

        ``on_error="raise"`` writes nothing if any row is bad; ``"skip"`` writes the good rows
        and reports the others in ``WriteReport.refused``. ``progress(done, total)``.
        """
        if on_error not in ("raise", "skip"):
            raise ConfigurationError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        res = self.registry.get(view)
        return self.online.write_many(
            res,
            rows,
            entity_column=entity_column,
            event_time_column=event_time_column,
            on_error=on_error,
            progress=progress,
        )

    def update(
        self, view: str, entity_id: str | int, values: Mapping[str, Any], *, event_time: Any = None
    ) -> Version:
        """Merge some fields into the latest values and write the result as a new version."""
        return self.online.update(self.registry.get(view), entity_id, values, event_time)

    def increment(
        self,
        view: str,
        entity_id: str | int,
        deltas: Mapping[str, int | float],
        *,
        event_time: Any = None,
    ) -> Version:
        """Add to numeric fields atomically (safe under concurrency); writes a new version."""
        return self.online.increment(self.registry.get(view), entity_id, deltas, event_time)

    def delete(self, view: str, entity_id: str | int) -> bool:
        """Remove an entity's latest value and history. True if anything was there."""
        return self.online.delete(self.registry.get(view), entity_id)

    def delete_view(self, view: str, *, keep_definition: bool = False) -> int:
        """Remove every key of a view (SCAN batches, non-blocking) and, unless asked, its
        definition. Returns the number of keys removed."""
        self.registry.get(view)
        removed = self.online.delete_view_data(view)
        if not keep_definition:
            self.registry.remove_view(view)
        return removed

    # -- reads --------------------------------------------------------------------------

    def get(
        self,
        view: str,
        entity_id: str | int,
        *,
        features: Sequence[str] | None = None,
        as_of: Any = None,
    ) -> dict[str, Any] | None:
        """Latest values of one entity (or as of a past time), typed by the schema."""
        return self.get_many(view, [entity_id], features=features, as_of=as_of)[0]  # type: ignore[no-any-return]

    def get_many(
        self,
        view: str,
        entity_ids: Iterable[str | int],
        *,
        features: Sequence[str] | None = None,
        as_of: Any = None,
        with_meta: bool = False,
    ) -> list[Any]:
        """Values for many entities, aligned with the input (None where missing or expired).

        One round trip for the whole batch. ``with_meta=True`` returns ``Record`` objects with
        status PRESENT / EXPIRED / MISSING and the event time.
        """
        res = self.registry.get(view)
        ids = list(entity_ids)
        feats = None if features is None else list(features)
        if as_of is None:
            return self.online.get_many(res, ids, feats, with_meta)
        at = _history.as_of_us(view, as_of)
        readers = res.codec.select(feats)
        ents = [normalize_id(view, e, i) for i, e in enumerate(ids)]
        versions = _history.get_many_as_of(self.client, self.keys, res, ents, at, readers)
        if not with_meta:
            return [None if v is None else v.values for v in versions]
        from .online import Status

        return [
            Record(e, Status.MISSING, None, None)
            if v is None
            else Record(e, Status.PRESENT, v.event_time, v.values)
            for e, v in zip(ents, versions, strict=True)
        ]

    def get_features(
        self,
        entity_ids: Iterable[str | int],
        features: Sequence[str],
        *,
        as_frame: bool = False,
        full_feature_names: bool = False,
    ) -> Any:
        """One feature vector per entity across views of the same entity ("view:feature").

        All views are read in one round trip. Returns a list of dicts, or a pandas.DataFrame
        (with an ``entity_id`` column) when ``as_frame=True``.
        """
        ids = list(entity_ids)
        by_view: dict[str, list[str]] = {}
        for ref in features:
            view, sep, feat = ref.partition(":")
            if not sep or not feat:
                raise ConfigurationError(f"feature reference {ref!r} must look like 'view:feature'")
            by_view.setdefault(view, []).append(feat)
        resolved = {v: self.registry.get(v) for v in by_view}
        entities = {r.view.entity for r in resolved.values()}
        if len(entities) > 1:
            raise ConfigurationError(
                "get_features reads views of one entity; "
                f"these views mix entities {sorted(entities)}"
            )
        columns: list[tuple[str, str, str]] = []  # (view, feature, output name)
        seen: dict[str, str] = {}
        for view, feats in by_view.items():
            for f in feats:
                out = f"{view}__{f}" if full_feature_names else f
                if out in seen:
                    raise ValidationError(
                        [
                            Problem(
                                view,
                                None,
                                f,
                                "ambiguous_feature",
                                f,
                                f"feature {f!r} is requested from views {seen[out]!r} and "
                                f"{view!r}; pass full_feature_names=True",
                            )
                        ],
                        outcome="nothing was read",
                    )
                seen[out] = view
                columns.append((view, f, out))
        name = next(iter(resolved)) if resolved else ""
        ents = [normalize_id(name, e, i) for i, e in enumerate(ids)]
        per_view: dict[str, list[Any]] = {}
        try:
            pipe: Any = self.client.pipeline(transaction=False)
            for view in resolved:
                pipe.execute_command("MGET", *[self.keys.latest(view, escape_id(e)) for e in ents])
            replies = pipe.execute() if ents else [[] for _ in resolved]
        except redis.RedisError as exc:
            raise BackendError(f"get_features: read failed: {exc}") from exc
        for (view, res), blobs in zip(resolved.items(), replies, strict=True):
            readers = res.codec.select(by_view[view])
            per_view[view] = self.online.decode_latest(res, ents, blobs, readers)
        rows: list[dict[str, Any]] = []
        for i in range(len(ents)):
            row: dict[str, Any] = {}
            for view, f, out in columns:
                vals = per_view[view][i]
                row[out] = None if vals is None else vals[f]
            rows.append(row)
        if not as_frame:
            return rows
        import pandas as pd

        frame = pd.DataFrame(rows, columns=[c[2] for c in columns])
        frame.insert(0, "entity_id", ents)
        return frame

    def history(self, view: str, entity_id: str | int, *, limit: int = 10) -> list[Version]:
        """Stored versions of one entity, newest event time first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"limit must be an int >= 1, got {limit!r}")
        res = self.registry.get(view)
        ent = normalize_id(view, entity_id)
        return _history.history(self.client, self.keys, res, ent, limit)

    def version(self, view: str, entity_id: str | int, version_id: int) -> Version:
        """One version by id (NotFoundError if it is not, or no longer, kept)."""
        for v in self.history(view, entity_id, limit=1_000_000):
            if v.id == version_id:
                return v
        raise NotFoundError(
            f"view {view!r}, entity {entity_id!r}: no version {version_id} "
            "(never written, or trimmed by the view's history setting)"
        )


def _detect(client: redis.Redis) -> dict[str, Any]:
    try:
        info = client.info("server")
    except redis.RedisError as exc:
        raise BackendError(f"cannot read server info: {exc}") from exc
    name = str(info.get("server_name") or "redis")
    version = str(info.get("valkey_version") or info.get("redis_version") or "0")
    caps: dict[str, Any] = {"server": name, "version": version}

    def has(cmd: str) -> bool:
        # Called without arguments, a known command answers "wrong number of arguments".
        try:
            client.execute_command(cmd)  # type: ignore[no-untyped-call]
        except redis.ResponseError as exc:
            return "unknown command" not in str(exc).lower()
        except redis.RedisError:
            return False
        return True

    caps["hash_field_expiry"] = has("HEXPIRE")
    caps["vector_search"] = has("FT.CREATE")
    caps["timeseries"] = has("TS.ADD")
    return caps
