"""The in-memory side of a vector index: vectors and filter columns of every entity in
contiguous arrays (swap-remove on delete), and an optional hnswlib graph over them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import types as t
from ..core.time import to_us
from ..errors import ConfigurationError

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


class _Column:
    """One scalar field of every row, as a numpy array plus a validity mask.

    Int and Timestamp (microseconds) are int64, Float float64, Bool int8, String and
    Category int32 codes into a growing dictionary (so equality never compares strings).
    """

    __slots__ = ("name", "kind", "data", "valid", "codes")

    def __init__(self, name: str, dtype: t.DType, capacity: int) -> None:
        self.name = name
        if dtype is t.Int:
            self.kind, np_type = "int", "int64"
        elif dtype is t.Float:
            self.kind, np_type = "float", "float64"
        elif dtype is t.Bool:
            self.kind, np_type = "bool", "int8"
        elif dtype is t.Timestamp:
            self.kind, np_type = "time", "int64"
        else:  # String, Category
            self.kind, np_type = "str", "int32"
        self.data: np.ndarray[Any, Any] = np.zeros(capacity, dtype=np_type)
        self.valid: Mask = np.zeros(capacity, dtype=bool)
        self.codes: dict[str, int] = {}

    def grow(self, capacity: int) -> None:
        data = np.zeros(capacity, dtype=self.data.dtype)
        data[: len(self.data)] = self.data
        valid = np.zeros(capacity, dtype=bool)
        valid[: len(self.valid)] = self.valid
        self.data, self.valid = data, valid

    def encode(self, values: list[Any]) -> tuple[np.ndarray[Any, Any], Mask]:
        """Stored values -> (data, valid) arrays."""
        valid = np.array([v is not None for v in values], dtype=bool)
        if self.kind == "str":
            codes = self.codes
            out = [codes.setdefault(v, len(codes)) if v is not None else -1 for v in values]
        elif self.kind == "time":
            out = [0 if v is None else to_us(v) for v in values]
        else:
            out = [0 if v is None else v for v in values]
        return np.asarray(out, dtype=self.data.dtype), valid

    def move(self, src: int, dst: int) -> None:
        self.data[dst] = self.data[src]
        self.valid[dst] = self.valid[src]

    # -- where ---------------------------------------------------------------------

    def _scalar(self, view: str, v: Any) -> float | int:
        """A filter value in this column's stored form (-2: a string never stored)."""
        where = f"VectorIndex({view!r}): where[{self.name!r}]"
        if self.kind == "str":
            if not isinstance(v, str):
                raise ConfigurationError(f"{where}: expected a string, got {v!r}")
            return self.codes.get(v, -2)
        if self.kind == "bool":
            if not isinstance(v, bool | np.bool_):
                raise ConfigurationError(f"{where}: expected a bool, got {v!r}")
            return int(v)
        if self.kind == "time":
            try:
                return to_us(v, what=where)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            raise ConfigurationError(f"{where}: expected a number, got {v!r}")
        return float(v) if isinstance(v, float | np.floating) else int(v)

    def mask(self, view: str, cond: Any, n: int) -> Mask:
        """Rows [0, n) whose value satisfies ``cond`` (value, list of values, or (lo, hi))."""
        data, valid = self.data[:n], self.valid[:n]
        if cond is None:
            return ~valid
        if isinstance(cond, tuple):
            if len(cond) != 2:
                raise ConfigurationError(
                    f"VectorIndex({view!r}): where[{self.name!r}]: a tuple is a range "
                    f"(lo, hi), got {len(cond)} items; use a list for IN"
                )
            if self.kind not in ("int", "float", "time"):
                raise ConfigurationError(
                    f"VectorIndex({view!r}): where[{self.name!r}]: ranges apply to Int, "
                    "Float and Timestamp fields only"
                )
            lo, hi = cond
            out = valid.copy()
            if lo is not None:
                out &= data >= self._scalar(view, lo)
            if hi is not None:
                out &= data <= self._scalar(view, hi)
            return out
        if isinstance(cond, list | set | frozenset):
            wanted = [self._scalar(view, v) for v in cond if v is not None]
            out = valid & np.isin(data, np.asarray(wanted, dtype=data.dtype))
            if None in cond:
                out |= ~valid
            return out
        same: Mask = valid & (data == self._scalar(view, cond))
        return same


# -- the rows ----------------------------------------------------------------------------


class Rows:
    """Entity ids, vectors and filter columns in contiguous arrays (rows [0, n) are live).

    An id -> row map finds a row; a delete moves the last row into the hole, so the live
    rows stay one block and the matrix product never touches dead ones."""

    def __init__(self, dim: int, columns: Mapping[str, t.DType], capacity: int = 1024) -> None:
        self.dim = dim
        self.n = 0
        self.ids: list[str] = []
        self.pos: dict[str, int] = {}
        self.vecs: F32 = np.zeros((capacity, dim), dtype=np.float32)
        self.sqn: F32 = np.zeros(capacity, dtype=np.float32)  # squared norms, for l2
        self.ets: I64 = np.zeros(capacity, dtype=np.int64)  # event times, for the view's ttl
        self.cols = {name: _Column(name, dtype, capacity) for name, dtype in columns.items()}

    def _reserve(self, extra: int) -> None:
        cap = len(self.vecs)
        if self.n + extra <= cap:
            return
        while cap < self.n + extra:
            cap *= 2  # doubling: amortised O(1) per insert
        vecs = np.zeros((cap, self.dim), dtype=np.float32)
        vecs[: self.n] = self.vecs[: self.n]
        sqn = np.zeros(cap, dtype=np.float32)
        sqn[: self.n] = self.sqn[: self.n]
        ets = np.zeros(cap, dtype=np.int64)
        ets[: self.n] = self.ets[: self.n]
        self.vecs, self.sqn, self.ets = vecs, sqn, ets
        for col in self.cols.values():
            col.grow(cap)

    def upsert(
        self, ids: list[str], vecs: F32, cols: Mapping[str, list[Any]], ets: list[int]
    ) -> None:
        """Insert or replace rows (vectors already normalised as the metric needs)."""
        new = sum(1 for e in dict.fromkeys(ids) if e not in self.pos)
        self._reserve(new)
        rows = np.empty(len(ids), dtype=np.intp)
        for i, e in enumerate(ids):
            r = self.pos.get(e)
            if r is None:
                r = self.pos[e] = self.n
                self.ids.append(e)
                self.n += 1
            rows[i] = r
        self.vecs[rows] = vecs
        self.sqn[rows] = np.einsum("ij,ij->i", vecs, vecs)
        self.ets[rows] = ets
        for name, col in self.cols.items():
            data, valid = col.encode(cols[name])
            col.data[rows] = data
            col.valid[rows] = valid

    def remove(self, entity_id: str) -> bool:
        r = self.pos.pop(entity_id, None)
        if r is None:
            return False
        last = self.n - 1
        if r != last:  # swap-remove: the last row fills the hole
            moved = self.ids[last]
            self.ids[r] = moved
            self.pos[moved] = r
            self.vecs[r] = self.vecs[last]
            self.sqn[r] = self.sqn[last]
            self.ets[r] = self.ets[last]
            for col in self.cols.values():
                col.move(last, r)
        self.ids.pop()
        self.n = last
        return True


class Hnsw:
    """An hnswlib graph over the same entities, by stable integer labels.

    Labels never move (rows do, on delete): an entity keeps its label while it exists; a
    deleted one's label is retired and its slot reused by the next new entity."""

    def __init__(
        self,
        lib: Any,
        metric: str,
        dim: int,
        M: int,
        ef_construction: int,
        ef_search: int,
        capacity: int,
    ) -> None:
        # Cosine vectors arrive normalised, so the inner product space ranks them the same.
        self.index: Any = lib.Index(space="l2" if metric == "l2" else "ip", dim=dim)
        self.index.init_index(
            max_elements=capacity, ef_construction=ef_construction, M=M, allow_replace_deleted=True
        )
        self.ef_search = ef_search
        self.label: dict[str, int] = {}
        self.entity: dict[int, str] = {}
        self.next_label = 0
        self.deleted = 0  # slots marked deleted and not yet reused

    def upsert(self, ids: list[str], vecs: F32, threads: int = 1) -> None:
        last = {e: i for i, e in enumerate(ids)}  # a batch may name an entity twice
        old = [(i, self.label[e]) for e, i in last.items() if e in self.label]
        new = [i for e, i in last.items() if e not in self.label]
        if old:
            # An existing label is updated in place; replace_deleted=True would instead
            # give it a vacant slot and leave its old node behind under the same label.
            rows = [i for i, _ in old]
            self.index.add_items(vecs[rows], [lab for _, lab in old], num_threads=threads)
        if new:
            fresh = self.deleted + self.index.max_elements - self.index.element_count
            if len(new) > fresh:
                grow = len(new) - fresh
                self.index.resize_index(
                    max(2 * self.index.max_elements, self.index.max_elements + grow)
                )
            labels = list(range(self.next_label, self.next_label + len(new)))
            self.next_label += len(new)
            for i, lab in zip(new, labels, strict=True):
                self.label[ids[i]] = lab
                self.entity[lab] = ids[i]
            self.index.add_items(vecs[new], labels, num_threads=threads, replace_deleted=True)
            self.deleted -= min(self.deleted, len(new))

    def remove(self, entity_id: str) -> None:
        lab = self.label.pop(entity_id, None)
        if lab is not None:
            del self.entity[lab]
            self.index.mark_deleted(lab)
            self.deleted += 1

    def query(self, q: F32, n: int) -> list[str]:
        """The approximate n nearest entities (n <= the number of live entities)."""
        self.index.set_ef(max(self.ef_search, n))
        labels, _ = self.index.knn_query(q[None, :], k=n, num_threads=1)
        return [self.entity[int(lab)] for lab in labels[0]]
