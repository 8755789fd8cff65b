"""store.get_features: one vector per entity across the views of one entity."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import redis

from . import derived
from .codec import normalize_id
from .errors import BackendError
from .keys import escape_id
from .offline import plan
from .types import Vector

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
    wanted = plan(
        features,
        store.registry.get,
        full_feature_names,
        purpose="get_features",
        on_read_ok=True,
    )
    ents = [normalize_id(wanted[0].res.name, e, i) for i, e in enumerate(ids)]
    stored = [w for w in wanted if not w.res.view.on_read]
    try:
        # every stored view in one round trip; on_read views are computed from their source
        pipe: Any = store.client.pipeline(transaction=False)
        for w in stored:
            pipe.execute_command(
                "MGET", *[store.keys.latest(w.res.name, escape_id(e)) for e in ents]
            )
        replies = pipe.execute() if ents and stored else [[] for _ in stored]
    except redis.RedisError as exc:
        raise BackendError(f"get_features: read failed: {exc}") from exc
    per_view: dict[str, list[Any]] = {}
    for w, blobs in zip(stored, replies, strict=True):
        readers = w.res.codec.select(w.features)
        per_view[w.res.name] = store.online.decode_latest(w.res, ents, blobs, readers)
    for w in wanted:
        if w.res.view.on_read:
            per_view[w.res.name] = derived.read(store, w.res, ents, w.features, None, False)
    for w in wanted:  # the serving log: counted and sampled per view
        store.quality.read(w.res, per_view[w.res.name], w.features)
    columns = [(w, f, out) for w in wanted for f, out in zip(w.features, w.outputs, strict=True)]
    rows = [
        {
            out: None if (vals := per_view[w.res.name][i]) is None else vals[f]
            for w, f, out in columns
        }
        for i in range(len(ents))
    ]
    names = [out for _, _, out in columns]
    if flatten_vectors or as_numpy:
        dims: dict[str, int] = {}
        for w, f, out in columns:
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
