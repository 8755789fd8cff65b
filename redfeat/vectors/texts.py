"""Texts with embeddings: ``put_text`` / ``similar_texts`` on top of a view per model.

Each model gets a view ``texts_<model>`` (entity ``text``): the first ``max_chars``
characters, the metadata as JSON and the embedding (its dimension fixed by the first text
stored). Ids are the sha256 of the full text, so storing the same text twice keeps one
entry (a 32-bit hash, as in the seed, collides after ~77k texts).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from .. import types as t
from ..core.schema import FeatureView, Field
from ..errors import ConfigurationError, NotFoundError

if TYPE_CHECKING:
    from ..store import FeatureStore
    from .index import Match

Embedder = Callable[[Sequence[str]], Any]  # texts -> array-like of shape (n, dim)


def text_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _view_name(model: str) -> str:
    if not isinstance(model, str) or not re.fullmatch(r"[A-Za-z0-9_]{1,64}", model):
        raise ConfigurationError(f"model name {model!r}: use 1-64 letters, digits or '_'")
    return f"texts_{model}"


def _embed(embedder: Embedder | None, text: str, embedding: Any) -> np.ndarray:
    if embedding is None:
        if embedder is None:
            raise ConfigurationError(
                "no embedding given and no embedder configured: pass embedding=[...] or "
                "FeatureStore(..., embedder=fn) where fn(list_of_texts) returns vectors"
            )
        embedding = np.asarray(embedder([text]))[0]
    return np.asarray(embedding, dtype=np.float64)


def put_text(
    store: FeatureStore,
    text: str,
    *,
    embedding: Any = None,
    model: str = "default",
    metadata: Mapping[str, Any] | None = None,
    max_chars: int = 500,
) -> str:
    """Store a text and its embedding; returns its id (sha256 of the text)."""
    if not isinstance(text, str) or not text:
        raise ConfigurationError("put_text needs a non-empty str")
    view = _view_name(model)
    vec = _embed(store.embedder, text, embedding)
    if vec.ndim != 1 or not vec.size:
        raise ConfigurationError(f"an embedding must be a 1-D vector, got shape {vec.shape}")
    if not store.registry.has(view):
        store.apply(
            FeatureView(
                view,
                entity="text",
                fields=[
                    Field("text", t.String),
                    Field("metadata", t.String),
                    Field("embedding", t.Vector(int(vec.size))),
                ],
                history=0,
            )
        )
    tid = text_id(text)
    values = {
        "text": text[:max_chars],
        "metadata": msgspec.json.encode(dict(metadata or {})).decode(),
        "embedding": vec,
    }
    current = store.get(view, tid)
    if (
        current is not None
        and current["metadata"] == values["metadata"]
        and np.array_equal(current["embedding"], vec.astype(np.float32))
    ):
        return tid  # already stored as is: no new version
    store.write(view, tid, values)
    return tid


def similar_texts(
    store: FeatureStore,
    *,
    text: str | None = None,
    embedding: Any = None,
    k: int = 5,
    model: str = "default",
) -> list[Match]:
    """Texts nearest to a text (embedded with the store's embedder) or to an embedding.
    Each match's values hold the text, its metadata (a dict) and its embedding."""
    if (text is None) == (embedding is None):
        raise ConfigurationError("similar_texts takes text= or embedding=, exactly one")
    view = _view_name(model)
    if not store.registry.has(view):
        raise NotFoundError(f"no texts stored for model {model!r}: call put_text first")
    query = _embed(store.embedder, text or "", embedding)
    matches = store.similar(view, "embedding", query, k=k, include_values=True)
    from .index import Match

    out = []
    for m in matches:
        values = dict(m.values or {})
        if "metadata" in values and isinstance(values["metadata"], str):
            values["metadata"] = msgspec.json.decode(values["metadata"])
        out.append(Match(m.entity_id, m.score, values))
    return out
