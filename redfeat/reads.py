"""The read verbs behind the facade: which path a read takes (window features, on-read
derived views, the near cache, as-of history, latest values), the serving log, feature
vectors across views (``get_features``) and training frames that mix views and window
features."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .core.codec import READ, normalize_id
from .core.context import Ctx
from .core.keys import escape_id
from .core.records import Record, Status
from .core.refs import plan
from .core.registry import Resolved
from .core.time import now_us
from .errors import ConfigurationError, wrap_redis
from .online import history as _history
from .online.online import Online
from .quality.service import Monitor
from .realtime.cache import MISSING, Cache
from .transforms.derived import Deriver
from .types import Vector
from .windows.spec import decode, decode_range, read_range, values_at

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
        entity_id: str | int,
        features: Sequence[str] | None,
        as_of: Any,
        cache_ok: bool = True,
    ) -> dict[str, Any] | None:
        if self._ctx.registry.is_window(view):
            one = self._windows().get_many(view, [entity_id], features, as_of, False, strict=True)
            return one[0]  # type: ignore[no-any-return]
        cache = self._cache if cache_ok else None
        if cache is not None and features is None and as_of is None:
            hit = cache.lookup(view, str(entity_id))
            if hit is not MISSING:
                self._monitor.read_hit(view)
                return hit  # type: ignore[no-any-return]
            res = self._ctx.registry.get(view)
            if not res.view.on_read:  # a known miss: fetch and cache it
                got = cache.fill(view, [entity_id], self._fetch_records(res), res.view.ttl_us)
                return got[0]  # type: ignore[no-any-return]
        res = self._ctx.registry.get(view)
        out = self._get_many(res, [entity_id], features, as_of, False, cache_ok)
        self._monitor.read(res, out, features)
        return out[0]  # type: ignore[no-any-return]

    def get_many(
        self,
        view: str,
        entity_ids: Iterable[str | int],
        features: Sequence[str] | None,
        as_of: Any,
        with_meta: bool,
        cache_ok: bool = True,
    ) -> list[Any]:
        if self._ctx.registry.is_window(view):
            return self._windows().get_many(view, entity_ids, features, as_of, with_meta)
        res = self._ctx.registry.get(view)
        out = self._get_many(res, list(entity_ids), features, as_of, with_meta, cache_ok)
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
        entity_ids: Iterable[str | int],
        features: Sequence[str],
        *,
        as_frame: bool,
        full_feature_names: bool,
        flatten_vectors: bool,
        as_numpy: bool,
        cache_ok: bool = True,
    ) -> Any:
        ids = list(entity_ids)
        refs, wins = self.split_refs(features, full_feature_names)
        reg = self._ctx.registry
        wanted = (
            plan(refs, reg.get, full_feature_names, purpose="get_features", on_read_ok=True)
            if refs
            else []
        )
        entities = {w.res.view.entity for w in wanted} | {ww.wf.entity for ww in wins}
        if len(entities) > 1:
            raise ConfigurationError(
                f"get_features reads features of one entity; these mix entities {sorted(entities)}"
            )
        outs = [o for w in wanted for o in w.outputs] + [f[0] for ww in wins for f in ww.feats]
        if len(set(outs)) != len(outs):
            raise ConfigurationError(
                f"get_features: output names {outs} repeat; pass full_feature_names=True"
            )
        first = wanted[0].res.name if wanted else wins[0].wf.name
        ents = [normalize_id(first, e, i, outcome=READ) for i, e in enumerate(ids)]
        stored = [w for w in wanted if not w.res.view.on_read]
        now_ms = now_us() // 1000
        # the near cache serves whole rows; what it misses is read below (and cached)
        cache = self._cache if cache_ok else None
        epoch = 0 if cache is None else cache.epoch  # taken before anything is read
        hits = {
            w.res.name: [MISSING] * len(ents)
            if cache is None
            else [cache.lookup(w.res.name, e) for e in ents]
            for w in stored
        }
        fetch = {n: [i for i, h in enumerate(row) if h is MISSING] for n, row in hits.items()}
        sent = [w for w in stored if fetch[w.res.name]]
        with wrap_redis("get_features: read failed"):
            # every stored view and window features in one round trip; on_read views are
            # computed from their source
            pipe: Any = self._ctx.client.pipeline(transaction=False)
            for w in sent:
                keys = [
                    self._ctx.keys.latest(w.res.name, escape_id(ents[i])) for i in fetch[w.res.name]
                ]
                pipe.execute_command("MGET", *keys)
            # only the buckets the asked windows cover (HGETALL when that is most of them)
            spans = [read_range(ww.wf, now_ms, [w for _, _, w in ww.by_feature()]) for ww in wins]
            for ww, span in zip(wins, spans, strict=True):
                fields = [] if span is None else ["_d", *map(str, range(span[0], span[1] + 1))]
                for e in ents:
                    key = self._ctx.keys.window_tiles(ww.wf.name, escape_id(e))
                    if span is None:
                        pipe.hgetall(key)
                    else:
                        pipe.execute_command("HMGET", key, *fields)
            replies = pipe.execute() if sent or (ents and wins) else []
        per_view: dict[str, list[Any]] = {}
        for w, blobs in zip(sent, replies, strict=False):
            got, name = hits[w.res.name], w.res.name
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
                per_view[w.res.name] = self._deriver.read(w.res, ents, w.features, None, False)
        for w in wanted:  # the serving log: counted and sampled per view
            self._monitor.read(w.res, per_view[w.res.name], w.features)
        for k, (ww, span) in enumerate(zip(wins, spans, strict=True)):
            raw = replies[len(sent) + k * len(ents) : len(sent) + (k + 1) * len(ents)]
            tiles = [decode(r) if span is None else decode_range(r, span[0]) for r in raw]
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
            for i in range(len(ents))
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
        frame.insert(0, "entity_id", ents)
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

        from .offline.frames import entity_table

        table, join = entity_table(entity_df, entity_column, event_time_column)
        entity = None
        if refs:
            wanted = plan(refs, self._ctx.registry.get, full_feature_names)
            entity = wanted[0].res.view.entity
            frame = self._training().training_frame(entity_df, refs, **opts)
        elif as_arrow:
            frame = table
        elif type(entity_df).__module__.startswith("pandas"):
            frame = entity_df.copy()
        else:
            frame = table.to_pandas()
        cols = self._windows().frame_columns(join, wins, entity)
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
