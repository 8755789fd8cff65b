"""index="server": KNN answered by the server's Query Engine (FT.SEARCH) over a mirror.

Runs against a real embedded server with the RediSearch module loaded (conftest's
search_server); skipped where the module is not installed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from test_vectors import DIM, apply, brute, filter_cases, ids, populate, wait_for

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.embedded import EmbeddedServer, ServerInfo
from redfeat.errors import ConfigurationError, ValidationError
from redfeat.vectors.index import VectorIndex
from redfeat.vectors.server_index import ServerIndex


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture
def made() -> Iterator[list[VectorIndex]]:
    out: list[VectorIndex] = []
    yield out
    for index in out:
        index.close()
        assert not index.errors


def server_index(store: FeatureStore, made: list[VectorIndex], **kw: Any) -> ServerIndex:
    index = ServerIndex(store._ctx, store, store.capabilities, "items", "emb", **kw)
    made.append(index)
    return index


def test_capabilities_see_the_query_engine(search_store: FeatureStore, store: FeatureStore) -> None:
    assert search_store.capabilities["vector_search"] is True
    assert store.capabilities["vector_search"] is False  # plain Valkey
    apply(store)
    with pytest.raises(ConfigurationError, match="Query Engine"):
        ServerIndex(store._ctx, store, store.capabilities, "items", "emb")
    with pytest.raises(ConfigurationError, match="index must be one of"):
        store.similar("items", "emb", [1.0] * DIM, index="nope")


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_server_knn_matches_brute_force_and_exact_scores(
    search_store: FeatureStore, rng: np.random.Generator, made: list[VectorIndex], metric: str
) -> None:
    apply(search_store, metric)
    rows = populate(search_store, rng.standard_normal((2000, DIM)).astype(np.float32))
    # isotropic 32-d noise is hnsw's hardest case: a wider search than the default 32
    index = server_index(search_store, made, ef_search=100)
    steps: list[tuple[int, int]] = []
    assert index.build(progress=lambda done, total: steps.append((done, total))) == 2000
    assert steps == [(1000, 2000), (2000, 2000)] and len(index) == 2000
    exact = VectorIndex(search_store._ctx, search_store, "items", "emb")
    made.append(exact)
    exact.build()
    hits = total = 0
    for q in rng.standard_normal((30, DIM)).astype(np.float32):
        got = index.search(q, k=10)
        want = brute(rows, q, metric, 10)
        hits += len(set(ids(got)) & set(want))
        total += len(want)
        scores = [m.score for m in got]
        assert scores == sorted(scores, reverse=metric != "l2")
        # same score convention as the exact index (float32 rounding apart)
        ref = {m.entity_id: m.score for m in exact.search(q, k=50)}
        for m in got:
            if m.entity_id in ref:
                assert m.score == pytest.approx(ref[m.entity_id], rel=1e-4, abs=1e-4)
    assert hits / total >= 0.95, f"recall@10 {hits / total:.3f}"


def test_filters_give_the_brute_force_answer(
    search_store: FeatureStore, rng: np.random.Generator, made: list[VectorIndex]
) -> None:
    apply(search_store)
    rows = populate(search_store, rng.standard_normal((1500, DIM)).astype(np.float32))
    index = server_index(search_store, made)
    index.build()

    cases = filter_cases()
    hits = total = 0
    for q in rng.standard_normal((5, DIM)).astype(np.float32):
        for where, keep in cases:
            got = ids(index.search(q, k=10, where=where))
            want = brute(rows, q, "cosine", 10, keep)
            assert all(keep(rows[e]) for e in got), where
            assert len(got) == len(want), where
            hits += len(set(got) & set(want))
            total += len(want)
    assert hits / total >= 0.95, f"filtered recall@10 {hits / total:.3f}"


def test_strings_bools_and_timestamps_filter(
    search_store: FeatureStore, made: list[VectorIndex]
) -> None:
    search_store.apply(
        FeatureView(
            "docs",
            entity="doc",
            fields=[
                Field("emb", t.Vector(3, "l2")),
                Field("lang", t.String),
                Field("ok", t.Bool),
                Field("at", t.Timestamp),
                Field("price", t.Float),
            ],
            history=0,
        )
    )
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    langs = ["en", "fr", "a b,c|{d}*", "é"]  # punctuation and non-ASCII need no escaping
    for i in range(40):
        search_store.write(
            "docs",
            f"d{i:02d}",
            {
                "emb": [float(i), 0.0, 0.0],
                "lang": langs[i % 4],
                "ok": i % 3 == 0,
                "at": t0 + timedelta(days=i),
                "price": i * 0.5,
            },
        )
    index = ServerIndex(search_store._ctx, search_store, search_store.capabilities, "docs", "emb")
    made.append(index)
    q = [0.0, 0.0, 0.0]
    got = index.search(q, k=3, where={"lang": "a b,c|{d}*"})
    assert [(m.entity_id, m.score) for m in got] == [("d02", 2.0), ("d06", 6.0), ("d10", 10.0)]
    assert ids(index.search(q, k=2, where={"lang": ["é", "fr"]})) == ["d01", "d03"]
    assert ids(index.search(q, k=3, where={"ok": True})) == ["d00", "d03", "d06"]
    span = (t0 + timedelta(days=10), t0 + timedelta(days=12))
    assert ids(index.search(q, k=5, where={"at": span})) == ["d10", "d11", "d12"]
    assert ids(index.search(q, k=5, where={"price": (1.0, 2.0)})) == ["d02", "d03", "d04"]
    assert ids(index.search(q, k=5, where={"price": 2.5})) == ["d05"]
    for bad in ({"lang": 3}, {"ok": "yes"}, {"price": "x"}, {"lang": ("a", "b")}, {"emb": 1}):
        with pytest.raises(ConfigurationError):
            index.search(q, k=1, where=bad)


def test_writes_updates_and_deletes_are_followed(
    search_store: FeatureStore,
    search_server: ServerInfo,
    project: str,
    rng: np.random.Generator,
    made: list[VectorIndex],
) -> None:
    apply(search_store)
    rows = populate(search_store, rng.standard_normal((300, DIM)).astype(np.float32))
    index = server_index(search_store, made)
    index.build()
    other_client = search_server.client()
    other = FeatureStore(client=other_client, project=project)
    try:
        v = rng.standard_normal(DIM).astype(np.float32)
        other.write("items", "new", {"emb": v, "segment": "premium", "age": 99})
        assert wait_for(lambda: ids(index.search(v, k=1)) == ["new"]) < 1.0
        moved = rng.standard_normal(DIM).astype(np.float32)
        other.update("items", "i00010", {"emb": moved, "age": None})
        assert wait_for(lambda: ids(index.search(moved, k=1)) == ["i00010"]) < 1.0
        assert "i00010" in ids(index.search(moved, k=5, where={"age": None}))
        gone = ["i00010", "i00000", "i00299", "new"]
        for e in gone:
            other.delete("items", e)
        assert wait_for(lambda: len(index) == 300 + 1 - len(gone)) < 1.0
        for e in gone[:3]:
            del rows[e]
        hits = 0
        for q in rng.standard_normal((10, DIM)).astype(np.float32):
            got = ids(index.search(q, k=10))
            assert len(got) == 10 and not set(got) & set(gone)
            hits += len(set(got) & set(brute(rows, q, "cosine", 10)))
        assert hits >= 90  # approximate (hnsw) but close
    finally:
        other.close()
        other_client.close()


def test_build_catches_up_with_writes_and_deletes_made_while_nobody_followed(
    search_store: FeatureStore, rng: np.random.Generator, made: list[VectorIndex]
) -> None:
    apply(search_store)
    vecs = rng.standard_normal((50, DIM)).astype(np.float32)
    populate(search_store, vecs)
    first = server_index(search_store, made)
    first.build()
    first.close()
    search_store.delete("items", "i00001")
    search_store.write("items", "late", {"emb": vecs[1]})
    hsets = hset_calls(search_store.client)
    second = server_index(search_store, made)  # the same FT index, resynchronised
    assert second.build() == 50 and len(second) == 50
    assert ids(second.search(vecs[1], k=1)) == ["late"]
    # only the new entity was written: unchanged mirrors are left alone (no re-indexing)
    assert hset_calls(search_store.client) - hsets == 1


def hset_calls(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get("cmdstat_hset", {}).get("calls", 0))


def test_a_resp3_client_gets_the_same_answers(
    search_server: ServerInfo, search_store: FeatureStore, rng: np.random.Generator
) -> None:
    apply(search_store, "l2")
    vecs = rng.standard_normal((200, DIM)).astype(np.float32)
    populate(search_store, vecs)
    want = search_store.similar("items", "emb", vecs[5], k=5, index="server")
    client3 = search_server.client(protocol=3)
    other = FeatureStore(client=client3, project=search_store.keys.project)
    try:
        index = ServerIndex(other._ctx, other, other.capabilities, "items", "emb")
        got = index.search(vecs[5], k=5)
        assert [(m.entity_id, m.score) for m in got] == [(m.entity_id, m.score) for m in want]
        assert got[0].entity_id == "i00005" and got[0].score == 0.0 and len(index) == 200
        index.close()
    finally:
        other.close()
        client3.close()


def test_zero_vectors_ties_dimension_errors_and_ttl(
    search_store: FeatureStore, made: list[VectorIndex]
) -> None:
    apply(search_store, dim=4)
    search_store.write("items", "zero", {"emb": [0.0, 0.0, 0.0, 0.0]})
    search_store.write("items", "x", {"emb": [1.0, 0.0, 0.0, 0.0]})
    search_store.write("items", "novec", {"age": 3})  # no vector: not indexed
    index = server_index(search_store, made)
    assert index.build() == 2
    got = index.search([-1.0, 0.0, 0.0, 0.0], k=5)
    assert [(m.entity_id, m.score) for m in got] == [("zero", 0.0), ("x", -1.0)]
    with pytest.raises(ValidationError, match="shape"):
        index.search([1.0, 0.0], k=1)
    with pytest.raises(ValidationError, match="all zeros"):
        index.search([0.0] * 4, k=1)
    with pytest.raises(ConfigurationError, match="k must be"):
        index.search([1.0] * 4, k=0)
    search_store.delete_view("items")
    apply(search_store, "l2", dim=4, ttl="1h")
    same = [1.0, 2.0, 3.0, 4.0]
    search_store.write_many(
        "items", [{"entity_id": e, "emb": same} for e in ["e3", "e1", "e5", "e2", "e4"]]
    )
    old = datetime.now(UTC) - timedelta(hours=2)
    search_store.write("items", "expired", {"emb": same}, event_time=old)
    got = search_store.similar("items", "emb", same, k=3, index="server", include_values=True)
    assert ids(got) == ["e1", "e2", "e3"] and {m.score for m in got} == {0.0}
    assert "expired" not in ids(search_store.similar("items", "emb", same, k=9, index="server"))
    mirror: ServerIndex = search_store._search()._indexes[("items", "emb", "server")]  # type: ignore[assignment]
    assert not search_store.client.exists(mirror.prefix + "expired")  # expired with the value
    assert 0 < search_store.client.pttl(mirror.prefix + "e1") <= 3_600_000
    assert got[0].values is not None and list(got[0].values["emb"]) == same


def test_similar_auto_and_delete_view_drop_the_index(
    search_store: FeatureStore, rng: np.random.Generator
) -> None:
    apply(search_store)
    vecs = rng.standard_normal((20, DIM)).astype(np.float32)
    populate(search_store, vecs)
    got = search_store.similar("items", "emb", vecs[4], k=1, index="auto")
    assert ids(got) == ["i00004"]
    assert ("items", "emb", "server") in search_store._search()._indexes
    client: redis.Redis = search_store.client
    mine = [n for n in client.execute_command("FT._LIST") if n.decode().endswith(":idx")]  # type: ignore[no-untyped-call]
    assert any(n.decode().startswith(f"rf:{search_store.keys.project}:vx:items:") for n in mine)
    search_store.delete_view("items")
    assert not [
        n
        for n in client.execute_command("FT._LIST")  # type: ignore[no-untyped-call]
        if n.decode().startswith(f"rf:{search_store.keys.project}:")
    ]
    assert not list(client.scan_iter(match=f"rf:{search_store.keys.project}:vx:*", count=1000))


def test_embedded_server_refuses_a_missing_module(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        EmbeddedServer(tmp_path / "srv", modules=[str(tmp_path / "nope.so")])
    assert not (tmp_path / "srv").exists()  # refused before anything was started


def test_an_index_dropped_under_a_search_is_recreated(
    search_store: FeatureStore, made: list[VectorIndex]
) -> None:
    apply(search_store, "l2", dim=3)
    search_store.write("items", "a", {"emb": [1.0, 0.0, 0.0]})
    index = ServerIndex(search_store._ctx, search_store, search_store.capabilities, "items", "emb")
    made.append(index)
    assert ids(index.search([1.0, 0.0, 0.0], k=1)) == ["a"]
    search_store.delete_view("items", keep_definition=True)  # drops the FT index and data
    assert index.search([1.0, 0.0, 0.0], k=1) == []  # recreated, resynced: nothing left
    search_store.write("items", "b", {"emb": [0.0, 1.0, 0.0]})
    assert wait_for(lambda: ids(index.search([0.0, 1.0, 0.0], k=1)) == ["b"]) < 1.0


def test_a_changed_view_gets_a_fresh_index(
    search_store: FeatureStore, made: list[VectorIndex]
) -> None:
    apply(search_store, "l2", dim=3)
    search_store.write("items", "a", {"emb": [1.0, 0.0, 0.0], "age": 5})
    before = ServerIndex(search_store._ctx, search_store, search_store.capabilities, "items", "emb")
    made.append(before)
    assert ids(before.search([1.0, 0.0, 0.0], k=1, where={"age": 5})) == ["a"]
    search_store.apply(  # a new field and a ttl: another layout, so another index
        FeatureView(
            "items",
            entity="item",
            fields=[
                Field("emb", t.Vector(3, "l2")),
                Field("segment", t.Category(["basic", "premium"])),
                Field("age", t.Int),
                Field("tags", t.List(t.String)),
                Field("color", t.String),
            ],
            history=0,
            ttl="1h",
        )
    )
    search_store.write("items", "b", {"emb": [0.0, 1.0, 0.0], "color": "red"})
    after = ServerIndex(search_store._ctx, search_store, search_store.capabilities, "items", "emb")
    made.append(after)
    assert after.name != before.name
    assert ids(after.search([0.0, 1.0, 0.0], k=2, where={"color": "red"})) == ["b"]
    assert ids(after.search([0.0, 1.0, 0.0], k=2, where={"color": None})) == ["a"]
