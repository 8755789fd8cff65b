"""Texts with embeddings (``put_text`` / ``similar_texts``, see service.py) on top of a
view per model.

Each model gets a view ``texts_<model>`` (entity ``text``): the first ``max_chars``
characters, the metadata as JSON and the embedding (its dimension fixed by the first text
stored). Ids are the sha256 of the full text, so storing the same text twice keeps one
entry (a 32-bit hash, as in the seed, collides after ~77k texts).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import types as t
from ..core.schema import FeatureView, Field
from ..errors import ConfigurationError

Embedder = Callable[[Sequence[str]], Any]  # texts -> array-like of shape (n, dim)


def text_id(text: str) -> str:
    """A text's id: the sha256 of the whole text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def view_name(model: str) -> str:
    """The view holding a model's texts, ``texts_<model>``."""
    if not isinstance(model, str) or not re.fullmatch(r"[A-Za-z0-9_]{1,64}", model):
        raise ConfigurationError(f"model name {model!r}: use 1-64 letters, digits or '_'")
    return f"texts_{model}"


def embed(embedder: Embedder | None, text: str, embedding: Any) -> np.ndarray:
    """The given embedding, or the embedder's for ``text``, as a float64 vector."""
    if embedding is None:
        if embedder is None:
            raise ConfigurationError(
                "no embedding given and no embedder configured: pass embedding=[...] or "
                "FeatureStore(..., embedder=fn) where fn(list_of_texts) returns vectors"
            )
        embedding = np.asarray(embedder([text]))[0]
    try:
        vec = np.asarray(embedding, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"an embedding must be a list of numbers: {exc}") from None
    if vec.ndim != 1 or not vec.size:
        raise ConfigurationError(f"an embedding must be a 1-D vector, got shape {vec.shape}")
    if not np.isfinite(vec).all():
        raise ConfigurationError("an embedding must not hold NaN or infinite values")
    return vec


def text_view(model: str, dim: int) -> FeatureView:
    """The view that keeps a model's texts (created on the first put_text)."""
    return FeatureView(
        view_name(model),
        entity="text",
        fields=[
            Field("text", t.String),
            Field("metadata", t.String),
            Field("embedding", t.Vector(dim)),
        ],
        history=0,
    )
