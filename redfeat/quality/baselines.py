"""Baselines: the profile drift is measured against, from recorded profiles or a frame."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgspec
import redis

from ..core.columns import Columns, columns_of, encode_columns
from ..core.keys import Keys
from ..core.registry import Resolved
from ..core.time import from_us, now_us
from ..errors import ConfigurationError, ValidationError, wrap_redis
from .profiles import Profile, add_column

_ENTITY = "__rf_entity"  # a stand-in entity column while a frame goes through the schema


def profile_of_frame(res: Resolved, frame: Any) -> Profile:
    """Profile a frame's columns for the view's fields, checked and converted as a write
    would be (NaN in a frame is a null)."""
    view = res.name
    cols = columns_of(frame)
    data: dict[str, list[Any]] = {}
    micros = set()
    for name in res.codec.fields:
        for cand in (name, f"{view}:{name}", f"{view}__{name}"):
            if cand in cols.data:
                data[name] = [None if type(v) is float and v != v else v for v in cols.data[cand]]
                if cand in cols.micros:
                    micros.add(name)
                break
    if not data or cols.n == 0:
        raise ConfigurationError(
            f"view {view!r}: the frame has no rows or none of its fields "
            f"{sorted(res.codec.fields)} (columns: {sorted(cols.data)[:20]})"
        )
    data[_ENTITY] = ["baseline"] * cols.n
    checked = Columns(cols.n, data, from_frame=cols.from_frame, micros=frozenset(micros))
    out: dict[str, Any] = {}
    _items, _n, problems = encode_columns(
        res.codec, checked, entity_column=_ENTITY, event_time_column=None, out=out
    )
    if problems:  # (the stand-in entity id is not the user's: leave it out)
        found = [replace(p, entity=None) for i in sorted(problems) for p in problems[i]]
        raise ValidationError(found, outcome="no baseline was set")
    prof = Profile(view, cols.n)
    for name in data:
        if name != _ENTITY:
            add_column(prof, res.codec.fields[name], out["checked"][name])
    return prof


def save(client: redis.Redis, keys: Keys, view: str, prof: Profile, meta: dict[str, Any]) -> None:
    meta = {
        **meta,
        "start": None if prof.start is None else prof.start.isoformat(),
        "end": None if prof.end is None else prof.end.isoformat(),
        "set_at": from_us(now_us()).isoformat(),
    }
    blob = msgspec.msgpack.encode({"meta": meta, "profile": prof.dumps()})
    with wrap_redis(f"view {view!r}: saving the baseline failed"):
        client.set(keys.quality(view, "baseline"), blob)


def load(client: redis.Redis, keys: Keys, view: str) -> tuple[Profile, dict[str, Any]] | None:
    with wrap_redis(f"view {view!r}: reading the baseline failed"):
        blob = client.get(keys.quality(view, "baseline"))
    if blob is None:
        return None
    d = msgspec.msgpack.decode(blob)  # type: ignore[arg-type]
    return Profile.loads(view, d["profile"]), d["meta"]
