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
import os
import tempfile
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
# where write_training_frame writes (a file, not a key: outside the snapshots)
FRAME_OUT = os.path.join(tempfile.gettempdir(), f"redfeat-badinput-{os.getpid()}", "f.parquet")


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


def frame_arg(*good: Any) -> st.SearchStrategy[Any]:
    """A good entity_df or a hostile frame (no hostile text: a text is a path to read)."""
    return st.one_of(st.sampled_from(good), st.sampled_from(_frames()).map(lambda make: make()))


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


_VERB_OF: dict[int, str] = {}  # id of a call strategy -> its verb (for ``only=``)


def _call(verb: str, *args: st.SearchStrategy[Any], **kwargs: st.SearchStrategy[Any]) -> Any:
    strategy = st.tuples(st.tuples(*args), st.fixed_dictionaries(kwargs)).map(
        lambda ak: Call(verb, ak[0], ak[1])
    )
    _VERB_OF[id(strategy)] = verb
    return strategy


def _one_of(only: frozenset[str] | None, *options: Any) -> st.SearchStrategy[Call]:
    """The calls of ``options`` (only the verbs in ``only``, when given)."""
    kept = [o for o in options if only is None or _VERB_OF.get(id(o)) in only]
    return st.one_of(kept) if kept else st.nothing()


_VALUES = ({"x": 2.0}, {"x": 1.0, "n": 3, "c": "b"}, {"e": [0.0, 1.0, 0.0]})
_ROWS = ([{"entity_id": "u1", "x": 3.0}], [{"entity_id": "u9", "x": 1.0, "event_time": NOW}])
_TIMES = (None, NOW, NOW.timestamp() - 10)
_FEATS = (None, ["x"], ["x", "n"])


def writes(only: frozenset[str] | None = None) -> st.SearchStrategy[Call]:
    v, e = arg(VIEW), arg(*IDS)
    return _one_of(
        only,
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


def reads(only: frozenset[str] | None = None) -> st.SearchStrategy[Call]:
    v, e = arg(VIEW), arg(*IDS)
    return _one_of(
        only,
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
        _call(
            "write_training_frame",
            st.just(FRAME_OUT),
            frame_arg(pd.DataFrame({"entity_id": ["u1"], "event_time": [NOW]})),
            arg(["v:x"], ["v:x", "clicks:amount_sum_1h"]),
            chunk_rows=arg(1, 1000),
        ),
        _call("changes", v, since=arg(None, "0-0"), limit=arg(10, 1000)),
        _call("dead_letters", v, arg(10)),
        _call("view", v),
        _call("stats", storage=arg(False)),
    )


def search(only: frozenset[str] | None = None) -> st.SearchStrategy[Call]:
    return _one_of(
        only,
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


def series(only: frozenset[str] | None = None) -> st.SearchStrategy[Call]:
    ts = arg(NOW, NOW.timestamp() - 30)
    return _one_of(
        only,
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


def quality(only: frozenset[str] | None = None) -> st.SearchStrategy[Call]:
    v = arg(VIEW)
    return _one_of(
        only,
        _call("quality.profile", v, start=arg(None, NOW), end=arg(None)),
        _call("quality.drift", v, baseline=arg((NOW - timedelta(hours=1), NOW))),
        _call("quality.health", window=arg("24h"), now=arg(None)),
        _call("quality.configure", v, sample_rate=arg(None, 0.5), max_age=arg(None, "1h")),
        _call("quality.set_baseline_from", v, arg(pd.DataFrame({"x": [1.0, 2.0]}))),
    )


def calls() -> st.SearchStrategy[Call]:
    return st.one_of(writes(), reads(), search(), series(), quality())


# -- the same calls as HTTP requests (the routes' half) -----------------------------------------

TOKEN_ADMIN = "rf_bad-input-admin-0123456789abcdef"
TOKEN_READ = "rf_bad-input-read-00123456789abcdef"
MAX_BODY = 65_536  # the test app's limits: small, so that 413 and the id cap are reached
MAX_IDS = 50


@dataclass
class Request:
    """One HTTP request: ``route`` the documented path it aims at (an OpenAPI operation),
    or "" for a path no route serves; ``why`` the call it was made from."""

    method: str
    route: str
    path: str
    params: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    why: str = ""

    def target(self) -> str:
        """The path and query as sent: each part percent-encoded here (a lone surrogate as
        its invalid UTF-8 bytes, which an HTTP client would refuse to encode)."""
        if not self.params:
            return self.path
        query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in self.params)
        return f"{self.path}?{query}"

    def __repr__(self) -> str:
        body = "" if self.body is None else f" body={self.body[:120]!r}"
        auth = self.headers.get("authorization", "no token")[:20]
        return (
            f"{self.method} {self.path[:120]} {self.params[:6]!r}{body} "
            f"[{self.headers.get('content-type')}; {auth}] from {self.why}"
        )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))  # hypothesis' printer: the short form, not every field in full


def jsonable(v: Any) -> Any:
    """What a JSON client would send for ``v`` (NaN and inf stay: JSON has no such
    numbers, and a client that writes them anyway must get a 400)."""
    if isinstance(v, bool | int | float | str) or v is None:
        return v
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, timedelta):
        return str(v)
    if isinstance(v, np.ndarray):
        return jsonable(v.tolist())
    if isinstance(v, np.datetime64):
        return str(v)
    if isinstance(v, np.generic):
        return jsonable(v.item())
    if isinstance(v, pd.DataFrame):
        return [{str(k): jsonable(x) for k, x in r.items()} for r in v.to_dict("records")]
    if isinstance(v, pa.Table):
        return jsonable(v.to_pandas())
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        return [jsonable(x) for x in v]
    return repr(v)


def _json(v: Any) -> bytes:
    import json

    # ensure_ascii: a lone surrogate goes out as the escape "\ud800", valid JSON text
    return json.dumps(jsonable(v), allow_nan=True).encode()


def _q(v: Any) -> str | None:
    """A query parameter's text (None: left out)."""
    v = jsonable(v)
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return str(v)


def _quote(text: str) -> str:
    """Percent-encoded, every byte but the unreserved ones (a lone surrogate as its invalid
    UTF-8 bytes)."""
    from urllib.parse import quote

    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def _seg(v: Any) -> str:
    """A path segment ("." and ".." percent-encoded, as a client must: bare, they are
    dot-segments that URL normalisation removes, RFC 3986 section 5.2.4)."""
    text = str(jsonable(v))
    if text in (".", ".."):
        return "%2E" * len(text)
    return _quote(text)


def _params(**kw: Any) -> list[tuple[str, str]]:
    return [(k, t) for k, v in kw.items() if (t := _q(v)) is not None]


def _post(route: str, path: str, body: Any, call: Call) -> Request:
    return Request("POST", route, path, body=_json(body), why=repr(call))


def to_request(call: Call) -> Request | None:
    """The HTTP request that asks what ``call`` asks (None: no route does)."""
    a, kw, why = call.args, call.kwargs, repr(call)
    views = "/views/{view}"
    if call.verb == "write":
        body = {"entity_id": a[1], "values": a[2], "event_time": kw.get("event_time")}
        return _post(f"{views}/write", f"/views/{_seg(a[0])}/write", body, call)
    if call.verb == "write_many":
        body = {"rows": a[1], **{k: v for k, v in kw.items() if v is not None}}
        return _post(f"{views}/write_many", f"/views/{_seg(a[0])}/write_many", body, call)
    if call.verb in ("get", "entity_stats", "history"):
        base = f"/views/{_seg(a[0])}/entities/{_seg(a[1])}"
        route = f"{views}/entities/{{entity_id}}"
        if call.verb == "get":
            return Request("GET", route, base, _params(**kw), why=why)
        tail = "stats" if call.verb == "entity_stats" else "history"
        return Request("GET", f"{route}/{tail}", f"{base}/{tail}", _params(**kw), why=why)
    if call.verb == "get_many":
        body = {"ids": a[1], **kw}
        return _post(f"{views}/get_many", f"/views/{_seg(a[0])}/get_many", body, call)
    if call.verb == "get_features":
        return _post("/features", "/features", {"ids": a[0], "features": a[1], **kw}, call)
    if call.verb == "similar":
        body = {"field": a[1], "query": a[2], **kw}
        return _post(f"{views}/similar", f"/views/{_seg(a[0])}/similar", body, call)
    if call.verb == "view":
        return Request("GET", views, f"/views/{_seg(a[0])}", why=why)
    if call.verb == "stats":
        return Request("GET", "/stats", "/stats", _params(**kw), why=why)
    if call.verb == "series.range":
        p = _params(start=a[0], end=a[1], **kw)
        return Request("GET", "/series/{name}/range", f"/series/{SERIES}/range", p, why=why)
    if call.verb == "series.anomalies":
        p = _params(start=a[0], end=a[1], **kw)
        return Request("GET", "/series/{name}/anomalies", f"/series/{SERIES}/anomalies", p, why=why)
    if call.verb == "series_list":
        filters = a[0] if isinstance(a[0], list | tuple) else [a[0]]
        p = [("filter", t) for f in filters if (t := _q(f)) is not None]
        return Request("GET", "/series", "/series", p, why=why)
    if call.verb in ("quality.profile", "quality.drift"):
        what = call.verb.split(".")[1]
        window = kw.get("baseline")
        p = _params(**kw) if what == "profile" else []
        if isinstance(window, tuple) and len(window) == 2:
            p = _params(start=window[0], end=window[1], bins=True)
        elif window is not None:
            p = _params(start=window)
        route = f"/quality/{{view}}/{what}"
        return Request("GET", route, f"/quality/{_seg(a[0])}/{what}", p, why=why)
    if call.verb == "quality.health":
        return Request("GET", "/health", "/health", _params(window=kw.get("window")), why=why)
    return None


# requests only HTTP can make: bodies that are no JSON (or too much of it), other content
# types, paths and query parameters no Python call would hold
_BODY_ROUTES = [
    ("/views/{view}/write", f"/views/{VIEW}/write"),
    ("/views/{view}/write_many", f"/views/{VIEW}/write_many"),
    ("/views/{view}/get_many", f"/views/{VIEW}/get_many"),
    ("/views/{view}/similar", f"/views/{VIEW}/similar"),
    ("/features", "/features"),
]
_RAW_BODIES: list[bytes] = [
    b"", b"{", b"null", b"[]", b"0", b'"x"', b"\xff\xfe{}", b"{}", b'{"rows": {}}',
    b'{"ids": "u1"}', b'{"ids": [1e400]}', b'{"ids": [NaN]}', b'{"entity_id": "u1"}',
    b'{"entity_id": "u1", "values": {"x": 1}, "event_time": "9999-12-31T23:59:59"}',
    b'{"entity_id": "u1", "values": {"x": 1}, "bogus": 1}',
    b'{"entity_id": "\\ud800", "values": {"x": 1}}',
    b'{"entity_id": "u1", "values": {"\\udfff": 1}}',
    b'{"rows": [{"entity_id": "u1", "x": 1}], "on_error": "ignore"}',
    b'{"rows": [{"entity_id": "u1", "x": 1}], "entity_column": "\\u0000"}',
    b'{"ids": ["u1"], "as_of": "1e308"}', b'{"ids": ["u1"], "as_of": -1e308}',
    b'{"field": "e", "query": [1e308, 1e308, 1e308], "k": 1}',
    b'{"field": "e", "query": [], "k": 0}', b'{"field": "e", "query": [1, 2, 3], "k": 10001}',
    b'{"ids": ["u1"], "entity_rows": [{"user": "u1"}], "features": ["v:x"]}',
    b'{"entity_rows": [{"user": 1e400}], "features": ["v:x"]}',
    b'{"ids": [["u1", "u2"]], "features": ["v:x"]}', b'{"service": "nope@x"}',
    b"[" * 5000 + b"]" * 5000, b'{"ids": [' + b'"u1",' * 60 + b'"u1"]}',
    b'{"ids": ["' + b"x" * (MAX_BODY + 10) + b'"]}',
]  # fmt: skip
_CONTENT_TYPES = [
    "application/json", "application/json", "application/json; charset=utf-8", "text/plain",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None,
    "application/problem+json",
]  # fmt: skip
_E = "/views/{view}/entities/{entity_id}"
_PATHS = [  # (the route that serves it, or "" for none; the path as sent)
    (_E, f"/views/{VIEW}/entities/%ZZ"), (_E, f"/views/{VIEW}/entities/%FF%FE"),
    (_E, f"/views/{VIEW}/entities/%00"),
    (_E + "/history", f"/views/{VIEW}/entities/%C0%AF/history"),
    (_E + "/history", f"/views/{VIEW}/entities/u1/history/history"),
    (_E, f"/views/{VIEW}/entities/" + "x" * 5000),
    (_E, f"/views/{VIEW}/entities/u1%2F..%2Fstats"),
    (_E, f"/views/{VIEW}/entities/"), (_E + "/stats", f"/views/{VIEW}/entities//stats"),
    (_E, f"/views/{VIEW}/entities/u1/stats%00"), ("/views/{view}", "/views/%ED%A0%80"),
    ("/views/{view}", "/views/v%00"), ("/series/{name}/range", "/series/%FF/range"),
    ("", "/series//range"), ("/series/{name}/range", "/series/s1/anomalies/range"),
    ("", f"/series/{SERIES}/"), ("/series/{name}/anomalies", "/series/%ZZ/anomalies"),
    ("/quality/{view}/drift", "/quality/%ED%A0%80/drift"), ("", "/quality/v/profile/x"),
    ("", "/nothing/here"),
]  # fmt: skip
_GET_ROUTES = [
    ("/views/{view}/entities/{entity_id}", f"/views/{VIEW}/entities/u1"),
    ("/views/{view}/entities/{entity_id}/history", f"/views/{VIEW}/entities/u1/history"),
    ("/series/{name}/range", f"/series/{SERIES}/range"),
    ("/series/{name}/anomalies", f"/series/{SERIES}/anomalies"),
    ("/quality/{view}/drift", f"/quality/{VIEW}/drift"),
    ("/quality/{view}/profile", f"/quality/{VIEW}/profile"),
    ("/health", "/health"),
    ("/stats", "/stats"),
    ("/series", "/series"),
]
_PARAM_NAMES = [
    "as_of", "features", "cache", "limit", "start", "end", "bucket", "agg", "time_format",
    "method", "threshold", "baseline", "bins", "source", "window", "storage", "filter", "x",
]  # fmt: skip
_PARAM_VALUES = [
    "", "1e308", "-1e308", "nan", "inf", "1e400", "-1", "0", "99999999999999999999999",
    "9999-12-31T23:59:59", "0001-01-01", "2024-13-45", "true", "maybe", "avg,min,max",
    "avg,,max", "avg,avg", "1m", "0s", "-1s", "9" * 400 + "s", "raw", "ms", "zscore", "mad",
    "\x00", "%FF", "\ud800", "x" * 3000, "host=a", "host!=(a,b)", "=", "read", "write",
]  # fmt: skip


def raw_requests() -> st.SearchStrategy[Request]:
    """Requests only HTTP can make: bodies that are no JSON, other content types, paths
    and query parameters no Python call holds (with the tokens ``requests`` uses)."""
    bodies = st.builds(
        lambda r, b, ct: Request(
            "POST",
            r[0],
            r[1],
            body=b,
            headers={} if ct is None else {"content-type": ct},
            why="a raw body",
        ),
        st.sampled_from(_BODY_ROUTES),
        st.one_of(st.sampled_from(_RAW_BODIES), st.binary(max_size=40)),
        st.sampled_from(_CONTENT_TYPES),
    )
    paths = st.builds(
        lambda rp: Request("GET", rp[0], rp[1], why="a path no call makes"),
        st.sampled_from(_PATHS),
    )
    value = st.one_of(st.sampled_from(_PARAM_VALUES), st.text(max_size=8))
    queries = st.builds(
        lambda r, ps: Request("GET", r[0], r[1], ps, why="query parameters"),
        st.sampled_from(_GET_ROUTES),
        st.lists(st.tuples(st.sampled_from(_PARAM_NAMES), value), min_size=1, max_size=4),
    )
    return st.builds(_authorized, st.one_of(bodies, paths, queries), st.sampled_from(_WHO))


def _authorized(req: Request, who: str) -> Request:
    """The request with the admin token (most), none, an unknown one, or a read-only one
    (a write is then 403)."""
    token = {"admin": TOKEN_ADMIN, "read": TOKEN_READ, "wrong": "rf_not-a-token-000000"}
    headers = dict(req.headers)
    if req.body is not None and "content-type" not in headers and req.why != "a raw body":
        headers["content-type"] = "application/json"
    if who in token:
        headers["authorization"] = f"Bearer {token[who]}"
    return Request(req.method, req.route, req.path, req.params, req.body, headers, req.why)


_WHO = ["admin"] * 9 + ["none", "wrong", "read"]


# the verbs a route serves (``to_request`` maps each)
ROUTED = frozenset(
    {
        "write", "write_many", "get", "entity_stats", "history", "get_many", "get_features",
        "similar", "view", "stats", "series.range", "series.anomalies", "series_list",
        "quality.profile", "quality.drift", "quality.health",
    }
)  # fmt: skip


def _routed(call: Call) -> Request:
    req = to_request(call)
    assert req is not None, f"{call.verb} is in ROUTED but to_request does not map it"
    return req


def requests(source: st.SearchStrategy[Call]) -> st.SearchStrategy[Request]:
    """HTTP requests: the calls of ``source`` (drawn with ``only=ROUTED``) sent to their
    routes, with now and then a missing, unknown or weaker token."""
    return st.builds(_authorized, source.map(_routed), st.sampled_from(_WHO))
