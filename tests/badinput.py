"""Generators of bad calls to the public verbs, for the property test of issue 17 item 8.

A ``Call`` names a verb and its arguments; ``calls()`` draws them, each argument either a
good value for the test world (``World``) or a hostile one: huge and non-finite numbers,
lone surrogates, wrong containers, 2-D arrays, out-of-range datetimes, frames whose columns
Arrow cannot read. Kept apart from the test so that the HTTP routes' test can draw the same
calls (``Call.verb``, ``Call.args`` and ``Call.kwargs`` are plain data) and map them to
requests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import strategies as st

from redfeat import Entity, FeatureStore, FeatureView, Field, WindowFeatures
from redfeat import types as t

VIEW = "v"
WINDOW = "clicks"
SERIES = "s1"
RULE = "hot"
IDS: list[str | int] = ["u1", "u2", 7]
NOW = datetime.now(UTC).replace(microsecond=0)


def definitions() -> list[Any]:
    return [
        Entity("user"),
        FeatureView(
            VIEW,
            entity="user",
            fields=[
                Field("x", t.Float, min=0),
                Field("n", t.Int),
                Field("c", t.Category(["a", "b"])),
                Field("s", t.String, max_length=20),
                Field("e", t.Vector(3)),
            ],
            ttl="1h",
            history=10,
        ),
        WindowFeatures(
            WINDOW, entity="user", source="amount", aggs=["sum", "count"], windows=["1h"]
        ),
    ]


def setup(store: FeatureStore) -> None:
    """The world the calls act on: a view with data, window features, a series with an
    alert rule, a stored text."""
    store.apply(*definitions())
    for i, e in enumerate(IDS):
        store.write(VIEW, e, {"x": 1.0 + i, "n": i, "c": "a", "s": "hi", "e": [1.0, float(i), 0.5]})
    store.record(WINDOW, "u1", 2.0)
    s = store.series(SERIES, rollups=["1m"], labels={"host": "a"})
    s.add_many([NOW.timestamp() - 60 * i for i in range(5)], [1.0, 2.0, 3.0, 4.0, 5.0])
    store.alerts.add(RULE, SERIES, threshold=3.0, window="5m", for_=0)
    store.put_text("hello world", embedding=[1.0, 0.0, 0.0])


# -- hostile values ---------------------------------------------------------------------------


def _frames() -> list[Callable[[], Any]]:
    return [
        lambda: pd.DataFrame({"entity_id": [1.5], "event_time": [NOW]}),
        lambda: pd.DataFrame({"entity_id": [{"a": 1}], "event_time": [NOW]}),
        lambda: pd.DataFrame({"entity_id": ["u1"], "event_time": pd.Series([NOW, "x"][:1])}),
        lambda: pd.DataFrame(
            {"entity_id": ["u1", "u2"], "event_time": pd.Series([NOW, "x"], dtype=object)}
        ),
        lambda: pd.DataFrame({"entity_id": ["u1"], "event_time": [1e308]}),
        lambda: pd.DataFrame({"entity_id": ["u1"], "event_time": [float("inf")]}),
        lambda: pd.DataFrame({"entity_id": ["u1"], "event_time": [pd.NaT]}),
        lambda: pd.DataFrame({"entity_id": [None], "event_time": [NOW]}),
        lambda: pd.DataFrame({"entity_id": ["u1"]}),
        lambda: pd.DataFrame({"entity_id": ["u1"], "event_time": [NOW], "x": [1e308]}),
        lambda: pd.DataFrame({"entity_id": ["u1"], "event_time": [NOW], "x": ["a"]}),
        lambda: pd.DataFrame({"entity_id": [[1, 2]], "event_time": [NOW], "x": [1.0]}),
        lambda: pd.DataFrame({"entity_id": ["u1"], "event_time": [NOW], "e": [[1.0, 2.0]]}),
        lambda: pd.DataFrame({"entity_id": ["u1"], "event_time": [NOW], "amount": [float("nan")]}),
        lambda: pd.DataFrame(),
        lambda: pa.table({"entity_id": [1.5], "event_time": [1.0]}),
        lambda: pa.table({"entity_id": ["u1"], "event_time": ["2024"]}),
        lambda: pa.table({"entity_id": ["u1"], "event_time": [NOW], "x": [2.0]}),
    ]


_POOL: list[Any] = [
    1e308, -1e308, math.inf, -math.inf, math.nan, 2**63, -(2**63) - 1, 10**30, -1, 0, 1.5,
    -0.0, True, False, "", "\ud800", "x" * 3000, "1e308", "24h", "0s", "-1s", "9" * 400 + "s",
    "nope", "{a}:b|c*", "\x00", "2024-01-01", b"bytes", None, [], [1.5], [None], [[1]],
    [{"a": 1}], ["\ud800"], {}, {"x": 1e308}, {"\ud800": 1}, {"x": "a"}, {1: 2}, (1, 2), set(),
    frozenset({1}), datetime(1, 1, 1), datetime(9999, 12, 31), datetime(1899, 12, 31),
    datetime(2201, 1, 1, tzinfo=UTC), timedelta(days=-1), timedelta(days=10**8),
    np.float64("nan"), np.int64(5), np.zeros((2, 2)), np.zeros((2, 3)), np.array([1.0, 2.0, 3.0]),
    np.array(["x"]), np.array([]), np.datetime64("NaT"), np.datetime64("2024-01-01"),
    pd.Timestamp("2024-01-01"), pd.NaT, object(),
]  # fmt: skip


def hostile() -> st.SearchStrategy[Any]:
    frames = st.sampled_from(_frames()).map(lambda make: make())
    return st.one_of(
        st.sampled_from(_POOL),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.text(max_size=6),
        st.datetimes(timezones=st.sampled_from([None, UTC])),
        st.lists(st.sampled_from([1.5, "a", None, 1e308, "\ud800"]), max_size=3),
        frames,
    )


def arg(*good: Any) -> st.SearchStrategy[Any]:
    """A good value (one of ``good``) or a hostile one."""
    return st.one_of(st.sampled_from(good), hostile())


def maybe() -> st.SearchStrategy[bool]:
    return st.booleans()


# -- calls ------------------------------------------------------------------------------------


@dataclass
class Call:
    verb: str  # "write", "series.add", "alerts.add", "quality.drift" ...
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def target(self, store: FeatureStore) -> Callable[..., Any]:
        head, _, rest = self.verb.partition(".")
        if head == "series" and rest:
            return getattr(store.series(SERIES), rest)  # type: ignore[no-any-return]
        if head == "alerts" and rest:
            return getattr(store.alerts, rest)  # type: ignore[no-any-return]
        if head == "quality":
            return getattr(store.quality, rest)  # type: ignore[no-any-return]
        return getattr(store, self.verb)  # type: ignore[no-any-return]

    def run(self, store: FeatureStore) -> Any:
        return self.target(store)(*self.args, **self.kwargs)

    def __repr__(self) -> str:
        def short(v: Any) -> str:
            r = repr(v)
            return r if len(r) < 80 else r[:77] + "..."

        parts = [short(a) for a in self.args] + [f"{k}={short(v)}" for k, v in self.kwargs.items()]
        return f"{self.verb}({', '.join(parts)})"


def _call(verb: str, *args: st.SearchStrategy[Any], **kwargs: st.SearchStrategy[Any]) -> Any:
    return st.tuples(st.tuples(*args), st.fixed_dictionaries(kwargs)).map(
        lambda ak: Call(verb, ak[0], ak[1])
    )


_VALUES = ({"x": 2.0}, {"x": 1.0, "n": 3, "c": "b"}, {"e": [0.0, 1.0, 0.0]})
_ROWS = ([{"entity_id": "u1", "x": 3.0}], [{"entity_id": "u9", "x": 1.0, "event_time": NOW}])
_TIMES = (None, NOW, NOW.timestamp() - 10)
_FEATS = (None, ["x"], ["x", "n"])


def writes() -> st.SearchStrategy[Call]:
    v, e = arg(VIEW), arg(*IDS)
    return st.one_of(
        _call("write", v, e, arg(*_VALUES), event_time=arg(*_TIMES)),
        _call("write", v, e, arg(*_VALUES), tag=arg("v2", None)),
        _call("delete_version", v, arg("u9", "nobody"), arg(1, 2)),
        _call("update", v, e, arg(*_VALUES), event_time=arg(*_TIMES)),
        _call("increment", v, e, arg({"x": 1.0}, {"n": 2}), event_time=arg(*_TIMES)),
        _call(
            "write_many",
            v,
            arg(*_ROWS),
            event_time_column=arg(None, "event_time"),
            on_error=arg("raise", "skip"),
        ),
        _call("delete", v, arg("u9", "nobody")),
        _call("validate", v, arg(*_ROWS)),
        _call("import_frame", v, arg(*_ROWS)),
        _call("push", v, arg(*_ROWS)),
        _call("record", arg(WINDOW), e, arg(1.0, 2), arg(None, NOW)),
        _call("record_many", arg(WINDOW), arg([{"entity_id": "u1", "amount": 1.0}])),
    )


def reads() -> st.SearchStrategy[Call]:
    v, e = arg(VIEW), arg(*IDS)
    return st.one_of(
        _call("get", v, e, features=arg(*_FEATS), as_of=arg(*_TIMES), cache=arg(True, False)),
        _call("entity_stats", v, e),
        _call(
            "get_many",
            v,
            arg(IDS, ["u1"]),
            features=arg(*_FEATS),
            as_of=arg(*_TIMES),
            with_meta=arg(False, True),
            cache=arg(True, False),
        ),
        _call(
            "get_features",
            arg(IDS, ["u1"]),
            arg(["v:x"], ["v:x", "clicks:amount_sum_1h"]),
            cache=arg(True, False),
        ),
        _call("history", v, e, limit=arg(1, 10)),
        _call("version", v, e, arg(1, 2)),
        _call("version", v, e, tag=arg("v2")),
        _call("diff", v, e, arg(NOW), arg(NOW)),
        _call("versions", v, arg(None, ["u1"]), start=arg(*_TIMES), end=arg(*_TIMES)),
        _call(
            "training_frame",
            arg(pd.DataFrame({"entity_id": ["u1"], "event_time": [NOW]})),
            arg(["v:x"], ["v:x", "clicks:amount_sum_1h"]),
        ),
        _call("changes", v, since=arg(None, "0-0"), limit=arg(10, 1000)),
        _call("dead_letters", v, arg(10)),
        _call("view", v),
        _call("stats", storage=arg(False)),
    )


def search() -> st.SearchStrategy[Call]:
    return st.one_of(
        _call(
            "similar",
            arg(VIEW),
            arg("e"),
            arg([1.0, 0.0, 0.0], np.array([0.0, 1.0, 0.0])),
            k=arg(1, 5),
            where=arg(None, {"c": "a"}, {"x": (0.0, 2.0)}),
            include_values=arg(False, True),
            index=arg("exact"),
            consistent=arg(False, True),
        ),
        _call("put_text", arg("some text"), embedding=arg([0.0, 1.0, 0.0]), metadata=arg(None)),
        _call(
            "similar_texts",
            embedding=arg([1.0, 0.0, 0.0]),
            k=arg(1, 3),
            consistent=arg(False, True),
        ),
        _call("subscribe", arg(VIEW, None), arg(None, ["u1"])),
    )


def series() -> st.SearchStrategy[Call]:
    ts = arg(NOW, NOW.timestamp() - 30)
    return st.one_of(
        _call(
            "series",
            arg(SERIES, "s2"),
            labels=arg(None, {"host": "b"}),
            retention=arg(None, "7d"),
            rollups=arg(None, ["1m"]),
            duplicate_policy=arg(None, "last"),
            max_points=arg(None, 100),
            precision=arg(None, 2),
        ),
        _call("series.add", arg(1.0, 2), ts),
        _call("series.add_many", arg([NOW.timestamp()]), arg([1.0])),
        _call(
            "series.range",
            arg(None, NOW),
            arg(None, NOW),
            bucket=arg(None, "1m"),
            agg=arg("avg", ["min", "max"]),
            limit=arg(None, 3),
        ),
        _call("series.stats", arg(None, NOW), arg(None)),
        _call("series.anomalies", arg(NOW - timedelta(minutes=5)), arg(NOW)),
        _call("series.outliers", arg(NOW - timedelta(minutes=5)), arg(NOW), k=arg(1.5)),
        _call("series_list", arg("host=a", ["host=a"], ())),
        _call("mrange", arg("host=a"), arg(None), arg(None), bucket=arg(None, "1m")),
        _call("correlate", arg([SERIES, SERIES]), arg(NOW - timedelta(hours=1)), arg(NOW)),
        _call(
            "alerts.add",
            arg("r2"),
            arg(SERIES),
            threshold=arg(1.0),
            window=arg("5m"),
            for_=arg("1m", None),
        ),
        _call("alerts.history", arg(RULE), arg(10)),
        _call("alerts.get", arg(RULE)),
        _call("alerts.evaluate", arg(None, NOW)),
        _call("alerts.start", interval=arg("1h")),
    )


def quality() -> st.SearchStrategy[Call]:
    v = arg(VIEW)
    return st.one_of(
        _call("quality.profile", v, start=arg(None, NOW), end=arg(None)),
        _call("quality.drift", v, baseline=arg((NOW - timedelta(hours=1), NOW))),
        _call("quality.health", window=arg("24h"), now=arg(None)),
        _call("quality.configure", v, sample_rate=arg(None, 0.5), max_age=arg(None, "1h")),
        _call("quality.set_baseline_from", v, arg(pd.DataFrame({"x": [1.0, 2.0]}))),
    )


def calls() -> st.SearchStrategy[Call]:
    return st.one_of(writes(), reads(), search(), series(), quality())
