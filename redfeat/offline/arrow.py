"""Versions as Arrow tables: one schema for Redis history, the offline log and exports.

Columns: ``entity_id`` (string), ``event_time`` and ``written_at`` (timestamp[us, UTC]),
``version_id`` (int64), then one column per field of the view, typed by the schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import zip_longest
from typing import Any

import numpy as np
import pyarrow as pa

from .. import types as t
from ..core.schema import FeatureView

TS = pa.timestamp("us", tz="UTC")
META = ("entity_id", "event_time", "written_at", "version_id")


def arrow_type(dtype: t.DType) -> pa.DataType:
    if dtype is t.Int:
        return pa.int64()
    if dtype is t.Float:
        return pa.float64()
    if dtype is t.Bool:
        return pa.bool_()
    if dtype is t.String or isinstance(dtype, t.Category):
        return pa.string()
    if dtype is t.Timestamp:
        return TS
    if isinstance(dtype, t.Vector):
        return pa.list_(pa.float32(), dtype.dim)
    if isinstance(dtype, t.List):
        return pa.list_(arrow_type(dtype.element))
    raise AssertionError(f"unhandled type {dtype!r}")


def version_schema(view: FeatureView) -> pa.Schema:
    return pa.schema(
        [
            pa.field("entity_id", pa.string()),
            pa.field("event_time", TS),
            pa.field("written_at", TS),
            pa.field("version_id", pa.int64()),
            *(pa.field(f.name, arrow_type(f.dtype)) for f in view.fields),
        ]
    )


def _column(dtype: t.DType, values: Sequence[Any]) -> pa.Array:
    if isinstance(dtype, t.Vector):
        size = 4 * dtype.dim
        if any(v is not None and len(v) != size for v in values):
            raise ValueError(f"stored vector with the wrong size for {dtype!r}")
        mask = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
        zero = b"\0" * (4 * dtype.dim)
        flat = np.frombuffer(b"".join(zero if v is None else v for v in values), dtype="<f4")
        return pa.FixedSizeListArray.from_arrays(
            pa.array(flat, pa.float32()), dtype.dim, mask=pa.array(mask) if mask.any() else None
        )
    if (dtype is t.Float or dtype is t.Int) and None not in values:
        # numpy converts a list of numbers ~1.5x faster than pa.array; a null falls back
        try:
            arr = np.array(values, dtype=np.float64 if dtype is t.Float else np.int64)
        except (TypeError, OverflowError):
            pass
        else:
            if arr.ndim == 1:
                return pa.array(arr)
    return pa.array(values, arrow_type(dtype))


def versions_table(
    view: FeatureView,
    slots: dict[str, int],
    entity_ids: Sequence[str] | pa.Array,
    event_us: Sequence[int] | np.ndarray,
    version_ids: Sequence[int] | np.ndarray,
    payloads: Sequence[Sequence[Any]],
) -> pa.Table:
    """Build a versions table from stored payload arrays (slot-indexed lists as msgpack
    decodes them: a Vector is float32 bytes, a Timestamp int microseconds). ``written_at`` is
    the version id, which is the server clock in microseconds at write time."""
    if not len(entity_ids) == len(event_us) == len(version_ids) == len(payloads):
        raise ValueError("versions_table: columns of different lengths")
    by_slot = list(zip_longest(*payloads)) if payloads else []
    n = len(payloads)
    cols: list[pa.Array] = [
        pa.array(entity_ids, pa.string()),
        pa.array(np.asarray(event_us, dtype=np.int64), pa.int64()).cast(TS),
        pa.array(np.asarray(version_ids, dtype=np.int64), pa.int64()).cast(TS),
        pa.array(np.asarray(version_ids, dtype=np.int64), pa.int64()),
    ]
    for f in view.fields:
        slot = slots[f.name]
        values = by_slot[slot] if slot < len(by_slot) else [None] * n
        cols.append(_column(f.dtype, values))
    return pa.Table.from_arrays(cols, schema=version_schema(view))


def empty_versions(view: FeatureView) -> pa.Table:
    return version_schema(view).empty_table()
