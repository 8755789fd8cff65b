"""The read verbs behind the facade: which path a read takes (window features, on-read
derived views, the near cache, as-of history, latest values), the serving log, feature
vectors across views (``get_features``) and training frames that mix views and window
features."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .core.codec import READ, normalize_id
from .core.context import Ctx
from .core.keys import escape_id
from .core.records import Record, Status
from .core.refs import plan, shared_columns
from .core.registry import Registry, Resolved
from .core.schema import Entity, EntityId, FeatureService
from .core.time import now_us
from .errors import ConfigurationError, NotFoundError, wrap_redis
from .online import history as _history
from .online.online import Online
from .quality.service import Monitor
from .realtime.cache import MISSING, Cache
from .transforms.derived import Deriver
from .types import Int, Vector
from .windows.spec import decoded, range_fields, read_range, values_at

if TYPE_CHECKING:
    from .offline.service import Training
    from .windows.service import Windows, WindowWanted


class Reads:
    """get, get_many, get_features and training frames of one store."""

    def __init__(
        self,
        ctx: Ctx,
        online: Online,
        deriver: Deriver,
        cache: Cache | None,
        monitor: Monitor,
        windows: Callable[[], Windows],
        training: Callable[[], Training],
    ) -> None:
        self._ctx = ctx
        self._online = online
        self._deriver = deriver
        self._cache = cache
        self._monitor = monitor
        self._windows = windows  # built on first use: most stores never read windows
        self._training = training

    def get(
        self,
        view: str,
        entity_id: EntityId,
        features: Sequence[str] | None,
        as_of: Any,
        cache_ok: bool = True,
    ) -> dict[str, Any] | None:
        reg = self._ctx.registry
        if reg.is_window(view):
            ids = self._window_ids(view, [entity_id])
            one = self._windows().get_many(view, ids, features, as_of, False, strict=True)
            return one[0]  # type: ignore[no-any-return]
        cache = self._cache if cache_ok else None
        plain = type(entity_id) is str or type(entity_id) is int
        if cache is not None and features is None and as_of is None and plain:
            hit = cache.lookup(view, str(entity_id))
            if hit is not MISSING:
                self._monitor.read_hit(view)
                return hit  # type: ignore[no-any-return]
        res = reg.get(view)
        (entity_id,) = canonical_ids(res, [entity_id])
        if cache is not None and features is None and as_of is None and not res.view.on_read:
            # a known miss: fetch and cache it
            got = cache.fill(view, [entity_id], self._fetch_records(res), res.view.ttl_us)
            return got[0]  # type: ignore[no-any-return]
        out = self._get_many(res, [entity_id], features, as_of, False, cache_ok)
        self._monitor.read(res, out, features)
        return out[0]  # type: ignore[no-any-return]

    def get_many(
        self,
        view: str,
        entity_ids: Iterable[EntityId],
        features: Sequence[str] | None,
        as_of: Any,
        with_meta: bool,
        cache_ok: bool = True,
    ) -> list[Any]:
        if self._ctx.registry.is_window(view):
            ids = self._window_ids(view, list(entity_ids))
            return self._windows().get_many(view, ids, features, as_of, with_meta)
        res = self._ctx.registry.get(view)
        ids = canonical_ids(res, list(entity_ids))
        out = self._get_many(res, ids, features, as_of, with_meta, cache_ok)
        self._monitor.read(res, out, features)
        return out

    def _get_many(
        self,
        res: Resolved,
        ids: list[Any],
        features: Sequence[str] | None,
        as_of: Any,
        with_meta: bool,
        cache_ok: bool = True,
    ) -> list[Any]:
        view = res.name
        feats = None if features is None else list(features)
        if res.view.on_read:
            return self._deriver.read(res, ids, feats, as_of, with_meta)
        cache = self._cache if cache_ok else None
        if as_of is None and cache is not None and feats is None and not with_meta:
            return cache.read_many(res.name, ids, self._fetch_records(res), res.view.ttl_us)
        if as_of is None:
            return self._online.get_many(res, ids, feats, with_meta)
        at = _history.as_of_us(view, as_of)
        readers = res.codec.select(feats)
        ents = [normalize_id(view, e, i, outcome=READ) for i, e in enumerate(ids)]
        versions = _history.get_many_as_of(self._ctx.client, self._ctx.keys, res, ents, at, readers)
        if not with_meta:
            return [None if v is None else v.values for v in versions]
        return [
            Record(e, Status.MISSING, None, None)
            if v is None
            else Record(e, Status.PRESENT, v.event_time, v.values)
            for e, v in zip(ents, versions, strict=True)
        ]

    def _fetch_records(self, res: Resolved) -> Callable[[list[Any]], list[Record]]:
        return lambda ids: self._online.get_many(res, ids, None, True)

    def entity_id(self, view: str, entity_id: Any, *, read: bool = False) -> Any:
        """One id of ``view`` in its canonical form (a tuple or mapping encoded with the
        entity's join keys), so that the write path, the cache and history see one string;
        plain ids of a plain entity pass unchanged (checked where they are used)."""
        if type(entity_id) is str or type(entity_id) is int:
            res = self._ctx.registry.get(view)
            key = res.key
            if not key.composite and key.join_keys[0].dtype is not Int:
                return entity_id
        else:
            res = self._ctx.registry.get(view)
        outcome = READ if read else "nothing was written"
        return normalize_id(view, entity_id, outcome=outcome, key=res.key)

    def _window_ids(self, name: str, ids: list[Any]) -> list[Any]:
        """Ids of window features' entity in canonical form (tuples and mappings encoded
        with the entity's join keys)."""
        if all(type(e) is str or type(e) is int for e in ids):
            return ids
        key = self._ctx.registry.entity(self._ctx.registry.window_specs()[name]["entity"])
        return [normalize_id(name, e, i, outcome=READ, key=key) for i, e in enumerate(ids)]

    def service_refs(self, service: str | FeatureService) -> tuple[FeatureService, list[str]]:
        """A feature service (by name, "name@version" or the object) and its references."""
        svc = resolve_service(self._ctx.registry, service)
        return svc, list(svc.features)

    def features_of(
        self, features: Sequence[str] | None, service: str | FeatureService | None, verb: str
    ) -> list[str]:
        """The references a read asks for: ``features`` or a service's, not both."""
        if service is not None:
            if features is not None:
                raise ConfigurationError(f"{verb}: pass features= or service=, not both")
            return self.service_refs(service)[1]
        if features is None:
            raise ConfigurationError(
                f"{verb}: pass features=['view:feature', ...] or service='<feature service>'"
            )
        return list(features) if not isinstance(features, str) else [features]

    def resolve_services(self, objects: tuple[Any, ...]) -> tuple[Any, ...]:
        """The definitions of an apply() call with each FeatureService checked and its bare
        view names resolved (against the registry and the call's own views)."""
        if not any(isinstance(o, FeatureService) for o in objects):
            return objects
        return tuple(
            self.check_service(o, objects) if isinstance(o, FeatureService) else o for o in objects
        )

    def plan(self, objects: tuple[Any, ...]) -> dict[str, str]:
        """What apply(*objects) would do to each definition, storing nothing."""
        from .windows.spec import WindowFeatures

        objects = self.resolve_services(objects)
        reg = self._ctx.registry
        wins = [o for o in objects if isinstance(o, WindowFeatures)]
        rest: tuple[Any, ...] = tuple(o for o in objects if not isinstance(o, WindowFeatures))
        if wins or reg.window_specs():
            rest, wins = self._windows().split(objects)
        out = reg.apply(rest, allow_breaking=True, dry_run=True)
        specs = reg.window_specs()
        for w in wins:
            old = specs.get(w.name)
            if old is None:
                out[w.name] = "created"
            elif old == w.spec():
                out[w.name] = "unchanged"
            elif (old["hop_ms"], old["source"]) != (w.hop_ms, w.source):
                out[w.name] = (
                    "breaking change: changes the hop or source, which stored tiles cannot "
                    "follow (delete the window features first)"
                )
            else:
                out[w.name] = "updated"
        return out

    def check_service(self, svc: FeatureService, pending: Sequence[Any]) -> FeatureService:
        """A service about to be applied, with bare view names resolved into their fields
        and every reference checked against the views and window features (registered, or
        applied in the same call: ``pending``)."""
        reg = self._ctx.registry
        views = {v.name: [f.name for f in v.fields] for v in reg.views()}
        windows = {n: _window_outputs(spec) for n, spec in reg.window_specs().items()}
        for obj in pending:
            if hasattr(obj, "fields") and hasattr(obj, "entity"):
                views[obj.name] = [f.name for f in obj.fields]
            elif hasattr(obj, "aggs") and isinstance(getattr(obj, "features", None), list):
                windows[obj.name] = list(obj.features)
        refs: list[str] = []
        for ref in svc.features:
            name, sep, feat = ref.partition(":")
            known = views.get(name, windows.get(name))
            if known is None:
                raise NotFoundError(
                    f"feature service {svc.name!r}: {name!r} is neither a view nor window "
                    f"features (views: {sorted(views) or 'none'}; window features: "
                    f"{sorted(windows) or 'none'}); apply it first or in the same call"
                )
            if not sep:
                refs.extend(f"{name}:{f}" for f in known)
            elif feat not in known:
                raise NotFoundError(
                    f"feature service {svc.name!r}: {name!r} has no feature {feat!r} "
                    f"(known: {known})"
                )
            else:
                refs.append(ref)
        return FeatureService(svc.name, features=refs, description=svc.description, tags=svc.tags)

    def split_refs(
        self, features: Sequence[str], full_feature_names: bool
    ) -> tuple[list[str], list[WindowWanted]]:
        """ "name:feature" references split into views' and window features' ones."""
        if isinstance(features, str) or not features:
            raise ConfigurationError("features must be a non-empty list like ['view:feature', ...]")
        if not self._ctx.registry.window_specs():
            return list(features), []
        return self._windows().refs(features, full_feature_names)

    def get_features(
        self,
        entity_ids: Iterable[Any] | None,
        features: Sequence[str],
        *,
        entity_rows: Iterable[Any] | None = None,
        as_frame: bool,
        full_feature_names: bool,
        flatten_vectors: bool,
        as_numpy: bool,
        cache_ok: bool = True,
    ) -> Any:
        if (entity_ids is None) == (entity_rows is None):
            raise ConfigurationError(
                "get_features: pass entity_ids=[...] (one entity) or "
                "entity_rows=[{join key: value, ...}] (views of several entities), not both"
            )
        refs, wins = self.split_refs(features, full_feature_names)
        reg = self._ctx.registry
        if entity_ids is not None:
            named = {v for v, sep, f in (str(r).partition(":") for r in refs) if sep and f}
            mixed = sorted({reg.get(v).view.entity for v in named} | {w.wf.entity for w in wins})
            if len(mixed) > 1:
                raise ConfigurationError(
                    f"get_features: entity_ids address one entity; these features mix "
                    f"entities {mixed}: pass entity_rows=[{{join key: value, ...}}]"
                )
        wanted = (
            plan(refs, reg.get, full_feature_names, purpose="get_features", on_read_ok=True)
            if refs
            else []
        )
        outs = [o for w in wanted for o in w.outputs] + [f[0] for ww in wins for f in ww.feats]
        if len(set(outs)) != len(outs):
            raise ConfigurationError(
                f"get_features: output names {outs} repeat; pass full_feature_names=True"
            )
        # the entity of each view and window features, and its ids for every row
        keys: dict[str, Entity] = {w.res.name: w.res.key for w in wanted}
        keys.update({ww.wf.name: reg.entity(ww.wf.entity) for ww in wins})
        if entity_rows is not None:
            rows_in = list(entity_rows)
            bad = [i for i, r in enumerate(rows_in) if not isinstance(r, Mapping)]
            if bad:
                raise ConfigurationError(
                    f"get_features: entity_rows must be mappings of join key to value; row "
                    f"{bad[0]} is a {type(rows_in[bad[0]]).__name__}"
                )
            used: dict[tuple[str, ...], Entity] = {}
            for key in {k.name: k for k in keys.values()}.values():
                shared_columns(used, key.key_names, key)
            n = len(rows_in)
        else:
            ids_in = list(entity_ids or [])
            n = len(ids_in)
        ents_of: dict[str, list[str]] = {}  # entity name -> canonical ids, one per row
        for name, key in keys.items():
            if key.name in ents_of:
                continue
            if entity_rows is not None:
                ents_of[key.name] = [
                    normalize_id(name, r, i, outcome=READ, key=key, extra_ok=True)
                    for i, r in enumerate(rows_in)
                ]
            else:
                ents_of[key.name] = [
                    normalize_id(name, e, i, outcome=READ, key=key) for i, e in enumerate(ids_in)
                ]
        stored = [w for w in wanted if not w.res.view.on_read]
        now_ms = now_us() // 1000
        # the near cache serves whole rows; what it misses is read below (and cached)
        cache = self._cache if cache_ok else None
        epoch = 0 if cache is None else cache.epoch  # taken before anything is read
        hits = {
            w.res.name: [MISSING] * n
            if cache is None
            else [cache.lookup(w.res.name, e) for e in ents_of[w.res.key.name]]
            for w in stored
        }
        fetch = {n: [i for i, h in enumerate(row) if h is MISSING] for n, row in hits.items()}
        sent = [w for w in stored if fetch[w.res.name]]
        with wrap_redis("get_features: read failed"):
            # every stored view and window features in one round trip; on_read views are
            # computed from their source
            pipe: Any = self._ctx.client.pipeline(transaction=False)
            # on a cluster the keys of one view span slots: one grouped MGET per view
            split = self._ctx.direct.cluster is not None
            latest_blobs: list[Any] = []
            for w in sent:
                name, ents = w.res.name, ents_of[w.res.key.name]
                keys_ = [self._ctx.keys.latest(name, escape_id(ents[i])) for i in fetch[name]]
                if split:
                    latest_blobs.append(self._ctx.direct.mget(keys_))
                else:
                    pipe.execute_command("MGET", *keys_)
            # only the buckets the asked windows cover (HGETALL when that is most of them)
            spans = [read_range(ww.wf, now_ms, [w for _, _, w in ww.by_feature()]) for ww in wins]
            for ww, span in zip(wins, spans, strict=True):
                fields = [] if span is None else range_fields(span)
                head = str(now_ms // ww.wf.hop_ms)  # the one tile a read at now may cut
                for e in ents_of[keys[ww.wf.name].name]:
                    esc = escape_id(e)
                    tiles_key = self._ctx.keys.window_tiles(ww.wf.name, esc)
                    if span is None:
                        pipe.hgetall(tiles_key)
                    else:
                        pipe.execute_command("HMGET", tiles_key, *fields)
                    pipe.hget(self._ctx.keys.window_events(ww.wf.name, esc), head)
            replies = pipe.execute() if (sent and not split) or (n and wins) else []
            replies = latest_blobs + replies
        per_view: dict[str, list[Any]] = {}
        for w, blobs in zip(sent, replies, strict=False):
            got, name = hits[w.res.name], w.res.name
            ents = ents_of[w.res.key.name]
            todo = [ents[i] for i in fetch[name]]
            if cache is None:
                readers = w.res.codec.select(w.features)
                values = self._online.decode_latest(w.res, todo, blobs, readers)
            else:
                records = self._online.decode_latest(w.res, todo, blobs, w.res.codec.reader, True)
                values = cache.keep(name, records, w.res.view.ttl_us, epoch)
            for i, v in zip(fetch[name], values, strict=True):
                got[i] = v
        for w in stored:
            per_view[w.res.name] = hits[w.res.name]
        for w in wanted:
            if w.res.view.on_read:
                ents = ents_of[w.res.key.name]
                per_view[w.res.name] = self._deriver.read(w.res, ents, w.features, None, False)
        for w in wanted:  # the serving log: counted and sampled per view
            self._monitor.read(w.res, per_view[w.res.name], w.features)
        for k, (ww, span) in enumerate(zip(wins, spans, strict=True)):
            raw = replies[len(sent) + 2 * k * n : len(sent) + 2 * (k + 1) * n]
            head = str(now_ms // ww.wf.hop_ms)
            ents = ents_of[keys[ww.wf.name].name]
            tiles = [
                decoded(ww.wf, e, raw[2 * i], raw[2 * i + 1], span, head)
                for i, e in enumerate(ents)
            ]
            per_view[ww.wf.name] = [values_at(ww.wf, et, now_ms, ww.by_feature()) for et in tiles]
        columns = [
            (w.res.name, f, out)
            for w in wanted
            for f, out in zip(w.features, w.outputs, strict=True)
        ]
        columns += [(ww.wf.name, f, out) for ww in wins for out, f, _, _ in ww.feats]
        order = {str(ref): i for i, ref in reversed(list(enumerate(features)))}
        columns.sort(key=lambda c: order.get(f"{c[0]}:{c[1]}", 0))  # the caller's order
        rows = [
            {
                out: None if (vals := per_view[name][i]) is None else vals[f]
                for name, f, out in columns
            }
            for i in range(n)
        ]
        names = [out for _, _, out in columns]
        if flatten_vectors or as_numpy:
            dims: dict[str, int] = {}
            for w in wanted:
                for f, out in zip(w.features, w.outputs, strict=True):
                    dtype = w.res.codec.fields[f].dtype
                    if isinstance(dtype, Vector):
                        dims[out] = dtype.dim
            names = [
                n
                for out in names
                for n in ([f"{out}_{i}" for i in range(dims[out])] if out in dims else [out])
            ]
            rows = [_flatten(row, dims) for row in rows]
        if as_numpy:

            def num(v: Any) -> float:
                return float("nan") if v is None or isinstance(v, str) else float(v)

            return np.array([[num(r[n]) for n in names] for r in rows], dtype=np.float64).reshape(
                len(rows), len(names)
            )
        if not as_frame:
            return rows
        import pandas as pd

        frame = pd.DataFrame(rows, columns=names)
        if entity_rows is None:
            (ents,) = ents_of.values() if ents_of else ([],)
            frame.insert(0, "entity_id", ents)
            return frame
        # the rows' join keys first, as given, then the features
        key_cols = list(
            dict.fromkeys(k for key in keys.values() for k in key.key_names if k not in names)
        )
        for i, col in enumerate(key_cols):
            frame.insert(i, col, [r.get(col) for r in rows_in])
        return frame

    def training_frame(
        self,
        entity_df: Any,
        features: Sequence[str],
        *,
        entity_column: str,
        event_time_column: str,
        full_feature_names: bool,
        filter_by_written_at: bool,
        as_arrow: bool,
        progress: Callable[[str, int, int], None] | None,
    ) -> Any:
        """The views' columns by the ASOF path, then the window columns computed from the
        tiles at each row's time."""
        refs, wins = self.split_refs(features, full_feature_names)
        opts: dict[str, Any] = dict(
            entity_column=entity_column,
            event_time_column=event_time_column,
            full_feature_names=full_feature_names,
            filter_by_written_at=filter_by_written_at,
            as_arrow=as_arrow,
            progress=progress,
        )
        if not wins:
            return self._training().training_frame(entity_df, refs, **opts)
        import pyarrow as pa
        import pyarrow.compute as pc

        from .offline.frames import event_table, join_table, key_columns

        table, ts_us = event_table(entity_df, event_time_column)
        reg = self._ctx.registry
        used: dict[tuple[str, ...], Entity] = {}
        if refs:
            for w in plan(refs, reg.get, full_feature_names):
                cols_of = key_columns(table.column_names, w.res.key, entity_column)
                shared_columns(used, cols_of, w.res.key)
            frame = self._training().training_frame(entity_df, refs, **opts)
        elif as_arrow:
            frame = table
        elif type(entity_df).__module__.startswith("pandas"):
            frame = entity_df.copy()
        else:
            frame = table.to_pandas()
        cols: dict[str, Any] = {}
        for ww in wins:  # each window features joined on its own entity's columns
            key = reg.entity(ww.wf.entity)
            cols_of = key_columns(table.column_names, key, entity_column)
            shared_columns(used, cols_of, key)
            join = join_table(table, ts_us, cols_of, key)
            ids = pc.unique(join["entity_id"].drop_null())
            hi = pc.max(join["__ts"]).as_py() if join.num_rows else None
            events = self._training().window_events(ww.wf.name, ids, hi)
            if events is not None:  # the offline log: every event it holds, no retention
                cols.update(self._windows().event_columns(ww, join, events))
            else:
                cols.update(self._windows().frame_columns(join, [ww], None))
        have = frame.column_names if as_arrow else list(frame.columns)
        clash = [c for c in cols if c in have]
        if clash:
            raise ConfigurationError(
                f"the frame already has column(s) {clash}; rename them or pass "
                "full_feature_names=True"
            )
        for name, col in cols.items():
            if as_arrow:
                frame = frame.append_column(name, pa.array(col, mask=np.isnan(col)))
            else:
                frame[name] = col
            if progress is not None:
                progress(name.split("__")[0], len(col), len(col))
        # the caller's order of features after entity_df's columns
        win_out = {f"{ww.wf.name}:{f}": out for ww in wins for out, f, _, _ in ww.feats}
        outs = [win_out.get(r) or _view_out(r, full_feature_names) for r in features]
        ordered = list(table.column_names) + list(dict.fromkeys(outs))
        return frame.select(ordered) if as_arrow else frame[ordered]


def _view_out(ref: str, full_feature_names: bool) -> str:
    view, _, feat = ref.partition(":")
    return f"{view}__{feat}" if full_feature_names else feat


def _flatten(row: dict[str, Any], dims: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k in dims:
            for i in range(dims[k]):
                out[f"{k}_{i}"] = None if v is None else float(v[i])
        else:
            out[k] = v
    return out


_PLAIN = {str, int}


def canonical_ids(res: Resolved, ids: list[Any]) -> list[Any]:
    """Ids in their canonical form where the view's entity needs it (tuples, mappings,
    composite or Int keys); plain ids of a plain entity pass as they are (checked later)."""
    key = res.key
    # one set of the ids' types (in C) rather than a generator over them: ~5% of get_many(100)
    if key.composite or key.join_keys[0].dtype is Int or not set(map(type, ids)) <= _PLAIN:
        return [normalize_id(res.name, e, i, outcome=READ, key=key) for i, e in enumerate(ids)]
    return ids


def resolve_service(registry: Registry, service: str | FeatureService) -> FeatureService:
    """A service given by name ("fraud", or "fraud@2" for a version) or as the object
    (applied: its features as given; else the registry's current version by that name)."""
    if isinstance(service, FeatureService):
        if service.unresolved:
            return registry.service(service.name)
        return service
    if not isinstance(service, str) or not service:
        raise ConfigurationError(
            f"service must be a feature service's name or a FeatureService, got {service!r}"
        )
    name, at, version = service.partition("@")
    if at:
        if not version.isdigit():
            raise ConfigurationError(
                f"service {service!r}: write a version as 'name@<number>', e.g. 'fraud@2'"
            )
        return registry.service(name, int(version))
    return registry.service(name)


def _window_outputs(spec: dict[str, Any]) -> list[str]:
    from .windows.spec import WindowFeatures

    return WindowFeatures.from_spec(spec).features
