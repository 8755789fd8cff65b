"""Feature quality: validation reports (dry runs)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.errors import ConfigurationError, NotFoundError, ValidationError


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


def _view(store: FeatureStore) -> None:
    store.apply(
        FeatureView(
            "v",
            entity="user",
            fields=[
                Field("age", t.Int, min=0, max=150),
                Field("income", t.Float, min=0),
                Field("signup", t.Timestamp),
            ],
        )
    )


def test_custom_validators_errors_refuse_warnings_write(store: FeatureStore) -> None:
    _view(store)

    @store.validator("v")
    def minors_earn_little(row: dict[str, object]) -> str | None:
        age, income = row["age"], row["income"]
        if isinstance(age, int) and isinstance(income, float) and age < 18 and income > 1e5:
            return "a minor earning over 100k is a data error"
        return None

    @store.validator("v", severity="warning", name="income_known")
    def income_known(row: dict[str, object]) -> tuple[str, str] | None:
        return ("income", "income is missing") if row["income"] is None else None

    assert store.quality.validators("v") == [
        ("minors_earn_little", "error"),
        ("income_known", "warning"),
    ]
    rows = [
        {"entity_id": "a", "age": 30, "income": 5e4},
        {"entity_id": "b", "age": 12, "income": 2e5},
        {"entity_id": "c", "age": 40},
        {"entity_id": "d", "age": -1, "income": 2e5},  # schema problem: custom checks skip it
    ]
    dry = store.validate("v", rows)
    assert [(p.row, p.rule) for p in dry.problems] == [(1, "minors_earn_little"), (3, "min")]
    assert [(p.row, p.field, p.severity) for p in dry.warnings] == [(2, "income", "warning")]
    assert dry.to_dict()["warnings"][0]["rule"] == "income_known"
    with pytest.raises(ValidationError, match="minor earning") as err:
        store.write_many("v", rows)
    assert len(err.value.problems) == 2 and store.get("v", "a") is None

    report = store.write_many("v", rows, on_error="skip")
    assert report.written == 2 and [i for i, _ in report.refused] == [1, 3]
    assert [(w.entity, w.rule) for w in report.warnings] == [("c", "income_known")]
    assert store.get("v", "c") == {"age": 40, "income": None, "signup": None}

    with pytest.raises(ValidationError, match=r"entity 'b'.*minor earning"):
        store.write("v", "b", {"age": 12, "income": 2e5})
    assert store.get("v", "b") is None
    store.write("v", "b", {"age": 12, "income": 10.0})
    with pytest.raises(ValidationError, match="minor earning"):  # the merged row is checked
        store.update("v", "b", {"income": 3e5})
    assert store.get("v", "b") == {"age": 12, "income": 10.0, "signup": None}

    counts = store.quality.recorder.counters("v", 0, 2**62)
    assert counts["refused"] == 2 + 2 + 1 + 1 and counts["warnings"] == 1

    store.quality.configure("v", validators=False)
    store.write("v", "b", {"age": 12, "income": 2e5})  # validators turned off for the view
    store.quality.configure("v", validators=True)
    store.quality.remove_validator("v", "minors_earn_little")
    assert store.quality.validators("v") == [("income_known", "warning")]


def test_validators_see_typed_values_and_bad_checks_are_reported(store: FeatureStore) -> None:
    _view(store)
    seen: list[object] = []

    @store.validator("v")
    def record(row: dict[str, object]) -> None:
        seen.append(row["signup"])

    when = pd.Timestamp("2026-01-02T03:04:05Z")
    store.write_many("v", pd.DataFrame({"entity_id": ["a"], "signup": [when]}))
    store.write("v", "b", {"signup": when.to_pydatetime()})
    assert seen == [when.to_pydatetime(), when.to_pydatetime()]

    @store.validator("v", name="crashes")
    def crashes(row: dict[str, object]) -> None:
        raise KeyError("oops")

    with pytest.raises(ValidationError, match="validator raised KeyError"):
        store.write("v", "c", {"age": 1})

    @store.validator("v", name="crashes")  # same name: replaces the previous one
    def odd(row: dict[str, object]) -> int:
        return 42

    with pytest.raises(ConfigurationError, match="returned int"):
        store.write("v", "c", {"age": 1})
    assert store.get("v", "c") is None
    with pytest.raises(ConfigurationError, match="severity"):
        store.validator("v", severity="fatal")(odd)
    with pytest.raises(NotFoundError):
        store.validator("nope")(odd)
