"""Window features: sliding-window aggregates of an entity's events, kept as tiles.

``WindowFeatures("txn_stats", entity="user", source="amount", aggs=["sum", "count"],
windows=["1h", "24h"], hop="5m")`` keeps, per entity, one tile per ``hop`` bucket (count,
sum, m2, min, max, first, last: the time-series tiles of ``timeseries/tiles.py``) and the
tile's raw events, in one hash under the entity's hash tag. A window W read at time t
counts the events of the tiles whose start is in [round_down(t - W, hop), t] that happened
at or before t: the tail is hopped (the oldest tile counts whole, so the span covered is
between W and W + hop) and the head is exact (the tile holding t is cut at t from its raw
events, so a read at a past t never sees what came after it). Tiles and raw events older
than the largest window + one hop back from an entity's newest event are dropped on write.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import redis

from ..core.schema import Entity, check_name
from ..core.time import MAX_US, Duration
from ..errors import BackendError, ConfigurationError, NotFoundError
from ..timeseries.lua import TILE_MERGE
from ..timeseries.spec import duration_ms
from ..timeseries.tiles import EVENT, MEM, WIRE, partials

AGGS = ("count", "sum", "avg", "min", "max", "std", "var", "first", "last")
MAX_TILES = 16_384  # largest window / hop: bounds the tiles one read merges
MIN_HOP_MS = 1_000
MAX_MS = MAX_US // 1000  # 2200-01-01, like every other event time of the store
_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000))


def _label(value: Duration, ms: int) -> str:
    # a string keeps the user's spelling ("24h" stays "24h"); others get the largest unit
    if isinstance(value, str):
        label = value.strip().replace(" ", "")
    else:
        label = next(f"{ms // u}{s}" for s, u in _UNITS if ms % u == 0)
    if not label.isalnum():
        raise ConfigurationError(
            f"window {value!r} cannot name a feature: write it as a whole number and a unit, "
            "e.g. '90m' rather than '1.5h'"
        )
    return label


class WindowFeatures:
    """Sliding-window aggregates of one numeric source per entity, fed by
    ``store.record`` / ``store.record_many`` and read as ``<source>_<agg>_<window>``."""

    __slots__ = ("name", "entity", "source", "aggs", "windows", "window_ms", "hop_ms", "_names")

    def __init__(
        self,
        name: str,
        *,
        entity: Entity | str,
        source: str,
        aggs: Iterable[str],
        windows: Iterable[Duration],
        hop: Duration = "5m",
    ) -> None:
        self.name = check_name("window features", name)
        self.entity = check_name("entity", entity.name if isinstance(entity, Entity) else entity)
        self.source = check_name("source", source)
        where = f"window features {name!r}"
        if isinstance(aggs, str):
            raise ConfigurationError(f"{where}: aggs must be a list like ['sum', 'count']")
        self.aggs = tuple(aggs)
        bad = [a for a in self.aggs if a not in AGGS]
        if bad or not self.aggs or len(set(self.aggs)) != len(self.aggs):
            raise ConfigurationError(
                f"{where}: aggs {list(self.aggs)} must be distinct and taken from {list(AGGS)}"
            )
        self.hop_ms = duration_ms(hop, what=f"{where}: hop")
        if self.hop_ms < MIN_HOP_MS:
            raise ConfigurationError(f"{where}: hop {hop!r} is below the minimum of 1s")
        if isinstance(windows, str):
            raise ConfigurationError(f"{where}: windows must be a list like ['1h', '24h']")
        pairs = [(_label(w, m := duration_ms(w, what=f"{where}: window")), m) for w in windows]
        if not pairs:
            raise ConfigurationError(f"{where}: give at least one window")
        for label, m in pairs:
            if m % self.hop_ms:
                raise ConfigurationError(
                    f"{where}: window {label!r} is not a multiple of the hop ({self.hop_ms} ms)"
                )
            if m // self.hop_ms > MAX_TILES:
                raise ConfigurationError(
                    f"{where}: window {label!r} spans {m // self.hop_ms} hops, over the limit "
                    f"of {MAX_TILES}; use a longer hop"
                )
        if len({m for _, m in pairs}) != len(pairs) or len({lb for lb, _ in pairs}) != len(pairs):
            raise ConfigurationError(f"{where}: windows {[lb for lb, _ in pairs]} repeat")
        self.windows = tuple(lb for lb, _ in pairs)
        self.window_ms = tuple(m for _, m in pairs)

    @property
    def hop(self) -> timedelta:
        return timedelta(milliseconds=self.hop_ms)

    @property
    def features(self) -> list[str]:
        """Output names, window by window: ``amount_sum_1h``, ``amount_count_1h``, ..."""
        return [f"{self.source}_{a}_{w}" for w in self.windows for a in self.aggs]

    def resolve(self, feature: str) -> tuple[str, int]:
        """(agg, window ms) of an output name; NotFoundError naming the known ones."""
        names: dict[str, tuple[str, int]] | None = getattr(self, "_names", None)
        if names is None:
            names = {
                f"{self.source}_{a}_{w}": (a, m)
                for w, m in zip(self.windows, self.window_ms, strict=True)
                for a in self.aggs
            }
            self._names = names
        hit = names.get(feature)
        if hit is not None:
            return hit
        raise NotFoundError(
            f"window features {self.name!r} have no feature {feature!r} (known: {self.features})"
        )

    @property
    def span(self) -> int:
        """Tiles kept back from the newest one: the largest window plus one hop."""
        return max(self.window_ms) // self.hop_ms + 1

    def spec(self) -> dict[str, Any]:
        return {
            "kind": "window",
            "name": self.name,
            "entity": self.entity,
            "source": self.source,
            "aggs": list(self.aggs),
            "windows": [[w, m] for w, m in zip(self.windows, self.window_ms, strict=True)],
            "hop_ms": self.hop_ms,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> WindowFeatures:
        w = cls.__new__(cls)
        w.name, w.entity, w.source = spec["name"], spec["entity"], spec["source"]
        w.aggs = tuple(spec["aggs"])
        w.windows = tuple(x[0] for x in spec["windows"])
        w.window_ms = tuple(int(x[1]) for x in spec["windows"])
        w.hop_ms = int(spec["hop_ms"])
        return w

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WindowFeatures) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return (
            f"WindowFeatures({self.name!r}, entity={self.entity!r}, source={self.source!r}, "
            f"aggs={list(self.aggs)}, windows={list(self.windows)}, hop={self.hop_ms} ms)"
        )


# RECORD: merge partial tiles into one entity's tile hash and append their raw events to its
# event hash, then drop what retention lets go.
# KEYS[1] the tile hash. Fields: bucket id -> 60-byte tile (timeseries.tiles.WIRE); '_n'
# the newest bucket; '_c' the retention cut (no tile below it); '_d' one past the newest
# bucket that lost data (a tile dropped, or a late event refused): reads whose window
# starts at or after it are exact, the others are not answered.
# KEYS[2] the event hash: bucket id -> the tile's raw events (RAW, 12 bytes each, in the
# order recorded), so that a read at t cuts the tile holding t at t. Kept apart from the
# tiles so that a read fetches the raw events of one tile only. A tile stored without its
# raw events (recorded before they were kept) gets none appended: a read that would cut it
# is not answered rather than answered from half of them.
# KEYS[3] the window features' feed (a capped stream): one entry per call with every event
# of it, for the offline log {e: escaped entity id, w: per bucket, int64 BE bucket id ..
# uint32 BE bytes .. its raw events}. Events too old for the tiles are in it too: the
# log keeps what tiles cannot (training over long history reads the log).
# ARGV[1] tiles kept back from the newest bucket, ARGV[2] and ARGV[3] the batch's oldest
# and newest bucket, ARGV[4] the feed's cap (MAXLEN ~; 0: no feed), ARGV[5] the escaped
# entity id, then (bucket id, tile, raw events) triples, one per distinct bucket.
# Returns the number of events refused as too old.
RECORD = (
    TILE_MERGE
    + r"""
local K, R = KEYS[1], KEYS[2]
local span, lo, hi = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local logged = {}
local meta = redis.call('HMGET', K, '_n', '_c', '_d')
local before, old, lost = tonumber(meta[1]), tonumber(meta[2]), tonumber(meta[3])
local function lose(x) if not lost or x + 1 > lost then lost = x + 1 end end
local newest = (before and before > hi) and before or hi
local cut = newest - span
local dropped = 0
if (not before or lo > before) and lo >= cut then
  -- every bucket is new and kept: set them all, nothing to read or merge
  local ft, fr = {}, {}
  for i = 6, #ARGV, 3 do
    ft[#ft + 1] = ARGV[i]; ft[#ft + 1] = ARGV[i + 1]
    fr[#fr + 1] = ARGV[i]; fr[#fr + 1] = ARGV[i + 2]
    if cap > 0 then
      logged[#logged + 1] = struct.pack('>lI4', tonumber(ARGV[i]), #ARGV[i + 2]) .. ARGV[i + 2]
    end
    if #ft >= 1000 then
      redis.call('HSET', K, unpack(ft)); redis.call('HSET', R, unpack(fr)); ft, fr = {}, {}
    end
  end
  if #ft > 0 then redis.call('HSET', K, unpack(ft)); redis.call('HSET', R, unpack(fr)) end
else
  for i = 6, #ARGV, 3 do
    local f, t, r = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local b = tonumber(f)
    if cap > 0 then logged[#logged + 1] = struct.pack('>lI4', b, #r) .. r end
    if b < cut then
      dropped = dropped + struct.unpack('<I', t)
      lose(b)
    else
      local cur = before and b <= before and redis.call('HGET', K, f)
      if cur then
        redis.call('HSET', K, f, merge_tile(cur, t))
        local had = redis.call('HGET', R, f)
        if had then redis.call('HSET', R, f, had .. r) end
      else
        redis.call('HSET', K, f, t)
        redis.call('HSET', R, f, r)
      end
    end
  end
end
-- retention, amortised: only the buckets between the old cut and the new one are visited
-- (or the hash's own fields when that is fewer), never the keyspace
if old and cut > old then
  if cut - old <= redis.call('HLEN', K) then
    for x = old, cut - 1 do
      local f = string.format('%.0f', x)
      if redis.call('HDEL', K, f) == 1 then lose(x) end
      redis.call('HDEL', R, f)
    end
  else
    for _, f in ipairs(redis.call('HKEYS', K)) do
      local x = tonumber(f)
      if x and x < cut then redis.call('HDEL', K, f); redis.call('HDEL', R, f); lose(x) end
    end
  end
end
if not old or cut > old then old = cut end
local st = {'_n', string.format('%.0f', newest), '_c', string.format('%.0f', old)}
if lost then st[5], st[6] = '_d', string.format('%.0f', lost) end
redis.call('HSET', K, unpack(st))
if #logged > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', cap, '*', 'e', ARGV[5], 'w', table.concat(logged))
end
return dropped
"""
)

RAW = EVENT
_ONE_RAW = struct.Struct("<Id")


def one_raw(v: float, off: int) -> bytes:
    """The stored raw event of a single point ``v`` at ``off`` ms into its bucket."""
    return _ONE_RAW.pack(off, v)


@dataclass(frozen=True, slots=True)
class EntityTiles:
    """One entity's tiles as read: sorted by bucket (MEM dtype, absolute first/last
    times), the first bucket after any data retention dropped (windows starting before it
    are not answered), and the raw events read (bucket -> packed RAW events)."""

    tiles: np.ndarray
    cut: int | None
    raw: dict[int, bytes]

    def units(self, hop_ms: int) -> np.ndarray:
        """The tiles with those whose raw events were read replaced by the events, one
        unit each, sorted by time (training frames cut every tile at its row's time)."""
        return _units(self.tiles, self.raw, hop_ms)


def _check_raw(raw: dict[int, bytes]) -> None:
    for x in raw.values():
        if len(x) % RAW.itemsize:
            raise ValueError("raw events of a tile are not whole 12-byte records")


def decode(
    reply: list[bytes] | dict[bytes, bytes], raw: dict[int, bytes], hop_ms: int
) -> EntityTiles:
    """An HGETALL reply of a tile hash (RESP2 [field, value, ...] or RESP3 map), numpy
    doing the parsing, and the raw events read of its tiles (bucket -> packed events)."""
    _check_raw(raw)
    if isinstance(reply, dict):
        fields, values = list(reply), list(reply.values())
    else:
        fields, values = reply[0::2], reply[1::2]
    if not fields:
        return EntityTiles(np.zeros(0, MEM), None, raw)
    arr = np.array(fields, dtype=np.bytes_)
    meta = arr.view(np.uint8)[:: arr.itemsize] == ord("_")  # '_n', '_c', '_d'
    lost = None
    for i in np.flatnonzero(meta)[::-1].tolist():
        if fields[i] == b"_d":
            lost = int(values[i])
        del values[i]
    ids = arr[~meta].astype(np.int64)
    wire = np.frombuffer(b"".join(values), WIRE)
    if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        order = np.argsort(ids)
        ids, wire = ids[order], wire[order]
    return EntityTiles(_mem(ids, wire, hop_ms), lost, raw)


def events_of(reply: list[bytes] | dict[bytes, bytes] | None) -> dict[int, bytes]:
    """An HGETALL reply of an event hash: bucket -> packed raw events."""
    if isinstance(reply, dict):
        return {int(k): v for k, v in reply.items()}
    return {} if not reply else dict(zip(map(int, reply[0::2]), reply[1::2], strict=True))


def range_fields(span: tuple[int, int]) -> list[str]:
    """HMGET fields of a tile hash for a read at one time over buckets [lo, hi]: the
    retention mark and the tiles."""
    return ["_d", *map(str, range(span[0], span[1] + 1))]


def read_range(wf: WindowFeatures, t_ms: int, window_ms: Iterable[int]) -> tuple[int, int] | None:
    """Buckets [lo, hi] the asked windows at t read, or None when that is a good part of
    what is kept (HGETALL is then as cheap): a short window must not cost as much as the
    largest one."""
    hi = t_ms // wf.hop_ms
    lo = (t_ms - max(window_ms)) // wf.hop_ms
    return None if (hi - lo + 1) * 4 > wf.span else (lo, hi)


def decode_range(
    reply: list[bytes | None], lo: int, raw: dict[int, bytes], hop_ms: int
) -> EntityTiles:
    """An HMGET reply of range_fields((lo, hi)) (absent fields are None) and the raw events
    read of its tiles."""
    _check_raw(raw)
    lost = None if reply[0] is None else int(reply[0])
    values = reply[1:]
    present = [i for i, v in enumerate(values) if v is not None]
    if not present:
        return EntityTiles(np.zeros(0, MEM), lost, raw)
    ids = np.asarray(present, np.int64) + lo
    wire = np.frombuffer(b"".join([values[i] for i in present]), WIRE)  # type: ignore[misc]
    return EntityTiles(_mem(ids, wire, hop_ms), lost, raw)


def _mem(ids: np.ndarray, wire: np.ndarray, hop_ms: int) -> np.ndarray:
    out = np.empty(len(ids), MEM)
    for f in ("n", "sum", "m2", "min", "max", "first", "last"):
        out[f] = wire[f]
    out["b"] = ids
    start = ids * hop_ms
    out["ft"], out["lt"] = start + wire["fo"], start + wire["lo"]
    return out


def _events(raw: bytes) -> np.ndarray:
    if len(raw) % RAW.itemsize:
        raise ValueError("raw events of a tile are not whole 12-byte records")
    return np.frombuffer(raw, RAW)


def _units(tiles: np.ndarray, raw: dict[int, bytes], hop_ms: int) -> np.ndarray:
    """Tiles with the ones whose raw events were read replaced by those events, one unit
    each, sorted by time; events at one ms keep the order they were recorded in (a stable
    sort), the tie rule of tiles (first recorded first, last recorded last)."""
    if not raw:
        return tiles
    keys = np.fromiter(raw, np.int64, len(raw))
    blobs = list(raw.values())
    counts = np.fromiter((len(_events(x)) for x in blobs), np.int64, len(blobs))
    ev = np.frombuffer(b"".join(blobs), RAW)
    units = np.empty(len(ev), MEM)
    b = np.repeat(keys, counts)
    v = ev["v"]
    units["b"] = b
    units["n"] = 1.0
    units["sum"] = units["min"] = units["max"] = units["first"] = units["last"] = v
    units["m2"] = 0.0
    units["ft"] = units["lt"] = b * hop_ms + ev["o"]
    out = np.concatenate([tiles[~np.isin(tiles["b"], keys)], units])
    return out[np.lexsort((out["lt"], out["b"]))]  # stable: ties keep the recorded order


def bounds(t_ms: Any, window_ms: int, hop_ms: int) -> tuple[Any, Any]:
    """First and last bucket of the window at t: [round_down(t - W, hop), t]."""
    return np.floor_divide(t_ms - window_ms, hop_ms), np.floor_divide(t_ms, hop_ms)


def _merged(t: np.ndarray, aggs: set[str]) -> dict[str, float]:
    """The asked aggregates of a run of tiles sorted by bucket (Chan's merge of m2)."""
    n = t["n"]
    total = float(n.sum())
    out = {"count": total}
    if total == 0:
        return out
    with np.errstate(over="ignore", invalid="ignore"):
        s = float(t["sum"].sum())
        out["sum"], out["avg"] = s, s / total
        if aggs & {"std", "var"}:
            dev = t["sum"] / n - s / total
            m2 = float(t["m2"].sum() + (n * dev * dev).sum())
            var = max(m2, 0.0) / (total - 1) if total > 1 else float("nan")
            out["var"], out["std"] = var, float(np.sqrt(var))
    if "min" in aggs:
        out["min"] = float(t["min"].min())
    if "max" in aggs:
        out["max"] = float(t["max"].max())
    if "first" in aggs:
        out["first"] = float(t["first"][0])
    if "last" in aggs:
        out["last"] = float(t["last"][-1])
    return out


def _head(et: EntityTiles, t_ms: int, hop_ms: int) -> tuple[int, np.ndarray | None]:
    """How a read at t takes the tile holding t, when the entity has one: (tiles to take
    whole from the ones up to t, the tile's events at or before t as one partial tile, or
    None when they are not all known). The last tile counts whole when it ends at or
    before t (a read at now, mostly: nothing to parse), not at all when it starts after t,
    and is cut from its raw events otherwise."""
    tiles = et.tiles
    hi = t_ms // hop_ms
    e = int(np.searchsorted(tiles["b"], hi, "right"))
    if e == 0 or tiles["b"][e - 1] != hi or tiles["lt"][e - 1] <= t_ms:
        return e, np.zeros(0, MEM)
    if tiles["ft"][e - 1] > t_ms:
        return e - 1, np.zeros(0, MEM)
    raw = et.raw.get(hi)
    if raw is None:
        return e - 1, None
    ev = _events(raw)
    order = np.argsort(ev["o"], kind="stable")  # ties keep the recorded order
    ev = ev[order]
    ev = ev[: int(np.searchsorted(ev["o"], t_ms - hi * hop_ms, "right"))]
    part = partials(hi * hop_ms + ev["o"].astype(np.int64), ev["v"], hop_ms)
    return e - 1, part


def values_at(
    wf: WindowFeatures, et: EntityTiles, t_ms: int, feats: Sequence[tuple[str, str, int]]
) -> dict[str, Any] | None:
    """(output, agg, window ms) at t for one entity, counting only events at or before t;
    None when retention dropped data a window needs, or when a tile recorded before raw
    events were kept would need a cut at t. Empty windows: count 0, sum 0.0, the others
    None."""
    out: dict[str, Any] = {}
    merged: dict[int, dict[str, float]] = {}
    b = et.tiles["b"]
    e, head = _head(et, t_ms, wf.hop_ms)
    if head is None:
        return None
    for name, agg, w in feats:
        if w not in merged:
            lo, _ = bounds(t_ms, w, wf.hop_ms)
            if et.cut is not None and lo < et.cut:
                return None
            s = int(np.searchsorted(b, lo, "left"))
            run = et.tiles[s:e]
            if len(head):
                run = np.concatenate([run, head])
            merged[w] = _merged(run, {a for _, a, x in feats if x == w})
        m = merged[w]
        if agg == "count":
            out[name] = int(m["count"])
        elif m["count"] == 0:
            out[name] = 0.0 if agg == "sum" else None
        else:
            v = m[agg]
            out[name] = None if np.isnan(v) else v
    return out


class _RangeExtreme:
    """Min or max over index ranges [s, e) of one array: a sparse table, O(n log n)."""

    def __init__(self, a: np.ndarray, op: Any, longest: int) -> None:
        self.op = op
        self.levels = [a]
        k = 1
        while 2 * k <= min(len(a), longest):  # no range is longer than the largest window
            prev = self.levels[-1]
            self.levels.append(op(prev[: len(prev) - k], prev[k:]))
            k *= 2

    def query(self, s: np.ndarray, e: np.ndarray) -> np.ndarray:
        length = np.maximum(e - s, 1)
        lvl = np.floor(np.log2(length)).astype(np.int64)
        out = np.full(len(s), np.nan)
        for j in np.unique(lvl).tolist():
            m = lvl == j
            tab = self.levels[j]
            out[m] = self.op(tab[s[m]], tab[e[m] - (1 << j)])
        return out


def at_times(
    wf: WindowFeatures,
    tiles: np.ndarray,
    codes: np.ndarray,
    cuts: np.ndarray,
    row_codes: np.ndarray,
    row_ms: np.ndarray,
    feats: Sequence[tuple[str, str, int]],
) -> dict[str, np.ndarray]:
    """Window values for many (entity, time) rows at once (training frames).

    ``tiles``: the read units (EntityTiles.tiles) of every entity concatenated, sorted by
    (entity code, time), ``codes`` their entity codes; ``cuts[code]`` the retention cut
    (int64 min when none); rows with code -1 (no entity), a window reaching before the cut
    or a whole tile straddling the row's time get NaN. Only units at or before the row's
    time count. Cumulative sums and searchsorted replace a loop over rows; min/max use a
    sparse table."""
    n_rows = len(row_ms)
    lt = tiles["lt"]
    base = int(lt.min()) if len(lt) else 0
    width = (int(lt.max()) - base + 3) if len(lt) else 3
    key = codes * width + (lt - base)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        cn = np.concatenate(([0.0], np.cumsum(tiles["n"])))
        cs = np.concatenate(([0.0], np.cumsum(tiles["sum"])))
        # squares about each entity's first tile mean, so that variances do not cancel
        first_mean = np.zeros(int(codes.max()) + 1 if len(codes) else 1)
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else codes
        first_mean[codes[starts]] = tiles["sum"][starts] / tiles["n"][starts]
        shift = tiles["sum"] - tiles["n"] * first_mean[codes]
        cd = np.concatenate(([0.0], np.cumsum(shift)))
        cq = np.concatenate(([0.0], np.cumsum(tiles["m2"] + shift * shift / tiles["n"])))
    # rows sorted by (entity, time): searchsorted runs much faster on sorted needles
    perm = np.lexsort((row_ms, row_codes))
    row_codes, row_ms = row_codes[perm], row_ms[perm]
    ok_row = row_codes >= 0
    rc = np.where(ok_row, row_codes, 0)
    e = np.searchsorted(key, rc * width + np.clip(row_ms - base, -1, width - 2), "right")
    # the unit after the last one counted starts at or before t: a whole tile holding t
    nxt = np.minimum(e, max(len(lt) - 1, 0))
    if len(lt):
        ok_row &= ~((e < len(lt)) & (codes[nxt] == rc) & (tiles["ft"][nxt] <= row_ms))
    ranges: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for _, _, w in feats:
        if w not in ranges:
            lo, _ = bounds(row_ms, w, wf.hop_ms)
            ok = ok_row & (lo >= cuts[rc]) if len(cuts) else ok_row.copy()
            rel_lo = np.clip(lo * wf.hop_ms - base, -1, width - 2)
            s = np.searchsorted(key, rc * width + rel_lo, "left")
            ranges[w] = (np.minimum(s, e), ok)
    longest = max((int((e - s).max()) for s, _ in ranges.values() if len(s)), default=1)
    extremes = {
        agg: _RangeExtreme(tiles[agg], np.minimum if agg == "min" else np.maximum, longest)
        for agg in {a for _, a, _ in feats} & {"min", "max"}
        if len(lt)
    }
    out: dict[str, np.ndarray] = {}
    for name, agg, w in feats:
        s, ok = ranges[w]
        cnt = cn[e] - cn[s]
        some = cnt > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            if agg == "count":
                v = cnt
            elif agg == "sum":
                v = cs[e] - cs[s]
            elif agg == "avg":
                v = np.where(some, (cs[e] - cs[s]) / cnt, np.nan)
            elif agg in ("min", "max"):
                v = np.full(n_rows, np.nan)
                if some.any():
                    v[some] = extremes[agg].query(s[some], e[some])
            elif agg in ("std", "var"):
                d = cd[e] - cd[s]
                var = np.where(cnt > 1, np.maximum(cq[e] - cq[s] - d * d / cnt, 0.0), np.nan)
                var = var / np.where(cnt > 1, cnt - 1, 1)
                v = np.sqrt(var) if agg == "std" else var
            else:  # first / last: the first unit's first value, the last unit's last
                v = np.full(n_rows, np.nan)
                idx = s[some] if agg == "first" else e[some] - 1
                v[some] = tiles[agg][idx]
        back = np.empty(n_rows)
        back[perm] = np.where(ok, v, np.nan)
        out[name] = back
    return out


def decoded(
    wf: WindowFeatures,
    ent: str,
    reply: Any,
    raw_reply: Any,
    span: tuple[int, int] | None,
    head: str | None,
) -> EntityTiles:
    """One entity's read units from the replies of its tile hash (HGETALL, or HMGET of
    range_fields(span)) and of its event hash (HGET of bucket ``head``, or HGETALL when
    ``head`` is None); a key that is not well formed is named (every reply was read
    already, so the connection stays usable)."""
    for r in (reply, raw_reply):
        if isinstance(r, redis.ResponseError):
            raise BackendError(f"window features {wf.name!r}, entity {ent!r}: read failed: {r}")
    try:
        if head is None:
            raw = events_of(raw_reply)
        else:
            raw = {} if raw_reply is None else {int(head): raw_reply}
        if span is None:
            return decode(reply, raw, wf.hop_ms)
        return decode_range(reply, span[0], raw, wf.hop_ms)
    except (TypeError, ValueError) as exc:
        raise BackendError(
            f"window features {wf.name!r}, entity {ent!r}: the tile hash is malformed ({exc})"
        ) from None
