"""History chunks (issue 18): one string per entity holding its kept versions.

A property test drives random sequences of writes (out of order, duplicates, ties on event
time, retries, batches, backfills with written_at) into views with count and duration
history, with and without a ttl, and compares history(), as-of reads and training frames
with a reference model of the write step's rules. Then: data written in the layout before
chunks (a sorted set) reads the same and is converted by the first write touching it.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import pandas as pd
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redfeat import FeatureStore, FeatureView, Field, Status
from redfeat import types as t
from redfeat.core.time import to_us
from redfeat.online.history import (
    chunk_versions,
    decode_chunks,
    encode_chunk,
    zset_chunk,
)

S = 1_000_000  # microseconds in a second
NOW_S = int(time.time())
DEAD_BASE_S = int(datetime(2001, 1, 1, tzinfo=UTC).timestamp())  # older than the ttl "1h"
WRITTEN_AT_S = int(datetime(2020, 1, 1, tzinfo=UTC).timestamp())  # backfills: before any id


@dataclass(frozen=True)
class Config:
    history: int | str
    ttl: str | None = None
    base_s: int = NOW_S - 86_400  # alive under a 30-day ttl

    @property
    def mode(self) -> str:
        if isinstance(self.history, str):
            return "d"
        return "c" if self.history else "n"

    @property
    def ttl_us(self) -> int | None:
        return None if self.ttl is None else {"30d": 30 * 86_400 * S, "1h": 3_600 * S}[self.ttl]


CONFIGS = {
    "n": Config(0),
    "c1": Config(1),
    "c3": Config(3),
    "d3": Config("3s"),
    "c3a": Config(3, "30d"),
    "d3a": Config("3s", "30d"),
    "c3x": Config(3, "1h", DEAD_BASE_S),  # every latest key expired already at its write
    "d3x": Config("3s", "1h", DEAD_BASE_S),
}


@dataclass
class V:
    et: int
    id: int
    x: int


@dataclass
class Model:
    """The write step's rules (lua.py WRITE) over plain lists: per entity the latest key's
    version (None once expired) and history, newest first (event time, then id)."""

    cfg: Config
    latest: dict[str, V | None] = field(default_factory=dict)
    hist: dict[str, list[V]] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(10**16))

    def write(self, ent: str, et: int, x: int, want: int | None = None, vid: int = 0) -> int:
        """One row; ``want``: a backfill's written_at (its id is ``vid``). The status."""
        cfg, keeps = self.cfg, self.cfg.mode != "n"
        cur = self.latest.get(ent)
        h = self.hist.setdefault(ent, [])
        newest = cur.et if cur else (h[0].et if keeps and cfg.ttl and h else None)
        if cur and cur.et == et and cur.x == x:
            return 2
        again = want is not None or not (cur and et == cur.et)
        if keeps and newest is not None and et <= newest and again:
            for v in h:
                if v.et == et and v.x == x and (want is None or want <= v.id < want + 256):
                    return 2
        new = V(et, vid if want is not None else next(self.ids), x)
        if newest is None or et >= newest:
            status = 0
            dead = cfg.ttl is not None and cfg.base_s == DEAD_BASE_S
            self.latest[ent] = None if dead else new
            if dead and not keeps:
                return 4
        elif keeps:
            status = 1
        else:
            return 4
        if not keeps:
            return status
        if cfg.ttl:
            _insert(h, new)
            self._trim(h, 0, h[0].et)
        elif cur:
            if status == 1:
                _insert(h, new)
            elif not h or h[0].id != cur.id:
                _insert(h, cur)
            self._trim(h, 1, et if status == 0 else cur.et)
        return status

    def _trim(self, h: list[V], besides: int, newest: int) -> None:
        if isinstance(self.cfg.history, int):
            del h[max(0, self.cfg.history - besides) :]
        else:
            cutoff = newest - int(self.cfg.history[:-1]) * S
            h[:] = [v for v in h if v.et >= cutoff]

    def versions(self, ent: str) -> list[tuple[int, int]]:
        """What history() reads: the latest, then history without it, newest first."""
        cur, h = self.latest.get(ent), self.hist.get(ent, [])
        out = [cur] if cur else []
        out += [v for v in h if not (cur and v.id == cur.id)]
        return [(v.et, v.x) for v in out]

    def as_of(self, ent: str, at: int) -> int | None:
        """A read as of ``at``: the latest if it had happened by then, else history's newest
        by then; none past the ttl."""
        cur, h = self.latest.get(ent), self.hist.get(ent, [])
        pick = cur if cur and cur.et <= at else next((v for v in h if v.et <= at), None)
        if pick is None or (self.cfg.ttl_us is not None and pick.et < at - self.cfg.ttl_us):
            return None
        return pick.x

    def frame(self, ent: str, at: int) -> int | None:
        """A training frame's value at ``at``: the greatest (event time, id) by then."""
        cur, h = self.latest.get(ent), self.hist.get(ent, [])
        by_then = [v for v in [*([cur] if cur else []), *h] if v.et <= at]
        pick = max(by_then, key=lambda v: (v.et, v.id), default=None)
        if pick is None or (self.cfg.ttl_us is not None and pick.et < at - self.cfg.ttl_us):
            return None
        return pick.x


def _insert(h: list[V], v: V) -> None:
    k = next((i for i, o in enumerate(h) if (o.et, o.id) <= (v.et, v.id)), len(h))
    h.insert(k, v)


Row = tuple[int, int, int]  # entity index, event time offset, x

_rows = st.lists(st.tuples(st.integers(0, 1), st.integers(0, 9), st.integers(0, 2)), min_size=1)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), _rows.map(lambda r: r[:1])),
        st.tuples(st.just("many"), st.lists(_rows.map(lambda r: r[0]), min_size=1, max_size=4)),
        st.tuples(st.just("backfill"), st.lists(_rows.map(lambda r: r[0]), max_size=3, min_size=1)),
        st.tuples(st.just("retry"), st.integers(0, 50)),
    ),
    min_size=1,
    max_size=14,
)
_example = itertools.count()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=st.sampled_from(sorted(CONFIGS)), ops=OPS)
def test_writes_read_back_as_the_reference_model_says(
    store: FeatureStore, name: str, ops: list[tuple[str, Any]]
) -> None:
    cfg = CONFIGS[name]
    store.apply(
        FeatureView(
            name, entity="user", fields=[Field("x", t.Int)], history=cfg.history, ttl=cfg.ttl
        )
    )
    n = next(_example)
    ents = [f"e{n}a", f"e{n}:b"]
    model = Model(cfg)
    done: list[tuple[str, list[Row], int]] = []  # (kind, rows, written_at_s of a backfill)
    base = cfg.base_s * S
    for i, (kind, arg) in enumerate(ops):
        rows: list[Row]
        if kind == "retry":
            if not done:
                continue
            kind, rows, wa = done[arg % len(done)]
        else:
            rows, wa = arg, WRITTEN_AT_S + i
        done.append((kind, rows, wa))
        if kind == "write":
            ((e, off, x),) = rows
            store.write(name, ents[e], {"x": x}, event_time=(base + off * S) / S)
            model.write(ents[e], base + off * S, x)
        elif kind == "many":
            report = store.write_many(
                name,
                [{"entity_id": ents[e], "x": x, "et": base / S + off} for e, off, x in rows],
                event_time_column="et",
            )
            # a row followed by one of the same entity and event time in the call is
            # superseded at once (a duplicate): the last one is written
            last = {(e, off): k for k, (e, off, _) in enumerate(rows)}
            got = [2] * (len(rows) - len(last))
            got += [model.write(ents[e], base + off * S, x) for k, (e, off, x) in enumerate(rows)
                    if last[(e, off)] == k]  # fmt: skip
            assert (report.written, report.late, report.duplicates, report.dropped) == (
                got.count(0) + got.count(1),
                got.count(1),
                got.count(2),
                got.count(4),
            ), (rows, report, got)
        else:  # a backfill: half-second event times, so no tie with a plain write's
            frame = pd.DataFrame(
                {
                    "entity_id": [ents[e] for e, _, _ in rows],
                    "event_time": [(base + off * S + S // 2) / S for _, off, _ in rows],
                    "x": [x for _, _, x in rows],
                    "written_at": [wa] * len(rows),
                }
            )
            store.import_frame(name, frame, written_at_column="written_at")
            used: set[tuple[str, int]] = set()
            for e, off, x in rows:
                vid = wa * S
                while (ents[e], vid) in used:
                    vid += 1
                status = model.write(ents[e], base + off * S + S // 2, x, want=wa * S, vid=vid)
                if status != 2:
                    used.add((ents[e], vid))

    for ent in ents:
        kept = [(to_us(v.event_time), v.values["x"]) for v in store.history(name, ent, limit=100)]
        assert kept == model.versions(ent), (ent, ops)
    probes = sorted(
        {base + d for off in range(10) for d in (off * S - 1, off * S, off * S + S // 2)}
        | ({base + 9 * S + cfg.ttl_us + d for d in (0, 1)} if cfg.ttl_us else set())
    )
    for at in probes:
        got_as_of = [
            None if v is None else v["x"] for v in store.get_many(name, ents, as_of=at / S)
        ]
        assert got_as_of == [model.as_of(e, at) for e in ents], (at, ops)
    df = pd.DataFrame(
        {
            "entity_id": [e for e in ents for _ in probes],
            "event_time": pd.to_datetime([at for _ in ents for at in probes], unit="us", utc=True),
        }
    )
    frame = store.training_frame(df, [f"{name}:x"])
    want = [model.frame(e, at) for e in ents for at in probes]
    got_frame = [None if pd.isna(v) else int(v) for v in frame["x"]]
    assert got_frame == want, ops


# -- the codec, apart from the server --------------------------------------------------


@given(
    st.lists(
        st.tuples(
            st.integers(-2_208_988_800 * S, 7_258_118_400 * S - 1),
            st.integers(0, 7_258_118_400 * S),
            st.binary(max_size=300),
        ),
        max_size=12,
    )
)
def test_the_codec_round_trips_any_versions(versions: list[tuple[int, int, bytes]]) -> None:
    versions.sort(key=lambda v: (v[0], v[1]), reverse=True)
    blob = encode_chunk(versions)
    assert chunk_versions(blob) == versions
    many = decode_chunks([blob, None, blob])
    assert many.counts.tolist() == [len(versions), 0, len(versions)]
    assert many.et.tolist() == [v[0] for v in versions] * 2
    assert many.ids.tolist() == [v[1] for v in versions] * 2
    assert [many.pays[a:b] for a, b in itertools.pairwise(many.start.tolist())] == [
        v[2] for v in versions
    ] * 2


# -- data written before chunks -------------------------------------------------------------


def _to_zset(client: redis.Redis, hkey: str, latest_too: bytes | None = None) -> None:
    """Rewrite a chunk as the sorted set of the layout before chunks (``latest_too``: the
    latest value, held in history too as even older data did)."""
    versions = chunk_versions(client.get(hkey))  # type: ignore[arg-type]
    if latest_too is not None:
        et, vid = int.from_bytes(latest_too[:8], "big"), int.from_bytes(latest_too[8:16], "big")
        versions.insert(0, (et, vid, latest_too[16:]))
    client.delete(hkey)
    client.zadd(hkey, {b"\xcf" + vid.to_bytes(8, "big") + p: et for et, vid, p in versions})


def _snapshot(store: FeatureStore, view: str, ent: str) -> tuple[Any, ...]:
    hist = [(v.id, v.event_time, v.values) for v in store.history(view, ent, limit=100)]
    as_of = [store.get(view, ent, as_of=s) for s in (1000.5, 1001.5, 1002.5, 1003.5, 1010)]
    frame = store.training_frame(
        pd.DataFrame(
            {"entity_id": [ent] * 3, "event_time": pd.to_datetime([1000.5, 1002.5, 1010], unit="s")}
        ),
        [f"{view}:x"],
    )
    export = store.versions(view, [ent]).to_pydict()
    kept = store.entity_stats(view, ent).versions
    return hist, as_of, frame["x"].tolist(), export, kept


@pytest.mark.parametrize("latest_too", [False, True])
def test_a_sorted_set_history_reads_the_same_and_the_next_write_converts_it(
    store: FeatureStore, client: redis.Redis, latest_too: bool
) -> None:
    store.apply(FeatureView("old", entity="user", fields=[Field("x", t.Int)], history=5))
    for k in range(4):
        store.write("old", "u1", {"x": k}, event_time=1000 + k)
    store.write("old", "u2", {"x": 7}, event_time=1000)  # untouched: no history key
    hkey = store.keys.history("old", "u1")
    before = _snapshot(store, "old", "u1")
    latest = cast(bytes, client.get(store.keys.latest("old", "u1")))
    _to_zset(client, hkey, latest if latest_too else None)
    assert client.type(hkey) == b"zset"
    assert _snapshot(store, "old", "u1") == before
    assert store.training_frame(
        pd.DataFrame(
            {"entity_id": ["u2", "u1"], "event_time": pd.to_datetime([1005] * 2, unit="s")}
        ),
        ["old:x"],
    )["x"].tolist() == [7, 3]
    # a late write lands in order, and the key is a chunk from then on
    store.write("old", "u1", {"x": 9}, event_time=1001.5)
    assert client.type(hkey) == b"string"
    got = [(v.event_time.timestamp(), v.values["x"]) for v in store.history("old", "u1")]
    assert got == [(1003, 3), (1002, 2), (1001.5, 9), (1001, 1), (1000, 0)]


def test_delete_version_and_a_retry_convert_a_sorted_set_too(
    store: FeatureStore, client: redis.Redis
) -> None:
    store.apply(FeatureView("old", entity="user", fields=[Field("x", t.Int)], history=5))
    ids = [
        store.write("old", e, {"x": k}, event_time=1000 + k).id
        for e in ("a", "b")
        for k in range(3)
    ]
    for e in ("a", "b"):
        _to_zset(client, store.keys.history("old", e))
    assert store.delete_version("old", "a", ids[1])
    assert client.type(store.keys.history("old", "a")) == b"string"
    assert [v.values["x"] for v in store.history("old", "a")] == [2, 0]
    again = store.write("old", "b", {"x": 1}, event_time=1001)  # a retry of a kept version
    assert again.id == ids[4]
    assert client.type(store.keys.history("old", "b")) == b"string"
    assert [v.values["x"] for v in store.history("old", "b")] == [2, 1, 0]


def test_an_expired_latest_reads_its_event_time_from_a_sorted_set(
    store: FeatureStore, client: redis.Redis
) -> None:
    store.apply(FeatureView("ttl", entity="user", fields=[Field("x", t.Int)], history=3, ttl="1h"))
    for k in range(2):
        store.write("ttl", "u", {"x": k}, event_time=DEAD_BASE_S + k)  # expired at once
    (rec,) = store.get_many("ttl", ["u"], with_meta=True)
    assert rec.status is Status.EXPIRED and rec.event_time.timestamp() == DEAD_BASE_S + 1
    hkey = store.keys.history("ttl", "u")
    _to_zset(client, hkey)
    (again,) = store.get_many("ttl", ["u"], with_meta=True)
    assert again == rec
    # the expired latest is history's newest: an older write stays late, and converts it
    assert store.write("ttl", "u", {"x": 5}, event_time=DEAD_BASE_S + 0.5).id
    assert client.type(hkey) == b"string"
    assert [v.values["x"] for v in store.history("ttl", "u")] == [1, 5, 0]


def test_zset_rows_become_the_same_chunk() -> None:
    versions = [(3 * S, 30, b"\x91\x03"), (1 * S, 10, b"\x91\x01"), (1 * S, 5, b"\x91\x00")]
    rows = [(b"\xcf" + v.to_bytes(8, "big") + p, float(et)) for et, v, p in reversed(versions)]
    assert zset_chunk(rows) == encode_chunk(versions)
    assert zset_chunk([]) is None


def test_extreme_times_and_ids_stay_exact_through_the_script(store: FeatureStore) -> None:
    # Lua numbers are doubles: every delta must stay exact, the zigzag of an id delta too
    store.apply(FeatureView("far", entity="user", fields=[Field("x", t.Int)], history=10))
    lo = datetime(1900, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    hi = datetime(2199, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    early = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    mid = datetime(2000, 1, 1, tzinfo=UTC)
    rows = [
        (lo, hi, 1),
        (hi, early, 2),
        (lo, early.replace(second=1), 3),
        (mid, hi - (hi - lo) / 3, 4),
    ]
    frame = pd.DataFrame(
        {
            "entity_id": ["u"] * len(rows),
            "event_time": [r[0] for r in rows],
            "written_at": [r[1] for r in rows],
            "x": [r[2] for r in rows],
        }
    )
    store.import_frame("far", frame, written_at_column="written_at")
    store.write("far", "u", {"x": 5}, event_time=lo + (hi - lo) / 2)  # late: a walk and insert
    got = [(to_us(v.event_time), v.id, v.values["x"]) for v in store.history("far", "u")]
    assert {x: (et, vid) for et, vid, x in got if x != 5} == {
        x: (to_us(et), to_us(wa)) for et, wa, x in rows
    }
    assert got == sorted(got, reverse=True)  # event time, then id, newest first
    assert [x for _, _, x in got] == [2, 5, 4, 1, 3]


def test_wide_rows_and_long_histories(store: FeatureStore, client: redis.Redis) -> None:
    # payloads over 127 bytes (two-byte lengths) and heads over 127 versions or meta bytes
    wide = [Field(f"f{j}", t.Float) for j in range(20)]
    store.apply(FeatureView("wide", entity="user", fields=wide, history=5))
    store.apply(FeatureView("long", entity="user", fields=[Field("x", t.Int)], history=300))
    order = list(range(0, 40, 3)) + [4, 22, 38]  # in order, then late ones
    for k in order:
        store.write("wide", "u", {f"f{j}": k + j / 100 for j in range(20)}, event_time=1000 + k)
    got = [(v.event_time.timestamp(), v.values["f3"]) for v in store.history("wide", "u")]
    assert got == [(1000 + k, k + 0.03) for k in sorted(order, reverse=True)[:5]]
    ks = list(range(0, 400, 2)) + list(range(1, 120, 2))
    store.write_many("long", [{"entity_id": "u", "x": k, "et": 1000 + k} for k in ks[:150]],
                     event_time_column="et")  # fmt: skip
    for k in ks[150:]:
        store.write("long", "u", {"x": k}, event_time=1000 + k)
    got_x = [v.values["x"] for v in store.history("long", "u", limit=1000)]
    assert got_x == sorted(ks, reverse=True)[:300]
    assert len(client.get(store.keys.history("long", "u")) or b"") < 300 * 12
