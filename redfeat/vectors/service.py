"""Similarity search as a service: the in-process and server vector indexes of a store
(one per view, field and kind, built on first use) and the texts kept for ``put_text``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import numpy as np

from ..core import args
from ..core.codec import normalize_id
from ..core.context import Ctx, Reader, Writer
from ..core.records import Match
from ..errors import ConfigurationError, NotFoundError
from .index import VectorIndex
from .server_index import ServerIndex
from .texts import Embedder, embed, text_id, text_view, view_name


class Search:
    """Vector indexes (kept current by change events) and texts of one store."""

    def __init__(
        self,
        ctx: Ctx,
        reader: Reader,
        writer: Writer,
        capabilities: Callable[[], Mapping[str, Any]],
        embedder: Embedder | None,
    ) -> None:
        self._ctx = ctx
        self._reader = reader
        self._writer = writer
        self._capabilities = capabilities
        self.embedder = embedder
        self._indexes: dict[tuple[str, str, str], VectorIndex] = {}
        self._lock = threading.Lock()  # concurrent first calls build one index, not two

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
        consistent: bool = False,
        **index_options: int,
    ) -> list[Match]:
        if not isinstance(index, str):
            raise ConfigurationError(
                f"index must be 'exact', 'hnsw', 'server' or 'auto', got {index!r:.60}"
            )
        if not isinstance(view, str) or not isinstance(field, str):
            raise ConfigurationError("similar: view and field are names (str)")
        if index == "auto":
            index = "server" if self._capabilities().get("vector_search") else "exact"
        key = (view, field, index)
        idx = self._indexes.get(key)
        if idx is None:
            with self._lock:
                idx = self._indexes.get(key)
                if idx is None:
                    if index == "server":
                        idx = ServerIndex(
                            self._ctx, self._reader, self._capabilities(), view, field,
                            **index_options,
                        )  # fmt: skip
                    else:
                        idx = VectorIndex(
                            self._ctx, self._reader, view, field, index=index, **index_options
                        )
                    idx.build()
                    self._indexes[key] = idx
        return idx.search(
            query, k=k, where=where, include_values=include_values, consistent=consistent
        )

    def touched(self, view: str, entity_id: Any = None, kind: str = "write") -> None:
        """This store wrote (or deleted) ``entity_id`` of ``view`` (None: some entities,
        a bulk write): its indexes of the view, and of the views derived from it, apply
        that before their next search."""
        if not self._indexes or not isinstance(view, str):
            return  # (a refused call with a bad view name wrote nothing)
        ids = None if entity_id is None else [normalize_id(view, entity_id)]
        names = {view, *(d.name for d in self._ctx.registry.dependents(view))}
        for idx in list(self._indexes.values()):
            if idx.view in names:
                idx.touched(ids, kind)

    def put_text(
        self,
        text: str,
        *,
        embedding: Any = None,
        model: str = "default",
        metadata: Mapping[str, Any] | None = None,
        max_chars: int = 500,
    ) -> str:
        if not isinstance(text, str) or not text:
            raise ConfigurationError("put_text needs a non-empty str")
        args.text("put_text: text", text)
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
            raise ConfigurationError(f"put_text: max_chars must be an int >= 1, got {max_chars!r}")
        view = view_name(model)
        meta = args.mapping("put_text: metadata", {} if metadata is None else metadata)
        try:
            meta_json = msgspec.json.encode(dict(meta)).decode()
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise ConfigurationError(f"put_text: metadata must be plain JSON data: {exc}") from None
        # everything checked before the texts' view is created: a refusal changes nothing
        vec = embed(self.embedder, text, embedding)
        if not self._ctx.registry.has(view):
            self._writer.apply(text_view(model, int(vec.size)))
        tid = text_id(text)
        values = {"text": text[:max_chars], "metadata": meta_json, "embedding": vec}
        current = self._writer.get(view, tid)
        if (
            current is not None
            and current["metadata"] == values["metadata"]
            and np.array_equal(current["embedding"], vec.astype(np.float32))
        ):
            return tid  # already stored as is: no new version
        self._writer.write(view, tid, values)
        return tid

    def similar_texts(
        self,
        *,
        text: str | None = None,
        embedding: Any = None,
        k: int = 5,
        model: str = "default",
        consistent: bool = False,
    ) -> list[Match]:
        if (text is None) == (embedding is None):
            raise ConfigurationError("similar_texts takes text= or embedding=, exactly one")
        view = view_name(model)
        if not self._ctx.registry.has(view):
            raise NotFoundError(f"no texts stored for model {model!r}: call put_text first")
        query = embed(self.embedder, text or "", embedding)
        out = []
        found = self.similar(
            view, "embedding", query, k=k, include_values=True, consistent=consistent
        )
        for m in found:
            values = dict(m.values or {})
            if "metadata" in values and isinstance(values["metadata"], str):
                values["metadata"] = msgspec.json.decode(values["metadata"])
            out.append(Match(m.entity_id, m.score, values))
        return out

    def close(self) -> None:
        for idx in self._indexes.values():
            idx.close()
