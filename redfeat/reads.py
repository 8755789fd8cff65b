"""store.get_features: one vector per entity across the views of one entity."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import redis

from .core.codec import READ, normalize_id
from .core.keys import escape_id
from .core.time import now_us
from .errors import BackendError, ConfigurationError
from .offline.frames import plan
from .transforms import derived
from .types import Vector
from .windows.spec import decode, decode_range, read_range, values_at

if TYPE_CHECKING:
    from .store import FeatureStore


def get_features(
    store: FeatureStore,
    entity_ids: Iterable[str | int],
    features: Sequence[str],
    *,
    as_frame: bool,
    full_feature_names: bool,
    flatten_vectors: bool,
    as_numpy: bool,
) -> Any:
    """See FeatureStore.get_features."""
    ids = list(entity_ids)
    refs, wins = store._window_refs(features, full_feature_names)
    wanted = (
        plan(refs, store.registry.get, full_feature_names, purpose="get_features", on_read_ok=True)
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
    try:
        # every stored view and window features in one round trip; on_read views are
        # computed from their source
        pipe: Any = store.client.pipeline(transaction=False)
        for w in stored:
            pipe.execute_command(
                "MGET", *[store.keys.latest(w.res.name, escape_id(e)) for e in ents]
            )
        # only the buckets the asked windows cover (HGETALL when that is most of them)
        spans = [read_range(ww.wf, now_ms, [w for _, _, w in ww.by_feature()]) for ww in wins]
        for ww, span in zip(wins, spans, strict=True):
            fields = [] if span is None else ["_d", *map(str, range(span[0], span[1] + 1))]
            for e in ents:
                key = store.keys.window_tiles(ww.wf.name, escape_id(e))
                if span is None:
                    pipe.hgetall(key)
                else:
                    pipe.execute_command("HMGET", key, *fields)
        replies = pipe.execute() if ents and (stored or wins) else []
    except redis.RedisError as exc:
        raise BackendError(f"get_features: read failed: {exc}") from exc
    per_view: dict[str, list[Any]] = {}
    for w, blobs in zip(stored, replies, strict=False):
        readers = w.res.codec.select(w.features)
        per_view[w.res.name] = store.online.decode_latest(w.res, ents, blobs, readers)
    for w in wanted:
        if w.res.view.on_read:
            per_view[w.res.name] = derived.read(store, w.res, ents, w.features, None, False)
    for w in wanted:  # the serving log: counted and sampled per view
        store.quality.read(w.res, per_view[w.res.name], w.features)
    for k, (ww, span) in enumerate(zip(wins, spans, strict=True)):
        raw = replies[len(stored) + k * len(ents) : len(stored) + (k + 1) * len(ents)]
        tiles = [decode(r) if span is None else decode_range(r, span[0]) for r in raw]
        per_view[ww.wf.name] = [values_at(ww.wf, et, now_ms, ww.by_feature()) for et in tiles]
    columns = [
        (w.res.name, f, out) for w in wanted for f, out in zip(w.features, w.outputs, strict=True)
    ]
    columns += [(ww.wf.name, f, out) for ww in wins for out, f, _, _ in ww.feats]
    order = {str(ref): i for i, ref in reversed(list(enumerate(features)))}
    columns.sort(key=lambda c: order.get(f"{c[0]}:{c[1]}", 0))  # the caller's order
    rows = [
        {out: None if (vals := per_view[name][i]) is None else vals[f] for name, f, out in columns}
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
    frame = pd.DataFrame(rows, columns=names)
    frame.insert(0, "entity_id", ents)
    return frame


def _flatten(row: dict[str, Any], dims: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k in dims:
            for i in range(dims[k]):
                out[f"{k}_{i}"] = None if v is None else float(v[i])
        else:
            out[k] = v
    return out
