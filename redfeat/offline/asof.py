"""A training frame's join of one view over the offline log, in numpy.

The log's files are each sorted by (entity, event time, version id) (log.py). Entities are
numbered in string order, so each file's rows keep their order under the integer key
``entity number * span + event time``; a stable sort of the concatenated files then merges
sorted runs (timsort), far cheaper than the general sort DuckDB's ASOF JOIN does. Each
entity_df row's version is the last key at or below its own, found by binary search: the
greatest event time at or before the row's time, ties to the greatest version id (the last
written), the ttl checked on the version found. These are the semantics of
``logsql.FRAME_SQL``, which stays the general path: where the keys would not fit in 64
bits (entities x time span), ``join`` returns None and the caller runs the SQL.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_LIMIT = 1 << 62


def join(
    versions: pa.Table,
    features: list[str],
    edf: pa.Table,
    codes: pa.Table,
    ttl: int | None,
) -> pa.Table | None:
    """``features`` for every row of ``edf`` (entity_id: int code into ``codes``, __ts: us),
    in edf's row order, from ``versions`` (entity_id, event_time, version_id, features: the
    log's runs). None when the keys do not fit in int64."""
    n = edf.num_rows
    if n == 0 or codes.num_rows == 0:
        return _nulls(versions, features, n)
    # number the entities in string order: each run's rows keep their order under the key
    unique = codes.column("entity_id").combine_chunks()
    order = pc.sort_indices(unique).to_numpy()
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    q_code_raw = edf.column("entity_id").combine_chunks()
    q_known = ~np.asarray(q_code_raw.is_null())
    q_code = np.where(q_known, rank[pc.fill_null(q_code_raw, 0).to_numpy()], -1)
    q_ts = edf.column("__ts").combine_chunks().to_numpy(zero_copy_only=False)

    ent = pc.index_in(versions.column("entity_id"), value_set=pc.take(unique, pa.array(order)))
    have = ~np.asarray(ent.is_null())
    rows = np.flatnonzero(have)
    v_code = ent.to_numpy(zero_copy_only=False)[rows].astype(np.int64)
    et_all = versions.column("event_time").combine_chunks().cast(pa.int64()).to_numpy()
    et = et_all[rows]
    if len(et) == 0:
        return _nulls(versions, features, n)
    tmin = int(et.min())
    span = max(int(et.max()), int(q_ts.max())) - tmin + 2
    if span * (len(unique) + 1) >= _LIMIT:
        return None
    key = v_code * span + (et - tmin)
    by_key = np.argsort(key, kind="stable")
    sorted_key = key[by_key]
    if len(sorted_key) > 1 and bool(np.any(sorted_key[1:] == sorted_key[:-1])):
        # ties on (entity, event time): the greatest version id last, so it is the one found
        vid = versions.column("version_id").combine_chunks().to_numpy()[rows]
        by_key = np.lexsort((vid, key))
        sorted_key = key[by_key]
    q_rel = np.clip(q_ts - tmin, -1, span - 1)  # before all: lands on the entity before
    q_key = q_code * span + q_rel
    pos = np.searchsorted(sorted_key, q_key, side="right") - 1
    at = np.maximum(pos, 0)
    found = q_known & (pos >= 0) & (sorted_key[at] >= q_code * span)
    win = by_key[at]
    if ttl is not None:
        found &= et[win] >= q_ts - ttl
    take = pa.array(rows[win], mask=~found)
    return pa.table({f: versions.column(f).take(take) for f in features})


def _nulls(versions: pa.Table, features: list[str], n: int) -> pa.Table:
    return pa.table(
        {f: pa.nulls(n, versions.schema.field(f).type) for f in features},
    )
