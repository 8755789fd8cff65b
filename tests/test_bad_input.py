"""Bad input, as a property (issue 17 item 8): whatever arguments the public verbs get, they
raise only ``RedfeatError`` subclasses, and a refused call writes no key.

The calls come from ``badinput.py``. The world lives in its own database (3) of the suite's
embedded server, so that a snapshot of its keys (SCAN + DUMP) costs one round trip or two;
it is rebuilt every ``RESET_EVERY`` examples so the keyspace stays small. Monitoring data
(the ``q`` family: refusal counters flushed in the background) is left out of the
snapshots: counting a refusal is what it is for.

The number of calls: ``REDFEAT_BAD_INPUT_EXAMPLES`` (default 10,000 over the test's parts,
drawn ``BATCH`` per example); ``deadline=None`` because the first call of a verb loads its
service (pandas, DuckDB).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from badinput import Call, calls, quality, reads, search, series, setup, writes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redfeat import FeatureStore, RedfeatError
from redfeat.core.embedded import ServerInfo
from redfeat.core.keys import Keys
from redfeat.online.events import Subscription

DB = 3
RESET_EVERY = 100  # examples (of BATCH calls each) between rebuilds of the world
BATCH = 5
TOTAL = int(os.environ.get("REDFEAT_BAD_INPUT_EXAMPLES", "10000"))
# "mixed" draws from every group, after the others have built indexes, series and caches,
# so that one verb's refusal meets another's state
PARTS = {
    "writes": 0.25,
    "reads": 0.2,
    "search": 0.1,
    "series": 0.2,
    "quality": 0.1,
    "mixed": 0.15,
}


def _examples(part: str) -> int:
    return max(50, int(TOTAL * PARTS[part]))


# Digests of what each key holds, by content: DUMP is no good (a hash's field order
# changes when the server rehashes it, with no write at all).
_SNAPSHOT = r"""
local function flat(t, out)
  for _, x in ipairs(t) do
    if type(x) == 'table' then flat(x, out) else out[#out + 1] = tostring(x) end
  end
  return out
end
local out, cursor = {}, '0'
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = r[1]
  for _, k in ipairs(r[2]) do
    local kind = redis.call('TYPE', k)['ok']
    local parts = {}
    if kind == 'string' then
      parts = {redis.call('GET', k)}
    elseif kind == 'hash' then
      local h = redis.call('HGETALL', k)
      local pairs_ = {}
      for i = 1, #h, 2 do pairs_[#pairs_ + 1] = h[i] .. '\0' .. h[i + 1] end
      table.sort(pairs_)
      parts = pairs_
    elseif kind == 'set' then
      parts = redis.call('SMEMBERS', k)
      table.sort(parts)
    elseif kind == 'zset' then
      parts = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
    elseif kind == 'list' then
      parts = redis.call('LRANGE', k, 0, -1)
    elseif kind == 'stream' then
      parts = flat(redis.call('XRANGE', k, '-', '+'), {})
    end
    out[#out + 1] = k
    out[#out + 1] = redis.sha1hex(kind .. '\1' .. table.concat(parts, '\1'))
  end
until cursor == '0'
return out
"""


class World:
    """One store over the test database, rebuilt now and then."""

    def __init__(self, info: ServerInfo) -> None:
        self.info = info
        self.client: redis.Redis = info.client(db=DB)
        self.store: FeatureStore | None = None
        self.project = ""
        self.runs = 0
        self.calls = 0

    def fresh(self) -> FeatureStore:
        if self.store is not None and self.runs < RESET_EVERY:
            self.runs += 1
            return self.store
        self.close()
        self.project = f"bad{uuid.uuid4().hex[:10]}"
        self.store = FeatureStore(client=self.info.client(db=DB), project=self.project)
        setup(self.store)
        self.runs = 0
        return self.store

    def snapshot(self) -> dict[bytes, bytes]:
        """Every key of the world but monitoring data, with a digest of its value (one
        round trip: the database holds this test's keys only)."""
        keys = Keys(self.project)
        flat: Any = self.client.eval(_SNAPSHOT, 0, f"rf:{self.project}:*")
        return {
            k: d
            for k, d in zip(flat[::2], flat[1::2], strict=True)
            if (p := keys.parse(k.decode())) is None or p.family != "q"
        }

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.project:
            batch = list(self.client.scan_iter(match=f"rf:{self.project}:*", count=10_000))
            for i in range(0, len(batch), 500):
                self.client.unlink(*batch[i : i + 500])


@pytest.fixture(scope="module")
def world(embedded: ServerInfo) -> Iterator[World]:
    w = World(embedded)
    yield w
    w.close()
    w.client.close()


def check(world: World, batch: list[Call]) -> None:
    """Only RedfeatError, and nothing written by a refused call. A snapshot taken after a
    refusal is the next call's "before" (nothing changed); after a success, a new one."""
    store = world.fresh()
    before = world.snapshot()
    for call in batch:
        world.calls += 1
        try:
            result: Any = call.run(store)
        except RedfeatError:
            after = world.snapshot()
            changed = sorted(
                k for k in before.keys() | after.keys() if before.get(k) != after.get(k)
            )
            assert not changed, f"{call!r} was refused but changed {changed[:5]}"
            continue
        except Exception as exc:
            raise AssertionError(f"{call!r} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(result, Subscription):
            result.close()
        if call.verb == "alerts.start":
            store.alerts.stop()
        before = world.snapshot()


def _settings(part: str) -> settings:
    return settings(
        max_examples=_examples(part) // BATCH,
        deadline=None,
        database=None,  # CI runs: no example database to grow between runs
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def batches(calls: st.SearchStrategy[Call]) -> st.SearchStrategy[list[Call]]:
    # several calls per example: hypothesis' own cost per example (~1 ms) is shared
    return st.lists(calls, min_size=BATCH, max_size=BATCH)


@_settings("writes")
@given(batch=batches(writes()))
def test_bad_writes_raise_redfeat_errors_and_write_nothing(world: World, batch: list[Call]) -> None:
    check(world, batch)


@_settings("reads")
@given(batch=batches(reads()))
def test_bad_reads_raise_redfeat_errors(world: World, batch: list[Call]) -> None:
    check(world, batch)


@_settings("search")
@given(batch=batches(search()))
def test_bad_searches_raise_redfeat_errors(world: World, batch: list[Call]) -> None:
    check(world, batch)


@_settings("series")
@given(batch=batches(series()))
def test_bad_series_calls_raise_redfeat_errors(world: World, batch: list[Call]) -> None:
    check(world, batch)


@_settings("quality")
@given(batch=batches(quality()))
def test_bad_quality_calls_raise_redfeat_errors(world: World, batch: list[Call]) -> None:
    check(world, batch)


@_settings("mixed")
@given(batch=batches(calls()))
def test_bad_calls_of_every_kind_mixed(world: World, batch: list[Call]) -> None:
    check(world, batch)


@settings(max_examples=200, deadline=None, database=None)
@given(call=calls())
def test_calls_render_and_name_their_verb(call: Call) -> None:
    # the generator itself: every call names a public verb (the HTTP test maps them)
    assert call.verb and repr(call).startswith(call.verb.split(".")[0])


def test_the_property_covers_ten_thousand_calls() -> None:
    if "REDFEAT_BAD_INPUT_EXAMPLES" not in os.environ:
        assert sum(_examples(p) // BATCH * BATCH for p in PARTS) >= 10_000


def test_known_bad_calls_of_the_issue_are_refused_cleanly(world: World) -> None:
    """The sites the issue names, one call each (they failed before the fix)."""
    from datetime import datetime

    import numpy as np
    import pandas as pd

    known = [
        Call("write", ("v", "u1", {"x": 1.0}), {"event_time": 1e308}),
        Call("get", ("v", "u1"), {"as_of": 1e308}),
        Call("series", ("\ud800",)),
        Call(
            "training_frame",
            (pd.DataFrame({"entity_id": [1.5], "event_time": [datetime(2024, 1, 1)]}), ["v:x"]),
        ),
        Call(
            "training_frame",
            (
                pd.DataFrame(
                    {
                        "entity_id": ["u1", "u2"],
                        "event_time": pd.Series([datetime(2024, 1, 1), "x"], dtype=object),
                    }
                ),
                ["v:x"],
            ),
        ),
        Call("get", ("v", "u1"), {"features": 1.5}),
        Call("get_many", ("v", 5)),
        Call("increment", ("v", "u1", "x")),
        Call("write_many", ("v", datetime(2024, 1, 1))),
        Call("get", ("v", "u1"), {"features": np.array([["x"]])}),
        Call("series", ("s9",), {"retention": 1e308}),
        Call("mrange", (5,)),
        Call("series.add_many", ([1e308], [1.0])),
        Call("series.add_many", ([2**62], [1.0])),  # int64 ms would wrap into range
    ]
    for call in known:
        with pytest.raises(RedfeatError):
            check_raises(world, call)


def check_raises(world: World, call: Call) -> None:
    store = world.fresh()
    before = world.snapshot()
    try:
        call.run(store)
    except RedfeatError:
        assert world.snapshot() == before, call
        raise


def test_view_ttl_of_1e308_is_a_configuration_error() -> None:
    from redfeat import ConfigurationError, FeatureView, Field
    from redfeat import types as t

    with pytest.raises(ConfigurationError, match="ttl"):
        FeatureView("w", entity="user", fields=[Field("x", t.Float)], ttl=1e308)


def test_values_near_the_float_limit_are_profiled_and_judged_without_warnings(
    world: World,
) -> None:
    # found by the property test: a Float of 1e308 overflowed the profile's moments (in the
    # monitor's flush), and outliers(k=1e308) its bound (RuntimeWarnings, errors here)
    store = world.fresh()
    store.write("v", "u1", {"x": 1e308})
    store.quality.flush()
    s = store.series("s1")
    s.add(1e308)
    start = datetime.now(UTC) - timedelta(hours=1)
    assert len(s.outliers(start, None, k=1e308)) == 0
    with pytest.raises(RedfeatError):
        s.outliers(start, None, k=math.inf)
