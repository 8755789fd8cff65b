"""Entities with several join keys: the id encoding, reads and writes by tuple or mapping,
get_features across entities (entity rows), training frames joined on each view's keys."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redfeat import (
    ConfigurationError,
    ConflictError,
    Entity,
    FeatureStore,
    FeatureView,
    Field,
    ValidationError,
    WindowFeatures,
)
from redfeat import types as t
from redfeat.core.codec import decode_id, normalize_id
from redfeat.core.keys import Keys, escape_id

T0 = datetime(2024, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)

USER = Entity("user", join_keys=["user_id"])
PAIR = Entity("user_merchant", join_keys=["user_id", ("merchant_id", t.Int)])


def apply_all(store: FeatureStore) -> None:
    store.apply(
        USER,
        PAIR,
        FeatureView("profile", entity=USER, fields=[Field("age", t.Int)]),
        FeatureView(
            "pair_stats",
            entity=PAIR,
            fields=[Field("txn_count", t.Int), Field("amount", t.Float)],
        ),
    )


# -- definitions ------------------------------------------------------------------------


def test_entity_join_keys_are_checked() -> None:
    assert PAIR.key_names == ["user_id", "merchant_id"] and PAIR.composite
    assert [k.dtype for k in PAIR.join_keys] == [t.String, t.Int]
    assert Entity("user").key_names == ["entity_id"] and not Entity("user").declared
    assert Entity("e", join_keys=[Field("k", t.Int)]).join_keys[0].dtype is t.Int
    for bad in (
        [],
        "user_id",
        ["a", "a"],
        [("k", t.Float)],
        ["bad name"],
        [3],
        [f"k{i}" for i in range(9)],
    ):
        with pytest.raises(ConfigurationError):
            Entity("e", join_keys=bad)  # type: ignore[arg-type]
    assert Entity.from_spec(PAIR.spec()) == PAIR
    assert "join_keys" not in Entity("user").spec()  # old registries stay unchanged


# -- the id encoding ----------------------------------------------------------------------

part = st.one_of(
    st.text(min_size=1, max_size=12),
    st.text(alphabet=",%{}|:", min_size=1, max_size=6),
)


@settings(max_examples=300, deadline=None)
@given(a=st.tuples(part, st.integers(-(2**63), 2**63 - 1)), b=st.tuples(part, st.integers()))
def test_composite_ids_are_injective_and_round_trip(a: tuple[str, int], b: tuple[str, int]) -> None:
    try:
        ida = normalize_id("v", a, key=PAIR)
    except ValidationError:
        return  # lone surrogates and such are refused, as for one-key ids
    assert decode_id(PAIR, ida) == a
    # the encoded id, a mapping and the tuple are one id
    assert normalize_id("v", ida, key=PAIR) == ida
    assert normalize_id("v", {"merchant_id": a[1], "user_id": a[0]}, key=PAIR) == ida
    try:
        idb = normalize_id("v", b, key=PAIR)
    except ValidationError:
        return
    assert (ida == idb) == (a == b)
    # one hash tag per (view, entity): the escaped id never ends the tag or adds a separator
    esc = escape_id(ida)
    assert not set(esc) & set("{}|:") and Keys("p").parse(Keys("p").latest("v", esc)) == (
        "entity",
        "v",
        ida,
        "",
    )


def test_readable_ids_and_canonical_forms() -> None:
    assert normalize_id("v", ("u1", 9), key=PAIR) == "u1,9"
    assert normalize_id("v", ["u1", "009"], key=PAIR) == "u1,9"  # Int keys: canonical digits
    assert normalize_id("v", "u1, 9", key=PAIR) == "u1,9"
    assert normalize_id("v", ("a,b", 1), key=PAIR) == "a%2Cb,1"
    assert normalize_id("v", ("50%", 1), key=PAIR) == "50%25,1"
    assert decode_id(PAIR, "a%2Cb,1") == ("a,b", 1)
    one_int = Entity("n", join_keys=[("n", t.Int)])
    assert normalize_id("v", "007", key=one_int) == "7"
    assert normalize_id("v", {"n": 7}, key=one_int) == "7"
    # without the entity (the write path): a tuple is encoded the same way
    assert normalize_id("v", ("u1", 9)) == "u1,9"


BAD: list[tuple[Any, str]] = [
    (("u1",), "entity_key_arity"),
    (("u1", 9, 3), "entity_key_arity"),
    ("u1", "entity_key_arity"),
    ("u1,9,3", "entity_key_arity"),
    ("a%2,1", "entity_key_arity"),
    (("u1", "nine"), "entity_key_type"),
    (("u1", 1.5), "entity_key_type"),
    (("u1", True), "entity_key_type"),
    (("u1", 2**63), "entity_key_range"),
    (("", 9), "entity_id_empty"),
    ((None, 9), "entity_key_null"),
    (({"a": 1}, 9), "entity_key_type"),
    ({"user_id": "u1"}, "entity_key_missing"),
    ({"user_id": "u1", "merchant_id": 9, "shop": 1}, "entity_key_unknown"),
    (("x" * 1030, 9), "entity_id_too_long"),
]


@pytest.mark.parametrize(("entity_id", "rule"), BAD)
def test_bad_composite_ids_are_refused_everywhere(
    store: FeatureStore, client: redis.Redis, project: str, entity_id: Any, rule: str
) -> None:
    apply_all(store)
    before = sorted(client.scan_iter(match=f"rf:{project}:*"))
    calls: list[Callable[[], object]] = [
        lambda: store.get("pair_stats", entity_id),
        lambda: store.get_many("pair_stats", [("u1", 1), entity_id]),
        lambda: store.get_many("pair_stats", [entity_id], as_of=T0),
        lambda: store.get_features(entity_ids=[entity_id], features=["pair_stats:amount"]),
        lambda: store.write_many(
            "pair_stats", [{"entity_id": entity_id, "txn_count": 1}], on_error="raise"
        ),
        lambda: store.write("pair_stats", entity_id, {"txn_count": 1}),
        lambda: store.update("pair_stats", entity_id, {"txn_count": 1}),
        lambda: store.increment("pair_stats", entity_id, {"txn_count": 1}),
        lambda: store.delete("pair_stats", entity_id),
        lambda: store.history("pair_stats", entity_id),
    ]
    if isinstance(entity_id, dict) and rule != "entity_key_unknown":  # rows hold other keys
        calls.append(
            lambda: store.get_features(entity_rows=[entity_id], features=["pair_stats:amount"])
        )
    for call in calls:
        with pytest.raises(ValidationError) as info:
            call()
        assert rule in {p.rule for p in info.value.problems}
    assert sorted(client.scan_iter(match=f"rf:{project}:*")) == before  # nothing written


# -- reads and writes ---------------------------------------------------------------------


def test_get_by_tuple_mapping_or_encoded_id(store: FeatureStore, client: redis.Redis) -> None:
    apply_all(store)
    store.write("pair_stats", ("u1", 9), {"txn_count": 1, "amount": 2.5}, event_time=T0)
    want = {"txn_count": 1, "amount": 2.5}
    assert store.get("pair_stats", ("u1", 9)) == want
    assert store.get("pair_stats", {"user_id": "u1", "merchant_id": 9}) == want
    assert store.get("pair_stats", {"merchant_id": "9", "user_id": "u1"}) == want
    assert store.get("pair_stats", "u1,9") == want
    assert store.get("pair_stats", ("u1", 8)) is None
    rec = store.get_many("pair_stats", [("u1", 9), ("u2", 9)], with_meta=True)
    assert [r.entity_id for r in rec] == ["u1,9", "u2,9"]
    assert store.get("pair_stats", ("u1", 9), as_of=T0 - H) is None
    assert store.get("pair_stats", ("u1", 9), as_of=T0) == want
    # readable keys, one hash tag for the entity's latest and history (which a second
    # version creates: history holds the versions older than the latest)
    store.write("pair_stats", ("u1", 9), {"txn_count": 1, "amount": 2.5}, event_time=T0 - H)
    keys = sorted(k.decode() for k in client.scan_iter(match=f"rf:{store.project}:{{pair*"))
    if store.keys.partitions:  # a cluster: the tag is the partition's, the id follows it
        tag = store.keys.part_tag("pair_stats", store.keys.partition("u1,9"))
        assert keys == [f"rf:{store.project}:{tag}:u1,9", f"rf:{store.project}:{tag}:u1,9:h"]
    else:
        assert keys == [
            f"rf:{store.project}:{{pair_stats|u1,9}}",
            f"rf:{store.project}:{{pair_stats|u1,9}}:h",
        ]
    assert store.history("pair_stats", ("u1", 9))[0].values == want
    assert store.delete("pair_stats", ("u1", 9)) and store.get("pair_stats", ("u1", 9)) is None


def test_write_many_by_join_key_columns(store: FeatureStore) -> None:
    apply_all(store)
    rows = [
        {"user_id": "u1", "merchant_id": 1, "txn_count": 1, "event_time": T0},
        {"user_id": "u,2", "merchant_id": 2, "txn_count": 2, "event_time": T0},
    ]
    assert store.write_many("pair_stats", rows, event_time_column="event_time").written == 2
    frame = pd.DataFrame(
        {"user_id": ["u3", "u4"], "merchant_id": [3, None], "txn_count": [3, 4]}
    )  # pandas turns an int column with a null into floats
    report = store.write_many("pair_stats", frame, on_error="skip")
    assert report.written == 1 and [i for i, _ in report.refused] == [1]
    table = pa.table({"user_id": ["u5"], "merchant_id": [5], "txn_count": [5]})
    assert store.write_many("pair_stats", table).written == 1
    got = store.get_many("pair_stats", [("u1", 1), ("u,2", 2), ("u3", 3), ("u5", 5)])
    assert [g["txn_count"] for g in got] == [1, 2, 3, 5]
    # the encoded id in entity_id works too; a bad one is refused with its row
    assert store.write_many("pair_stats", [{"entity_id": "u6,6", "txn_count": 6}]).written == 1
    with pytest.raises(ValidationError) as info:
        store.write_many("pair_stats", [{"entity_id": "u7", "txn_count": 7}])
    assert info.value.problems[0].rule == "entity_key_arity"
    with pytest.raises(ValidationError, match="join keys"):
        store.write_many("pair_stats", [{"user_id": "u8", "txn_count": 8}])


def test_get_features_mixes_entities_by_entity_rows(store: FeatureStore) -> None:
    apply_all(store)
    store.apply(
        WindowFeatures(
            "spend", entity=USER, source="amount", aggs=["sum"], windows=["1h"], hop="1m"
        )
    )
    store.write("profile", "u1", {"age": 30})
    store.write("profile", "u2", {"age": 40})
    store.write("pair_stats", ("u1", 9), {"txn_count": 3, "amount": 1.0})
    store.record("spend", "u1", 5.0)
    rows = [
        {"user_id": "u1", "merchant_id": 9, "other": "ignored"},
        {"user_id": "u2", "merchant_id": 9},
    ]
    refs = ["pair_stats:txn_count", "profile:age", "spend:amount_sum_1h"]
    assert store.get_features(entity_rows=rows, features=refs) == [
        {"txn_count": 3, "age": 30, "amount_sum_1h": 5.0},
        {"txn_count": None, "age": 40, "amount_sum_1h": 0.0},
    ]
    frame = store.get_features(entity_rows=rows, features=refs, as_frame=True)
    assert list(frame.columns) == ["user_id", "merchant_id", "txn_count", "age", "amount_sum_1h"]
    assert frame["merchant_id"].tolist() == [9, 9]
    # entity_ids address one entity only
    with pytest.raises(ConfigurationError, match="entity_rows"):
        store.get_features(["u1"], refs)
    assert store.get_features(["u1"], ["profile:age", "spend:amount_sum_1h"]) == [
        {"age": 30, "amount_sum_1h": 5.0}
    ]
    with pytest.raises(ConfigurationError, match="not both"):
        store.get_features(["u1"], refs, entity_rows=rows)
    with pytest.raises(ConfigurationError, match="mappings"):
        store.get_features(entity_rows=[("u1", 9)], features=refs)  # type: ignore[list-item]
    assert store.get_features(entity_rows=[], features=refs) == []


def test_undeclared_entities_never_share_the_entity_id_column(store: FeatureStore) -> None:
    store.apply(
        FeatureView("a", entity="user", fields=[Field("x", t.Int)]),
        FeatureView("m", entity="merchant", fields=[Field("y", t.Int)]),
    )
    rows = [{"entity_id": "1"}]
    with pytest.raises(ConfigurationError, match="one entity"):
        store.get_features(entity_rows=rows, features=["a:x", "m:y"])
    frame = pd.DataFrame({"entity_id": ["1"], "event_time": [T0]})
    with pytest.raises(ConfigurationError, match="one entity"):
        store.training_frame(frame, ["a:x", "m:y"])


def test_training_frame_joins_each_view_on_its_own_keys(store: FeatureStore) -> None:
    apply_all(store)
    store.write("profile", "u1", {"age": 30}, event_time=T0)
    store.write("profile", "u1", {"age": 31}, event_time=T0 + 2 * H)
    store.write("pair_stats", ("u1", 9), {"txn_count": 1, "amount": 1.0}, event_time=T0)
    store.write("pair_stats", ("u1", 9), {"txn_count": 2, "amount": 2.0}, event_time=T0 + H)
    store.write("pair_stats", ("u1", 8), {"txn_count": 7, "amount": 7.0}, event_time=T0)
    store.write("pair_stats", ("u,x", 8), {"txn_count": 5, "amount": 5.0}, event_time=T0)
    edf = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u1", "u,x", "u2"],
            "merchant_id": [9, 9, 9, 8, 8, 9],
            "event_time": [T0 - H, T0, T0 + 3 * H, T0, T0, T0],
            "label": [0, 1, 0, 1, 0, 1],
        }
    )
    out = store.training_frame(edf, ["pair_stats:txn_count", "profile:age"])
    assert list(out.columns) == [
        "user_id",
        "merchant_id",
        "event_time",
        "label",
        "txn_count",
        "age",
    ]
    assert out["txn_count"].tolist() == [pd.NA, 1, 2, 7, 5, pd.NA]
    assert out["age"].tolist() == [pd.NA, 30, 31, 30, pd.NA, pd.NA]
    # the encoded id in entity_column also joins a composite view
    legacy = pd.DataFrame({"entity_id": ["u1,9", "u1,09"], "event_time": [T0 + H, T0 + H]})
    assert store.training_frame(legacy, ["pair_stats:amount"])["amount"].tolist() == [2.0, 2.0]
    # ids that are none of the entity's match nothing; the frame is still made
    odd = pd.DataFrame(
        {"user_id": ["u1", "u1"], "merchant_id": ["009", "x"], "event_time": [T0, T0]}
    )
    amounts = store.training_frame(odd, ["pair_stats:amount"])["amount"]
    assert amounts[0] == 1.0 and pd.isna(amounts[1])
    odd = pd.DataFrame({"entity_id": ["u1,9", "u1", None], "event_time": [T0, T0, T0]})
    assert store.training_frame(odd, ["pair_stats:amount"])["amount"].isna().tolist() == [
        False,
        True,
        True,
    ]
    with pytest.raises(ConfigurationError, match="merchant_id"):
        store.training_frame(edf.drop(columns=["merchant_id"]), ["pair_stats:amount"])
    arrow = store.training_frame(
        pa.Table.from_pandas(edf, preserve_index=False), ["pair_stats:amount"], as_arrow=True
    )
    assert arrow.column("amount").to_pylist() == [None, 1.0, 2.0, 7.0, 5.0, None]


def test_changing_an_entitys_keys_is_breaking(store: FeatureStore) -> None:
    apply_all(store)
    renamed = Entity("user_merchant", join_keys=["uid", ("mid", t.Int)])
    assert store.apply(renamed) == {"user_merchant": "updated"}  # same ids: compatible
    retyped = Entity("user_merchant", join_keys=["uid", "mid"])
    with pytest.raises(ConflictError, match="join keys"):
        store.apply(retyped)
    assert store.plan(retyped)["user_merchant"].startswith("breaking change")
    assert store.apply(retyped, allow_breaking=True) == {
        "user_merchant": "breaking change: "
        "changes the join keys of entity 'user_merchant' from ['uid:String', 'mid:Int'] to "
        "['uid:String', 'mid:String']"
    }
    # a view applied with an Entity object registers its keys
    tri = Entity("tri", join_keys=["a", "b", "c"])
    store.apply(FeatureView("tv", entity=tri, fields=[Field("x", t.Int)]))
    assert [e for e in store.entities() if e.name == "tri"] == [tri]
    store.write("tv", ("1", "2", "3"), {"x": 1})
    assert store.get("tv", {"a": "1", "b": "2", "c": "3"}) == {"x": 1}


def test_one_declared_key_reads_its_column(store: FeatureStore) -> None:
    apply_all(store)
    store.write_many("profile", [{"user_id": "u1", "age": 3}])  # the key's column
    store.write_many("profile", [{"entity_id": "u2", "age": 4}])  # or entity_id, as ever
    assert store.get_many("profile", ["u1", ("u2",), {"user_id": "u2"}]) == [
        {"age": 3},
        {"age": 4},
        {"age": 4},
    ]
    frame = pd.DataFrame({"user_id": ["u1"], "event_time": [datetime.now(UTC)]})
    assert store.training_frame(frame, ["profile:age"])["age"].tolist() == [3]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ids=st.lists(
        st.tuples(st.text(alphabet="ab,%{}:| é", min_size=1, max_size=5), st.integers(0, 3)),
        min_size=1,
        max_size=8,
        unique=True,
    )
)
def test_hostile_parts_stay_in_their_own_keys(
    store: FeatureStore, ids: list[tuple[str, int]]
) -> None:
    if not store.views():
        apply_all(store)
    for i, e in enumerate(ids):
        store.write("pair_stats", e, {"txn_count": i})
    assert [g["txn_count"] for g in store.get_many("pair_stats", ids)] == list(range(len(ids)))
    rows = [{"user_id": u, "merchant_id": m} for u, m in ids]
    assert [
        r["txn_count"]
        for r in store.get_features(entity_rows=rows, features=["pair_stats:txn_count"])
    ] == list(range(len(ids)))
    for e in ids:
        store.delete("pair_stats", e)


def test_watermark_key_is_in_the_layout() -> None:
    keys = Keys("shop")
    assert keys.materialized("txn") == "rf:shop:mat:txn"
    assert keys.parse("rf:shop:mat:txn") == ("mat", "txn", None, "")


# -- change events of composite ids -----------------------------------------------------------


def test_subscribe_to_composite_ids_matches_the_ids_events_carry(store: FeatureStore) -> None:
    """``subscribe(entity_ids=...)`` takes ids as the reads do (a tuple, a mapping, the
    encoded string; parts with ``,`` or ``%`` escaped) and matches the events' ids."""
    import time

    apply_all(store)
    odd = ("a,b%", 7)  # escaped in the encoded id: "a%2Cb%25,7"
    wanted: list[Any] = [("u1", 9), {"user_id": "u2", "merchant_id": 9}, "u3,9", odd]
    subs = {
        "one view": store.subscribe("pair_stats", entity_ids=wanted),
        "views": store.subscribe(["pair_stats", "profile"], entity_ids=wanted),
        "all views": store.subscribe(None, entity_ids=[("u1", 9), "u2,9", "u3,9", odd]),
    }
    got: dict[str, list[str]] = {name: [] for name in subs}
    try:
        for name, sub in subs.items():
            sub.on_event(_collect(got[name]))
        time.sleep(0.2)
        for ent in [("u1", 9), ("u2", 9), ("u3", 9), odd, ("u1", 8), ("u9", 9)]:
            store.write("pair_stats", ent, {"txn_count": 1})
        deadline = time.time() + 5
        while any(len(g) < 4 for g in got.values()) and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # what else arrives (nothing should)
    finally:
        for sub in subs.values():
            sub.close()
    encoded = normalize_id("pair_stats", odd, key=PAIR)
    assert encoded == "a%2Cb%25,7"
    for name, ids in got.items():
        assert sorted(ids) == sorted(["u1,9", "u2,9", "u3,9", encoded]), name
    with pytest.raises(ValidationError, match="merchant_id"):
        store.subscribe("pair_stats", entity_ids=[("u1", "nine")])


def _collect(into: list[str]) -> Callable[[Any], None]:
    return lambda ev: into.append(ev.entity_id)


def test_entity_stats_of_a_composite_id_by_tuple_mapping_or_encoded_id(
    store: FeatureStore,
) -> None:
    apply_all(store)
    store.write("pair_stats", ("a,b", 9), {"txn_count": 3})
    by_tuple = store.entity_stats("pair_stats", ("a,b", 9))
    assert (by_tuple.entity_id, str(by_tuple.status)) == ("a%2Cb,9", "PRESENT")
    assert by_tuple.present == ["txn_count"]
    for same in ({"user_id": "a,b", "merchant_id": 9}, "a%2Cb,9", ["a,b", 9]):
        assert store.entity_stats("pair_stats", same).to_dict() == by_tuple.to_dict(), same
    with pytest.raises(ValidationError, match="merchant_id"):
        store.entity_stats("pair_stats", ("a,b", "nine"))
