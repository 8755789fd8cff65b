"""Texts with embeddings: put_text, similar_texts, an embedder."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pytest
import redis

from redfeat import ConfigurationError, FeatureStore, NotFoundError


def test_put_text_dedups_by_sha256_and_searches(store: FeatureStore) -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(20, 8))
    ids = [
        store.put_text(f"text number {i}", embedding=vecs[i], metadata={"i": i}) for i in range(20)
    ]
    assert ids[3] == hashlib.sha256(b"text number 3").hexdigest()
    again = store.put_text("text number 3", embedding=vecs[3], metadata={"i": 3})
    assert again == ids[3]
    assert len(store.history("texts_default", ids[3])) == 1  # no second version
    (best, *_) = store.similar_texts(embedding=vecs[7], k=3)
    assert best.entity_id == ids[7]
    assert best.values is not None
    assert best.values["text"] == "text number 7" and best.values["metadata"] == {"i": 7}
    long_id = store.put_text("x" * 2000, embedding=vecs[0], max_chars=10)
    got = store.get("texts_default", long_id)
    assert got is not None and got["text"] == "x" * 10


def test_embedder_turns_a_text_query_into_a_vector(client: redis.Redis, project: str) -> None:
    def embed(texts: Sequence[str]) -> np.ndarray:
        # a toy embedder: letter counts a..e
        return np.array([[t.count(c) + 0.01 for c in "abcde"] for t in texts], dtype=float)

    store = FeatureStore(client=client, project=project, embedder=embed)
    try:
        store.put_text("aaaa", model="toy")
        store.put_text("eeee", model="toy")
        (best, *_) = store.similar_texts(text="aaab", model="toy", k=1)
        assert best.values is not None and best.values["text"] == "aaaa"
    finally:
        store.delete_view("texts_toy")
        store.close()


def test_text_errors(store: FeatureStore) -> None:
    with pytest.raises(ConfigurationError, match="embedder"):
        store.put_text("no vector")
    with pytest.raises(NotFoundError):
        store.similar_texts(embedding=[1.0, 2.0], model="nothing")
    with pytest.raises(ConfigurationError):
        store.similar_texts(k=1)
    with pytest.raises(ConfigurationError):
        store.put_text("x", embedding=[1.0], model="bad model")
