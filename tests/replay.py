"""The replay consistency check of issue 14, shared by tests/test_replay.py (small, bounded)
and bench/replay_consistency.py (bigger): writes and window events over many entities with late,
out-of-order and duplicate arrivals, ties on event time and ttl boundaries; at sampled
times t it records what `get` served live, then compares `get(as_of=t)`, `training_frame`
at t from Redis and from the offline log, and a brute-force pandas reference; for the
view, for a derived view of it (written with the source's event time) and for window
features.

Semantics compared (Feast's): a read at t takes the version with the greatest (event time,
version id) at or before t, within the ttl; window values count the events at or before t
of the tiles starting in [round_down(t - W, hop), t]. What `get` served live at t is what
was known at t: it equals the frames with ``filter_by_written_at=True`` and the reference
over what was written by t. Reads after the replay also see late arrivals (event time <= t,
written after t): they equal the reference over everything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import redis

from redfeat import FeatureStore, FeatureView, Field, WindowFeatures
from redfeat import types as t
from redfeat.transforms import min_max

TTL_S = 600
HOP_MS = 60_000
WINDOWS = {"5m": 300_000, "30m": 1_800_000}
VIEW = FeatureView("p", entity="user", fields=[Field("x", t.Int)], ttl=f"{TTL_S}s", history=10**6)
# derived from p on every write: nx = x / 1000, same entity, event time and ttl
DERIVED = FeatureView(
    "d",
    entity="user",
    source="p",
    transforms=[min_max("x", 0, 1000, clip=False, output="nx")],
    ttl=f"{TTL_S}s",
    history=10**6,
)
WIN = WindowFeatures(
    "w", entity="user", source="v", aggs=["count", "sum", "last"], windows=list(WINDOWS), hop="1m"
)


@dataclass
class Replay:
    writes: list[tuple[str, int, int, int]] = field(default_factory=list)  # ent, et_us, id, x
    events: list[tuple[str, int, float, int]] = field(default_factory=list)  # ent, ms, v, n
    # (t in us, what was written and recorded by then, live view, derived and window values)
    samples: list[tuple[int, int, int, dict[str, Any], dict[str, Any], dict[str, Any]]] = field(
        default_factory=list
    )
    # per-entity indexes of writes and events, built for the lengths they were built at
    index_w: tuple[int, dict[str, list[tuple[int, int, int, int]]]] = (-1, {})
    index_e: tuple[int, dict[str, list[tuple[int, int, float, int]]]] = (-1, {})


def run(store: FeatureStore, entities: int, ops: int, samples: int, seed: int) -> Replay:
    """Writes and records ``ops`` operations over ``entities`` entities, sampling live reads
    ``samples`` times along the way. Event times trail the clock by 1 s to 20 min (late),
    out of order; some writes repeat (a retry: no new version) or tie on event time."""
    rng = np.random.default_rng(seed)
    ents = [f"u{i}" for i in range(entities)]
    rp = Replay()
    sample_at = set(rng.choice(ops, size=samples, replace=False).tolist())
    for i in range(ops):
        now_ms = time.time_ns() // 1_000_000
        ent = ents[int(rng.integers(entities))]
        kind = rng.random()
        if kind < 0.45:  # a view write
            lag_ms = int(rng.choice([1_000, 5_000, 60_000, 20 * 60_000]))
            et_ms = now_ms - int(rng.integers(1_000, lag_ms + 1))
            x = i
            if rp.writes and rng.random() < 0.15:  # a tie on event time, or a retry
                e0, et0, _, x0 = rp.writes[int(rng.integers(len(rp.writes)))]
                ent, et_ms = e0, et0 // 1000
                x = x0 if rng.random() < 0.5 else i
            v = store.write("p", ent, {"x": x}, event_time=et_ms / 1000)
            rp.writes.append((ent, et_ms * 1000, v.id, x))
        else:  # a window event (a few duplicated: counted twice, like the tiles do)
            ms = now_ms - int(rng.integers(1_000, int(rng.choice([5_000, 600_000, 1_200_000]))))
            val = float(rng.integers(-50, 50))
            for _ in range(2 if rng.random() < 0.05 else 1):
                store.record("w", ent, val, ts=ms / 1000)
                rp.events.append((ent, ms, val, len(rp.events)))
        if i in sample_at:
            time.sleep(0.002)  # the sample's time is after every write and record so far
            t_us = time.time_ns() // 1000
            views = dict(zip(ents, store.get_many("p", ents), strict=True))
            derived = dict(zip(ents, store.get_many("d", ents), strict=True))
            wins = dict(zip(ents, store.get_many("w", ents, as_of=t_us / 1e6), strict=True))
            rp.samples.append((t_us, len(rp.writes), len(rp.events), views, derived, wins))
            time.sleep(0.002)
    return rp


def _writes_of(rp: Replay, ent: str) -> list[tuple[int, int, int, int]]:
    """(index in rp.writes, event time, id, x) of one entity's writes: the references scan
    one entity's, not every write (quadratic at the bench's sizes)."""
    if rp.index_w[0] != len(rp.writes):
        rp.index_w = (len(rp.writes), {})
        for i, (e, et, vid, x) in enumerate(rp.writes):
            rp.index_w[1].setdefault(e, []).append((i, et, vid, x))
    return rp.index_w[1].get(ent, [])


def _events_of(rp: Replay, ent: str) -> list[tuple[int, int, float, int]]:
    """(index in rp.events, ms, value, n) of one entity's window events."""
    if rp.index_e[0] != len(rp.events):
        rp.index_e = (len(rp.events), {})
        for i, (e, ms, v, n) in enumerate(rp.events):
            rp.index_e[1].setdefault(e, []).append((i, ms, v, n))
    return rp.index_e[1].get(ent, [])


def ref_view(rp: Replay, upto: int | None, ent: str, t_us: int, by_written: bool) -> Any:
    """The version's x a read at t takes (None: none, or older than the ttl)."""
    best = None
    end = len(rp.writes) if upto is None else upto
    for i, et, vid, x in _writes_of(rp, ent):
        if i >= end or et > t_us or (by_written and vid > t_us):
            continue
        if best is None or (et, vid) > (best[0], best[1]):
            best = (et, vid, x)
    if best is None or best[0] < t_us - TTL_S * 1_000_000:
        return None
    return best[2]


def ref_derived(rp: Replay, upto: int | None, ent: str, t_us: int, by_written: bool) -> Any:
    """The derived view's nx at t: the source's x at t, divided by 1000."""
    x = ref_view(rp, upto, ent, t_us, by_written)
    return None if x is None else x / 1000


def ref_window(rp: Replay, upto: int | None, ent: str, t_ms: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, w in WINDOWS.items():
        lo = (t_ms - w) // HOP_MS * HOP_MS
        end = len(rp.events) if upto is None else upto
        sel = [(ms, n, v) for i, ms, v, n in _events_of(rp, ent) if i < end and lo <= ms <= t_ms]
        sel.sort()
        out[f"v_count_{label}"] = len(sel)
        out[f"v_sum_{label}"] = float(sum(v for _, _, v in sel))
        out[f"v_last_{label}"] = sel[-1][2] if sel else None
    return out


def _same(a: Any, b: Any) -> bool:
    if a is None or (isinstance(a, float) and np.isnan(a)) or a is pd.NA:
        return b is None or (isinstance(b, float) and np.isnan(b)) or b is pd.NA
    if b is None or (isinstance(b, float) and np.isnan(b)) or b is pd.NA:
        return False
    return bool(np.isclose(float(a), float(b), rtol=0, atol=1e-9))


def check(
    rp: Replay, redis_store: FeatureStore, log_store: FeatureStore, ttl_edges: int = 50
) -> dict[str, Any]:
    """Counts of comparisons and mismatches of every read against the references."""
    ents = sorted({e for e, *_ in rp.writes} | {e for e, *_ in rp.events})
    feats = [f"w:{f}" for f in WIN.features]
    n: dict[str, Any] = {"compared": 0, "mismatches": 0}
    bad: list[Any] = []

    def cmp(what: str, got: Any, want: Any) -> None:
        n["compared"] += 1
        if not _same(got, want):
            n["mismatches"] += 1
            if len(bad) < 10:
                bad.append((what, got, want))

    rows = []
    for t_us, nw, ne, views, derived, wins in rp.samples:
        for e in ents:
            live_v = None if views[e] is None else views[e]["x"]
            cmp(f"live view {e}@{t_us}", live_v, ref_view(rp, nw, e, t_us, False))
            live_d = None if derived[e] is None else derived[e]["nx"]
            cmp(f"live derived {e}@{t_us}", live_d, ref_derived(rp, nw, e, t_us, False))
            live_w = ref_window(rp, ne, e, t_us // 1000)
            for f, want in live_w.items():
                cmp(f"live window {e}@{t_us} {f}", wins[e][f], want)
            rows.append((e, t_us))
    # ttl boundaries: exactly at event time + ttl (inclusive) and one microsecond after
    for e, et, _, _ in rp.writes[:ttl_edges]:
        rows += [(e, et + TTL_S * 1_000_000), (e, et + TTL_S * 1_000_000 + 1)]
    df = pd.DataFrame(
        {
            "entity_id": [e for e, _ in rows],
            "event_time": pd.to_datetime([u for _, u in rows], unit="us", utc=True),
        }
    )
    for store, name in ((redis_store, "redis"), (log_store, "log")):
        for by_written in (False, True):
            frame = store.training_frame(df, ["p:x", "d:nx"], filter_by_written_at=by_written)
            for (e, t_us), got, got_d in zip(
                rows, frame["x"].tolist(), frame["nx"].tolist(), strict=True
            ):
                cmp(
                    f"{name} frame p {e}@{t_us} w={by_written}",
                    got,
                    ref_view(rp, None, e, t_us, by_written),
                )
                cmp(
                    f"{name} frame d {e}@{t_us} w={by_written}",
                    got_d,
                    ref_derived(rp, None, e, t_us, by_written),
                )
        wf = store.training_frame(df, feats)
        for i, (e, t_us) in enumerate(rows):
            want = ref_window(rp, None, e, t_us // 1000)
            for f, w in want.items():
                cmp(f"{name} frame w {e}@{t_us} {f}", wf[f].iloc[i], w)
    for t_us, *_ in rp.samples[:: max(1, len(rp.samples) // 10)]:
        got_v = redis_store.get_many("p", ents, as_of=t_us / 1e6)
        got_d = redis_store.get_many("d", ents, as_of=t_us / 1e6)
        got_w = redis_store.get_many("w", ents, as_of=t_us / 1e6)
        for e, gv, gd, gw in zip(ents, got_v, got_d, got_w, strict=True):
            cmp(
                f"as_of view {e}@{t_us}",
                None if gv is None else gv["x"],
                ref_view(rp, None, e, t_us, False),
            )
            cmp(
                f"as_of derived {e}@{t_us}",
                None if gd is None else gd["nx"],
                ref_derived(rp, None, e, t_us, False),
            )
            for f, want in ref_window(rp, None, e, t_us // 1000).items():
                cmp(f"as_of window {e}@{t_us} {f}", None if gw is None else gw[f], want)
    n["examples"] = bad
    return n


def stores(client: redis.Redis, project: str, log_dir: Path) -> tuple[FeatureStore, FeatureStore]:
    """(the store that reads Redis, the one whose frames read the offline log)."""
    log_store = FeatureStore(client=client, project=project, offline_dir=log_dir)
    log_store.apply(VIEW, DERIVED, WIN)
    return FeatureStore(client=client, project=project), log_store
