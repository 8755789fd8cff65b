"""FeatureStore: the one entry object. A facade that builds the services doing the work
(in ``__init__``, or on first use for the capabilities most programs never touch) and
delegates each verb to one of them; the user-facing contracts live in the docstrings here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import redis
from redis.cluster import RedisCluster

from .core import args
from .core.conn import Direct, cluster_from_url, detect_capabilities, is_cluster
from .core.context import Ctx
from .core.durability import Durability, check_mode, check_replicas
from .core.embedded import EmbeddedServer, ServerInfo, holds_data
from .core.keys import Keys
from .core.metrics import Metrics, timed
from .core.records import (
    ChangeEvent,
    EntityStats,
    Match,
    MaterializeReport,
    ValidationReport,
    Version,
    WriteReport,
    mark_expired,
)
from .core.registry import Registry
from .core.schema import Entity, EntityId, FeatureService, FeatureView, Field
from .core.time import duration_us
from .errors import (
    BackendError,
    ConfigurationError,
    NotFoundError,
    RedfeatError,
    backend_error,
    wrap_redis,
)
from .online.history import check_tag
from .online.online import Online, Progress
from .quality.service import Monitor, Quality
from .reads import Reads
from .realtime.cache import Cache
from .transforms.derived import Deriver, check_source
from .writes import Writes

if TYPE_CHECKING:
    import pandas as pd

    from .offline.feeder import LogFeeder
    from .offline.log import OfflineLog
    from .offline.materialize import Materializer
    from .offline.service import Training
    from .online.events import Subscription
    from .quality.validators import RowCheck
    from .realtime.ingest import Worker
    from .realtime.service import Live
    from .timeseries.alerts import Alerts
    from .timeseries.series import Series
    from .timeseries.service import SeriesService, TimeSeriesAdmin
    from .transforms.core import TransformRegistry
    from .vectors.service import Search
    from .windows.service import RecordReport, Windows
    from .windows.spec import WindowFeatures

    Definition = Entity | FeatureView | FeatureService | WindowFeatures

_log = logging.getLogger("redfeat.home")
_log_derived = logging.getLogger("redfeat.derived")
T = TypeVar("T")


class _Lazy(Generic[T]):
    """A service built on first use, once, under a lock: opening a store (and ``import
    redfeat``) loads only the capabilities a program uses."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build: Callable[[], T] | None = build
        self._value: T | None = None
        self._lock = threading.Lock()

    def __call__(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    assert self._build is not None
                    self._value = self._build()
                    self._build = None
                value = self._value
        return value

    @property
    def built(self) -> T | None:
        return self._value


DEFAULT_PARTITIONS = 16  # on a cluster: enough to spread a view over up to ~16 masters


def _partitions(client: redis.Redis | RedisCluster, keys: Keys, wanted: int | None) -> int:
    """The project's partition count, kept in its registry: the first store that opens a
    project fixes it (``partitions``, else 16 on a cluster and 0, one tag per entity, on
    one node); later ones read it, and one asking for another count is refused."""
    if wanted is not None:
        Keys(keys.project, wanted)  # checks the value
    with wrap_redis("cannot read the project's partition count"):
        raw = client.hget(keys.registry, "partitions")
        if raw is None:
            default = DEFAULT_PARTITIONS if is_cluster(client) else 0
            first = default if wanted is None else wanted
            if not first:  # unpartitioned: nothing to keep (a read-only open writes nothing)
                return 0
            client.hsetnx(keys.registry, "partitions", first)
            raw = client.hget(keys.registry, "partitions")
    stored = int(raw or 0)
    if not stored and is_cluster(client):
        raise ConfigurationError(
            f"project {keys.project!r}: a Redis Cluster needs partitions >= 1 (the write "
            "step of many entities must stay on one slot)"
        )
    if wanted is not None and wanted != stored:
        raise ConfigurationError(
            f"project {keys.project!r} is stored with partitions={stored}; it cannot be "
            f"opened with partitions={wanted} (export and import into a new project instead)"
        )
    return stored


def _close_embedded(server: EmbeddedServer, client: redis.Redis, name: str) -> None:
    # Runs at close() or at interpreter exit for a store nobody closed.
    with contextlib.suppress(Exception):
        client.close()
    with contextlib.suppress(Exception):
        server.stop(only_if_unused_by=name)


class FeatureStore:
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
        durability: str | Durability = "everysec",
        client: redis.Redis | RedisCluster | None = None,
        offline_dir: str | os.PathLike[str] | None = None,
        feed_cap: int = 100_000,
        feed_retention: str | float | None = None,
        cache: Cache | None = None,
        embedder: Any = None,
        partitions: int | None = None,
    ) -> None:
        keys = Keys(project)
        self._server: EmbeddedServer | None = None
        self._server_info: ServerInfo | None = None
        self._owns_client = client is None
        self._finalizer: weakref.finalize[Any, FeatureStore] | None = None
        self._closers: list[Callable[[], None]] = []
        if isinstance(feed_cap, bool) or not isinstance(feed_cap, int) or feed_cap < 0:
            raise ConfigurationError(
                f"feed_cap must be an int >= 0 (0: no events), got {feed_cap!r}"
            )
        if cache is not None and not feed_cap:
            raise ConfigurationError("a near cache needs change events (feed_cap > 0)")
        retention_ms = (
            0
            if feed_retention is None
            else max(1, duration_us(feed_retention, what="feed_retention") // 1000)
        )
        dur = durability if isinstance(durability, Durability) else None
        mode = check_mode(durability if dur is None else dur.mode)
        if client is None and mode == "replicated":
            raise ConfigurationError(
                "durability='replicated' needs a server with replicas (a Redis Cluster, or a "
                "master with replicas, by URL or client=); the embedded server has none"
            )
        if client is None:
            self._server = EmbeddedServer(data_dir, server_bin=server_bin, durability=mode)
            if not holds_data(self._server.dir):
                _log.warning(
                    "redfeat: %s holds no data yet: starting an empty store there "
                    "(data_dir= or REDFEAT_HOME open another)",
                    self._server.dir,
                )
            name = f"redfeat-{os.getpid()}-{uuid.uuid4().hex[:12]}"
            # The data dir's promise (the strictest ever asked for it) is this store's too;
            # every connection, reconnects included, checks the server keeps it.
            dur = Durability(self._server.promised(), managed=True)
            self._server_info, client = self._server.open(name, on_connect=dur.connected)
            self._finalizer = weakref.finalize(self, _close_embedded, self._server, client, name)
        elif dur is None:
            dur = Durability(mode)
            if isinstance(client, redis.Redis):
                kwargs = client.connection_pool.connection_kwargs
                if kwargs.get("redis_connect_func") is None:
                    kwargs["redis_connect_func"] = dur.connected  # new connections are checked
        # A cluster client speaks the same commands (routed by key): the services take it
        # as a redis.Redis, and take care where a cluster differs (conn.Direct, is_cluster).
        client = cast(redis.Redis, client)
        self._client = client
        self._durability = dur
        if client.get_encoder().decode_responses:
            self.close()
            raise ConfigurationError(
                "FeatureStore needs a client with decode_responses=False: values are binary"
            )
        direct = Direct(client)
        self._closers.append(direct.close)
        try:
            client.ping()
            if dur.persistence is None:  # a client whose connections were made before
                conn = direct.conn()
                conn.connect()
                if dur.persistence is None:
                    dur.verify(conn)
            if dur.replicated:
                check_replicas(client, dur.replicas)
        except redis.RedisError as exc:
            self.close()
            raise backend_error("cannot reach the server", exc) from exc
        except BaseException:  # the server cannot keep the promised durability
            self.close()
            raise
        keys = Keys(project, _partitions(client, keys, partitions))
        ctx = self._ctx = Ctx(client, keys, Registry(client, keys), direct, Metrics())
        self._caps: dict[str, Any] | None = None

        self._monitor = Monitor(ctx)
        self._closers.insert(0, self._close_monitor)
        self._quality = Quality(ctx, self._monitor)
        self._offline: OfflineLog | None = None
        self._feeder: LogFeeder | None = None
        if offline_dir is not None:
            if not feed_cap:
                raise ConfigurationError(
                    "offline_dir: the offline log is fed from the change feed; give feed_cap > 0"
                )
            from .offline.feeder import LogFeeder
            from .offline.log import OfflineLog

            # writers put payloads in the feed from now on (those that do not know yet
            # within a second: the feeder reads versions of entries without them from Redis)
            ctx.registry.attach_offline()
            offline = self._offline = OfflineLog(offline_dir)
            self._closers.insert(0, offline.close)
            feeder = self._feeder = LogFeeder(ctx, offline).start()
            self._closers.insert(0, feeder.close)
        self._online = Online(
            ctx,
            feed_cap,
            feed_retention_ms=retention_ms,
            observer=self._monitor,
            # every node a write call touches confirms it: WAIT for its replicas; on a
            # cluster also WAITAOF on each ("always"); one node's is confirmed per call
            confirm=dur.on_node
            if dur.replicated or (is_cluster(client) and dur.mode == "always")
            else None,
        )
        self._transforms = _Lazy(_transform_registry)
        self._deriver = Deriver(ctx, self._transforms, reader=self)
        self._cache = cache
        if cache is not None:
            cache.bind(ctx, reader=self)
            self._closers.insert(0, cache.close)
        self._windows = _Lazy(lambda: _windows(ctx, feed_cap))
        self._training = _Lazy(
            lambda: _training(ctx, self._online, self._monitor, self._offline, self._feeder)
        )
        self._search = _Lazy(lambda: _search(ctx, self, lambda: self.capabilities, embedder))
        self._live = _Lazy(lambda: _live(ctx, self))
        self._series = _Lazy(lambda: _series(ctx))
        self._materializer = _Lazy(lambda: _materializer(ctx, self))
        self._reads = Reads(
            ctx, self._online, self._deriver, cache, self._monitor, self._windows, self._training
        )
        self._writes = Writes(ctx, self._online, self._deriver, cache, self._monitor, dur)
        self._closers.insert(0, self._writes.close)
        # Derived versions that a writer killed mid-write left behind (see writes.Recovery):
        # usually one HGETALL that finds nothing.
        try:
            self._writes.recovery.run()
        except RedfeatError as exc:
            _log_derived.warning("redfeat: catching derived views up failed: %s", exc)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        project: str = "default",
        offline_dir: str | os.PathLike[str] | None = None,
        durability: str | Durability = "everysec",
        feed_cap: int = 100_000,
        feed_retention: str | float | None = None,
        **redis_kwargs: Any,
    ) -> FeatureStore:
        """Connect to redis://, rediss:// or unix:// (extra keywords go to redis-py), or to a
        Redis Cluster: ``redis+cluster://host:7000,host:7001/`` (``rediss+cluster://`` for
        TLS; the nodes listed are where redis-py's cluster client starts).

        ``durability`` ("everysec" or "always", or a ``Durability``) is checked against
        the server's settings where CONFIG GET is allowed, when the store opens and on
        every reconnect: "always" needs ``appendfsync always``, or a WAITAOF that waits for
        the fsync (Redis >= 8.0: each write call then waits for it), and is refused
        (ConfigurationError) otherwise; "everysec" logs a warning when the server keeps
        nothing on disk."""
        cluster = url.startswith(("redis+cluster://", "rediss+cluster://"))
        if not cluster and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"unsupported URL {url!r}: use redis://host:port/db, rediss://..., "
                "unix:///path or redis+cluster://host:port,host:port/"
            )
        dur = durability if isinstance(durability, Durability) else None
        dur = dur or Durability(check_mode(durability))
        client: redis.Redis | RedisCluster
        try:
            if cluster:
                client = cluster_from_url(url, redis_connect_func=dur.connected, **redis_kwargs)
            else:
                client = redis.Redis.from_url(url, redis_connect_func=dur.connected, **redis_kwargs)
        except redis.RedisError as exc:
            raise backend_error(f"cannot reach the cluster at {url!r}", exc) from exc
        except ValueError as exc:
            raise ConfigurationError(f"cannot use URL {url!r}: {exc}") from exc
        try:
            store = cls(
                project=project,
                client=client,
                offline_dir=offline_dir,
                durability=dur,
                feed_cap=feed_cap,
                feed_retention=feed_retention,
            )
        except BaseException:
            client.close()
            raise
        store._owns_client = True
        return store

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Flush monitoring data and the offline log; close connections this store opened
        (an embedded server stops with its last user)."""
        series = self._series.built if hasattr(self, "_series") else None
        if series is not None:  # the background alert evaluator (alerts.start) first
            series.alerts.stop()
        search = self._search.built if hasattr(self, "_search") else None
        if search is not None:
            search.close()
        for close in getattr(self, "_closers", []):
            # a server gone, or no longer keeping the promised durability, must not keep
            # the store from closing
            with contextlib.suppress(RedfeatError):
                close()
        if self._finalizer is not None:
            self._finalizer()
        elif self._owns_client and hasattr(self, "_client"):
            self._client.close()

    def _close_monitor(self) -> None:
        with contextlib.suppress(BackendError):  # monitoring data must not block a close
            self._monitor.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what it is connected to ----------------------------------------------------------

    @property
    def project(self) -> str:
        """The project: every key of this store starts ``rf:<project>:``."""
        return self._ctx.keys.project

    @property
    def client(self) -> redis.Redis:
        """The redis-py client this store uses (for your own commands; keep its keys apart
        from ``rf:<project>:``)."""
        return self._client

    @property
    def keys(self) -> Keys:
        """The key layout of this project (``store.keys.latest(view, id)`` ...)."""
        return self._ctx.keys

    @property
    def metrics(self) -> Metrics:
        """Per-operation counts and latencies of this process (``stats()["operations"]``)."""
        return self._ctx.metrics

    @property
    def server(self) -> EmbeddedServer | None:
        """The embedded server this store attached to (None with a URL or a client)."""
        return self._server

    @property
    def server_info(self) -> ServerInfo | None:
        """How the embedded server is reached (pid, socket or port) and the durability it
        runs at, as of now (another process may have restarted it), or None."""
        if self._server is None:
            return None
        info = self._server.info() or self._server_info
        running = self._durability.persistence
        if info is not None and running is not None and running.appendfsync:
            # what the server was found running at this store's last (re)connect
            info = dataclasses.replace(info, durability=running.appendfsync)
        self._server_info = info
        return info

    @property
    def durability(self) -> Durability:
        """The durability this store promises (``.mode``), how it keeps it on its server
        (``.describe()``: the server's setting, or WAITAOF after each write call) and the
        server's persistence settings as last checked (``.persistence``)."""
        return self._durability

    @property
    def capabilities(self) -> dict[str, Any]:
        """What the server offers (server name and version, optional commands, modules)."""
        if self._caps is None:
            self._caps = detect_capabilities(self._client)
        return self._caps

    @property
    def quality(self) -> Quality:
        """Settings, validators, profiles, baselines, drift and health of the views."""
        return self._quality

    @property
    def cache(self) -> Cache | None:
        """The near cache (``FeatureStore(cache=Cache(...))``), or None."""
        return self._cache

    @property
    def offline(self) -> OfflineLog | None:
        """The Parquet offline log (``FeatureStore(offline_dir=...)``), or None."""
        return self._offline

    @property
    def transforms(self) -> TransformRegistry:
        """The custom transforms registered in this process (``@store.transform``)."""
        return self._transforms()

    @property
    def embedder(self) -> Any:
        """texts -> vectors, for put_text / similar_texts without precomputed vectors."""
        return self._search().embedder

    @embedder.setter
    def embedder(self, fn: Any) -> None:
        self._search().embedder = fn

    # -- definitions --------------------------------------------------------------------

    def apply(
        self,
        *objects: Definition,
        allow_breaking: bool = False,
        backfill: bool = True,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> dict[str, str]:
        """Register entities, views, feature services and window features; returns what
        happened to each.

        A view that stops keeping history (``history=0``) has its history keys removed, so
        that turning history on again later never serves versions from before. A feature
        service's references are checked, and a changed feature list is a new version.

        A new materialised derived view is backfilled: every version its source keeps
        gets its derived version (with the same event time), so existing entities read
        values at once; a derived view whose transforms changed is derived again. Writes
        during the backfill are derived as usual. ``backfill=False`` leaves that for later
        (existing entities read None until written again); ``progress(view, entities done,
        total)``. A backfill cut short (a crash) resumes at the next store open."""
        from .online.scan import delete_view_data
        from .windows.spec import WindowFeatures

        objects = self._reads.resolve_services(objects)
        registry = self._ctx.registry
        wins: list[WindowFeatures] = []
        if any(isinstance(o, WindowFeatures) for o in objects) or registry.window_specs():
            objects, wins = self._windows().split(objects)  # type: ignore[arg-type]
        known = {v.name: v for v in registry.views()}
        before = {name: v.history.keeps_versions for name, v in known.items()}
        specs = {name: v.transform_specs for name, v in known.items()}
        known.update({o.name: o for o in objects if isinstance(o, FeatureView)})
        for obj in objects:
            if isinstance(obj, FeatureView) and obj.source is not None:
                if obj.source not in known:
                    raise NotFoundError(
                        f"view {obj.name!r} derives from {obj.source!r}, which is not defined; "
                        "apply the source view first (or in the same call)"
                    )
                check_source(obj, known[obj.source])
                self._deriver.transforms(obj)  # custom transforms must be registered here
        result = registry.apply(objects, allow_breaking=allow_breaking)
        for obj in objects:
            if (
                isinstance(obj, FeatureView)
                and before.get(obj.name)
                and not obj.history.keeps_versions
            ):
                delete_view_data(self._ctx, obj.name, suffix=":h")
        if wins:
            result.update(self._windows().apply(wins))
        if backfill:
            fill = {
                o.name: o.name in specs  # changed transforms: derive every version again
                for o in objects
                if isinstance(o, FeatureView)
                and o.source is not None
                and not o.on_read
                and (o.name not in specs or specs[o.name] != o.transform_specs)
            }
            if fill:
                self._writes.recovery.backfill_views(fill, progress=progress)
        return result

    def backfill_derived(
        self, view: str, *, progress: Callable[[int, int], None] | None = None
    ) -> int:
        """Derive every version the source of derived view ``view`` keeps that has no
        derived version yet (what ``apply`` does for a new derived view); returns the
        derived versions written. ``progress(entities done, total)``."""
        res = self._ctx.registry.get(view)
        if res.view.source is None or res.view.on_read:
            raise ConfigurationError(
                f"view {view!r} is not a materialised derived view (FeatureView(..., "
                "source=..., transforms=[...]) without on_read)"
            )
        self._deriver.transforms(res.view)
        return self._writes.recovery.backfill_views(
            {view: False}, progress=None if progress is None else lambda _v, d, t: progress(d, t)
        )

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
        register = self._transforms().register(
            name, inputs=inputs, outputs=outputs, vectorized=vectorized
        )

        def decorate(fn: Any) -> Any:
            out = register(fn)
            self._ctx.registry.record_transform(self._transforms().get(name).spec())
            return out

        return decorate

    def plan(self, *objects: Definition) -> dict[str, str]:
        """What ``apply(*objects)`` would do to each, changing nothing: "created",
        "unchanged", "updated", "breaking change: ..." (a feature service: "version N")."""
        return self._reads.plan(objects)

    def views(self) -> list[FeatureView]:
        """Every view in the registry."""
        return self._ctx.registry.views()

    def feature_services(self) -> list[FeatureService]:
        """Every feature service in the registry, at its current version."""
        return self._ctx.registry.services()

    def feature_service(self, name: str, *, version: int | None = None) -> FeatureService:
        """One feature service (its current version, or ``version``); NotFoundError if none."""
        return self._ctx.registry.service(name, version)

    def delete_feature_service(self, name: str) -> None:
        """Remove a feature service's definition and every version of it."""
        self._ctx.registry.service(name)
        self._ctx.registry.remove("service", name)

    def view(self, name: str) -> FeatureView:
        """One view's definition (NotFoundError if there is none)."""
        return self._ctx.registry.get(name).view

    def entities(self) -> list[Entity]:
        """Every entity in the registry."""
        return self._ctx.registry.entities()

    # -- writes -------------------------------------------------------------------------

    @timed("write")
    def write(
        self,
        view: str,
        entity_id: EntityId,
        values: Mapping[str, Any],
        *,
        event_time: Any = None,
        tag: str | None = None,
    ) -> Version:
        """Write one version of an entity's features (event_time: datetime or epoch s; now).
        ``Version.expired`` says the event time was already past the view's ttl: the
        version is kept in history, but reads as missing. ``tag="v2"`` names the version
        (read it back with ``version(view, id, tag="v2")``; the name moves with a later
        write tagged the same; it is set right after the version is stored)."""
        if tag is not None:
            check_tag(view, tag)
        ent = self._reads.entity_id(view, entity_id)
        version = self._writes.write(view, ent, values, event_time)
        if tag is not None and version.id:
            self._training().tag(view, ent, tag, version.id)
        self._touched(view, ent)
        return self._stamped(view, version)

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
        and reports the others in ``WriteReport.refused``; ``WriteReport.expired`` counts rows
        whose event time was already past the view's ttl. ``progress(done, total)``.
        """
        try:
            return self._writes.write_many(
                view,
                args.rows("write_many: rows", rows),
                entity_column=args.column("entity_column", entity_column),
                event_time_column=args.column(
                    "event_time_column", event_time_column, optional=True
                ),
                on_error=args.choice("write_many: on_error", on_error, ("raise", "skip")),
                progress=progress,
            )
        finally:  # also after a failure midway: some chunks may be written
            self._touched(view)

    @timed("update")
    def update(
        self, view: str, entity_id: EntityId, values: Mapping[str, Any], *, event_time: Any = None
    ) -> Version:
        """Merge some fields into the latest values and write the result as a new version."""
        ent = self._reads.entity_id(view, entity_id)
        version = self._writes.update(view, ent, values, event_time)
        self._touched(view, ent)
        return self._stamped(view, version)

    @timed("increment")
    def increment(
        self,
        view: str,
        entity_id: EntityId,
        deltas: Mapping[str, int | float],
        *,
        event_time: Any = None,
    ) -> Version:
        """Add to numeric fields atomically (safe under concurrency); writes a new version."""
        deltas = args.mapping("increment: deltas", deltas)
        ent = self._reads.entity_id(view, entity_id)
        version = self._writes.increment(view, ent, deltas, event_time)
        self._touched(view, ent)
        return self._stamped(view, version)

    def _stamped(self, view: str, version: Version) -> Version:
        return mark_expired(version, self._ctx.registry.get(view).view.ttl_us)

    def _touched(self, view: str, entity_id: Any = None, kind: str = "write") -> None:
        """Tell this store's vector indexes what it just wrote (read-your-writes): their
        next search applies it first (None: a bulk write, caught up from the feed)."""
        search = self._search.built
        if search is not None:
            search.touched(view, entity_id, kind)

    @timed("delete")
    def delete(self, view: str, entity_id: EntityId) -> bool:
        """Remove an entity's latest value and history (and its derived views' values).
        True if anything was there."""
        ent = self._reads.entity_id(view, entity_id)
        gone = self._writes.delete(view, ent)
        self._touched(view, ent, "delete")
        return gone

    def delete_view(self, view: str, *, keep_definition: bool = False) -> int:
        """Remove every key of a view (SCAN batches, non-blocking) and, unless asked, its
        definition. Returns the number of keys removed."""
        from .online.scan import delete_view_data

        ctx = self._ctx
        ctx.registry.get(view)
        removed = delete_view_data(ctx, view)
        # the feed, and pushed rows not yet ingested (a view re-created under this name
        # must not ingest them)
        with wrap_redis(f"view {view!r}: deleting its streams failed"):
            removed += int(
                ctx.client.unlink(
                    *ctx.keys.feeds(view),
                    *ctx.keys.ingests(view),
                    *ctx.keys.dead_letter_streams(view),
                    ctx.keys.materialized(view),  # a view made again loads from the start
                )
            )
        if self._cache is not None:
            self._cache.clear(view)
        if self.capabilities.get("vector_search"):  # server-side indexes and their mirrors
            from .vectors.server_index import drop_server_indexes

            drop_server_indexes(ctx.client, ctx.keys.vectors(view))
        if not keep_definition:
            removed += self._monitor.forget(view)
            ctx.registry.remove_view(view)
        return removed

    # -- reads --------------------------------------------------------------------------

    @timed("get")
    def get(
        self,
        view: str,
        entity_id: EntityId,
        *,
        features: Sequence[str] | None = None,
        as_of: Any = None,
        cache: bool = True,
    ) -> dict[str, Any] | None:
        """Latest values of one entity (or as of a past time), typed by the schema.
        ``cache=False`` reads Redis even with a near cache (and leaves the cache alone)."""
        feats = args.names("get: features", features)
        return self._reads.get(view, entity_id, feats, as_of, args.flag("get: cache", cache))

    @timed("get_many")
    def get_many(
        self,
        view: str,
        entity_ids: Iterable[EntityId],
        *,
        features: Sequence[str] | None = None,
        as_of: Any = None,
        with_meta: bool = False,
        cache: bool = True,
    ) -> list[Any]:
        """Values for many entities, aligned with the input (None where missing or expired).

        One round trip for the whole batch. ``with_meta=True`` returns ``Record`` objects with
        status PRESENT / EXPIRED / MISSING and the event time. ``cache=False`` bypasses the
        near cache.
        """
        return self._reads.get_many(
            view,
            args.ids("get_many: entity_ids", entity_ids),
            args.names("get_many: features", features),
            as_of,
            args.flag("get_many: with_meta", with_meta),
            args.flag("get_many: cache", cache),
        )

    @timed("get_features")
    def get_features(
        self,
        entity_ids: Iterable[Any] | None = None,
        features: Sequence[str] | None = None,
        *,
        entity_rows: Iterable[Mapping[str, Any]] | None = None,
        service: str | FeatureService | None = None,
        as_frame: bool = False,
        full_feature_names: bool = False,
        flatten_vectors: bool = False,
        as_numpy: bool = False,
        cache: bool = True,
    ) -> Any:
        """One feature vector per row: ``features`` ("view:feature", window features too)
        or a feature ``service`` (a name, "name@version" or a FeatureService).

        ``entity_ids`` address one entity; ``entity_rows=[{"user_id": .., "merchant_id":
        ..}]`` mix views of several entities, each view joined on its own entity's join keys
        from each row. All views are read in one round trip. Returns a list of dicts, or a
        pandas.DataFrame (with an ``entity_id`` column, or the rows' join keys) when
        ``as_frame=True``. ``flatten_vectors`` expands a Vector feature into ``name_0 ..
        name_{d-1}``; ``as_numpy`` returns one float64 2-D array (rows, features; vectors
        flattened; missing = NaN). With a near cache, rows it holds are served from memory
        and the rest read in the same round trip (then cached); ``cache=False`` bypasses it.
        """
        return self._reads.get_features(
            args.optional_ids("get_features: entity_ids", entity_ids),
            self._reads.features_of(
                args.names("get_features: features", features), service, "get_features"
            ),
            entity_rows=entity_rows,
            as_frame=as_frame,
            full_feature_names=full_feature_names,
            flatten_vectors=flatten_vectors,
            as_numpy=as_numpy,
            cache_ok=args.flag("get_features: cache", cache),
        )

    # -- versions and training data ---------------------------------------------------

    def history(self, view: str, entity_id: EntityId, *, limit: int = 10) -> list[Version]:
        """Stored versions of one entity, newest event time first."""
        ent = self._reads.entity_id(view, entity_id, read=True)
        return self._training().history(view, ent, limit=limit)

    def version(
        self,
        view: str,
        entity_id: EntityId,
        version_id: int | None = None,
        *,
        tag: str | None = None,
    ) -> Version:
        """One version by id, or by the ``tag`` a write gave it (NotFoundError if it is
        not, or no longer, kept)."""
        ent = self._reads.entity_id(view, entity_id, read=True)
        return self._training().version(view, ent, version_id, tag)

    @timed("delete_version")
    def delete_version(self, view: str, entity_id: EntityId, version_id: int) -> bool:
        """Remove one version of an entity (and the tags naming it); if it was the latest,
        the newest remaining version becomes the latest. Whether it was there. No change
        event is recorded: readers of the feed see the version's write only."""
        ent = self._reads.entity_id(view, entity_id)
        res = self._ctx.registry.get(view)
        gone = self._online.delete_version(res, ent, version_id)
        if gone:
            self._touched(view, ent)
        return gone

    @timed("diff")
    def diff(self, view: str, entity_id: EntityId, a: Any, b: Any) -> dict[str, Any]:
        """What changed between two versions (ids, or datetimes read as-of):
        ``{"added": {f: new}, "removed": {f: old}, "modified": {f: (old, new)}}``."""
        return self._training().diff(view, self._reads.entity_id(view, entity_id, read=True), a, b)

    @timed("training_frame")
    def training_frame(
        self,
        entity_df: Any,
        features: Sequence[str] | None = None,
        *,
        service: str | FeatureService | None = None,
        entity_column: str = "entity_id",
        event_time_column: str = "event_time",
        full_feature_names: bool = False,
        filter_by_written_at: bool = False,
        as_arrow: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> Any:
        """Point-in-time correct features for each (entity, timestamp) row of entity_df.

        For each row and view: the version with the greatest event_time <= the row's time
        (and >= time - ttl when the view has one), ties to the last written; with
        ``filter_by_written_at`` only versions written by then. Window features count the
        events in their window at the row's time. Every input row and column is kept in
        order; no match gives null. Returns pandas (or Arrow with ``as_arrow``).
        ``progress(view, done, total)`` reports the bulk read of versions.

        ``features`` or a feature ``service`` (a name, "name@version" or a FeatureService).
        Each view joins on its entity's join-key columns of entity_df (``user_id``,
        ``merchant_id``...), or on ``entity_column`` where the entity declares none.
        """
        return self._reads.training_frame(
            entity_df,
            self._reads.features_of(
                args.names("training_frame: features", features), service, "training_frame"
            ),
            entity_column=args.column("entity_column", entity_column),
            event_time_column=args.column("event_time_column", event_time_column),
            full_feature_names=full_feature_names,
            filter_by_written_at=filter_by_written_at,
            as_arrow=as_arrow,
            progress=progress,
        )

    @timed("write_training_frame")
    def write_training_frame(
        self,
        out: str | os.PathLike[str],
        entity_df: Any,
        features: Sequence[str] | None = None,
        *,
        service: str | FeatureService | None = None,
        entity_column: str = "entity_id",
        event_time_column: str = "event_time",
        full_feature_names: bool = False,
        filter_by_written_at: bool = False,
        chunk_rows: int = 1_000_000,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """``training_frame`` for inputs larger than memory: written to the Parquet file
        ``out`` ``chunk_rows`` rows at a time, in the input's order, so memory holds one
        chunk's frame whatever the input's size. ``entity_df`` is a DataFrame, an Arrow
        table, or the path of a Parquet file, a directory of Parquet files or a .csv file
        (read batch by batch). ``progress(rows_done, rows_total)`` after each chunk. The file
        appears only when complete. Returns the rows written."""
        from .offline.stream import entity_chunks, write_frames

        refs = self._reads.features_of(
            args.names("write_training_frame: features", features), service, "training_frame"
        )
        opts: dict[str, Any] = dict(
            entity_column=args.column("entity_column", entity_column),
            event_time_column=args.column("event_time_column", event_time_column),
            full_feature_names=full_feature_names,
            filter_by_written_at=filter_by_written_at,
            as_arrow=True,
            progress=None,
        )
        chunks, total = entity_chunks(entity_df, chunk_rows)
        return write_frames(
            out,
            chunks,
            lambda chunk: self._reads.training_frame(chunk, refs, **opts),
            None if progress is None else (lambda done: progress(done, total)),
        )

    def versions(
        self,
        view: str,
        entity_ids: Iterable[str | int] | None = None,
        *,
        start: Any = None,
        end: Any = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Any:
        """Every stored version (Redis history, plus the offline log when configured) of some
        entities (all when None) with event time in [start, end], as a pyarrow.Table."""
        ids = args.optional_ids("versions: entity_ids", entity_ids)
        return self._training().versions(view, ids, start=start, end=end, progress=progress)

    @timed("export")
    def export(
        self,
        view: str,
        path: str | os.PathLike[str],
        *,
        start: Any = None,
        end: Any = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Write every version of a view with event time in [start, end] to one Parquet file
        (atomically). Returns the number of versions written."""
        return self._training().export(view, path, start=start, end=end, progress=progress)

    @timed("import_frame")
    def import_frame(
        self,
        view: str,
        frame: Any,
        *,
        entity_column: str = "entity_id",
        event_time_column: str = "event_time",
        written_at_column: str | None = None,
        progress: Progress | None = None,
    ) -> WriteReport:
        """Backfill historical versions (history and offline log). Latest values only move
        forward: a row older than an entity's latest lands in history. All or nothing."""
        frame = args.rows("import_frame: frame", frame)
        entity_column = args.column("entity_column", entity_column)
        event_time_column = args.column("event_time_column", event_time_column)
        deps = self._ctx.registry.dependents(view)
        with self._writes.deriving(deps):
            report = self._training().import_frame(
                view,
                frame,
                entity_column=entity_column,
                event_time_column=event_time_column,
                written_at_column=written_at_column,
                progress=progress,
            )
            if deps:
                self._writes.derive_bulk(deps, frame, entity_column, event_time_column, report)
        self._writes.forget_cached(view, deps)
        self._touched(view)
        return report

    @timed("materialize")
    def materialize(
        self,
        view: str | FeatureView,
        start: Any = None,
        end: Any = None,
        *,
        on_error: str = "raise",
        progress: Callable[[int, int], None] | bool | None = None,
        batch_rows: int = 131_072,
    ) -> MaterializeReport:
        """Load the view's ``batch_source`` rows with ``start <= event time < end`` (None:
        from the first row; until now) as versions, through the bulk write path: one row
        per entity and event time (the latest ``created_column`` wins), only as many as the
        view's history keeps. Reruns write nothing new; a run interrupted after a batch
        (``batch_rows``) resumes from there. Moves the watermark when the window continues
        the loaded range. ``on_error``: "raise" stops at a batch with a bad row, "skip"
        counts them. ``progress``: a callable(done, total), or True for a bar on stderr."""
        return self._materializer().run(
            view,
            start,
            end,
            incremental=False,
            on_error=on_error,
            progress=progress,
            batch_rows=batch_rows,
        )

    @timed("materialize_incremental")
    def materialize_incremental(
        self,
        view: str | FeatureView,
        end: Any = None,
        *,
        on_error: str = "raise",
        progress: Callable[[int, int], None] | bool | None = None,
        batch_rows: int = 131_072,
    ) -> MaterializeReport:
        """Load the view's ``batch_source`` from its watermark (kept in Redis; the first run
        loads everything) to ``end`` (None: now), then move the watermark to ``end``. As
        ``materialize`` otherwise: idempotent, resumable, with progress."""
        return self._materializer().run(
            view,
            None,
            end,
            incremental=True,
            on_error=on_error,
            progress=progress,
            batch_rows=batch_rows,
        )

    def materialization(self, view: str) -> dict[str, Any]:
        """A view's loading state: ``watermark``, the ``running`` (or interrupted) run's
        window and progress, the ``last`` complete run."""
        return self._materializer().state(view)

    # -- window features ------------------------------------------------------------------

    def window(self, name: str) -> WindowFeatures:
        """The WindowFeatures definition ``name``."""
        return self._windows().window(name)

    def window_features(self) -> list[WindowFeatures]:
        """Every WindowFeatures definition, by name (``views()`` lists only views)."""
        return self._windows().window_features()

    def delete_window(self, name: str, *, keep_definition: bool = False) -> int:
        """Remove every tile of window features ``name`` (SCAN batches) and, unless asked,
        the definition. Returns the number of keys removed."""
        return self._windows().delete(name, keep_definition=keep_definition)

    def record(self, name: str, entity_id: str | int, value: float, ts: Any = None) -> bool:
        """Add one event (``ts``: datetime or epoch seconds; None = now) to an entity's
        windows, atomically. False when it is older than the retention (not counted)."""
        counted = self._windows().record(name, entity_id, value, ts)
        self._writes.sync()
        return counted

    def record_many(
        self,
        name: str,
        rows: Any,
        *,
        entity_column: str = "entity_id",
        value_column: str | None = None,
        event_time_column: str | None = "event_time",
        progress: Callable[[int, int], None] | None = None,
    ) -> RecordReport:
        """Add many events (list of dicts, pandas.DataFrame or pyarrow.Table; the value
        column defaults to the source's name, event_time_column=None means now). Partial
        tiles per (entity, hop) are built with numpy and merged by one atomic step per
        entity, streamed. Every row is checked first: a bad one raises and nothing is
        recorded. ``progress(events done, total)``."""
        report = self._windows().record_many(
            name,
            rows,
            entity_column=args.column("entity_column", entity_column),
            value_column=args.column("value_column", value_column, optional=True),
            event_time_column=args.column("event_time_column", event_time_column, optional=True),
            progress=progress,
        )
        self._writes.sync()
        return report

    # -- real time --------------------------------------------------------------------

    def changes(
        self, view: str, *, since: str | None = None, limit: int = 1000
    ) -> tuple[list[ChangeEvent], str | None]:
        """Change events of a view after the cursor ``since`` (None: the oldest kept), and
        the cursor to resume from. The feed lives in Redis, so the cursor survives
        restarts; it keeps the newest ``feed_cap`` versions (and none older than
        ``feed_retention``). A cursor the feed was trimmed past raises FeedTrimmedError
        (its ``resume`` is the oldest cursor kept): reload the view's state, then go on."""
        return self._live().changes(view, since=since, limit=limit)

    def subscribe(
        self,
        view: str | Iterable[str] | None = None,
        entity_ids: Iterable[EntityId] | None = None,
    ) -> Subscription:
        """Live change events of one view, several, or all (None), optionally only for
        some entities (ids as reads take them: a composite entity's tuple, mapping or
        encoded string). Iterate it, ``async for`` it, or ``sub.on_event(callback)``."""
        if view is not None and not isinstance(view, str):
            view = args.names("subscribe: view", view)
        return self._live().subscribe(view, args.optional_ids("subscribe: entity_ids", entity_ids))

    @timed("push")
    def push(
        self,
        view: str,
        rows: Iterable[Mapping[str, Any]],
        *,
        event_time_column: str | None = None,
    ) -> int:
        """Append raw rows (dicts with an ``entity_id``) to the view's ingest stream, for
        workers to validate and write. Rows without an event time get the push time."""
        n = self._live().push(
            view,
            rows,
            event_time_column=args.column("event_time_column", event_time_column, optional=True),
        )
        self._writes.sync()
        return n

    def worker(self, views: Iterable[str] | None = None, **options: Any) -> Worker:
        """A consumer-group worker for the ingest streams of ``views`` (all when None)."""
        return self._live().worker(views, **options)

    def run_worker(self, views: Iterable[str] | None = None, **options: Any) -> Any:
        """Run a worker in this thread until it is stopped (see ``worker``)."""
        return self._live().run_worker(views, **options)

    def dead_letters(self, view: str, limit: int = 100) -> list[dict[str, Any]]:
        """Rows workers refused, with the error."""
        return self._live().dead_letters(view, limit)

    # -- similarity search ------------------------------------------------------------

    @timed("similar")
    def similar(
        self,
        view: str,
        field: str,
        query: Any,
        *,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        include_values: bool = False,
        index: str = "exact",
        consistent: bool = False,
        **index_options: int,
    ) -> list[Match]:
        """Nearest entities to ``query`` by a Vector field, best first (ties by entity id).

        ``where`` filters on other fields: ``{"segment": "premium"}``, ``{"segment": ["a",
        "b"]}``, ``{"age": (25, 40)}`` (inclusive, None = open). The first call builds an
        in-process index (``index="exact"`` or ``"hnsw"``) from Redis; change events keep
        it current. ``index="server"`` answers with the server's Query Engine (FT.SEARCH
        KNN) over a mirror kept current the same way; ``"auto"`` is "server" where the
        server has it, else "exact". A search sees every write and delete this store made
        before it; writes of other processes within milliseconds (their change events), at
        most ~1 s when an event is lost; ``consistent=True`` catches up with the view's
        change feed first, so every write acknowledged before the call is seen.
        ``index_options`` (M, ef_construction, ef_search) tune hnsw when its index is first
        built: a lower ef_search is faster and less exact (see bench/RESULTS.md)."""
        return self._search().similar(
            view,
            field,
            query,
            k=k,
            where=where,
            include_values=include_values,
            index=index,
            consistent=consistent,
            **index_options,
        )

    @timed("put_text")
    def put_text(
        self,
        text: str,
        *,
        embedding: Any = None,
        model: str = "default",
        metadata: Mapping[str, Any] | None = None,
        max_chars: int = 500,
    ) -> str:
        """Store a text (its first ``max_chars`` characters), metadata and embedding (given,
        or from the store's ``embedder``); returns its id, the sha256 of the text. Storing
        the same text again keeps one entry."""
        return self._search().put_text(
            text, embedding=embedding, model=model, metadata=metadata, max_chars=max_chars
        )

    @timed("similar_texts")
    def similar_texts(
        self,
        *,
        text: str | None = None,
        embedding: Any = None,
        k: int = 5,
        model: str = "default",
        consistent: bool = False,
    ) -> list[Match]:
        """Stored texts nearest to ``text`` (embedded by the store's embedder) or to
        ``embedding``, best first; values hold text, metadata and embedding. Texts this
        store put are always found; ``consistent`` as for ``similar``."""
        return self._search().similar_texts(
            text=text, embedding=embedding, k=k, model=model, consistent=consistent
        )

    # -- time series ----------------------------------------------------------------------

    @property
    def timeseries(self) -> TimeSeriesAdmin:
        """Every series of the project: ``specs(filters)``, ``open(name)``, ``cleanup()``."""
        return self._series().admin

    @property
    def alerts(self) -> Alerts:
        """Alert rules on series (add, list, remove, history, evaluate, on_transition;
        ``start(interval)`` evaluates them in a background thread until ``close()``)."""
        return self._series().alerts

    def series(
        self,
        name: str,
        *,
        labels: Mapping[str, Any] | None = None,
        retention: Any = None,
        rollups: Iterable[Any] | None = None,
        rollup_retention: Any = None,
        duplicate_policy: str | None = None,
        max_points: int | None = None,
        precision: int | None = None,
    ) -> Series:
        """Create or open the time series ``name`` (its definition lives in the registry).

        On creation, None means the default: no labels, retention "7d" (raw points, counted
        back from the newest), rollups ("1m", "5m", "1h", "1d") kept 7d/30d/90d/365d,
        duplicate_policy "last" (block, first, last, min, max, sum). Opening an existing
        series keeps what is not given and updates what is (rollup_retention per rollup: a
        mapping naming one rollup leaves the others as stored); its rollups cannot change.

        ``max_points``: keep only the newest N raw points (older ones read as gone at once
        and are removed by the same write); rollups keep their own retention. ``precision``:
        round values to this many decimal places as they are written (lossy; regular
        decimals compress to a fraction of a byte per point)."""
        return self._series().series(
            name,
            labels=labels,
            retention=retention,
            rollups=rollups,
            rollup_retention=rollup_retention,
            duplicate_policy=duplicate_policy,
            max_points=max_points,
            precision=precision,
        )

    def series_list(self, filters: Iterable[str] | str = ()) -> list[str]:
        """Names of the series whose labels match every filter (``l=v``, ``l!=v``,
        ``l=(a,b)``, ``l!=(a,b)``, ``l=`` no such label, ``l!=`` has it); sorted."""
        return self._series().series_list(filters)

    def mrange(
        self,
        filters: Iterable[str] | str,
        start: Any = None,
        end: Any = None,
        *,
        bucket: Any = None,
        agg: str = "avg",
        group_by: str | None = None,
        reduce: str | None = None,
    ) -> dict[str, tuple[Any, Any]]:
        """``range`` over every series matching the filters, like TS.MRANGE: a dict of
        series name -> (timestamps, values), by name. With ``group_by`` (a label) and
        ``reduce`` (avg, sum, min, max, range, count, std, var), one entry per label value,
        keyed ``"<label>=<value>"``, reducing the group's series per timestamp."""
        return self._series().mrange(
            filters, start, end, bucket=bucket, agg=agg, group_by=group_by, reduce=reduce
        )

    def correlate(
        self, names: Iterable[str], start: Any, end: Any, *, bucket: Any = "1m"
    ) -> pd.DataFrame:
        """Pearson correlation matrix of the series' bucket means over the buckets they all
        have (read from tiles when a rollup fits). Raises InsufficientDataError below 3."""
        return self._series().correlate(names, start, end, bucket=bucket)

    # -- quality and monitoring ---------------------------------------------------------

    def validator(
        self, view: str, *, severity: str = "error", name: str | None = None
    ) -> Callable[[RowCheck], RowCheck]:
        """Register a custom row check: ``@store.validator("view", severity="warning")``
        (see ``store.quality.validator``)."""
        return self._quality.validator(view, severity=severity, name=name)

    def validate(
        self,
        view: str,
        rows: Any,
        *,
        entity_column: str = "entity_id",
        event_time_column: str | None = None,
    ) -> ValidationReport:
        """Dry run of write_many: every problem of every row (view, entity, field, rule,
        value, message), nothing written."""
        return self._quality.validate(
            view,
            args.rows("validate: rows", rows),
            entity_column=args.column("entity_column", entity_column),
            event_time_column=args.column("event_time_column", event_time_column, optional=True),
        )

    def entity_stats(self, view: str, entity_id: EntityId) -> EntityStats:
        """What is stored for one entity (the seed's ``getFeatureStats``): the view's fields
        with their types and which ones the latest version holds, its event time and when
        it was written, the versions kept, the bytes its keys take in the server, and when
        the latest value expires. A missing entity gives status MISSING (no error)."""
        from .stats import entity_stats

        return entity_stats(self._ctx, view, self._reads.entity_id(view, entity_id, read=True))

    def estimate_memory(
        self,
        *,
        entities: int,
        features: int,
        history: int = 1,
        server: str | None = None,
        profiles: bool = True,
    ) -> int:
        """Bytes one view of ``entities`` entities with ``features`` Float features and
        ``history`` versions kept per entity needs on this store's server ("redis" 7.0 or
        "valkey" by default; or name it), change feed (this store's ``feed_cap``) and
        profiles included (the feed with payloads once an offline log is attached to the
        project). From constants measured by bench/memory.py; see the README's sizing
        model."""
        from .core.sizing import constants_for, estimate

        if server is None:
            with wrap_redis("reading the server's version failed"):
                info = self._client.info("server")
            server = "valkey" if "valkey_version" in info else "redis"
        return estimate(
            constants_for(server),
            entities=entities,
            features=features,
            history=history,
            feed_cap=self._online.writer.feed_cap,
            profiles=profiles,
            offline=self._ctx.registry.offline_attached(),
        )

    def stats(self, *, storage: bool = True) -> dict[str, Any]:
        """Per operation in this process: count, errors, mean/p50/p99 latency (ms) and
        histogram buckets; the server's memory; per view the change feed's age and the
        ingest backlog, pending rows, lag and dead letters; the age of buffered profiles;
        and, with ``storage``, this project's keys and bytes per view, series and quality
        data (sampled MEMORY USAGE; a bounded SCAN or RANDOMKEY sample, never KEYS)."""
        from .stats import stats

        monitor = self._monitor
        return stats(
            self._ctx,
            storage=args.flag("storage", storage),
            flush=monitor.flush,
            recorder=monitor.recorder,
            feeder=None if self._feeder is None else self._feeder.counters(),
        )


# -- the services built on first use ------------------------------------------------------


def _transform_registry() -> TransformRegistry:
    from .transforms.core import TransformRegistry  # pandas: only once a transform is used

    return TransformRegistry()


def _windows(ctx: Ctx, feed_cap: int) -> Windows:
    from .windows.service import Windows

    return Windows(ctx, feed_cap)


def _training(
    ctx: Ctx,
    online: Online,
    monitor: Monitor,
    offline: OfflineLog | None,
    feeder: LogFeeder | None,
) -> Training:
    from .offline.service import Training

    return Training(ctx, online, monitor, offline, feeder)


def _search(
    ctx: Ctx, store: FeatureStore, capabilities: Callable[[], dict[str, Any]], embedder: Any
) -> Search:
    from .vectors.service import Search

    return Search(ctx, store, store, capabilities, embedder)


def _live(ctx: Ctx, store: FeatureStore) -> Live:
    from .realtime.service import Live

    return Live(ctx, store)


def _series(ctx: Ctx) -> SeriesService:
    from .timeseries.service import SeriesService

    return SeriesService(ctx)


def _materializer(ctx: Ctx, store: FeatureStore) -> Materializer:
    from .offline.materialize import Materializer

    return Materializer(ctx, store)
