"""Feature quality: validation reports (dry runs)."""

from __future__ import annotations

import json

import pandas as pd

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t


def test_validate_reports_every_problem_and_writes_nothing(store: FeatureStore) -> None:
    store.apply(
        FeatureView(
            "v",
            entity="user",
            fields=[
                Field("age", t.Int, min=0, max=150),
                Field("income", t.Float, min=0),
                Field("segment", t.Category(["basic", "premium"])),
            ],
        )
    )
    rows = pd.DataFrame(
        {
            "entity_id": ["a", "b", "c", "d"],
            "age": [30, -1, 200, 40],
            "income": [1.0, 2.0, float("inf"), -5.0],
            "segment": ["basic", "gold", "premium", None],
        }
    )
    report = store.validate("v", rows)
    assert (report.rows, report.valid, report.ok) == (4, 1, False)
    assert report.counts("rule") == {"category": 1, "finite": 1, "max": 1, "min": 2}
    assert report.counts("row") == {"1": 2, "2": 2, "3": 1}
    assert {(p.row, p.field, p.rule) for p in report.problems} == {
        (1, "age", "min"),
        (1, "segment", "category"),
        (2, "age", "max"),
        (2, "income", "finite"),
        (3, "income", "min"),
    }
    assert json.loads(json.dumps(report.to_dict()))["refused"] == 3
    assert store.get("v", "a") is None  # a dry run
    assert store.validate("v", [{"entity_id": "a", "age": 1}]).ok
