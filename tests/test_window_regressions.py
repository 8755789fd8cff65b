"""Regressions of the window-features review: connection state after errors, replays after
a read timeout, future event times, and the cost of a read."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from redfeat import FeatureStore
from redfeat.errors import BackendError
from redfeat.windows import WindowFeatures

T0 = 1_767_225_600  # 2026-01-01 in epoch seconds


def _define(store: FeatureStore) -> None:
    store.apply(
        WindowFeatures("w", entity="u", source="x", aggs=["count", "sum"], windows=["1h"], hop="1m")
    )


def _batch(ids: list[str], t: float = T0) -> pd.DataFrame:
    return pd.DataFrame({"entity_id": ids, "x": np.ones(len(ids)), "event_time": [t] * len(ids)})


def _reads_are_in_step(store: FeatureStore) -> None:
    """Reads on this thread answer for the entity asked, many times over."""
    for _ in range(50):
        assert store.get("w", "a", as_of=T0 + 1) == {"x_count_1h": 1, "x_sum_1h": 5.0}
        assert store.get("w", "nobody", as_of=T0 + 1) == {"x_count_1h": 0, "x_sum_1h": 0.0}
    assert store.get_many("w", ["nobody", "a"], as_of=T0 + 1)[1]["x_sum_1h"] == 5.0


def test_error_reply_in_record_many_leaves_the_connection_in_step(store: FeatureStore) -> None:
    _define(store)
    store.record("w", "a", 5.0, ts=T0)
    store.client.set(store.keys.window_tiles("w", "bad"), "not a hash")  # WRONGTYPE
    ids = ["bad"] + [f"e{i}" for i in range(200)]
    with pytest.raises(BackendError, match="WRONGTYPE"):
        store.record_many("w", _batch(ids))
    _reads_are_in_step(store)
    # the other entities' events were recorded, the broken one only refused
    assert store.get("w", "e199", as_of=T0 + 1) == {"x_count_1h": 1, "x_sum_1h": 1.0}
    with pytest.raises(BackendError, match="'bad'"):
        store.get("w", "bad", as_of=T0 + 1)
    _reads_are_in_step(store)


def test_raising_progress_callback_leaves_the_connection_in_step(store: FeatureStore) -> None:
    _define(store)
    store.record("w", "a", 5.0, ts=T0)

    def boom(done: int, total: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        store.record_many("w", _batch([f"e{i}" for i in range(3000)]), progress=boom)
    _reads_are_in_step(store)


def test_malformed_tile_hash_is_named_and_reads_go_on(store: FeatureStore) -> None:
    _define(store)
    store.record("w", "a", 5.0, ts=T0)
    store.client.hset(store.keys.window_tiles("w", "odd"), "abc", "x")
    with pytest.raises(BackendError, match="'odd'"):
        store.get_many("w", ["odd", "a"], as_of=T0 + 1)
    _reads_are_in_step(store)
