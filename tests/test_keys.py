"""The whole key layout, pinned (a golden test): every key redfeat writes is built by
redfeat.core.keys.Keys, reads back with Keys.parse, keeps one hash tag per (view, entity)
and per series, and escapes ids so that none can reach another key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redfeat import ConfigurationError
from redfeat.core.keys import Keys, Parsed, escape_id, unescape_id

K = Keys("shop")
WEIRD = "we{ir}d:|%* ü"  # every character that must not leak into the key structure
E = escape_id(WEIRD)


def test_the_layout() -> None:
    assert E == "we%7Bir%7Dd%3A%7C%25%2A%20ü"
    golden = {
        K.registry: "rf:shop:registry",
        K.latest("user_profile", "u1"): "rf:shop:{user_profile|u1}",
        K.history("user_profile", "u1"): "rf:shop:{user_profile|u1}:h",
        K.window_tiles("txn", E): "rf:shop:{txn|we%7Bir%7Dd%3A%7C%25%2A%20ü}:w",
        K.window_events("txn", E): "rf:shop:{txn|we%7Bir%7Dd%3A%7C%25%2A%20ü}:we",
        K.feed("user_profile"): "rf:shop:feed:user_profile",
        K.channel("user_profile"): "rf:shop:events:user_profile",
        K.channel_pattern: "rf:shop:events:*",
        K.ingest("user_profile"): "rf:shop:ingest:user_profile",
        K.dead_letters("user_profile"): "rf:shop:dead:user_profile",
        K.vectors("items"): "rf:shop:vx:items:",
        K.vectors("items", "emb", "1a2b3c4d"): "rf:shop:vx:items:emb:1a2b3c4d:",
        K.vector_mirror("items", "emb", "1a2b3c4d", "u1"): "rf:shop:vx:items:emb:1a2b3c4d:u1",
        K.vector_index("items", "emb", "1a2b3c4d"): "rf:shop:vx:items:emb:1a2b3c4d:idx",
        K.view_pattern("user_profile"): "rf:shop:{user_profile|*",
        K.quality("spend", "p", "write", 491234): "rf:shop:q:spend:p:write:491234",
        K.quality("spend", "c", 491234): "rf:shop:q:spend:c:491234",
        K.quality("spend", "baseline"): "rf:shop:q:spend:baseline",
        K.quality_pattern("spend"): "rf:shop:q:spend:*",
        K.quality_config: "rf:shop:q:config",
        K.newest_event: "rf:shop:q:newest",
        K.last_write: "rf:shop:q:written",
        K.series("cpu"): "rf:shop:ts:{cpu}",
        K.series_head("cpu"): "rf:shop:ts:{cpu}:head",
        K.series_lock("cpu"): "rf:shop:ts:{cpu}:lock",
        K.series_chunk_index("cpu"): "rf:shop:ts:{cpu}:ci",
        K.series_chunks("cpu"): "rf:shop:ts:{cpu}:c",
        K.series_pages("cpu"): "rf:shop:ts:{cpu}:tp",
        K.series_page("cpu", 60_000, 7): "rf:shop:ts:{cpu}:t:60000:7",
        K.series_page_member("cpu", "60000:7"): "rf:shop:ts:{cpu}:t:60000:7",
        K.alerts("rules"): "rf:shop:alerts:rules",
        K.alert_history("cpu_hot"): "rf:shop:alerts:history:cpu_hot",
    }
    for built, want in golden.items():
        assert built == want


def test_every_key_parses_back() -> None:
    cases: dict[str | bytes, Parsed] = {
        K.registry: Parsed("registry", ""),
        K.latest("v", E): Parsed("entity", "v", WEIRD, ""),
        K.history("v", E): Parsed("entity", "v", WEIRD, "h"),
        K.window_tiles("w", "u1"): Parsed("entity", "w", "u1", "w"),
        K.window_events("w", "u1"): Parsed("entity", "w", "u1", "we"),
        K.feed("v"): Parsed("feed", "v"),
        K.channel("v"): Parsed("events", "v"),
        K.ingest("v"): Parsed("ingest", "v"),
        K.dead_letters("v").encode(): Parsed("dead", "v"),
        K.vector_mirror("v", "emb", "ab12", E): Parsed("vx", "v", WEIRD, "emb:ab12"),
        K.vector_index("v", "emb", "ab12"): Parsed("vx", "v", None, "emb:ab12:idx"),
        K.quality("v", "c", 3): Parsed("q", "v", None, "c:3"),
        K.quality_config: Parsed("q", "config"),
        K.series(escape_id("cpu:web 1")): Parsed("ts", "cpu:web 1"),
        K.series_head("cpu"): Parsed("ts", "cpu", None, "head"),
        K.alerts("state"): Parsed("alerts", "state"),
    }
    for key, want in cases.items():
        assert K.parse(key) == want, key
    assert K.parse("rf:other:{v|u1}") is None  # another project's
    assert K.parse("rf:shopping:{v|u1}") is None
    assert K.parse("something:else") is None


@given(st.text(min_size=1, max_size=40))
def test_ids_escape_injectively_and_stay_inside_their_tag(entity: str) -> None:
    esc = escape_id(entity)
    assert unescape_id(esc) == entity
    key = K.history("view", esc)
    # one hash tag, the whole id inside it, nothing a SCAN pattern would glob on
    assert key.count("{") == 1 and key.count("}") == 1
    assert not set(esc) & set("{}|:*?[]\\ \n")
    assert K.parse(key) == Parsed("entity", "view", entity, "h")


def test_projects_are_checked() -> None:
    for bad in ("", "a:b", "x" * 65, "a{b}", "é"):
        with pytest.raises(ConfigurationError):
            Keys(bad)


P = Keys("shop", 16)  # a partitioned project (the default on a Redis Cluster)


def test_the_partitioned_layout() -> None:
    tag = P.part_tag("user_profile", P.partition("u1"))
    golden = {
        P.latest("user_profile", "u1"): f"rf:shop:{tag}:u1",
        P.history("user_profile", "u1"): f"rf:shop:{tag}:u1:h",
        P.feed("user_profile", 3): "rf:shop:feed:{user_profile|:3.21}",
        P.ingest("user_profile", 3): "rf:shop:ingest:{user_profile|:3.21}",
        P.dead_letters("user_profile", 3): "rf:shop:dead:{user_profile|:3.21}",
        P.ingest_bell("user_profile"): "rf:shop:pushed:user_profile",
        P.alerts("rules"): "rf:shop:alerts:{a}:rules",
        P.alert_history("cpu_hot"): "rf:shop:alerts:{a}:history:cpu_hot",
        P.registry: "rf:shop:registry",
        P.view_pattern("user_profile"): "rf:shop:{user_profile|*",
    }
    for built, want in golden.items():
        assert built == want
    assert len(P.feeds("v")) == 16 and len(K.feeds("v")) == 1
    assert len(P.ingests("v")) == len(P.dead_letter_streams("v")) == 16


def test_partitioned_keys_parse_back_and_spread_over_the_slots() -> None:
    from redis.crc import key_slot

    cases = {
        P.latest("v", E): Parsed("entity", "v", WEIRD, ""),
        P.history("v", E): Parsed("entity", "v", WEIRD, "h"),
        P.latest("v", "h"): Parsed("entity", "v", "h", ""),  # an id that looks like a suffix
        P.window_tiles("w", "u1"): Parsed("entity", "w", "u1", "w"),
        P.feed("v", 7): Parsed("feed", "v", None, "7"),
        P.ingest("v", 0): Parsed("ingest", "v", None, "0"),
        P.dead_letters("v", 5): Parsed("dead", "v", None, "5"),
        P.alerts("state"): Parsed("alerts", "state"),
    }
    for key, want in cases.items():
        assert P.parse(key) == want, key
    # every key of one partition on one slot; the 16 partitions on 16 sixteenths of the slots
    for view in ("v", "user_profile", "a_much_longer_view_name_0123456789"):
        slots = []
        for k in range(16):
            tag = P.part_tag(view, k)
            slot = key_slot(tag.encode())
            assert k * 1024 <= slot < (k + 1) * 1024
            slots.append(slot)
            assert key_slot(P.feed(view, k).encode()) == slot
        ids = [f"e{i}" for i in range(200)]
        for e in ids:
            k = P.partition(e)
            assert key_slot(P.latest(view, e).encode()) == slots[k]
            assert key_slot(P.history(view, e).encode()) == slots[k]
        assert len({P.partition(e) for e in ids}) == 16


def test_partition_counts_are_checked() -> None:
    for bad in (-1, 1025, 2.0, True):
        with pytest.raises(ConfigurationError, match="partitions"):
            Keys("p", bad)  # type: ignore[arg-type]
