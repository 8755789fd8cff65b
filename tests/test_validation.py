"""Validation: bad input is refused with every problem listed, and a refusal leaves no trace.

Everything here runs against the real server of ``conftest.py``; nothing is mocked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redfeat import (
    ConfigurationError,
    FeatureStore,
    FeatureView,
    Field,
    NotFoundError,
    Problem,
    ValidationError,
)
from redfeat import types as t
from redfeat.core.keys import Keys, escape_id, unescape_id

VIEW = "user_profile"
VICTIM = "victim"
NAN = float("nan")
INF = float("inf")

# A row that passes every rule of the profile view.
GOOD: dict[str, Any] = {
    "age": 30,
    "income": 1234.5,
    "zip_code": "12345",
    "segment": "basic",
    "active": True,
    "signup": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    "embedding": [0.5, -1.0, 2.0, 0.0],
    "tags": ["a", "b"],
    "scores": [0.25, 1.0],
}

# Characters that mean something to a key, a hash tag or a SCAN pattern, plus controls.
HOSTILE = "{}:|*?[]%\\ \n\r\t\x00\x7f"
_STRUCTURAL = set("{}|:*?[]\\")
_ESCAPED_RUN = re.compile(r"%[0-9A-F]{2}")

FAST = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


# -- helpers ---------------------------------------------------------------------------------


def refuse_write(store: FeatureStore, entity_id: Any, values: Any, **kw: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        store.write(VIEW, entity_id, values, **kw)
    return info.value


def pairs(exc: ValidationError) -> set[tuple[str | None, str]]:
    return {(p.field, p.rule) for p in exc.problems}


def data_keys(client: redis.Redis, project: str) -> list[str]:
    """Every entity key of the project (not the registry, the change feeds, or the quality
    data a store's background flush may write at any moment)."""
    registry = f"rf:{project}:registry"
    feeds, quality = f"rf:{project}:feed:", f"rf:{project}:q:"
    keys = [
        k.decode() if isinstance(k, bytes) else str(k)
        for k in client.scan_iter(match=f"rf:{project}:*", count=1000)
    ]
    return sorted(k for k in keys if k != registry and not k.startswith((feeds, quality)))


def assert_absent(store: FeatureStore, entity_id: Any) -> None:
    assert store.get(VIEW, entity_id) is None
    assert store.history(VIEW, entity_id) == []


def same_values(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Equality for decoded rows (vectors are numpy arrays)."""
    assert a is not None and b is not None
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if not np.array_equal(np.asarray(x), np.asarray(y)):
                return False
        elif x != y:
            return False
    return True


def check_problem(p: Problem, entity: str | None, field: str | None, rule: str) -> None:
    assert isinstance(p, Problem)
    assert (p.view, p.entity, p.field, p.rule, p.row) == (VIEW, entity, field, rule, None)
    assert p.message and isinstance(p.message, str)


# -- 1. write(): one bad value -----------------------------------------------------------------

BAD_VALUES: list[tuple[str, Any, str]] = [
    # wrong types
    ("age", "12", "type"),
    ("age", 3.0, "type"),
    ("age", 3.5, "type"),
    ("age", True, "type"),
    ("age", np.float64(3.0), "type"),
    ("income", True, "type"),
    ("income", False, "type"),
    ("income", "1.5", "type"),
    ("zip_code", 12345, "type"),
    ("active", [True], "type"),
    ("active", 1, "type"),
    ("active", "true", "type"),
    ("segment", 1, "type"),
    ("signup", "2024-01-01", "type"),
    ("signup", True, "type"),
    ("embedding", "abcd", "type"),
    ("embedding", 5, "type"),
    ("embedding", ["a", "b", "c", "d"], "type"),
    ("tags", "abc", "type"),
    ("tags", {"a": 1}, "type"),
    ("tags", 7, "type"),
    # non-finite numbers
    ("income", NAN, "finite"),
    ("income", INF, "finite"),
    ("income", -INF, "finite"),
    ("income", np.float32("nan"), "finite"),
    ("signup", NAN, "finite"),
    # ints beyond int64, ints a float can't hold exactly
    ("age", 2**63, "range"),
    ("age", -(2**63) - 1, "range"),
    ("age", 10**30, "range"),
    ("income", 2**53 + 1, "range"),
    # min / max
    ("age", -1, "min"),
    ("age", 151, "max"),
    ("age", np.int64(151), "max"),
    ("income", -0.5, "min"),
    ("income", -1, "min"),
    # strings and categories
    ("segment", "gold", "category"),
    ("segment", "Basic", "category"),
    ("zip_code", "1" * 11, "max_length"),
    ("zip_code", "abcde", "pattern"),
    ("zip_code", "1234", "pattern"),
    ("zip_code", "123456", "pattern"),
    # vectors
    ("embedding", [1.0, 2.0, 3.0], "dimension"),
    ("embedding", [1.0, 2.0, 3.0, 4.0, 5.0], "dimension"),
    ("embedding", [[1.0, 2.0], [3.0, 4.0]], "dimension"),
    ("embedding", [], "dimension"),
    ("embedding", [1.0, NAN, 0.0, 0.0], "finite"),
    ("embedding", np.array([INF, 0.0, 0.0, 0.0]), "finite"),
    ("embedding", [1e39, 0.0, 0.0, 0.0], "range"),
    ("embedding", [0.0, 0.0, 0.0, -1e300], "range"),
    # lists
    ("tags", ["a", None], "null"),
    ("scores", [None], "null"),
    ("tags", ["a", 1], "type"),
    ("scores", [1.0, "x"], "type"),
    ("scores", [True], "type"),
    ("scores", [1.0, NAN], "finite"),
]


@pytest.mark.parametrize(("field", "value", "rule"), BAD_VALUES)
def test_bad_value_is_refused_and_nothing_is_written(
    store: FeatureStore,
    profile_view: FeatureView,
    client: redis.Redis,
    project: str,
    field: str,
    value: Any,
    rule: str,
) -> None:
    exc = refuse_write(store, "e1", {field: value})
    assert len(exc.problems) == 1
    p = exc.problems[0]
    check_problem(p, "e1", field, rule)
    if isinstance(value, float) and math.isnan(value):
        assert isinstance(p.value, float) and math.isnan(p.value)
    elif type(value) in (int, float, str, bool):
        assert p.value == value and type(p.value) is type(value)
    else:
        assert p.value is not None
    assert_absent(store, "e1")
    assert data_keys(client, project) == []


def test_refused_write_leaves_an_existing_entity_unchanged(
    store: FeatureStore, profile_view: FeatureView
) -> None:
    first = store.write(VIEW, "e1", GOOD)
    before = store.get(VIEW, "e1")
    assert same_values(before, first.values)
    for field, value, _rule in BAD_VALUES:
        refuse_write(store, "e1", {**GOOD, field: value})
    refuse_write(store, "e1", {**GOOD, "nope": 1})
    refuse_write(store, "e1", ["not", "a", "mapping"])
    assert same_values(store.get(VIEW, "e1"), before)
    hist = store.history(VIEW, "e1")
    assert [v.id for v in hist] == [first.id]


def test_float_for_int_says_how_to_fix_it(store: FeatureStore, profile_view: FeatureView) -> None:
    exc = refuse_write(store, "e1", {"age": 3.0})
    assert "int(x)" in exc.problems[0].message


def test_every_problem_of_a_row_is_listed(
    store: FeatureStore, profile_view: FeatureView, client: redis.Redis, project: str
) -> None:
    row = {
        "age": "thirty",
        "income": NAN,
        "zip_code": "1" * 20,
        "segment": "gold",
        "active": 1,
        "signup": "yesterday",
        "embedding": [1.0, 2.0],
        "tags": ["ok", None],
        "scores": [1.0, INF],
        "nope": 1,
        "also_nope": "x",
    }
    exc = refuse_write(store, "e1", row)
    assert pairs(exc) == {
        ("age", "type"),
        ("income", "finite"),
        ("zip_code", "max_length"),
        ("segment", "category"),
        ("active", "type"),
        ("signup", "type"),
        ("embedding", "dimension"),
        ("tags", "null"),
        ("scores", "finite"),
        ("nope", "unknown_field"),
        ("also_nope", "unknown_field"),
    }
    assert len(exc.problems) == 11
    for p in exc.problems:
        assert (p.view, p.entity, p.row) == (VIEW, "e1", None)
    assert str(exc).startswith("11 problem(s); nothing was written")
    assert_absent(store, "e1")
    assert data_keys(client, project) == []


def test_unknown_fields_are_named_with_their_values(
    store: FeatureStore, profile_view: FeatureView
) -> None:
    exc = refuse_write(store, "e1", {"age": 1, "nope": 2, "other": "x"})
    got = sorted((p.field, p.rule, p.value) for p in exc.problems if p.field is not None)
    assert got == [("nope", "unknown_field", 2), ("other", "unknown_field", "x")]
    assert all("known:" in p.message and "'age'" in p.message for p in exc.problems)
    assert_absent(store, "e1")


@pytest.mark.parametrize(
    ("values", "type_name"),
    [
        (["age", 1], "list"),
        (None, "NoneType"),
        ("age=1", "str"),
        (42, "int"),
        ((("age", 1),), "tuple"),
    ],
)
def test_a_row_that_is_not_a_mapping_is_refused(
    store: FeatureStore, profile_view: FeatureView, values: Any, type_name: str
) -> None:
    exc = refuse_write(store, "e1", values)
    assert len(exc.problems) == 1
    check_problem(exc.problems[0], "e1", None, "row_type")
    assert exc.problems[0].value == type_name
    assert_absent(store, "e1")


@pytest.fixture
def strict_view(store: FeatureStore) -> FeatureView:
    view = FeatureView(
        "strict",
        entity="user",
        fields=[
            Field("score", t.Float, nullable=False),
            Field("label", t.String, nullable=False, categories=["x", "y"]),
            Field("note", t.String),
        ],
    )
    store.apply(view)
    return view


def test_null_where_not_nullable_is_refused(store: FeatureStore, strict_view: FeatureView) -> None:
    for values in ({"score": None, "label": None}, {}, {"note": "hi"}):
        with pytest.raises(ValidationError) as info:
            store.write("strict", "e1", values)
        assert pairs(info.value) == {("score", "not_null"), ("label", "not_null")}
        for p in info.value.problems:
            assert (p.view, p.entity, p.value, p.row) == ("strict", "e1", None, None)
    with pytest.raises(ValidationError) as info:
        store.write("strict", "e1", {"score": 1.0, "label": "z"})
    assert pairs(info.value) == {("label", "category")}
    assert store.get("strict", "e1") is None
    assert store.history("strict", "e1") == []
    # and a row that satisfies the rules goes through
    store.write("strict", "e1", {"score": 1.0, "label": "x"})
    assert store.get("strict", "e1") == {"score": 1.0, "label": "x", "note": None}


def test_nulls_are_accepted_where_nullable(store: FeatureStore, profile_view: FeatureView) -> None:
    store.write(VIEW, "e1", {"age": None, "tags": None})
    got = store.get(VIEW, "e1")
    assert got is not None and all(v is None for v in got.values())


def test_edge_values_inside_the_rules_are_accepted(
    store: FeatureStore, profile_view: FeatureView
) -> None:
    store.write(
        VIEW,
        "e1",
        {
            "age": 150,
            "income": 0,
            "zip_code": "00000",
            "embedding": np.array([3.4e38, -3.4e38, 0.0, 1.0]),
            "tags": [],
            "scores": [2**53],
        },
    )
    got = store.get(VIEW, "e1")
    assert got is not None
    assert got["age"] == 150 and got["income"] == 0.0 and isinstance(got["income"], float)
    assert got["zip_code"] == "00000" and got["tags"] == [] and got["scores"] == [2.0**53]
    store.write(VIEW, "e2", {"age": 0, "income": np.float32(2.5), "active": np.bool_(False)})
    got = store.get(VIEW, "e2")
    assert got is not None and (got["age"], got["income"], got["active"]) == (0, 2.5, False)


def test_bad_event_time_is_refused(
    store: FeatureStore, profile_view: FeatureView, client: redis.Redis, project: str
) -> None:
    for et in ("2024-01-01", NAN, INF, True, object(), datetime(1800, 1, 1), 10**12):
        exc = refuse_write(store, "e1", {"age": 1}, event_time=et)
        assert len(exc.problems) == 1
        check_problem(exc.problems[0], "e1", None, "event_time")
    assert_absent(store, "e1")
    assert data_keys(client, project) == []


# -- 2. entity ids -----------------------------------------------------------------------------


def test_int_and_str_ids_address_the_same_entity(
    store: FeatureStore, profile_view: FeatureView
) -> None:
    store.write(VIEW, 123, {"age": 1})
    got = store.get(VIEW, "123")
    assert got is not None and got["age"] == 1
    store.write(VIEW, "123", {"age": 2})
    got = store.get(VIEW, 123)
    assert got is not None and got["age"] == 2
    got = store.get(VIEW, np.int64(123))  # type: ignore[arg-type]
    assert got is not None and got["age"] == 2
    assert len(store.history(VIEW, 123)) == 2
    assert [r["age"] for r in store.get_many(VIEW, [123, "123", "0123", -123])[:2]] == [2, 2]
    assert store.get(VIEW, "0123") is None and store.get(VIEW, -123) is None
    store.write(VIEW, -5, {"age": 3})
    got = store.get(VIEW, "-5")
    assert got is not None and got["age"] == 3


@FAST
@given(n=st.integers(min_value=-(10**40), max_value=10**40))
def test_int_ids_round_trip(store: FeatureStore, profile_view: FeatureView, n: int) -> None:
    age = abs(n) % 151
    store.write(VIEW, n, {"age": age})
    a, b = store.get(VIEW, n), store.get(VIEW, str(n))
    assert a is not None and b is not None and a["age"] == b["age"] == age
    [rec] = store.get_many(VIEW, [n], with_meta=True)
    assert rec.entity_id == str(n)


BAD_IDS: list[tuple[Any, str]] = [
    ("", "entity_id_empty"),
    ("a" * 1025, "entity_id_too_long"),
    ("é" * 513, "entity_id_too_long"),  # 513 characters, 1026 UTF-8 bytes
    ("😀" * 257, "entity_id_too_long"),  # 1028 bytes
    (b"abc", "entity_id_type"),
    (bytearray(b"abc"), "entity_id_type"),
    (1.0, "entity_id_type"),
    (float("nan"), "entity_id_type"),
    (None, "entity_id_type"),
    (True, "entity_id_type"),
    (False, "entity_id_type"),
    (np.bool_(True), "entity_id_type"),
    (("a",), "entity_id_type"),
    ("\ud800", "entity_id_unicode"),
    ("ab\udfffcd", "entity_id_unicode"),
]


@pytest.mark.parametrize(("entity_id", "rule"), BAD_IDS)
def test_bad_entity_ids_are_refused(
    store: FeatureStore,
    profile_view: FeatureView,
    client: redis.Redis,
    project: str,
    entity_id: Any,
    rule: str,
) -> None:
    exc = refuse_write(store, entity_id, {"age": 1})
    assert [p.rule for p in exc.problems] == [rule]
    p = exc.problems[0]
    assert (p.view, p.field, p.row) == (VIEW, None, None)
    if isinstance(entity_id, bytes):
        assert "decode bytes first" in p.message
    if rule == "entity_id_too_long":
        assert p.value == len(entity_id.encode("utf-8")) and "1024" in p.message
    # every other entry point refuses the same id the same way
    calls: list[Callable[[], object]] = [
        lambda: store.get(VIEW, entity_id),
        lambda: store.get(VIEW, entity_id, as_of=datetime(2024, 1, 1)),
        lambda: store.get_many(VIEW, ["ok", entity_id]),
        lambda: store.history(VIEW, entity_id),
        lambda: store.delete(VIEW, entity_id),
        lambda: store.update(VIEW, entity_id, {"age": 1}),
        lambda: store.increment(VIEW, entity_id, {"age": 1}),
    ]
    for call in calls:
        with pytest.raises(ValidationError) as info:
            call()
        assert rule in {q.rule for q in info.value.problems}
    assert data_keys(client, project) == []


def test_id_length_limit_is_counted_in_utf8_bytes(
    store: FeatureStore, profile_view: FeatureView
) -> None:
    for i, entity_id in enumerate(["a" * 1024, "é" * 512, "😀" * 256, "x" + "é" * 511 + "y"]):
        assert len(entity_id.encode("utf-8")) <= 1024
        store.write(VIEW, entity_id, {"age": i})
        got = store.get(VIEW, entity_id)
        assert got is not None and got["age"] == i


def test_huge_int_id_is_refused_with_validation_error(
    store: FeatureStore, profile_view: FeatureView
) -> None:
    with pytest.raises(ValidationError) as info:
        store.write(VIEW, 10**5000, {"age": 1})
    assert [p.rule for p in info.value.problems] == ["entity_id_too_long"]


hostile_ids = st.text(
    alphabet=st.one_of(st.sampled_from(list(HOSTILE)), st.characters(codec="utf-8")),
    min_size=1,
    max_size=24,
).filter(lambda s: s != VICTIM)


def _check_project_keys(client: redis.Redis, project: str) -> set[str]:
    """Every data key has one well-formed hash tag; returns the entity ids found in them."""
    prefix = f"rf:{project}:"
    entities: set[str] = set()
    for key in data_keys(client, project):
        assert key.startswith(prefix + "{" + VIEW + "|"), key
        assert key.count("{") == 1 and key.count("}") == 1, key
        rest = key[len(prefix) :]
        tag, _, suffix = rest[1:].partition("}")
        view, sep, escaped = tag.partition("|")
        if escaped.startswith(":"):  # partitioned layout (a cluster): the id follows the tag
            escaped, _, more = suffix[1:].partition(":")
            suffix = ":" + more if more else ""
        assert suffix in ("", ":h"), key
        assert (view, sep) == (VIEW, "|")
        assert not (set(escaped) & _STRUCTURAL), key
        assert all(ord(c) > 0x20 and c != "\x7f" for c in escaped), key
        assert "%" not in _ESCAPED_RUN.sub("", escaped), key
        entity = unescape_id(escaped)
        assert escape_id(entity) == escaped
        entities.add(entity)
    return entities


@FAST
@given(ids=st.lists(hostile_ids, min_size=1, max_size=6, unique=True))
def test_hostile_ids_round_trip_and_stay_in_their_own_keys(
    store: FeatureStore,
    profile_view: FeatureView,
    client: redis.Redis,
    project: str,
    ids: list[str],
) -> None:
    if store.get(VIEW, VICTIM) is None:
        store.write(VIEW, VICTIM, {"age": 99, "tags": [VICTIM]})
    for i, e in enumerate(ids):
        store.write(VIEW, e, {"age": i, "tags": [e]})
    for i, (e, got) in enumerate(zip(ids, store.get_many(VIEW, ids), strict=True)):
        assert got is not None and got["age"] == i and got["tags"] == [e]
    for i, e in enumerate(ids):
        one = store.get(VIEW, e)
        assert one is not None and one["age"] == i and one["tags"] == [e]
        assert store.history(VIEW, e)[0].values["tags"] == [e]
    for rec, e in zip(store.get_many(VIEW, ids, with_meta=True), ids, strict=True):
        assert rec.entity_id == e
    victim = store.get(VIEW, VICTIM)
    assert victim is not None and victim["age"] == 99 and victim["tags"] == [VICTIM]
    assert len(store.history(VIEW, VICTIM)) == 1
    found = _check_project_keys(client, project)
    assert set(ids) | {VICTIM} <= found


def test_hostile_ids_do_not_reach_the_victim_on_delete(
    store: FeatureStore, profile_view: FeatureView, client: redis.Redis, project: str
) -> None:
    store.write(VIEW, VICTIM, {"age": 1})
    tricky = [
        "*",
        "vic*",
        "victim*",
        "vic?im",
        "[v]ictim",
        "victim}",
        "{victim}",
        "victim|x",
        "victim:h",
        "victim}:h",
        "%76ictim",
        "victim\x00",
        " victim",
        "victim\n",
        "v\\ictim",
    ]
    for i, e in enumerate(tricky):
        store.write(VIEW, e, {"age": i + 10})
    assert _check_project_keys(client, project) == set(tricky) | {VICTIM}
    for i, e in enumerate(tricky):
        got = store.get(VIEW, e)
        assert got is not None and got["age"] == i + 10
        assert store.delete(VIEW, e) is True
    got = store.get(VIEW, VICTIM)
    assert got is not None and got["age"] == 1
    assert len(store.history(VIEW, VICTIM)) == 1
    assert _check_project_keys(client, project) == {VICTIM}


@settings(max_examples=300, deadline=None)
@given(s=st.text())
def test_escape_id_round_trips_and_hides_structure(s: str) -> None:
    esc = escape_id(s)
    assert unescape_id(esc) == s
    assert not (set(esc) & _STRUCTURAL)
    assert all(ord(c) > 0x20 and c != "\x7f" for c in esc)
    assert "%" not in _ESCAPED_RUN.sub("", esc)
    if not (set(s) & (set(HOSTILE) | {chr(c) for c in range(0x21)})):
        assert esc == s  # ordinary ids stay readable


_confusable = st.text(alphabet=list("%2A5Bb{}*|:\\ 7C0"), max_size=8)


@settings(max_examples=300, deadline=None)
@given(a=_confusable, b=_confusable)
def test_escape_id_is_injective(a: str, b: str) -> None:
    assert (escape_id(a) == escape_id(b)) == (a == b)


def test_escape_id_examples() -> None:
    assert escape_id("*") == "%2A"
    assert escape_id("%2A") == "%252A"
    assert escape_id("a{b}c") == "a%7Bb%7Dc"
    assert escape_id("user 1") == "user%201"
    assert escape_id("é😀") == "é😀"
    assert len({escape_id(x) for x in ["*", "%2A", "%252A", "%", "%25"]}) == 5


# -- 3. write_many -----------------------------------------------------------------------------

# rows 0 and 5 are good; the rest break the listed rules.
ROWS: list[dict[str, Any]] = [
    {"entity_id": "u0", "age": 30, "zip_code": "12345", "segment": "basic", "nope": None},
    {"entity_id": "u1", "age": -1, "zip_code": "x", "segment": "basic", "nope": None},
    {"entity_id": "u2", "age": 40, "zip_code": "54321", "segment": "gold", "nope": None},
    {"entity_id": "u3", "age": 50, "zip_code": "11111", "segment": "premium", "nope": 5},
    {"entity_id": "", "age": 60, "zip_code": "22222", "segment": "basic", "nope": None},
    {"entity_id": "u5", "age": 70, "zip_code": "33333", "segment": "premium", "nope": None},
]
EXPECTED: dict[int, tuple[str | None, set[tuple[str | None, str]]]] = {
    1: ("u1", {("age", "min"), ("zip_code", "pattern")}),
    2: ("u2", {("segment", "category")}),
    3: ("u3", {("nope", "unknown_field")}),
    4: ("", {(None, "entity_id_empty")}),
}
GOOD_ROWS = {0: "u0", 5: "u5"}


def _as_dicts(rows: list[dict[str, Any]]) -> Any:
    return [{k: v for k, v in r.items() if v is not None} for r in rows]


def _as_frame(rows: list[dict[str, Any]]) -> Any:
    return pd.DataFrame(rows)


def _as_table(rows: list[dict[str, Any]]) -> Any:
    return pa.Table.from_pylist(rows)


FORMATS = pytest.mark.parametrize(
    "make", [_as_dicts, _as_frame, _as_table], ids=["dicts", "pandas", "arrow"]
)


def _check_row_problems(exc: ValidationError, rows: dict[int, Any]) -> None:
    by_row: dict[int, list[Problem]] = {}
    for p in exc.problems:
        assert p.row is not None and p.view == VIEW
        by_row.setdefault(p.row, []).append(p)
    assert set(by_row) == set(rows)
    for i, ps in by_row.items():
        entity, expected = rows[i]
        assert {(p.field, p.rule) for p in ps} == expected
        assert len(ps) == len(expected)
        assert all(p.entity == entity for p in ps)


@FORMATS
def test_write_many_raise_writes_nothing_and_lists_rows(
    store: FeatureStore,
    profile_view: FeatureView,
    client: redis.Redis,
    project: str,
    make: Callable[[list[dict[str, Any]]], Any],
) -> None:
    with pytest.raises(ValidationError) as info:
        store.write_many(VIEW, make(ROWS), on_error="raise")
    exc = info.value
    _check_row_problems(exc, EXPECTED)
    rows_in_order = [p.row for p in exc.problems]
    assert rows_in_order == sorted(rows_in_order)  # type: ignore[type-var]
    assert "row 1, entity 'u1', field 'age'" in str(exc)
    assert data_keys(client, project) == []
    assert store.get_many(VIEW, ["u0", "u1", "u2", "u3", "u5"]) == [None] * 5


@FORMATS
def test_write_many_skip_writes_good_rows_and_reports_bad_ones(
    store: FeatureStore,
    profile_view: FeatureView,
    client: redis.Redis,
    project: str,
    make: Callable[[list[dict[str, Any]]], Any],
) -> None:
    report = store.write_many(VIEW, make(ROWS), on_error="skip")
    assert report.written == len(GOOD_ROWS)
    assert [i for i, _ in report.refused] == sorted(EXPECTED)
    for i, err in report.refused:
        assert isinstance(err, ValidationError)
        assert all(p.row == i for p in err.problems)
        _check_row_problems(err, {i: EXPECTED[i]})
    for i, e in GOOD_ROWS.items():
        got = store.get(VIEW, e)
        assert got is not None
        assert (got["age"], got["zip_code"], got["segment"]) == (
            ROWS[i]["age"],
            ROWS[i]["zip_code"],
            ROWS[i]["segment"],
        )
    for e in ("u1", "u2", "u3"):
        assert_absent(store, e)
    keys = Keys(project)
    found = {keys.parse(k).entity for k in data_keys(client, project)}  # type: ignore[union-attr]
    assert found == {"u0", "u5"}


def test_write_many_existing_entities_are_untouched_when_the_batch_is_refused(
    store: FeatureStore, profile_view: FeatureView
) -> None:
    store.write(VIEW, "u0", {"age": 1})
    store.write(VIEW, "u2", {"age": 2})
    with pytest.raises(ValidationError):
        store.write_many(VIEW, _as_dicts(ROWS))
    assert [r["age"] for r in store.get_many(VIEW, ["u0", "u2"])] == [1, 2]
    assert len(store.history(VIEW, "u0")) == len(store.history(VIEW, "u2")) == 1


@pytest.mark.parametrize(
    ("column", "values", "bad"),
    [
        ("age", [1, 2**63, 3], {1: "range"}),
        ("age", [1, True, 3], {1: "type"}),
        ("age", [1, 2.0, 200], {1: "type", 2: "max"}),
        ("income", [1.0, INF, -1.0], {1: "finite", 2: "min"}),
        ("income", [1.0, "2", 3.0], {1: "type"}),
        ("active", [True, 1, False], {1: "type"}),
        ("segment", ["basic", "gold", "premium"], {1: "category"}),
        ("zip_code", ["12345", "1" * 11, "1234x"], {1: "max_length", 2: "pattern"}),
        ("embedding", [[0.0] * 4, [0.0] * 3, [NAN] * 4], {1: "dimension", 2: "finite"}),
        ("tags", [["a"], ["b", None], [1]], {1: "null", 2: "type"}),
        ("scores", [[1.0], [INF], "x"], {1: "finite", 2: "type"}),
    ],
)
def test_write_many_checks_each_column_value_by_value(
    store: FeatureStore,
    profile_view: FeatureView,
    client: redis.Redis,
    project: str,
    column: str,
    values: list[Any],
    bad: dict[int, str],
) -> None:
    rows = [{"entity_id": f"r{i}", column: v} for i, v in enumerate(values)]
    with pytest.raises(ValidationError) as info:
        store.write_many(VIEW, rows)
    got = {p.row: p.rule for p in info.value.problems}
    assert got == bad
    assert all(p.field == column and p.entity == f"r{p.row}" for p in info.value.problems)
    assert data_keys(client, project) == []
    report = store.write_many(VIEW, rows, on_error="skip")
    assert report.written == len(values) - len(bad)
    assert [i for i, _ in report.refused] == sorted(bad)
    for i in range(len(values)):
        assert (store.get(VIEW, f"r{i}") is None) == (i in bad)


def test_write_many_pandas_inf_is_refused_and_nan_is_null(
    store: FeatureStore, profile_view: FeatureView
) -> None:
    frame = pd.DataFrame({"entity_id": ["a", "b"], "income": [1.0, INF]})
    with pytest.raises(ValidationError) as info:
        store.write_many(VIEW, frame)
    assert [(p.row, p.entity, p.field, p.rule) for p in info.value.problems] == [
        (1, "b", "income", "finite")
    ]
    assert store.get(VIEW, "a") is None
    # pandas' NaN is its missing value: it becomes a null, as documented in batch.py
    store.write_many(VIEW, pd.DataFrame({"entity_id": ["c"], "income": [NAN]}))
    got = store.get(VIEW, "c")
    assert got is not None and got["income"] is None
    # a nullable integer column keeps its ints
    frame = pd.DataFrame({"entity_id": ["d", "e"], "age": pd.array([7, None], dtype="Int64")})
    store.write_many(VIEW, frame)
    assert [r["age"] for r in store.get_many(VIEW, ["d", "e"])] == [7, None]


def test_write_many_non_mapping_rows(
    store: FeatureStore, profile_view: FeatureView, client: redis.Redis, project: str
) -> None:
    rows: list[Any] = [{"entity_id": "ok", "age": 1}, ["entity_id", "x"], None]
    with pytest.raises(ValidationError) as info:
        store.write_many(VIEW, rows)
    assert {(p.row, p.rule) for p in info.value.problems} >= {(1, "row_type"), (2, "row_type")}
    assert {p.row for p in info.value.problems} == {1, 2}
    assert data_keys(client, project) == []
    report = store.write_many(VIEW, rows, on_error="skip")
    assert report.written == 1 and [i for i, _ in report.refused] == [1, 2]
    got = store.get(VIEW, "ok")
    assert got is not None and got["age"] == 1


@FORMATS
def test_write_many_missing_entity_column(
    store: FeatureStore,
    profile_view: FeatureView,
    client: redis.Redis,
    project: str,
    make: Callable[[list[dict[str, Any]]], Any],
) -> None:
    rows = [{"user": "a", "age": 1}, {"user": "b", "age": 2}]
    with pytest.raises(ValidationError) as info:
        store.write_many(VIEW, make(rows))
    # 'user' is not a field either: each row has both problems
    assert {(p.row, p.field, p.rule) for p in info.value.problems} == {
        (0, "entity_id", "entity_column"),
        (1, "entity_id", "entity_column"),
        (0, "user", "unknown_field"),
        (1, "user", "unknown_field"),
    }
    assert "'entity_id'" in str(info.value)
    assert data_keys(client, project) == []
    report = store.write_many(VIEW, make(rows), on_error="skip")
    assert report.written == 0 and [i for i, _ in report.refused] == [0, 1]
    assert data_keys(client, project) == []
    # naming the column makes the same rows valid
    report = store.write_many(VIEW, make(rows), entity_column="user")
    assert report.written == 2 and report.refused == []
    got = store.get(VIEW, "b")
    assert got is not None and got["age"] == 2


def test_write_many_entity_column_with_bad_ids(
    store: FeatureStore, profile_view: FeatureView, client: redis.Redis, project: str
) -> None:
    rows: list[Any] = [
        {"entity_id": 7, "age": 1},
        {"entity_id": b"x", "age": 1},
        {"age": 1},
        {"entity_id": "a" * 1025, "age": 1},
        {"entity_id": True, "age": 1},
        {"entity_id": "\ud800", "age": 1},
        {"entity_id": "ok", "age": -1},
    ]
    with pytest.raises(ValidationError) as info:
        store.write_many(VIEW, rows)
    assert [(p.row, p.rule) for p in info.value.problems] == [
        (1, "entity_id_type"),
        (2, "entity_id_type"),
        (3, "entity_id_too_long"),
        (4, "entity_id_type"),
        (5, "entity_id_unicode"),
        (6, "min"),
    ]
    assert data_keys(client, project) == []
    report = store.write_many(VIEW, rows, on_error="skip")
    assert report.written == 1
    got = store.get(VIEW, "7")
    assert got is not None and got["age"] == 1


@FORMATS
def test_write_many_bad_event_times(
    store: FeatureStore,
    profile_view: FeatureView,
    client: redis.Redis,
    project: str,
    make: Callable[[list[dict[str, Any]]], Any],
) -> None:
    good_at = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    rows = [
        {"entity_id": "x0", "ts": good_at, "age": 1},
        {"entity_id": "x1", "ts": datetime(1800, 1, 1, tzinfo=UTC), "age": 2},
        {"entity_id": "x2", "ts": datetime(2300, 1, 1, tzinfo=UTC), "age": 3},
    ]
    with pytest.raises(ValidationError) as info:
        store.write_many(VIEW, make(rows), event_time_column="ts")
    assert [(p.row, p.entity, p.field, p.rule) for p in info.value.problems] == [
        (1, "x1", "ts", "event_time"),
        (2, "x2", "ts", "event_time"),
    ]
    assert data_keys(client, project) == []
    report = store.write_many(VIEW, make(rows), event_time_column="ts", on_error="skip")
    assert report.written == 1 and [i for i, _ in report.refused] == [1, 2]
    [version] = store.history(VIEW, "x0")
    assert version.event_time == good_at and version.values["age"] == 1
    assert_absent(store, "x1")


def test_write_many_event_time_values_of_the_wrong_kind(
    store: FeatureStore, profile_view: FeatureView, client: redis.Redis, project: str
) -> None:
    values = [1_700_000_000, "yesterday", NAN, 10**12, True, None]
    rows = [{"entity_id": f"x{i}", "ts": v, "age": 1} for i, v in enumerate(values)]
    with pytest.raises(ValidationError) as info:
        store.write_many(VIEW, rows, event_time_column="ts")
    assert [(p.row, p.field, p.rule) for p in info.value.problems] == [
        (i, "ts", "event_time") for i in range(1, 6)
    ]
    assert data_keys(client, project) == []
    # a missing event time column refuses every row
    with pytest.raises(ValidationError) as info:
        store.write_many(VIEW, [{"entity_id": "y", "age": 1}], event_time_column="when")
    assert [(p.row, p.field, p.rule) for p in info.value.problems] == [(0, "when", "event_time")]
    assert data_keys(client, project) == []


def test_write_many_reports_every_problem_of_a_row(
    store: FeatureStore, profile_view: FeatureView
) -> None:
    rows: list[Any] = [
        {"entity_id": "", "ts": "later", "age": "x", "segment": "gold", "nope": 1},
    ]
    with pytest.raises(ValidationError) as info:
        store.write_many(VIEW, rows, event_time_column="ts")
    assert {(p.field, p.rule) for p in info.value.problems} == {
        (None, "entity_id_empty"),
        ("ts", "event_time"),
        ("age", "type"),
        ("segment", "category"),
        ("nope", "unknown_field"),
    }
    assert all(p.row == 0 for p in info.value.problems)


@pytest.mark.parametrize("kind", ["pandas", "arrow"])
def test_write_many_accepts_an_empty_frame(
    store: FeatureStore, profile_view: FeatureView, kind: str
) -> None:
    columns = {"entity_id": pa.array([], pa.string()), "age": pa.array([], pa.int64())}
    table = pa.table(columns)
    rows = table.to_pandas() if kind == "pandas" else table
    report = store.write_many(VIEW, rows)
    assert report.written == 0 and report.refused == []


# -- 4. bad arguments --------------------------------------------------------------------------


def test_bad_on_error_is_a_configuration_error(
    store: FeatureStore, profile_view: FeatureView, client: redis.Redis, project: str
) -> None:
    for bad in ("bogus", "RAISE", "", None):
        with pytest.raises(ConfigurationError, match="on_error"):
            store.write_many(VIEW, [{"entity_id": "a", "age": 1}], on_error=bad)  # type: ignore[arg-type]
    assert data_keys(client, project) == []


def test_unknown_view_is_not_found(store: FeatureStore, profile_view: FeatureView) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.write("nope_view", "a", {"age": 1}),
        lambda: store.write_many("nope_view", [{"entity_id": "a", "age": 1}]),
        lambda: store.update("nope_view", "a", {"age": 1}),
        lambda: store.increment("nope_view", "a", {"age": 1}),
        lambda: store.get("nope_view", "a"),
        lambda: store.get("nope_view", "a", as_of=datetime(2024, 1, 1)),
        lambda: store.get_many("nope_view", ["a"]),
        lambda: store.history("nope_view", "a"),
        lambda: store.delete("nope_view", "a"),
        lambda: store.view("nope_view"),
        lambda: store.get_features(["a"], ["nope_view:age"]),
    ]
    for call in calls:
        with pytest.raises(NotFoundError, match="nope_view"):
            call()


def test_unknown_feature_in_get_is_a_validation_error(
    store: FeatureStore, profile_view: FeatureView
) -> None:
    store.write(VIEW, "a", {"age": 1})
    reads: list[Callable[[], object]] = [
        lambda: store.get(VIEW, "a", features=["age", "nope", "other"]),
        lambda: store.get(VIEW, "a", features=["nope", "other"], as_of=datetime(2100, 1, 1)),
        lambda: store.get_many(VIEW, ["a", "b"], features=["other", "nope"]),
        lambda: store.get_features(["a"], [f"{VIEW}:nope", f"{VIEW}:other"]),
    ]
    for read in reads:
        with pytest.raises(ValidationError) as info:
            read()
        assert {(p.view, p.field, p.rule) for p in info.value.problems} == {
            (VIEW, "nope", "unknown_field"),
            (VIEW, "other", "unknown_field"),
        }
    assert store.get(VIEW, "a", features=["age"]) == {"age": 1}


@pytest.mark.parametrize("limit", [0, -1, True, 1.5, "3", None])
def test_history_limit_must_be_a_positive_int(
    store: FeatureStore, profile_view: FeatureView, limit: Any
) -> None:
    store.write(VIEW, "a", {"age": 1})
    with pytest.raises(ConfigurationError, match="limit"):
        store.history(VIEW, "a", limit=limit)
    assert len(store.history(VIEW, "a", limit=1)) == 1


@pytest.mark.parametrize(
    ("deltas", "expected"),
    [
        ({"zip_code": 1}, {("zip_code", "not_numeric")}),
        ({"active": 1}, {("active", "not_numeric")}),
        ({"tags": 1}, {("tags", "not_numeric")}),
        ({"income": NAN}, {("income", "type")}),
        ({"income": INF}, {("income", "type")}),
        ({"income": "1"}, {("income", "type")}),
        ({"age": 1.5}, {("age", "type")}),
        ({"age": 1.0}, {("age", "type")}),
        ({"age": True}, {("age", "type")}),
        ({"age": None}, {("age", "type")}),
        ({"nope": 1}, {("nope", "unknown_field")}),
        (
            {"zip_code": 1, "income": NAN, "age": 0.5, "nope": 2, "scores": 1},
            {
                ("zip_code", "not_numeric"),
                ("income", "type"),
                ("age", "type"),
                ("nope", "unknown_field"),
                ("scores", "not_numeric"),
            },
        ),
    ],
)
def test_bad_increment_is_refused_and_nothing_is_written(
    store: FeatureStore,
    profile_view: FeatureView,
    deltas: dict[str, Any],
    expected: set[tuple[str, str]],
) -> None:
    with pytest.raises(ValidationError) as info:
        store.increment(VIEW, "new", deltas)
    assert pairs(info.value) == expected
    assert len(info.value.problems) == len(expected)
    assert all(p.view == VIEW and p.entity == "new" for p in info.value.problems)
    assert_absent(store, "new")
    first = store.write(VIEW, "old", {"age": 5, "income": 2.5, "zip_code": "12345"})
    with pytest.raises(ValidationError):
        store.increment(VIEW, "old", deltas)
    assert store.get(VIEW, "old", features=["age", "income", "zip_code"]) == {
        "age": 5,
        "income": 2.5,
        "zip_code": "12345",
    }
    assert [v.id for v in store.history(VIEW, "old")] == [first.id]


def test_increment_past_a_bound_is_refused(store: FeatureStore, profile_view: FeatureView) -> None:
    store.write(VIEW, "a", {"age": 149, "income": 1.0})
    with pytest.raises(ValidationError) as info:
        store.increment(VIEW, "a", {"age": 2})
    assert pairs(info.value) == {("age", "max")}
    with pytest.raises(ValidationError) as info:
        store.increment(VIEW, "a", {"income": -2.0})
    assert pairs(info.value) == {("income", "min")}
    assert store.get(VIEW, "a", features=["age", "income"]) == {"age": 149, "income": 1.0}
    assert len(store.history(VIEW, "a")) == 1
    store.increment(VIEW, "a", {"age": 1, "income": 0.5})
    assert store.get(VIEW, "a", features=["age", "income"]) == {"age": 150, "income": 1.5}


def test_bad_update_is_refused(store: FeatureStore, profile_view: FeatureView) -> None:
    first = store.write(VIEW, "a", {"age": 1, "zip_code": "12345"})
    with pytest.raises(ValidationError) as info:
        store.update(VIEW, "a", {"age": -1, "zip_code": "x", "nope": 3})
    assert pairs(info.value) == {("age", "min"), ("zip_code", "pattern"), ("nope", "unknown_field")}
    with pytest.raises(ValidationError) as info:
        store.update(VIEW, "a", {"segment": "gold"})
    assert pairs(info.value) == {("segment", "category")}
    assert [v.id for v in store.history(VIEW, "a")] == [first.id]
    got = store.get(VIEW, "a", features=["age", "zip_code", "segment"])
    assert got == {"age": 1, "zip_code": "12345", "segment": None}


@pytest.mark.parametrize(
    "as_of",
    ["2024-01-01", True, NAN, INF, -INF, object(), [2024], datetime(1800, 1, 1), 10**12],
    ids=["str", "bool", "nan", "inf", "-inf", "object", "list", "year1800", "far_future"],
)
def test_bad_as_of_is_a_validation_error(
    store: FeatureStore, profile_view: FeatureView, as_of: Any
) -> None:
    store.write(VIEW, "a", {"age": 1})
    for read in (
        lambda: store.get(VIEW, "a", as_of=as_of),
        lambda: store.get_many(VIEW, ["a"], as_of=as_of, with_meta=True),
    ):
        with pytest.raises(ValidationError) as info:
            read()
        assert [(p.view, p.rule) for p in info.value.problems] == [(VIEW, "as_of")]
    got = store.get(VIEW, "a", as_of=datetime(2199, 1, 1))
    assert got is not None and got["age"] == 1


# -- 5. messages -------------------------------------------------------------------------------


def test_messages_name_view_entity_field_and_rule(
    store: FeatureStore, profile_view: FeatureView
) -> None:
    exc = refuse_write(store, "alice", {"age": 200, "segment": "gold"})
    text = str(exc)
    assert text.startswith("2 problem(s); nothing was written:")
    for needle in (
        "'user_profile'",
        "'alice'",
        "'age'",
        "[rule: max]",
        "'segment'",
        "[rule: category]",
        "200",
        "150",
        "'gold'",
    ):
        assert needle in text, needle
    for p in exc.problems:
        line = str(p)
        assert line.startswith(f"view 'user_profile', entity 'alice', field '{p.field}': ")
        assert line.endswith(f"[rule: {p.rule}]")
        assert line in text

    with pytest.raises(ValidationError) as info:
        store.write_many(VIEW, [{"entity_id": "bob", "age": 1}, {"entity_id": "carol", "age": -3}])
    text = str(info.value)
    assert "view 'user_profile', row 1, entity 'carol', field 'age'" in text
    assert "[rule: min]" in text and "-3" in text and "bob" not in text

    exc = refuse_write(store, "dave", {"nope": 1})
    assert "'nope'" in str(exc) and "[rule: unknown_field]" in str(exc) and "'dave'" in str(exc)

    exc = refuse_write(store, b"raw", {"age": 1})
    assert "[rule: entity_id_type]" in str(exc) and "bytes" in str(exc)


def test_long_lists_of_problems_are_cut_in_the_message(
    store: FeatureStore, profile_view: FeatureView
) -> None:
    rows = [{"entity_id": f"e{i}", "age": -1} for i in range(30)]
    with pytest.raises(ValidationError) as info:
        store.write_many(VIEW, rows)
    assert len(info.value.problems) == 30
    text = str(info.value)
    assert text.startswith("30 problem(s)") and "... and 10 more" in text
    assert "row 19, entity 'e19'" in text and "row 20," not in text


# -- regressions: bugs found while writing these tests, fixed in the library --------------------


@pytest.mark.parametrize(
    "vector", [["1", "2", "3", "4"], [True, False, True, False]], ids=["str", "bool"]
)
def test_vector_items_must_be_numbers(
    store: FeatureStore, profile_view: FeatureView, vector: list[Any]
) -> None:
    exc = refuse_write(store, "e1", {"embedding": vector})
    assert pairs(exc) == {("embedding", "type")}
    assert_absent(store, "e1")


def test_write_returns_the_values_it_stored_for_an_iterator(
    store: FeatureStore, profile_view: FeatureView
) -> None:
    tags: Iterator[str] = iter(["a", "b"])
    version = store.write(VIEW, "e1", {"tags": tags})
    stored = store.get(VIEW, "e1")
    assert stored is not None and stored["tags"] == ["a", "b"]
    assert version.values["tags"] == ["a", "b"]


def test_write_lists_id_value_and_event_time_problems_together(
    store: FeatureStore, profile_view: FeatureView
) -> None:
    exc = refuse_write(store, "", {"age": "x"})
    assert pairs(exc) == {(None, "entity_id_empty"), ("age", "type")}
    exc = refuse_write(store, "e1", {"age": "x"}, event_time="later")
    assert pairs(exc) == {("age", "type"), (None, "event_time")}
