"""FeatureStore verbs for similarity: vectors and texts."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from ..core.metrics import timed
from . import texts as _texts
from .index import Match, VectorIndex
from .server_index import ServerIndex

if TYPE_CHECKING:
    import redis

    from ..core.keys import Keys
    from ..core.registry import Registry
    from ..online.online import Online
    from ..store import FeatureStore


class SearchVerbs:
    """Mixed into FeatureStore."""

    # provided by FeatureStore
    client: redis.Redis
    keys: Keys
    registry: Registry
    online: Online
    _indexes: dict[tuple[str, str, str], VectorIndex]
    _index_lock: threading.Lock

    def _fs(self) -> FeatureStore:
        return cast("FeatureStore", self)

    # -- similarity search -------------------------------------------------------------

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
        **index_options: int,
    ) -> list[Match]:
        """Nearest entities to ``query`` by a Vector field, best first (ties by entity id).

        ``where`` filters on other fields: ``{"segment": "premium"}``, ``{"segment": ["a",
        "b"]}``, ``{"age": (25, 40)}`` (inclusive, None = open). The first call builds an
        in-process index (``index="exact"`` or ``"hnsw"``) from Redis; change events keep
        it current (a write is searchable within milliseconds). ``index="server"`` answers
        with the server's Query Engine (FT.SEARCH KNN) over a mirror kept current the same
        way (see server_index.py); ``"auto"`` is "server" where the server has it, else
        "exact". ``index_options`` (M,
        ef_construction, ef_search) tune hnsw when its index is first built: a lower
        ef_search is faster and less exact (see bench/RESULTS.md)."""
        if index == "auto":
            index = "server" if self._fs().capabilities.get("vector_search") else "exact"
        key = (view, field, index)
        idx = self._indexes.get(key)
        if idx is None:
            with self._index_lock:  # concurrent first calls build one index, not two
                idx = self._indexes.get(key)
                if idx is None:
                    if index == "server":
                        idx = ServerIndex(self._fs(), view, field, **index_options)
                    else:
                        idx = VectorIndex(self._fs(), view, field, index=index, **index_options)
                    idx.build()
                    self._indexes[key] = idx
        return idx.search(query, k=k, where=where, include_values=include_values)

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
        return _texts.put_text(
            self._fs(),
            text,
            embedding=embedding,
            model=model,
            metadata=metadata,
            max_chars=max_chars,
        )

    @timed("similar_texts")
    def similar_texts(
        self,
        *,
        text: str | None = None,
        embedding: Any = None,
        k: int = 5,
        model: str = "default",
    ) -> list[Match]:
        """Stored texts nearest to ``text`` (embedded by the store's embedder) or to
        ``embedding``, best first; values hold text, metadata and embedding."""
        return _texts.similar_texts(self._fs(), text=text, embedding=embedding, k=k, model=model)
