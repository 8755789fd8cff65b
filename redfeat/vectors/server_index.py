"""Similarity search answered by the server's Query Engine (``FT.CREATE ... VECTOR``).

A view's latest values are packed strings (codec.py), which ``FT.CREATE ON HASH`` cannot
read, so ``ServerIndex`` keeps a *mirror*: one hash per entity holding the vector (float32,
normalised for cosine) and the view's scalar fields, under a prefix of its own::

    rf:<project>:vx:<view>:<field>:<sig>:<escaped entity id>   hash (the mirror of one entity)
    rf:<project>:vx:<view>:<field>:<sig>:idx                    the FT index over them

``<sig>`` is a short digest of the index layout (dimension, metric, fields, hnsw options),
so a changed view gets a fresh index instead of a wrong one. The write path is unchanged:
the mirror is kept current the way ``VectorIndex`` keeps its memory current, by following
the view's change events (a write is re-read and mirrored, a delete unmirrors), and
``build()`` resynchronises it fully (so writes made while nobody followed are caught up).
Every process following applies every event by re-reading the latest value, so the mirror
converges to what Redis holds. ``delete_view`` drops the index and its mirror.

Scores are those of the exact index: cosine similarity (indexed as inner product over
normalised vectors, so an all-zero stored vector scores 0), inner product, or Euclidean
distance for l2 (the server's squared distance, square-rooted). Results are best first,
ties by entity id among the server's candidates (it is asked for k + 10).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import redis
from redis.typing import EncodableT

from .. import types as t
from ..core.context import Ctx, Reader
from ..core.keys import escape_id
from ..core.time import now_us, to_us
from ..errors import BackendError, ConfigurationError, backend_error, wrap_redis
from ..online.scan import entities_of
from .index import CHUNK, VectorIndex
from .rows import F32

if TYPE_CHECKING:
    from ..core.records import Record

__all__ = ["ServerIndex", "drop_server_indexes"]

_EXTRA = 10  # candidates asked beyond k, so ties at the k-th place are ordered by id
_NULL = "_null"  # TAG field: the names of the scalar fields an entity has no value for


def _kind(dtype: t.DType) -> str:
    if dtype is t.Int or dtype is t.Float:
        return "num"
    if dtype is t.Timestamp:
        return "time"
    if dtype is t.Bool:
        return "bool"
    return "str"  # String, Category


def _tag(value: str) -> str:
    """Equality on any string, with nothing to escape in a query: a digest as the TAG."""
    return hashlib.blake2b(value.encode("utf-8"), digest_size=16).hexdigest()


def drop_server_indexes(client: redis.Redis, prefix: str) -> int:
    """Drop (with their mirror hashes) the FT indexes whose name starts with ``prefix``."""
    try:
        names = client.execute_command("FT._LIST")  # type: ignore[no-untyped-call]
    except redis.ResponseError:
        return 0  # no Query Engine here: nothing to drop
    dropped = 0
    for raw in names or []:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        if name.startswith(prefix):
            try:
                client.execute_command("FT.DROPINDEX", name, "DD")  # type: ignore[no-untyped-call]
                dropped += 1
            except redis.ResponseError:
                pass  # dropped meanwhile by someone else
    return dropped


class ServerIndex(VectorIndex):
    """A (view, Vector field) index kept in the server's Query Engine; same API and scores
    as ``VectorIndex``. Needs a server with ``FT.CREATE`` (Redis Stack, Redis 8 with the
    Query Engine, or the RediSearch module); ``index_options`` M, ef_construction and
    ef_search map to HNSW's M, EF_CONSTRUCTION and EF_RUNTIME."""

    def __init__(
        self,
        ctx: Ctx,
        reader: Reader,
        capabilities: Mapping[str, Any],
        view: str,
        field: str,
        *,
        M: int = 16,
        ef_construction: int = 200,
        ef_search: int = 32,
    ) -> None:
        super().__init__(
            ctx, reader, view, field, M=M, ef_construction=ef_construction, ef_search=ef_search
        )
        if not capabilities.get("vector_search"):
            raise ConfigurationError(
                f"index='server' needs a server with the Query Engine (FT.CREATE); "
                f"{capabilities.get('server')} {capabilities.get('version')} "
                "has none: use index='exact' or 'hnsw' (or 'auto')"
            )
        self.index = "server"
        self._slot = {name: f"s{i}" for i, name in enumerate(self._columns)}
        self._kinds = {name: _kind(dt) for name, dt in self._columns.items()}
        columns = [(name, self._slot[name], kind) for name, kind in self._kinds.items()]
        ttl = self._ttl_us is not None  # the _et field exists only with a ttl
        layout = repr((self.dim, self.metric, columns, ttl, M, ef_construction)).encode()
        sig = hashlib.blake2b(layout, digest_size=4).hexdigest()
        self._sig = sig
        self.prefix = ctx.keys.vectors(view, field, sig)
        self.name = ctx.keys.vector_index(view, field, sig)

    def __len__(self) -> int:
        """Entities in the server index (FT.INFO num_docs)."""
        try:
            raw: Any = self._ctx.client.execute_command("FT.INFO", self.name)  # type: ignore[no-untyped-call]
        except redis.ResponseError:
            return 0  # not created yet (or dropped)
        info = raw if isinstance(raw, dict) else dict(zip(raw[::2], raw[1::2], strict=True))
        return int(_get(info, "num_docs") or 0)

    # -- the FT index ----------------------------------------------------------------------

    def _ensure_index(self) -> None:
        client = self._ctx.client
        try:
            client.execute_command("FT.INFO", self.name)  # type: ignore[no-untyped-call]
            return
        except redis.ResponseError:
            pass  # no such index yet
        distance = "L2" if self.metric == "l2" else "IP"  # cosine: IP on normalised vectors
        schema: list[Any] = [
            "v",
            "VECTOR",
            "HNSW",
            "10",
            "TYPE",
            "FLOAT32",
            "DIM",
            self.dim,
            "DISTANCE_METRIC",
            distance,
            "M",
            self._M,
            "EF_CONSTRUCTION",
            self._ef_construction,
            _NULL,
            "TAG",
        ]
        for name, kind in self._kinds.items():
            schema += [self._slot[name], "TAG" if kind in ("str", "bool") else "NUMERIC"]
        if self._ttl_us is not None:
            schema += ["_et", "NUMERIC"]
        try:
            client.execute_command(  # type: ignore[no-untyped-call]
                "FT.CREATE", self.name, "ON", "HASH", "PREFIX", "1", self.prefix,
                "SCHEMA", *schema,
            )  # fmt: skip
        except redis.ResponseError as exc:
            if "already exists" not in str(exc).lower():  # created meanwhile elsewhere
                raise backend_error(f"FT.CREATE {self.name} failed", exc) from exc

    def drop(self) -> None:
        """Stop following and drop the server index and its mirror hashes."""
        self.close()
        drop_server_indexes(self._ctx.client, self.name)

    # -- keeping the mirror current (called by VectorIndex.build and its update thread) ----

    def _load(self, progress: Callable[[int, int], None] | None) -> int:
        self._ensure_index()
        res = self._ctx.registry.get(self.view)
        ids = entities_of(self._ctx, res)
        count = 0
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            records = self._reader.get_many(self.view, chunk, features=self._read, with_meta=True)
            count += self._mirror(records, skip_same=True)
            if progress is not None:
                progress(min(start + CHUNK, len(ids)), len(ids))
        if progress is not None and not ids:
            progress(0, 0)
        # unmirror entities that are gone (deleted while nobody followed the view)
        keep = {self._mirror_key(e) for e in ids}
        stale: list[bytes] = []
        client = self._ctx.client
        with wrap_redis(f"{self.name}: cleaning the mirror failed"):
            for key in client.scan_iter(match=self._pattern(), count=1000):
                if key.decode() not in keep and key.decode() != self.name:
                    stale.append(key)
                if len(stale) >= 500:
                    client.unlink(*stale)
                    stale.clear()
            if stale:
                client.unlink(*stale)
        return count

    def _pattern(self) -> str:
        # escape glob characters of the view and field names (ids are escaped already)
        out = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix)
        return out + "*"

    def _refresh(self, pending: dict[str, str]) -> None:
        deleted = [e for e, kind in pending.items() if kind == "delete"]
        written = [e for e, kind in pending.items() if kind != "delete"]
        if deleted:
            with wrap_redis(f"{self.name}: unmirroring failed"):
                self._ctx.client.unlink(*[self._mirror_key(e) for e in deleted])
        for start in range(0, len(written), CHUNK):
            chunk = written[start : start + CHUNK]
            records = self._reader.get_many(self.view, chunk, features=self._read, with_meta=True)
            self._mirror(records)

    def _mirror(self, records: list[Record], *, skip_same: bool = False) -> int:
        """Write the mirror hash of each record with a vector, remove the others; returns
        how many are mirrored. ``skip_same``: leave alone a mirror whose content digest
        (field ``_h``) is unchanged, so a resync rewrites (and the server re-indexes) only
        what changed."""
        client = self._ctx.client
        gone: list[str] = []
        todo: list[tuple[str, dict[EncodableT, EncodableT], list[str], str]] = []
        for rec in records:
            key = self._mirror_key(rec.entity_id)
            values = rec.values
            vec = None if values is None else values.get(self.field)
            if values is None or vec is None or len(vec) != self.dim:
                gone.append(key)
                continue
            v = np.asarray(vec, dtype=np.float32)
            if self.metric == "cosine":
                norm = float(np.linalg.norm(v))
                if norm > 0.0:
                    v = (v / norm).astype(np.float32)
            mapping: dict[EncodableT, EncodableT] = {"v": v.astype("<f4").tobytes()}
            nulls: list[str] = []
            for name, kind in self._kinds.items():
                value = values.get(name)
                slot = self._slot[name]
                if value is None:
                    nulls.append(slot)
                elif kind == "str":
                    mapping[slot] = _tag(str(value))
                elif kind == "bool":
                    mapping[slot] = "1" if value else "0"
                elif kind == "time":
                    mapping[slot] = to_us(value)
                else:
                    mapping[slot] = repr(float(value)) if isinstance(value, float) else value
            mapping[_NULL] = ",".join(nulls)
            if self._ttl_us is not None:
                mapping["_et"] = 0 if rec.event_time is None else to_us(rec.event_time)
            content = repr(sorted(mapping.items())).encode()
            todo.append((key, mapping, nulls, hashlib.blake2b(content, digest_size=8).hexdigest()))
        with wrap_redis(f"{self.name}: mirroring failed"):
            if skip_same and todo:
                pipe = client.pipeline(transaction=False)
                for key, *_ in todo:
                    pipe.hget(key, "_h")
                held = pipe.execute()
                todo = [
                    item
                    for item, h in zip(todo, held, strict=True)
                    if h is None or h.decode() != item[3]
                ]
            pipe = client.pipeline(transaction=False)
            if gone:
                pipe.unlink(*gone)
            for key, mapping, nulls, digest in todo:
                mapping["_h"] = digest
                pipe.hset(key, mapping=mapping)
                if nulls:
                    pipe.hdel(key, *nulls)
                if self._ttl_us is not None:  # gone from the mirror when the value expires
                    pipe.pexpireat(key, (int(mapping["_et"]) + self._ttl_us) // 1000 + 1)
            pipe.execute()
        return len(records) - len(gone)

    def _search_locked(self, q: F32, k: int, where: Mapping[str, Any]) -> list[tuple[str, float]]:
        return self._search(q, k, where)  # the server answers: no local state to guard

    # -- search ----------------------------------------------------------------------------

    def _search(
        self, q: F32, k: int, where: Mapping[str, Any], *, retry: bool = True
    ) -> list[tuple[str, float]]:
        clauses = [self._clause(name, cond) for name, cond in where.items()]
        if self._ttl_us is not None:  # expired values read as missing: never match them
            clauses.append(f"@_et:[{now_us() - self._ttl_us} +inf]")
        if any(c is None for c in clauses):
            return []  # a condition nothing can satisfy (e.g. an empty IN list)
        flt = " ".join(f"({c})" for c in clauses if c is not None)
        want = k + _EXTRA
        ef = max(self._ef_search, want)
        query = f"({flt})" if flt else "*"
        query += f"=>[KNN {want} @v $vec EF_RUNTIME {ef} AS __d]"
        try:
            reply = self._ctx.client.execute_command(  # type: ignore[no-untyped-call]
                "FT.SEARCH", self.name, query,
                "PARAMS", "2", "vec", q.astype("<f4").tobytes(),
                "SORTBY", "__d", "RETURN", "1", "__d", "LIMIT", "0", want, "DIALECT", "2",
            )  # fmt: skip
        except redis.ResponseError as exc:
            missing = "no such index" in str(exc).lower() or "unknown index" in str(exc).lower()
            if missing and retry:
                # dropped under us (delete_view elsewhere): recreate and resync, once
                self._load(None)
                return self._search(q, k, where, retry=False)
            raise backend_error(f"FT.SEARCH {self.name} failed", exc) from exc
        except redis.RedisError as exc:
            raise backend_error(f"FT.SEARCH {self.name} failed", exc) from exc
        found = [(self._entity(key), self._score(d)) for key, d in _hits(reply)]
        if self.metric == "l2":
            found.sort(key=lambda p: (p[1], p[0]))
        else:
            found.sort(key=lambda p: (-p[1], p[0]))
        return found[:k]

    def _mirror_key(self, entity: str) -> str:
        return self._ctx.keys.vector_mirror(self.view, self.field, self._sig, escape_id(entity))

    def _entity(self, key: bytes | str) -> str:
        parsed = self._ctx.keys.parse(key)
        if parsed is None or parsed.entity is None:
            raise BackendError(f"FT.SEARCH {self.name}: a hit {key!r} is not a mirror key")
        return parsed.entity

    def _score(self, distance: float) -> float:
        if self.metric == "l2":
            return float(np.sqrt(max(distance, 0.0)))
        return 1.0 - distance  # IP distance is 1 - inner product

    def _clause(self, name: str, cond: Any) -> str | None:
        """One ``where`` condition as a query clause (None: nothing can match)."""
        slot, kind = self._slot[name], self._kinds[name]
        null = f"@{_NULL}:{{{slot}}}"
        where = f"VectorIndex({self.view!r}): where[{name!r}]"
        if cond is None:
            return null
        if isinstance(cond, tuple):
            if len(cond) != 2:
                raise ConfigurationError(
                    f"{where}: a tuple is a range (lo, hi), got {len(cond)} items; "
                    "use a list for IN"
                )
            if kind not in ("num", "time"):
                raise ConfigurationError(
                    f"{where}: ranges apply to Int, Float and Timestamp fields only"
                )
            lo, hi = cond
            a = "-inf" if lo is None else self._number(where, kind, lo)
            b = "+inf" if hi is None else self._number(where, kind, hi)
            return f"@{slot}:[{a} {b}]"
        if isinstance(cond, list | set | frozenset):
            parts = [self._equal(where, slot, kind, v) for v in cond if v is not None]
            if None in cond:
                parts.append(null)
            return " | ".join(f"({p})" for p in parts) if parts else None
        return self._equal(where, slot, kind, cond)

    def _equal(self, where: str, slot: str, kind: str, v: Any) -> str:
        if kind == "str":
            if not isinstance(v, str):
                raise ConfigurationError(f"{where}: expected a string, got {v!r}")
            return f"@{slot}:{{{_tag(v)}}}"
        if kind == "bool":
            if not isinstance(v, bool | np.bool_):
                raise ConfigurationError(f"{where}: expected a bool, got {v!r}")
            return f"@{slot}:{{{'1' if v else '0'}}}"
        x = self._number(where, kind, v)
        return f"@{slot}:[{x} {x}]"

    @staticmethod
    def _number(where: str, kind: str, v: Any) -> str:
        if kind == "time":
            try:
                return str(to_us(v, what=where))
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            raise ConfigurationError(f"{where}: expected a number, got {v!r}")
        if isinstance(v, float | np.floating):
            if not np.isfinite(v):
                raise ConfigurationError(f"{where}: expected a finite number, got {v!r}")
            return repr(float(v))
        return str(int(v))


def _get(reply: Mapping[Any, Any], name: str) -> Any:
    """A reply map's entry, whether its keys came back as bytes or as str."""
    return reply.get(name.encode(), reply.get(name))


def _hits(reply: Any) -> list[tuple[bytes | str, float]]:
    """(document key, distance) pairs of an FT.SEARCH reply, RESP2 or RESP3."""
    out: list[tuple[bytes | str, float]] = []
    if isinstance(reply, dict):  # RESP3
        for doc in _get(reply, "results") or []:
            attrs = _get(doc, "extra_attributes") or {}
            out.append((_get(doc, "id"), float(_get(attrs, "__d"))))
        return out
    # RESP2: [total, key, [name, value, ...], key, [...], ...]
    for i in range(1, len(reply) - 1, 2):
        fields = reply[i + 1]
        pairs = dict(zip(fields[::2], fields[1::2], strict=True))
        out.append((reply[i], float(_get(pairs, "__d"))))
    return out
