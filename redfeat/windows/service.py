"""Window features as a service: definitions, record, record_many, reads at a time, and
the window columns of training frames. The facade (``store.record`` ...) delegates here."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import redis

from ..core.codec import READ, normalize_id
from ..core.conn import Script, pack, read_all
from ..core.context import Ctx
from ..core.keys import escape_id
from ..core.schema import Entity, FeatureView
from ..core.time import now_us, to_us
from ..errors import (
    BackendError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    backend_error,
    wrap_redis,
)
from ..online.scan import delete_view_data
from ..timeseries.tiles import MEM, WIRE_BYTES, one_tile, partials, to_wire
from . import spec as _w
from .rows import checked_events, events_table, finite, future_limit, refuse_future
from .spec import WindowFeatures

Definition = Entity | FeatureView | WindowFeatures
_RECORD = Script(_w.RECORD)  # not idempotent: it adds into tiles, never replayed
# definitions built from registry specs, reused while the registry holds the same spec object
_BUILT: dict[str, tuple[dict[str, Any], WindowFeatures]] = {}
READ_CHUNK = 2_000  # entities per read of a training frame
IN_FLIGHT = 512  # HGETALL sent per round trip


@dataclass(frozen=True, slots=True)
class RecordReport:
    """What record_many did: events taken, entities touched, late events dropped (older
    than the largest window + one hop before the entity's newest event)."""

    events: int
    entities: int
    dropped_late: int


@dataclass(frozen=True, slots=True)
class WindowWanted:
    """Outputs asked of one WindowFeatures: (output column, feature, agg, window ms)."""

    wf: WindowFeatures
    feats: list[tuple[str, str, str, int]]

    def by_feature(self) -> list[tuple[str, str, int]]:
        return [(f, a, m) for _, f, a, m in self.feats]


class Windows:
    """Window features of one store."""

    def __init__(self, ctx: Ctx, feed_cap: int = 100_000) -> None:
        self._ctx = ctx
        self.feed_cap = feed_cap  # events go to the window features' feed (offline log)
        self.client = ctx.client
        self.keys = ctx.keys
        self.registry = ctx.registry

    # -- definitions ----------------------------------------------------------------------

    def has(self, name: str) -> bool:
        """Whether ``name`` is window features (not a view)."""
        return name in self.registry.window_specs()

    def window(self, name: str) -> WindowFeatures:
        """The WindowFeatures definition ``name``."""
        if not isinstance(name, str):
            raise ConfigurationError(f"window features are named by a str, got {name!r:.60}")
        spec = self.registry.window_specs().get(name)
        hit = _BUILT.get(name)
        if spec is not None and hit is not None and hit[0] is spec:
            return hit[1]  # built from this very spec: reads skip from_spec
        if spec is None:
            self.registry.load()
            spec = self.registry.window_specs().get(name)
        if spec is None:
            known = sorted(self.registry.window_specs()) or "none yet"
            raise NotFoundError(
                f"window features {name!r} are not in the registry (known: {known}); "
                "define them with WindowFeatures(...) and store.apply(...)"
            )
        wf = WindowFeatures.from_spec(spec)
        _BUILT[name] = (spec, wf)
        return wf

    def window_features(self) -> list[WindowFeatures]:
        """Every WindowFeatures definition, by name (``views()`` lists only views)."""
        self.registry.load()
        specs = self.registry.window_specs()
        return [WindowFeatures.from_spec(specs[n]) for n in sorted(specs)]

    def split(
        self, objects: tuple[Definition, ...]
    ) -> tuple[tuple[Any, ...], list[WindowFeatures]]:
        """Window features out of an apply() call, names checked against views."""
        wins = [o for o in objects if isinstance(o, WindowFeatures)]
        rest = tuple(o for o in objects if not isinstance(o, WindowFeatures))
        if not wins and not self.registry.window_specs():
            return rest, wins
        self.registry.load()
        views = {v.name for v in self.registry.views()} | {
            o.name for o in rest if isinstance(o, FeatureView)
        }
        windows = set(self.registry.window_specs())
        for o in rest:
            if isinstance(o, FeatureView) and o.name in windows:
                raise ConflictError(
                    f"view {o.name!r}: that name is taken by window features; pick another"
                )
        names = [w.name for w in wins]
        for w in wins:
            if w.name in views:
                raise ConflictError(f"window features {w.name!r}: a view has that name")
            if names.count(w.name) > 1:
                raise ConfigurationError(f"apply() got window features {w.name!r} twice")
        known = {e.name for e in self.registry.entities()} | {
            o.name for o in rest if isinstance(o, Entity)
        }
        extra = tuple(Entity(e) for e in sorted({w.entity for w in wins} - known))
        return rest + extra, wins

    def apply(self, wins: list[WindowFeatures]) -> dict[str, str]:
        """Store window definitions (MULTI: the specs and the registry's change counter).
        The hop and the source cannot change under stored tiles."""
        out: dict[str, str] = {}
        specs = self.registry.window_specs()
        updates: dict[str, bytes] = {}
        for w in wins:
            old = specs.get(w.name)
            if old is not None and old == w.spec():
                out[w.name] = "unchanged"
                continue
            if old is not None and (old["hop_ms"], old["source"]) != (w.hop_ms, w.source):
                raise ConflictError(
                    f"window features {w.name!r}: the hop or source changes, which stored tiles "
                    "cannot follow; store.delete_window(name) first, then apply and record again"
                )
            updates["window:" + w.name] = msgspec.json.encode(w.spec())
            out[w.name] = "created" if old is None else "updated"
        if updates:
            with wrap_redis("cannot write the registry"):
                pipe = self.client.pipeline(transaction=True)
                pipe.hset(self.keys.registry, mapping=updates)  # type: ignore[arg-type]
                pipe.hincrby(self.keys.registry, "gen", 1)
                pipe.execute()
            self.registry.load()
        return out

    def delete(self, name: str, *, keep_definition: bool = False) -> int:
        """Remove every tile of window features ``name`` (SCAN batches) and, unless asked,
        the definition. Returns the number of keys removed."""
        self.window(name)
        removed = delete_view_data(self._ctx, name)
        with wrap_redis(f"window features {name!r}: deleting the feed failed"):
            for feed in self.keys.feeds(name):  # one by one: partitions span slots
                self.client.unlink(feed)
        if not keep_definition:
            with wrap_redis("cannot write the registry"):
                pipe = self.client.pipeline(transaction=True)
                pipe.hdel(self.keys.registry, "window:" + name)
                pipe.hincrby(self.keys.registry, "gen", 1)
                pipe.execute()
            self.registry.load()
        return removed

    # -- writes ---------------------------------------------------------------------------

    def record(self, name: str, entity_id: str | int, value: float, ts: Any = None) -> bool:
        """Add one event (``ts``: datetime or epoch seconds; None = now) to an entity's
        windows, atomically. False when it is older than the retention (not counted)."""
        wf = self.window(name)
        ent = normalize_id(name, entity_id)
        v = finite(name, ent, value)
        t = self._event_ms(wf, ent, ts)
        if t > future_limit(wf):
            refuse_future(wf, [ent], [t], [None], 1)
        # one event's tile packed directly: numpy costs more than the round trip here
        b = t // wf.hop_ms
        off = t - b * wf.hop_ms
        esc = escape_id(ent)
        keys = [
            self.keys.window_tiles(name, esc),
            self.keys.window_events(name, esc),
            self.keys.feed(name, self.keys.partition(esc)),
        ]
        args = [wf.span, b, b, self.feed_cap, esc, b, one_tile(v, off), _w.one_raw(v, off)]
        try:
            # stream() reads every reply before raising, and disconnects on anything else
            dropped = _RECORD.stream(self._ctx.direct.conn(keys[0]), [(keys, args)])[0]
        except (redis.RedisError, BackendError) as exc:
            raise backend_error(f"window features {name!r}, entity {ent!r}", exc) from exc
        return int(dropped) == 0

    def _event_ms(
        self, wf: WindowFeatures, ent: str, ts: Any, outcome: str = "nothing was recorded"
    ) -> int:
        if ts is None:
            return now_us() // 1000
        try:
            us = to_us(ts, what="ts")
        except ValueError as exc:
            raise ConfigurationError(
                f"window features {wf.name!r}, entity {ent!r}: {exc}; {outcome}"
            ) from None
        if us < 0:
            raise ConfigurationError(
                f"window features {wf.name!r}, entity {ent!r}: ts {ts!r} is before 1970; {outcome}"
            )
        return us // 1000

    def record_many(
        self,
        name: str,
        rows: Any,
        *,
        entity_column: str = "entity_id",
        value_column: str | None = None,
        event_time_column: str | None = "event_time",
        progress: Callable[[int, int], None] | None = None,
    ) -> RecordReport:
        """Add many events (list of dicts, pandas.DataFrame or pyarrow.Table; the value
        column defaults to the source's name, event_time_column=None means now). Partial
        tiles per (entity, hop) are built with numpy and merged by one atomic step per
        entity, streamed. Every row is checked first: a bad one raises and nothing is
        recorded. ``progress(events done, total)``."""
        wf = self.window(name)
        value_column = wf.source if value_column is None else value_column
        table = events_table(wf, rows, [entity_column, value_column, event_time_column])
        if table.num_rows == 0:
            return RecordReport(0, 0, 0)
        ids, ts, vs = checked_events(wf, table, entity_column, value_column, event_time_column)
        codes, uniques = pd.factorize(ids.to_numpy(zero_copy_only=False))
        return self._merge_events(wf, codes, np.asarray(uniques), ts, vs, progress)

    def _merge_events(
        self,
        wf: WindowFeatures,
        codes: np.ndarray,
        uniques: np.ndarray,
        ts: np.ndarray,
        vs: np.ndarray,
        progress: Callable[[int, int], None] | None,
    ) -> RecordReport:
        b = np.floor_divide(ts, wf.hop_ms)
        base = int(b.min())
        width = int(b.max()) - base + 1
        order = np.lexsort((ts, b, codes))
        group = codes[order].astype(np.int64) * width + (b[order] - base)
        tiles = partials(ts[order], vs[order], wf.hop_ms, group)
        tcode = tiles["b"] // width
        tiles["b"] = tiles["b"] % width + base  # back to bucket ids for the wire offsets
        wire = to_wire(tiles, wf.hop_ms).tobytes()
        w = WIRE_BYTES
        # the raw events of each tile, in the order partials() saw them (by time, stable)
        raw = np.empty(len(ts), _w.RAW)
        raw["o"] = ts[order] - b[order] * wf.hop_ms
        raw["v"] = vs[order]
        rb = raw.tobytes()
        edges = np.r_[0, np.flatnonzero(group[1:] != group[:-1]) + 1, len(ts)]
        at = (edges * _w.RAW.itemsize).tolist()
        # (bucket id, tile, raw events) triples, the argument list of every entity cut
        # from one list
        pairs: list[Any] = [None] * (3 * len(tiles))
        pairs[0::3] = tiles["b"].tolist()
        pairs[1::3] = [wire[i : i + w] for i in range(0, len(wire), w)]
        pairs[2::3] = [rb[at[i] : at[i + 1]] for i in range(len(tiles))]
        st = np.flatnonzero(np.r_[True, tcode[1:] != tcode[:-1]])
        ends = np.append(st[1:], len(tiles))
        events = np.cumsum(np.add.reduceat(tiles["n"], st)).astype(np.int64)
        total = len(ts)
        bs = tiles["b"].tolist()
        feed = self.keys.feed
        calls = (
            (
                [
                    self.keys.window_tiles(wf.name, esc := escape_id(str(uniques[tcode[a]]))),
                    self.keys.window_events(wf.name, esc),
                    feed(wf.name, self.keys.partition(esc)),
                ],
                [wf.span, bs[a], bs[z - 1], self.feed_cap, esc, *pairs[3 * a : 3 * z]],
            )
            for a, z in zip(st.tolist(), ends.tolist(), strict=True)
        )

        sizes = np.diff(events, prepend=0).tolist()  # events per call
        lock = threading.Lock()
        done = [0, 0]  # calls, events answered (calls of several nodes answer in parallel)

        def report(i: int) -> None:
            with lock:
                done[0] += 1
                done[1] += sizes[i]
                if progress is not None and (done[0] % 1000 == 0 or done[0] == len(st)):
                    progress(int(done[1]), total)

        listed = list(calls)

        def on_node(conn: Any, idx: list[int]) -> list[Any]:
            # not repeated after a redirection: RECORD adds into tiles (not idempotent)
            return _RECORD.stream(conn, [listed[i] for i in idx], lambda j, _r: report(idx[j]))

        try:
            replies = self._ctx.direct.routed(
                [c[0][0] for c in listed], on_node, retry=False, what="record_many"
            )
        except BackendError as exc:  # a timeout: the outcome is unknown
            raise backend_error(f"window features {wf.name!r}: record_many", exc) from exc
        except redis.RedisError as exc:
            raise BackendError(
                f"window features {wf.name!r}: record_many failed: {exc}; the other entities' "
                "events were recorded"
            ) from exc
        return RecordReport(total, len(st), sum(int(r) for r in replies))

    # -- reads ----------------------------------------------------------------------------

    def get_many(
        self,
        name: str,
        ids: Iterable[str | int],
        features: Sequence[str] | None,
        as_of: Any,
        with_meta: bool,
        *,
        strict: bool = False,
    ) -> list[Any]:
        """get / get_many of window features: dicts of output -> value at now or as_of.
        An entity whose windows need tiles retention dropped gets None (one such entity
        must not fail a batch); ``strict`` (get of one entity) raises instead."""
        if with_meta:
            raise ConfigurationError(
                f"window features {name!r}: with_meta is for views; window values have no "
                "version or event time"
            )
        wf = self.window(name)
        feats = wf.features if features is None else list(features)
        want = [(f, *wf.resolve(f)) for f in feats]
        ents = [normalize_id(name, e, i, outcome=READ) for i, e in enumerate(ids)]
        t = now_us() // 1000 if as_of is None else self._event_ms(wf, "<as_of>", as_of, READ)
        raw = self._read_tiles(wf, ents, _w.read_range(wf, t, [w for _, _, w in want]), t)
        out: list[Any] = []
        for ent, et in zip(ents, raw, strict=True):
            vals = _w.values_at(wf, et, t, want)
            if vals is None and strict:
                raise ConfigurationError(
                    f"window features {name!r}, entity {ent!r}: as_of {as_of!r} needs tiles "
                    "that retention dropped (it keeps the largest window + one hop back from "
                    "the entity's newest event), or cuts a tile recorded before raw events "
                    "were kept; ask for a later time"
                )
            out.append(vals)
        return out

    def _read_tiles(
        self,
        wf: WindowFeatures,
        ents: list[str],
        span: tuple[int, int] | None = None,
        t_ms: int | None = None,
    ) -> list[_w.EntityTiles]:
        """Every entity's tiles and raw events: for a read at one time ``t_ms`` the tiles
        (HGETALL, or HMGET of the buckets ``span`` = (lo, hi) and the retention mark) and
        the raw events of the tile holding t only (HGET); for training frames (``t_ms``
        None) every tile and every raw event. Sent IN_FLIGHT entities at a time on one
        connection per node (nodes in parallel on a cluster), parsed by numpy from the raw
        replies."""
        fields = [] if span is None else _w.range_fields(span)
        head = None if t_ms is None else str(t_ms // wf.hop_ms)
        escs = [escape_id(e) for e in ents]
        all_keys = [self.keys.window_tiles(wf.name, esc) for esc in escs]

        def on_node(conn: Any, idx: list[int]) -> list[tuple[Any, Any]]:
            return self._read_tiles_on(wf, conn, [escs[i] for i in idx], fields, head)

        raw = self._ctx.direct.routed(all_keys, on_node, what=f"window features {wf.name!r}")
        return [_w.decoded(wf, e, r[0], r[1], span, head) for e, r in zip(ents, raw, strict=True)]

    def _read_tiles_on(
        self,
        wf: WindowFeatures,
        conn: Any,
        escs: list[str],
        fields: list[str],
        head: str | None,
    ) -> list[tuple[Any, Any]]:
        raw: list[Any] = []
        try:
            pending = 0  # replies of the previous batch, read while the next one runs
            for lo in range(0, len(escs), IN_FLIGHT):
                packed: list[bytes] = []
                for esc in escs[lo : lo + IN_FLIGHT]:
                    k, r = (
                        self.keys.window_tiles(wf.name, esc),
                        self.keys.window_events(wf.name, esc),
                    )
                    packed.append(pack("HGETALL", k) if not fields else pack("HMGET", k, *fields))
                    packed.append(pack("HGETALL", r) if head is None else pack("HGET", r, head))
                conn.send_packed_command([b"".join(packed)])
                raw.extend(read_all(conn, pending))
                pending = len(packed)
            raw.extend(read_all(conn, pending))
        except redis.RedisError as exc:
            conn.disconnect()  # replies may be pending: never reuse it half read
            raise backend_error(f"window features {wf.name!r}: read failed", exc) from exc
        except BaseException:
            conn.disconnect()  # Ctrl-C or a failed send: the same, replies may be pending
            raise
        return [(raw[2 * i], raw[2 * i + 1]) for i in range(len(escs))]

    # -- mixing with views: get_features and training_frame -------------------------------

    def refs(
        self, features: Sequence[str], full_feature_names: bool
    ) -> tuple[list[str], list[WindowWanted]]:
        """Split "name:feature" references into views' and window features' ones."""
        if isinstance(features, str) or not features:
            raise ConfigurationError("features must be a non-empty list like ['view:feature', ...]")
        specs = self.registry.window_specs()
        rest: list[str] = []
        by: dict[str, list[tuple[str, str, str, int]]] = {}
        wfs: dict[str, WindowFeatures] = {}
        for ref in features:
            name, _, feat = str(ref).partition(":")
            if name not in specs:
                rest.append(ref)
                continue
            wf = wfs.setdefault(name, WindowFeatures.from_spec(specs[name]))
            out = f"{name}__{feat}" if full_feature_names else feat
            by.setdefault(name, []).append((out, feat, *wf.resolve(feat)))
        return rest, [WindowWanted(wfs[n], f) for n, f in by.items()]

    def frame_columns(
        self, join: pa.Table, wins: list[WindowWanted], entity: str | None
    ) -> dict[str, np.ndarray]:
        """Window columns for a training frame's join table (entity_id, __ts in us)."""
        out: dict[str, np.ndarray] = {}
        for ww in wins:
            if entity is not None and ww.wf.entity != entity:
                raise ConfigurationError(
                    f"a training frame reads features of one entity; window features "
                    f"{ww.wf.name!r} describe {ww.wf.entity!r}, the views {entity!r}"
                )
            out.update(self._columns(ww, join))
        return out

    def event_columns(
        self, ww: WindowWanted, join: pa.Table, events: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Window columns for a training frame's join table from raw events (entity ids,
        times in ms, values; sorted by entity, time and the order recorded: the offline
        log's), under the rules of reads at one time: every event at or before the row's
        time counts, the tail hopped. No retention: the log covers what it holds."""
        wf = ww.wf
        ev_ids, ev_ms, ev_vs = events
        row_ms = np.floor_divide(join["__ts"].to_numpy(zero_copy_only=False), 1000)
        ids = join["entity_id"].to_numpy(zero_copy_only=False)
        codes, uniques = pd.factorize(ids, use_na_sentinel=True)
        ev_codes = pd.Index(uniques).get_indexer(pd.Index(ev_ids)).astype(np.int64)
        keep = ev_codes >= 0
        units = np.empty(int(keep.sum()), MEM)
        v = ev_vs[keep]
        units["b"] = np.floor_divide(ev_ms[keep], wf.hop_ms)
        units["n"] = 1.0
        units["sum"] = units["min"] = units["max"] = units["first"] = units["last"] = v
        units["m2"] = 0.0
        units["ft"] = units["lt"] = ev_ms[keep]
        ucodes = ev_codes[keep]
        order = np.lexsort((units["lt"], ucodes))  # stable: ties keep the recorded order
        units, ucodes = units[order], ucodes[order]
        cuts = np.full(max(len(uniques), 1), np.iinfo(np.int64).min, np.int64)
        cols = _w.at_times(wf, units, ucodes, cuts, codes.astype(np.int64), row_ms, ww.by_feature())
        return {out: cols[f] for out, f, _, _ in ww.feats}

    def _columns(self, ww: WindowWanted, join: pa.Table) -> dict[str, np.ndarray]:
        wf = ww.wf
        ids = join["entity_id"]
        row_ms = np.floor_divide(join["__ts"].to_numpy(zero_copy_only=False), 1000)
        codes, uniques = pd.factorize(ids.to_numpy(zero_copy_only=False), use_na_sentinel=True)
        ents = [str(u) for u in uniques]
        parts: list[np.ndarray] = []
        tcodes: list[np.ndarray] = []
        cuts = np.full(max(len(ents), 1), np.iinfo(np.int64).min, np.int64)
        for lo in range(0, len(ents), READ_CHUNK):
            chunk = ents[lo : lo + READ_CHUNK]
            for j, et in enumerate(self._read_tiles(wf, chunk)):
                if et.cut is not None:
                    cuts[lo + j] = et.cut
                units = et.units(wf.hop_ms)
                parts.append(units)
                tcodes.append(np.full(len(units), lo + j, np.int64))
        tiles = np.concatenate(parts) if parts else np.zeros(0, MEM)
        tc = np.concatenate(tcodes) if tcodes else np.zeros(0, np.int64)
        cols = _w.at_times(wf, tiles, tc, cuts, codes.astype(np.int64), row_ms, ww.by_feature())
        return {out: cols[f] for out, f, _, _ in ww.feats}
