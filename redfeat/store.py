"""FeatureStore: the one entry object. A thin facade over the modules that do the work."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import redis

from . import reads as _features
from .core.codec import READ, normalize_id
from .core.conn import detect_capabilities
from .core.embedded import EmbeddedServer, ServerInfo, holds_data
from .core.keys import Keys
from .core.metrics import Metrics, timed
from .core.registry import Registry, Resolved
from .core.schema import Entity, FeatureView, Field
from .errors import BackendError, ConfigurationError, NotFoundError
from .offline import transfer as _transfer
from .offline.log import OfflineLog
from .offline.service import TrainingVerbs
from .online import history as _history
from .online.history import Version
from .online.online import Online, Progress
from .online.writer import Record, Status, WriteReport
from .quality.service import Quality
from .quality.verbs import QualityVerbs
from .realtime.cache import _MISSING as _CACHE_MISSING
from .realtime.cache import Cache
from .realtime.service import LiveVerbs
from .timeseries.service import SeriesVerbs
from .transforms import derived as _derived
from .transforms.builtins import TransformRegistry
from .vectors import server_index as _server_index
from .vectors.index import VectorIndex
from .vectors.service import SearchVerbs
from .windows.service import Definition, WindowVerbs

_log = logging.getLogger("redfeat.home")


def _close_embedded(server: EmbeddedServer, client: redis.Redis, name: str) -> None:
    # Runs at close() or at interpreter exit for a store nobody closed.
    with contextlib.suppress(Exception):
        client.close()
    with contextlib.suppress(Exception):
        server.stop(only_if_unused_by=name)


class FeatureStore(LiveVerbs, SearchVerbs, SeriesVerbs, TrainingVerbs, QualityVerbs, WindowVerbs):
    """Typed, versioned features on Redis.

    ``FeatureStore()`` starts (or attaches to) a private server under the data dir
    (``data_dir``, else ``$REDFEAT_HOME``, else ``./.redfeat``);
    ``FeatureStore.from_url(url)`` uses any Redis >= 7.0 or Valkey; ``FeatureStore(client=...)``
    takes an existing redis-py client (and leaves closing it to you).
    """

    def __init__(
        self,
        *,
        project: str = "default",
        data_dir: str | os.PathLike[str] | None = None,
        server_bin: str | None = None,
        durability: str = "everysec",
        client: redis.Redis | None = None,
        offline_dir: str | os.PathLike[str] | None = None,
        feed_cap: int = 100_000,
        cache: Cache | None = None,
        embedder: Any = None,
    ) -> None:
        self.keys = Keys(project)
        self.project = project
        self.metrics = Metrics()  # per-operation counts and latencies (store.stats())
        self.server: EmbeddedServer | None = None
        self.server_info: ServerInfo | None = None
        self._owns_client = client is None
        self._finalizer: weakref.finalize[Any, FeatureStore] | None = None
        if client is None:
            self.server = EmbeddedServer(data_dir, server_bin=server_bin, durability=durability)
            if not holds_data(self.server.dir):
                _log.warning(
                    "redfeat: %s holds no data yet: starting an empty store there "
                    "(data_dir= or REDFEAT_HOME open another)",
                    self.server.dir,
                )
            name = f"redfeat-{os.getpid()}-{uuid.uuid4().hex[:12]}"
            self.server_info, client = self.server.open(name)
            self._finalizer = weakref.finalize(self, _close_embedded, self.server, client, name)
        self.client = client
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            self.close()
            raise ConfigurationError(
                "FeatureStore needs a client with decode_responses=False: values are binary"
            )
        try:
            self.client.ping()
        except redis.RedisError as exc:
            self.close()
            raise BackendError(f"cannot reach the server: {exc}") from exc
        self.registry = Registry(client, self.keys)
        if isinstance(feed_cap, bool) or not isinstance(feed_cap, int) or feed_cap < 0:
            raise ConfigurationError(
                f"feed_cap must be an int >= 0 (0: no events), got {feed_cap!r}"
            )
        self.online = Online(client, self.keys, feed_cap)
        self.quality = Quality(self)
        self.online.quality = self.quality
        self.dumper = _history.Dumper(self.keys, self.online.direct)
        self.transforms = TransformRegistry()
        self.deriver = _derived.Deriver(self.transforms)
        self._caps: dict[str, Any] | None = None
        self._indexes: dict[tuple[str, str, str], VectorIndex] = {}
        self._index_lock = threading.Lock()
        self.embedder = embedder  # texts -> vectors, for put_text / similar_texts
        self.cache: Cache | None = None
        if cache is not None:
            if not feed_cap:
                raise ConfigurationError("a near cache needs change events (feed_cap > 0)")
            self.cache = cache
            cache.bind(self)
        self.offline: OfflineLog | None = None
        if offline_dir is not None:
            self.offline = OfflineLog(offline_dir)
            self.online.log = functools.partial(_transfer.log_versions, self.offline)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        project: str = "default",
        offline_dir: str | os.PathLike[str] | None = None,
        **redis_kwargs: Any,
    ) -> FeatureStore:
        """Connect to redis://, rediss:// or unix:// (extra keywords go to redis-py)."""
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"unsupported URL {url!r}: use redis://host:port/db, rediss://... or unix:///path"
            )
        try:
            client = redis.Redis.from_url(url, **redis_kwargs)
        except ValueError as exc:
            raise ConfigurationError(f"cannot use URL {url!r}: {exc}") from exc
        store = cls(project=project, client=client, offline_dir=offline_dir)
        store._owns_client = True
        return store

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Flush the offline log; close connections this store opened (an embedded server
        stops with its last user)."""
        if getattr(self, "quality", None) is not None:
            with contextlib.suppress(BackendError):  # monitoring data must not block a close
                self.quality.close()
        if getattr(self, "offline", None) is not None:
            self.offline.close()  # type: ignore[union-attr]
        if getattr(self, "cache", None) is not None:
            self.cache.close()  # type: ignore[union-attr]
        for idx in getattr(self, "_indexes", {}).values():
            idx.close()
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
            self._caps = detect_capabilities(self.client)
        return self._caps

    # -- definitions --------------------------------------------------------------------

    def apply(self, *objects: Definition, allow_breaking: bool = False) -> dict[str, str]:
        """Register entities, views and window features; returns what happened to each.

        A view that stops keeping history (``history=0``) has its history keys removed, so
        that turning history on again later never serves versions from before."""
        objects, wins = self._split_windows(objects)
        known = {v.name: v for v in self.registry.views()}
        before = {name: v.history.keeps_versions for name, v in known.items()}
        known.update({o.name: o for o in objects if isinstance(o, FeatureView)})
        for obj in objects:
            if isinstance(obj, FeatureView) and obj.source is not None:
                if obj.source not in known:
                    raise NotFoundError(
                        f"view {obj.name!r} derives from {obj.source!r}, which is not defined; "
                        "apply the source view first (or in the same call)"
                    )
                _derived.check_source(obj, known[obj.source])
                self.deriver.transforms(obj)  # custom transforms must be registered here
        result = self.registry.apply(objects, allow_breaking=allow_breaking)
        for obj in objects:
            if (
                isinstance(obj, FeatureView)
                and before.get(obj.name)
                and not obj.history.keeps_versions
            ):
                self.online.delete_view_data(obj.name, suffix=":h")
        return {**result, **self._apply_windows(wins)}

    def transform(
        self,
        name: str,
        *,
        inputs: list[str],
        outputs: list[Field],
        vectorized: bool = False,
    ) -> Callable[[Any], Any]:
        """Register a custom transform (row -> dict, or frame -> frame with ``vectorized``).
        The registry records its name, inputs, outputs and a hash of its code."""
        register = self.transforms.register(
            name, inputs=inputs, outputs=outputs, vectorized=vectorized
        )

        def decorate(fn: Any) -> Any:
            out = register(fn)
            self.registry.record_transform(self.transforms.get(name).spec())
            return out

        return decorate

    def views(self) -> list[FeatureView]:
        return self.registry.views()

    def view(self, name: str) -> FeatureView:
        return self.registry.get(name).view

    def entities(self) -> list[Entity]:
        return self.registry.entities()

    # -- writes -------------------------------------------------------------------------

    @timed("write")
    def write(
        self, view: str, entity_id: str | int, values: Mapping[str, Any], *, event_time: Any = None
    ) -> Version:
        """Write one version of an entity's features (event_time: datetime or epoch s; now)."""
        res, deps = _derived.writable(self, view)
        with self.quality.refusals(view):
            version = self.online.write(res, entity_id, values, event_time)
        self._after_write(res, deps, entity_id, version)
        return version

    @timed("write_many")
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
        if rows is None or isinstance(rows, str | bytes | Mapping):
            raise ConfigurationError(
                "write_many takes a list of dicts, a pandas.DataFrame or a pyarrow.Table, "
                f"got {type(rows).__name__}"
            )
        # A bulk write checks for definitions changed elsewhere first (one cheap read), so
        # that it never encodes rows with a layout another process has just replaced.
        self.registry.refresh()
        res, deps = _derived.writable(self, view)
        frame_like = type(rows).__module__.split(".")[0] in ("pandas", "pyarrow")
        if deps and not isinstance(rows, list) and not frame_like:
            rows = list(rows)  # read twice: for the source, then for its derived views
        if deps and event_time_column is None:
            rows, event_time_column = _derived.with_event_time(rows)
        report = self.online.write_many(
            res,
            rows,
            entity_column=entity_column,
            event_time_column=event_time_column,
            on_error=on_error,
            progress=progress,
        )
        if deps and event_time_column is not None:
            _derived.after_bulk(self, deps, rows, entity_column, event_time_column, report)
        self._clear_cached(view, deps)
        return report

    def _after_write(
        self, res: Resolved, deps: list[Resolved], entity_id: Any, version: Version
    ) -> None:
        """Forget cached values of the entity (here and in derived views) and write the
        derived views."""
        if self.cache is not None:
            for name in [res.name, *(d.name for d in deps)]:
                self.cache.invalidate(name, str(entity_id))
        _derived.after_write(self, deps, entity_id, version)

    def _clear_cached(self, view: str, deps: list[Resolved]) -> None:
        # after a bulk write: cheaper than finding each written id
        if self.cache is not None:
            for name in [view, *(d.name for d in deps)]:
                self.cache.clear(name)

    @timed("update")
    def update(
        self, view: str, entity_id: str | int, values: Mapping[str, Any], *, event_time: Any = None
    ) -> Version:
        """Merge some fields into the latest values and write the result as a new version."""
        res, deps = _derived.writable(self, view)
        with self.quality.refusals(view):
            version = self.online.update(res, entity_id, values, event_time)
        self._after_write(res, deps, entity_id, version)
        return version

    @timed("increment")
    def increment(
        self,
        view: str,
        entity_id: str | int,
        deltas: Mapping[str, int | float],
        *,
        event_time: Any = None,
    ) -> Version:
        """Add to numeric fields atomically (safe under concurrency); writes a new version."""
        res, deps = _derived.writable(self, view)
        with self.quality.refusals(view):
            version = self.online.increment(res, entity_id, deltas, event_time)
        self._after_write(res, deps, entity_id, version)
        return version

    @timed("delete")
    def delete(self, view: str, entity_id: str | int) -> bool:
        """Remove an entity's latest value and history (and its derived views' values).
        True if anything was there."""
        res = self.registry.get(view)
        deps = self.registry.dependents(view)
        for dep in deps:
            self.online.delete(dep, entity_id)
        gone = self.online.delete(res, entity_id)
        if self.cache is not None:
            for name in [view, *(d.name for d in deps)]:
                self.cache.invalidate(name, str(entity_id))
        return gone

    def delete_view(self, view: str, *, keep_definition: bool = False) -> int:
        """Remove every key of a view (SCAN batches, non-blocking) and, unless asked, its
        definition. Returns the number of keys removed."""
        self.registry.get(view)
        removed = self.online.delete_view_data(view)
        # the feed, and pushed rows not yet ingested (a view re-created under this name
        # must not ingest them)
        p = self.keys.prefix
        removed += int(
            self.client.unlink(self.keys.feed(view), p + "ingest:" + view, p + "dead:" + view)
        )
        if self.cache is not None:
            self.cache.clear(view)
        if self.capabilities.get("vector_search"):  # server-side indexes and their mirrors
            _server_index.drop_server_indexes(self.client, f"{self.keys.prefix}vx:{view}:")
        if not keep_definition:
            removed += self.quality.forget(view)
            self.registry.remove_view(view)
        return removed

    # -- reads --------------------------------------------------------------------------

    @timed("get")
    def get(
        self,
        view: str,
        entity_id: str | int,
        *,
        features: Sequence[str] | None = None,
        as_of: Any = None,
    ) -> dict[str, Any] | None:
        """Latest values of one entity (or as of a past time), typed by the schema."""
        if self._win(view):
            one = self._window_get_many(view, [entity_id], features, as_of, False, strict=True)
            return one[0]  # type: ignore[no-any-return]
        if self.cache is not None and features is None and as_of is None:
            hit = self.cache.lookup(view, str(entity_id))
            if hit is not _CACHE_MISSING:
                self.quality.read_hit(view)
                return hit  # type: ignore[no-any-return]
            res = self.registry.get(view)
            if not res.view.on_read:  # a known miss: fetch and cache it
                fetch = self._fetch_records(res)
                return self.cache.fill(view, [entity_id], fetch, res.view.ttl_us)[0]  # type: ignore[no-any-return]
        res = self.registry.get(view)
        out = self._get_many(res, [entity_id], features, as_of, False)
        self.quality.read(res, out, features)
        return out[0]  # type: ignore[no-any-return]

    @timed("get_many")
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
        if self._win(view):
            return self._window_get_many(view, entity_ids, features, as_of, with_meta)
        res = self.registry.get(view)
        out = self._get_many(res, list(entity_ids), features, as_of, with_meta)
        self.quality.read(res, out, features)
        return out

    def _get_many(
        self,
        res: Resolved,
        ids: list[Any],
        features: Sequence[str] | None,
        as_of: Any,
        with_meta: bool,
    ) -> list[Any]:
        view = res.name
        feats = None if features is None else list(features)
        if res.view.on_read:
            return _derived.read(self, res, ids, feats, as_of, with_meta)
        if as_of is None and self.cache is not None and feats is None and not with_meta:
            return self._cached_read(res, ids)
        if as_of is None:
            return self.online.get_many(res, ids, feats, with_meta)
        at = _history.as_of_us(view, as_of)
        readers = res.codec.select(feats)
        ents = [normalize_id(view, e, i, outcome=READ) for i, e in enumerate(ids)]
        versions = _history.get_many_as_of(self.client, self.keys, res, ents, at, readers)
        if not with_meta:
            return [None if v is None else v.values for v in versions]

        return [
            Record(e, Status.MISSING, None, None)
            if v is None
            else Record(e, Status.PRESENT, v.event_time, v.values)
            for e, v in zip(ents, versions, strict=True)
        ]

    def _fetch_records(self, res: Resolved) -> Callable[[list[Any]], list[Record]]:
        return lambda ids: self.online.get_many(res, ids, None, True)

    def _cached_read(self, res: Resolved, ids: list[Any]) -> list[Any]:
        assert self.cache is not None
        return self.cache.read_many(res.name, ids, self._fetch_records(res), res.view.ttl_us)

    @timed("get_features")
    def get_features(
        self,
        entity_ids: Iterable[str | int],
        features: Sequence[str],
        *,
        as_frame: bool = False,
        full_feature_names: bool = False,
        flatten_vectors: bool = False,
        as_numpy: bool = False,
    ) -> Any:
        """One feature vector per entity across views of the same entity ("view:feature").

        All views are read in one round trip. Returns a list of dicts, or a pandas.DataFrame
        (with an ``entity_id`` column) when ``as_frame=True``. ``flatten_vectors`` expands a
        Vector feature into ``name_0 .. name_{d-1}``; ``as_numpy`` returns one float64 2-D
        array (rows: entities, columns: features, vectors flattened; missing = NaN).
        """
        return _features.get_features(
            self,
            entity_ids,
            features,
            as_frame=as_frame,
            full_feature_names=full_feature_names,
            flatten_vectors=flatten_vectors,
            as_numpy=as_numpy,
        )
