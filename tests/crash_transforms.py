"""A custom transform shared by a test and the child processes it kills (the registry
compares the code hash of a custom transform, i.e. its source: both must import it)."""

from __future__ import annotations

from typing import Any

from redfeat import FeatureStore, Field
from redfeat import types as t


def register(store: FeatureStore) -> None:
    @store.transform("twice", inputs=["age"], outputs=[Field("age2", t.Int)])
    def twice(row: dict[str, Any]) -> dict[str, Any]:
        return {"age2": None if row["age"] is None else row["age"] * 2}
