"""Reading a series' raw state: the head, the sealed chunks over a range, the counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.conn import Script
from ..core.context import Ctx
from ..core.keys import Keys
from . import lua
from .chunks import decode_chunk, unpack_points
from .spec import SeriesSpec

APPEND = Script(lua.APPEND)
CAP = Script(lua.CAP, idempotent=True)  # a replay stores the same floor
COMMIT = Script(lua.COMMIT)
READ = Script(lua.READ, idempotent=True)  # reads only
TRIM = Script(lua.TRIM)
UNLOCK = Script(lua.UNLOCK)


@dataclass
class State:
    newest: int | None
    ver: bytes
    hgen: bytes
    sealed_last: int | None
    head_ts: np.ndarray
    head_v: np.ndarray
    # (first ms, timestamps, values) of each sealed chunk read, in time order
    chunks: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)
    floor: int | None = None  # a count cap's oldest point kept (older ones read as gone)

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """Every point read, in time order (chunks do not overlap; the head is newest)."""
        ts = [c[1] for c in self.chunks] + [self.head_ts]
        vs = [c[2] for c in self.chunks] + [self.head_v]
        return np.concatenate(ts), np.concatenate(vs)

    def cut(self, spec: SeriesSpec) -> int | None:
        """Points older than this are past the raw retention (or the count cap's floor)."""
        if self.newest is None:
            return None
        cut = self.newest - spec.retention_ms
        return cut if self.floor is None else max(cut, self.floor)


def base_keys(keys: Keys, spec: SeriesSpec) -> list[str]:
    e = spec.escaped
    return [keys.series(e), keys.series_head(e), keys.series_chunk_index(e), keys.series_chunks(e)]


def read_state(
    ctx: Ctx, spec: SeriesSpec, lo: int | None, hi: int | None, *, chunks: bool = True
) -> State:
    """State and head, and the sealed chunks that may hold points in [lo, hi] (None: open)
    unless ``chunks`` is False."""
    args: list[Any] = ["-inf" if lo is None else lo, "+inf" if hi is None else hi]
    if lo is not None and hi is not None and hi < lo:
        args = [lo, lo]
    if not chunks:
        args = ["", ""]
    reply = ctx.run(READ, base_keys(ctx.keys, spec), args, what=f"series {spec.name!r}")
    newest, ver, hgen, sealed_last, head, floor = reply[:6]
    hts, hv = unpack_points(head)
    st = State(
        None if newest is None else int(newest),
        ver,
        hgen,
        None if sealed_last is None else int(sealed_last),
        hts,
        hv,
        floor=None if floor is None else int(floor),
    )
    for i in range(6, len(reply), 2):
        if reply[i + 1] is None:
            continue  # removed by retention between the index read and the fetch: none
        ts, vs = decode_chunk(reply[i + 1])
        st.chunks.append((int(reply[i]), ts, vs))
    st.chunks.sort(key=lambda c: c[0])
    return st


def raw_points(
    ctx: Ctx, spec: SeriesSpec, lo: int | None, hi: int | None
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Points in [lo, hi] still inside the raw retention, and the newest timestamp."""
    st = read_state(ctx, spec, lo, hi)
    ts, vs = st.points()
    keep = np.ones(len(ts), bool)
    cut = st.cut(spec)
    if cut is not None:
        keep &= ts >= cut
    if lo is not None:
        keep &= ts >= lo
    if hi is not None:
        keep &= ts <= hi
    return ts[keep], vs[keep], st.newest


def trim(ctx: Ctx, spec: SeriesSpec, floor: int | None = None) -> int:
    """Apply retention now (whole chunks and tile pages); returns how many went.
    ``floor``: a count cap's new floor, kept if later than the stored one."""
    e = spec.escaped
    keys = [
        ctx.keys.series(e),
        ctx.keys.series_chunk_index(e),
        ctx.keys.series_chunks(e),
        ctx.keys.series_pages(e),
        ctx.keys.series_head(e),
    ]
    args: list[Any] = [ctx.keys.series(e), spec.retention_ms, "" if floor is None else floor]
    for r in spec.rollups:
        args += [r.bucket_ms, r.retention_ms]
    return int(ctx.run(TRIM, keys, args, what=f"series {spec.name!r} retention"))


def cap(ctx: Ctx, spec: SeriesSpec) -> None:
    """Apply the count cap (``max_points``): move the floor to the oldest of the newest N
    points and trim below it. A write calls this after its own step."""
    if spec.max_points is None:
        return
    e = spec.escaped
    keys = [ctx.keys.series(e), ctx.keys.series_head(e)]
    keys += [ctx.keys.series_chunk_index(e), ctx.keys.series_chunks(e)]
    reply = ctx.run(CAP, keys, [spec.max_points], what=f"series {spec.name!r} max_points")
    if int(reply[0]) != 2:
        return  # no more points than the cap, or the floor is set (in the head)
    left, blob, stored = int(reply[1]), reply[2], reply[3]
    ts, _ = decode_chunk(blob)
    if stored not in (b"", ""):
        ts = ts[ts >= int(stored)]
    if len(ts) >= left:  # else fewer points than the cap after all
        trim(ctx, spec, int(ts[len(ts) - left]))
