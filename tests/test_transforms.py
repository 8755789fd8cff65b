"""Feature transformations: the seed scenario at every boundary, row/frame equivalence,
every built-in's errors, the custom registry and spec()."""

from __future__ import annotations

import dataclasses
import doctest
import hashlib
import inspect
import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest

from redfeat import ConfigurationError, Field, NotFoundError
from redfeat import types as t
from redfeat.transforms import builtins as tf
from redfeat.transforms.builtins import (
    Transform,
    TransformRegistry,
    bucketize,
    category_map,
    clip,
    days_since,
    derive,
    derive_frame,
    log1p,
    min_max,
    one_hot,
    output_fields,
    ratio,
    z_score,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def seed() -> list[Transform]:
    """The seed scenario, exactly as in the module docstring."""
    return [
        bucketize(
            "age", [25, 35, 55], ["young", "young_adult", "adult", "senior"], output="age_group"
        ),
        bucketize("income", [30000, 70000], ["low", "medium", "high"], output="income_category"),
        bucketize(
            "credit_score",
            [580, 670, 740],
            ["poor", "fair", "good", "excellent"],
            output="credit_category",
        ),
        bucketize(
            "purchase_count",
            [12, 24],
            ["occasional", "regular", "frequent"],
            right=True,
            output="purchase_frequency",
        ),
        bucketize(
            "avg_order_value",
            [50, 100],
            ["low", "medium", "high"],
            right=True,
            output="spending_level",
        ),
        min_max("income", 30000, 200000, output="normalized_income"),
    ]


SEED = {tr.outputs[0].name: tr for tr in seed()}


def _norm(x: float) -> float:
    return (x - 30000) / (200000 - 30000)


# (output, input field, value, expected): at, just below and just above every split.
BOUNDARIES: list[tuple[str, str, Any, Any]] = [
    ("age_group", "age", 24, "young"),
    ("age_group", "age", 24.99, "young"),
    ("age_group", "age", 25, "young_adult"),
    ("age_group", "age", 25.01, "young_adult"),
    ("age_group", "age", 34.99, "young_adult"),
    ("age_group", "age", 35, "adult"),
    ("age_group", "age", 35.01, "adult"),
    ("age_group", "age", 54.99, "adult"),
    ("age_group", "age", 55, "senior"),
    ("age_group", "age", 55.01, "senior"),
    ("age_group", "age", 56, "senior"),
    ("income_category", "income", 29999.99, "low"),
    ("income_category", "income", 30000, "medium"),
    ("income_category", "income", 30000.01, "medium"),
    ("income_category", "income", 69999.99, "medium"),
    ("income_category", "income", 70000, "high"),
    ("income_category", "income", 70000.01, "high"),
    ("credit_category", "credit_score", 579, "poor"),
    ("credit_category", "credit_score", 579.99, "poor"),
    ("credit_category", "credit_score", 580, "fair"),
    ("credit_category", "credit_score", 580.01, "fair"),
    ("credit_category", "credit_score", 669.99, "fair"),
    ("credit_category", "credit_score", 670, "good"),
    ("credit_category", "credit_score", 670.01, "good"),
    ("credit_category", "credit_score", 739.99, "good"),
    ("credit_category", "credit_score", 740, "excellent"),
    ("credit_category", "credit_score", 740.01, "excellent"),
    ("purchase_frequency", "purchase_count", 11, "occasional"),
    ("purchase_frequency", "purchase_count", 11.99, "occasional"),
    ("purchase_frequency", "purchase_count", 12, "occasional"),
    ("purchase_frequency", "purchase_count", 12.01, "regular"),
    ("purchase_frequency", "purchase_count", 13, "regular"),
    ("purchase_frequency", "purchase_count", 23.99, "regular"),
    ("purchase_frequency", "purchase_count", 24, "regular"),
    ("purchase_frequency", "purchase_count", 24.01, "frequent"),
    ("purchase_frequency", "purchase_count", 25, "frequent"),
    ("spending_level", "avg_order_value", 49.99, "low"),
    ("spending_level", "avg_order_value", 50, "low"),
    ("spending_level", "avg_order_value", 50.01, "medium"),
    ("spending_level", "avg_order_value", 99.99, "medium"),
    ("spending_level", "avg_order_value", 100, "medium"),
    ("spending_level", "avg_order_value", 100.01, "high"),
    ("normalized_income", "income", 29999.99, 0.0),
    ("normalized_income", "income", 30000, 0.0),
    ("normalized_income", "income", 30000.01, _norm(30000.01)),
    ("normalized_income", "income", 115000, 0.5),
    ("normalized_income", "income", 199999.99, _norm(199999.99)),
    ("normalized_income", "income", 200000, 1.0),
    ("normalized_income", "income", 200000.01, 1.0),
]


def _plain(v: Any) -> Any:
    """A frame cell as apply_row would give it: missing -> None, numpy -> Python."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if isinstance(v, np.generic) else v


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): _plain(v) for k, v in r.items()} for r in frame.to_dict("records")]


# -- the seed scenario ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "field", "value", "expected"),
    BOUNDARIES,
    ids=[f"{o}-{v}" for o, _, v, _ in BOUNDARIES],
)
def test_seed_boundary(output: str, field: str, value: Any, expected: Any) -> None:
    tr = SEED[output]
    assert tr.apply_row({field: value}) == {output: expected}
    assert tr.apply_frame(pd.DataFrame({field: [value]}))[output].tolist() == [expected]


@pytest.mark.parametrize("output", sorted(SEED))
def test_seed_boundaries_as_one_frame(output: str) -> None:
    cases = [(f, v, e) for o, f, v, e in BOUNDARIES if o == output]
    field = cases[0][0]
    frame = pd.DataFrame(
        {field: [v for _, v, _ in cases] + [None]}, index=range(100, 100 + 1 + len(cases))
    )
    got = SEED[output].apply_frame(frame)
    assert list(got.index) == list(frame.index)
    assert [_plain(v) for v in got[output]] == [e for _, _, e in cases] + [None]


def test_seed_types_and_names() -> None:
    fields = {f.name: f for f in output_fields(list(SEED.values()))}
    assert fields["age_group"].dtype == t.Category(["young", "young_adult", "adult", "senior"])
    assert fields["spending_level"].dtype == t.Category(["low", "medium", "high"])
    assert fields["normalized_income"].dtype is t.Float
    assert (fields["normalized_income"].min, fields["normalized_income"].max) == (0.0, 1.0)


def test_seed_derive_row_and_frame() -> None:
    rows: list[dict[str, Any]] = [
        {"age": 25, "income": 30000, "credit_score": 740, "purchase_count": 24,
         "avg_order_value": 100.01},
        {"age": 55, "income": 200000, "credit_score": 579, "purchase_count": 25,
         "avg_order_value": 100},
        {"age": None, "income": float("nan"), "credit_score": 670, "purchase_count": 12,
         "avg_order_value": 50},
    ]  # fmt: skip
    want = [
        ("young_adult", "medium", "excellent", "regular", "high", 0.0),
        ("senior", "high", "poor", "frequent", "medium", 1.0),
        (None, None, "good", "occasional", "low", None),
    ]
    names = ["age_group", "income_category", "credit_category", "purchase_frequency",
             "spending_level", "normalized_income"]  # fmt: skip
    by_row = [derive(seed(), r) for r in rows]
    assert [tuple(d[n] for n in names) for d in by_row] == want
    assert by_row[0]["age"] == 25  # the raw features are kept
    by_frame = derive_frame(seed(), pd.DataFrame(rows))
    assert list(by_frame.columns[:5]) == list(rows[0])
    assert [tuple(r[n] for n in names) for r in _rows(by_frame)] == want


def test_module_docstring_example_runs() -> None:
    result = doctest.testmod(tf, verbose=False)
    assert result.attempted >= 4 and result.failed == 0


# -- row/frame equivalence on random data ---------------------------------------------------


def _custom() -> TransformRegistry:
    reg = TransformRegistry()

    @reg.register("spend_per_order", inputs=["amount", "b"], outputs=[Field("spo", t.Float)])
    def spend_per_order(row: Mapping[str, Any]) -> dict[str, Any]:
        a, b = row["amount"], row["b"]
        return {"spo": None if a is None or not b else a / b}

    @reg.register(
        "amount_x2", inputs=["amount"], outputs=[Field("amount_x2", t.Float)], vectorized=True
    )
    def amount_x2(df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"amount_x2": pd.to_numeric(df["amount"]) * 2})

    return reg


def _every_transform() -> list[Transform]:
    reg = _custom()
    return [
        *seed(),
        bucketize("amount", [-1, 0, 1], ["a", "b", "c", "d"], right=True),
        min_max("amount", -2, 2, clip=False),
        z_score("amount", 0.5, 1.5),
        log1p("amount"),
        clip("amount", -1, 1),
        clip("b", None, 0.5),
        ratio("amount", "b"),
        one_hot("colour", ["red", "green", "dark blue"]),
        category_map("colour", {"red": "warm", "green": "cold"}, default="other"),
        category_map("colour", {"red": 1, "green": 2}, output="colour_code"),
        days_since("seen", now=NOW),
        reg.get("spend_per_order"),
        reg.get("amount_x2"),
    ]


def _random_rows(n: int, seed_: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed_)
    splits = [-1.0, 0.0, 1.0, 12, 24, 25, 35, 50, 55, 100, 580, 670, 740, 30000, 70000, 200000]

    def num(scale: float) -> Any:
        r = rng.random()
        if r < 0.08:
            return None
        if r < 0.14:
            return float("nan")
        if r < 0.4:
            return splits[int(rng.integers(len(splits)))]
        return float(rng.normal(0, scale))

    colours = ["red", "green", "dark blue", "purple", None]
    rows = []
    for _ in range(n):
        seen = NOW - timedelta(seconds=float(rng.uniform(0, 9e7)))
        rows.append(
            {
                "age": num(40),
                "income": num(1e5),
                "credit_score": num(700),
                "purchase_count": num(20),
                "avg_order_value": num(80),
                "amount": num(2),
                "b": 0.0 if rng.random() < 0.1 else num(1),
                "colour": colours[int(rng.integers(len(colours)))],
                "seen": None if rng.random() < 0.1 else seen.replace(tzinfo=None),
            }
        )
    return rows


@pytest.mark.parametrize("seed_", [1, 2, 3])
def test_apply_frame_equals_apply_row_on_random_data(seed_: int) -> None:
    rows = _random_rows(300, seed_)
    frame = pd.DataFrame(rows)
    assert str(frame["seen"].dtype).startswith("datetime64")
    for tr in _every_transform():
        by_row = [tr.apply_row(r) for r in rows]
        assert _rows(tr.apply_frame(frame)) == by_row, tr
        # the same data as plain float64 columns (NaN for every missing number)
        floats = frame.astype({c: "float64" for c in tr.inputs if c not in ("colour", "seen")})
        assert _rows(tr.apply_frame(floats)) == by_row, tr
    derived = derive_frame(_every_transform()[:6], frame)
    assert _rows(derived)[:20] == [derive(_every_transform()[:6], r) for r in _rows(frame)[:20]]


def test_output_frame_dtypes_and_empty_frames() -> None:
    frame = pd.DataFrame(_random_rows(5, 7))
    got = derive_frame(_every_transform(), frame)
    assert got["normalized_income"].dtype == np.float64
    assert got["age_group"].dtype == object
    assert got["colour_red"].dtype == "boolean"
    assert got["colour_mapped"].dtype == object
    empty = derive_frame(_every_transform(), frame.iloc[:0])
    assert len(empty) == 0 and set(got.columns) == set(empty.columns)


def test_nullable_and_bool_input_columns() -> None:
    frame = pd.DataFrame({"age": pd.array([24, 25, None], dtype="Int64")})
    assert SEED["age_group"].apply_frame(frame)["age_group"].tolist() == [
        "young",
        "young_adult",
        None,
    ]
    assert SEED["age_group"].apply_row({"age": np.int64(55)}) == {"age_group": "senior"}
    assert SEED["age_group"].apply_row({"age": pd.NA}) == {"age_group": None}


# -- built-ins one by one ---------------------------------------------------------------------


def test_default_output_names() -> None:
    names = [f.name for f in output_fields(_every_transform()[6:-2])]
    assert names == [
        "amount_bucket",
        "amount_minmax",
        "amount_zscore",
        "amount_log1p",
        "amount_clipped",
        "b_clipped",
        "amount_per_b",
        "colour_red",
        "colour_green",
        "colour_dark_blue",
        "colour_mapped",
        "colour_code",
        "seen_days_since",
    ]


def test_numeric_builtins() -> None:
    assert min_max("x", 0, 10, clip=False).apply_row({"x": 15}) == {"x_minmax": 1.5}
    assert min_max("x", 0, 10).apply_row({"x": -5}) == {"x_minmax": 0.0}
    assert z_score("x", 10, 2).apply_row({"x": 7}) == {"x_zscore": -1.5}
    lg = log1p("x")
    assert [lg.apply_row({"x": v})["x_log1p"] for v in (0, -1, -5, None)] == [0.0, None, None, None]
    assert lg.apply_row({"x": -0.75})["x_log1p"] == pytest.approx(math.log(0.25))
    assert lg.apply_frame(pd.DataFrame({"x": [-1.0, math.e - 1]}))["x_log1p"].tolist()[1] == 1.0
    c = clip("x", 0, 100)
    assert [c.apply_row({"x": v})["x_clipped"] for v in (-1, 50, 101)] == [0.0, 50.0, 100.0]
    assert (c.outputs[0].min, c.outputs[0].max) == (0.0, 100.0)
    assert clip("x", None, 3).apply_row({"x": -1e9}) == {"x_clipped": -1e9}
    r = ratio("a", "b", output="share")
    assert r.apply_row({"a": 1, "b": 4}) == {"share": 0.25}
    assert r.apply_row({"a": 1, "b": 0}) == {"share": None}
    assert r.apply_row({"a": 1, "b": None}) == {"share": None}
    assert r.apply_row({"a": None, "b": 2}) == {"share": None}
    got = r.apply_frame(pd.DataFrame({"a": [1.0, 1.0, 3.0], "b": [0.0, np.nan, -1.5]}))
    assert _rows(got) == [{"share": None}, {"share": None}, {"share": -2.0}]


def test_one_hot() -> None:
    oh = one_hot("plan", ["basic", "pro+", 3], output="is")
    assert [f.name for f in oh.outputs] == ["is_basic", "is_pro_", "is_3"]
    assert all(f.dtype is t.Bool for f in oh.outputs)
    assert oh.apply_row({"plan": "pro+"}) == {"is_basic": False, "is_pro_": True, "is_3": False}
    assert oh.apply_row({"plan": 3})["is_3"] is True
    assert set(oh.apply_row({"plan": "gold"}).values()) == {False}
    assert set(oh.apply_row({"plan": None}).values()) == {None}
    frame = pd.DataFrame({"plan": ["basic", "gold", None, 3]})
    assert _rows(oh.apply_frame(frame)) == [oh.apply_row(r) for r in _rows(frame)]


def test_category_map() -> None:
    cm = category_map("country", {"FR": "eu", "DE": "eu", "US": "na"})
    assert cm.outputs[0].name == "country_mapped"
    assert cm.outputs[0].dtype == t.Category(["eu", "na"])
    assert [cm.apply_row({"country": v})["country_mapped"] for v in ("FR", "JP", None)] == [
        "eu",
        None,
        None,
    ]
    with_default = category_map("country", {"FR": "eu"}, default="other", output="region")
    assert with_default.outputs[0].dtype == t.Category(["eu", "other"])
    assert with_default.apply_row({"country": "JP"}) == {"region": "other"}
    assert with_default.apply_row({"country": None}) == {"region": None}  # missing stays missing
    assert category_map("size", {"S": 1, "M": 2}).outputs[0].dtype is t.Int
    assert category_map("size", {"S": 1, "M": 2.5}).outputs[0].dtype is t.Float
    ints = category_map("size", {"S": 1, "M": 2}).apply_frame(pd.DataFrame({"size": ["M", "X"]}))
    assert ints["size_mapped"].dtype == "Int64" and _rows(ints) == [
        {"size_mapped": 2},
        {"size_mapped": None},
    ]


def test_days_since() -> None:
    ds = days_since("seen", now=NOW)
    assert ds.apply_row({"seen": datetime(2025, 12, 31)}) == {"seen_days_since": 1.0}  # naive: UTC
    aware = datetime(2026, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    assert ds.apply_row({"seen": aware}) == {"seen_days_since": 0.0}
    assert ds.apply_row({"seen": NOW.timestamp() - 43200}) == {"seen_days_since": 0.5}
    assert ds.apply_row({"seen": None}) == {"seen_days_since": None}
    frame = pd.DataFrame(
        {"seen": pd.to_datetime(pd.Series(["2025-12-31T22:00:00+00:00", None]), utc=True)}
    )
    assert _rows(ds.apply_frame(frame)) == [{"seen_days_since": 2 / 24}, {"seen_days_since": None}]
    ticks = iter([NOW, NOW + timedelta(days=1)])
    moving = days_since("seen", now=lambda: next(ticks), output="age_days")
    assert moving.apply_row({"seen": NOW}) == {"age_days": 0.0}
    assert moving.apply_row({"seen": NOW}) == {"age_days": 1.0}
    fresh = days_since("seen").apply_row({"seen": datetime.now(UTC) - timedelta(days=3)})
    assert fresh["seen_days_since"] == pytest.approx(3.0, abs=1e-3)
    with pytest.raises(ConfigurationError, match="1900"):
        ds.apply_row({"seen": datetime(1800, 1, 1)})
    with pytest.raises(ConfigurationError, match="1900"):
        ds.apply_frame(pd.DataFrame({"seen": pd.to_datetime(["1800-01-01"])}))


def test_bad_input_values() -> None:
    with pytest.raises(ConfigurationError, match=r"bucketize\('age'\): expected a number"):
        SEED["age_group"].apply_row({"age": "30"})
    with pytest.raises(ConfigurationError, match="expected a number"):
        SEED["age_group"].apply_frame(pd.DataFrame({"age": ["30", None]}))
    with pytest.raises(ConfigurationError, match=r"has no \['age'\]"):
        SEED["age_group"].apply_row({"agе": 30})
    with pytest.raises(ConfigurationError, match=r"no columns \['age'\]"):
        SEED["age_group"].apply_frame(pd.DataFrame({"x": [1]}))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: bucketize("a", [2, 1], ["x", "y", "z"]), "strictly increasing"),
        (lambda: bucketize("a", [1, 1], ["x", "y", "z"]), "strictly increasing"),
        (lambda: bucketize("a", [], ["x"]), "non-empty"),
        (lambda: bucketize("a", [1, float("nan")], ["x", "y", "z"]), "finite"),
        (lambda: bucketize("a", [1, True], ["x", "y", "z"]), "finite number"),
        (lambda: bucketize("a", [1, 2], ["x", "y"]), "2 bins need 3 labels, got 2"),
        (lambda: bucketize("a", [1], ["x", "x"]), "distinct strings"),
        (lambda: bucketize("a", [1], ["x", 2]), "distinct strings"),  # type: ignore[list-item]
        (lambda: bucketize("a", [1], ["x", "y"], output="bad-name"), "not allowed"),
        (lambda: min_max("a", 1, 1), "lo must be < hi"),
        (lambda: min_max("a", 2, 1), "lo must be < hi"),
        (lambda: min_max("a", 0, float("inf")), "finite"),
        (lambda: z_score("a", 0, 0), "std must be > 0"),
        (lambda: z_score("a", 0, -1), "std must be > 0"),
        (lambda: clip("a", 5, 5), "lo must be < hi"),
        (lambda: clip("a", None, None), "give lo, hi or both"),
        (lambda: one_hot("a", []), "non-empty"),
        (lambda: one_hot("a", ["x y", "x-y"]), r"duplicate output names \['a_x_y'\]"),
        (lambda: category_map("a", {}), "mapping is empty"),
        (lambda: category_map("a", {"x": "1", "y": 2}), "all str, or all numbers"),
        (lambda: category_map("a", {"x": "1"}, default=0), "all str, or all numbers"),
        (lambda: days_since("a", now="today"), "now= must be"),  # type: ignore[arg-type]
    ],
)
def test_builtin_errors(make: Callable[[], Transform], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        make()


def test_duplicate_outputs() -> None:
    clash = [min_max("a", 0, 1, output="x"), z_score("b", 0, 1, output="x")]
    with pytest.raises(ConfigurationError, match=r"'x' is produced twice.*'min_max'.*'z_score'"):
        output_fields(clash)
    with pytest.raises(ConfigurationError, match="produced twice"):
        derive(clash, {"a": 1, "b": 1})
    with pytest.raises(ConfigurationError, match="produced twice"):
        derive_frame(clash, pd.DataFrame({"a": [1], "b": [1]}))


def test_derive_chains_in_order() -> None:
    chain = [
        log1p("amount", output="log_amount"),
        bucketize("log_amount", [1, 2], ["s", "m", "l"], output="size"),
    ]
    assert derive(chain, {"amount": math.e - 1})["size"] == "m"
    frame = pd.DataFrame({"amount": [0.0, math.e**2, None]}, index=["u1", "u2", "u3"])
    got = derive_frame(chain, frame)
    assert list(got.index) == ["u1", "u2", "u3"]
    assert _rows(got[["size"]]) == [{"size": "s"}, {"size": "l"}, {"size": None}]
    assert list(frame.columns) == ["amount"]  # the input frame is not modified


def test_transforms_are_immutable() -> None:
    tr = SEED["age_group"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        tr.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        tr.params["right"] = True  # type: ignore[index]
    assert tr.name == "bucketize" and tr.inputs == ("age",) and tr.kind == "builtin"
    assert "age_group" in repr(tr)


# -- custom transforms ------------------------------------------------------------------------


def test_custom_row_and_vectorized() -> None:
    reg = _custom()
    assert reg.names() == ["amount_x2", "spend_per_order"]
    spo, x2 = reg.get("spend_per_order"), reg.get("amount_x2")
    assert spo.kind == x2.kind == "custom"
    assert spo.apply_row({"amount": 9, "b": 3, "other": "ignored"}) == {"spo": 3.0}
    assert x2.apply_row({"amount": 1.5}) == {"amount_x2": 3.0}
    assert x2.apply_row({"amount": None}) == {"amount_x2": None}
    frame = pd.DataFrame({"amount": [1.0, None, 4.0], "b": [2.0, 1.0, 0.0]}, index=[7, 8, 9])
    assert spo.apply_frame(frame)["spo"].tolist()[0] == 0.5
    assert list(x2.apply_frame(frame).index) == [7, 8, 9]
    assert _rows(x2.apply_frame(frame)) == [x2.apply_row(r) for r in _rows(frame)]


def test_custom_functions_stay_plain_and_see_only_inputs() -> None:
    reg = TransformRegistry()
    seen: list[set[str]] = []

    @reg.register("count_keys", inputs=["a"], outputs=[Field("n", t.Int)])
    def count_keys(row: Mapping[str, Any]) -> dict[str, Any]:
        seen.append(set(row))
        return {"n": len(row)}

    assert count_keys({"x": 1, "y": 2}) == {"n": 2}  # the decorator returns the function
    assert reg.get("count_keys").apply_row({"a": 1, "b": 2}) == {"n": 1}
    assert seen[-1] == {"a"}
    out = reg.get("count_keys").apply_frame(pd.DataFrame({"a": [1, 2], "b": [3, 4]}))
    assert out["n"].dtype == "Int64" and out["n"].tolist() == [1, 1]

    @reg.register("reset_index", inputs=["a"], outputs=[Field("b", t.Float)], vectorized=True)
    def reset_index(df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"b": df["a"].to_numpy() + 0.5})  # a fresh RangeIndex

    got = reg.get("reset_index").apply_frame(pd.DataFrame({"a": [1, 2]}, index=["p", "q"]))
    assert got.to_dict() == {"b": {"p": 1.5, "q": 2.5}}


def test_custom_outputs_are_checked() -> None:
    reg = TransformRegistry()

    @reg.register("wrong_row", inputs=["a"], outputs=[Field("x", t.Float), Field("y", t.Float)])
    def wrong_row(row: Mapping[str, Any]) -> dict[str, Any]:
        return {"x": 1.0, "z": 2.0}

    @reg.register("wrong_frame", inputs=["a"], outputs=[Field("x", t.Float)], vectorized=True)
    def wrong_frame(df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"extra": df["a"], "x": df["a"]})

    @reg.register("not_a_dict", inputs=["a"], outputs=[Field("x", t.Float)])
    def not_a_dict(row: Mapping[str, Any]) -> Any:
        return [1.0]

    @reg.register("short", inputs=["a"], outputs=[Field("x", t.Float)], vectorized=True)
    def short(df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"x": [1.0]})

    frame = pd.DataFrame({"a": [1.0, 2.0]})
    msg = r"'wrong_row' returned missing outputs \['y'\] and unexpected outputs \['z'\]"
    with pytest.raises(ConfigurationError, match=msg):
        reg.get("wrong_row").apply_row({"a": 1})
    with pytest.raises(ConfigurationError, match=msg):
        reg.get("wrong_row").apply_frame(frame)
    msg = r"'wrong_frame' returned missing outputs \[\] and unexpected outputs \['extra'\]"
    with pytest.raises(ConfigurationError, match=msg):
        reg.get("wrong_frame").apply_frame(frame)
    with pytest.raises(ConfigurationError, match=msg):
        reg.get("wrong_frame").apply_row({"a": 1})
    with pytest.raises(ConfigurationError, match="'not_a_dict' must return a dict, got list"):
        reg.get("not_a_dict").apply_row({"a": 1})
    with pytest.raises(ConfigurationError, match="DataFrame of 2 rows, got 1 rows"):
        reg.get("short").apply_frame(frame)

    @reg.register("none", inputs=["a"], outputs=[Field("x", t.Float)], vectorized=True)
    def none(df: pd.DataFrame) -> Any:
        return None

    with pytest.raises(ConfigurationError, match="DataFrame of 2 rows, got NoneType"):
        reg.get("none").apply_frame(frame)


def test_registry_errors() -> None:
    reg = TransformRegistry()
    with pytest.raises(NotFoundError) as info:
        reg.get("nope")
    text = str(info.value)
    assert "'nope'" in text and "register it with @store.transform(...) in this process" in text
    outs = [Field("x", t.Float)]
    with pytest.raises(ConfigurationError, match="not allowed"):
        reg.register("bad name", inputs=["a"], outputs=outs)
    with pytest.raises(ConfigurationError, match="inputs must be distinct"):
        reg.register("n", inputs=[], outputs=outs)
    with pytest.raises(ConfigurationError, match="inputs must be distinct"):
        reg.register("n", inputs=["a", "a"], outputs=outs)
    with pytest.raises(ConfigurationError, match="inputs must be distinct"):
        reg.register("n", inputs="amount", outputs=outs)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="outputs must be a list of Field"):
        reg.register("n", inputs=["a"], outputs=[])
    with pytest.raises(ConfigurationError, match="produced twice"):
        reg.register("n", inputs=["a"], outputs=outs + outs)

    for _ in range(2):  # the same function again (a notebook cell re-run) replaces it

        @reg.register("twice", inputs=["a"], outputs=outs)
        def f(row: Mapping[str, Any]) -> dict[str, Any]:
            return {"x": 1.0}

    with pytest.raises(ConfigurationError, match="'twice' is already registered by .*f"):

        @reg.register("twice", inputs=["a"], outputs=outs)
        def g(row: Mapping[str, Any]) -> dict[str, Any]:
            return {"x": 2.0}

    assert reg.names() == ["twice"]


def test_spec_hash_follows_the_source() -> None:
    decl: dict[str, Any] = {"inputs": ["a"], "outputs": [Field("x", t.Float)]}
    one, two, three = TransformRegistry(), TransformRegistry(), TransformRegistry()

    @one.register("scale", **decl)
    def scale_v1(row: Mapping[str, Any]) -> dict[str, Any]:
        return {"x": row["a"] * 2}

    @two.register("scale", **decl)
    def scale_v2(row: Mapping[str, Any]) -> dict[str, Any]:
        return {"x": row["a"] * 3}

    three.register("scale", **decl)(scale_v1)
    h1, h2 = one.get("scale").spec()["code_hash"], two.get("scale").spec()["code_hash"]
    assert h1 != h2
    assert h1 == three.get("scale").spec()["code_hash"]
    assert h1 == hashlib.sha256(inspect.getsource(scale_v1).encode()).hexdigest()

    # No source file (e.g. typed into a shell): the bytecode is hashed instead.
    namespace: dict[str, Any] = {}
    exec("def f(row):\n    return {'x': 1.0}\ndef g(row):\n    return {'x': 2.0}", namespace)
    four = TransformRegistry()
    four.register("f", **decl)(namespace["f"])
    four.register("g", **decl)(namespace["g"])
    assert four.get("f").code_hash != four.get("g").code_hash
    assert four.get("f").apply_row({"a": 0}) == {"x": 1.0}


def test_spec_is_json() -> None:
    for tr in [*_every_transform(), days_since("seen")]:
        spec = json.loads(json.dumps(tr.spec()))
        assert set(spec) == {
            "name",
            "kind",
            "inputs",
            "outputs",
            "params",
            "code_hash",
            "created_at",
        }
        assert spec["inputs"] == list(tr.inputs)
        assert [Field.from_spec(f) for f in spec["outputs"]] == list(tr.outputs)
        if tr.kind == "builtin":
            assert spec["code_hash"] is None and spec["created_at"] is None
        else:
            assert spec["kind"] == "custom" and len(spec["code_hash"]) == 64
            assert datetime.fromisoformat(spec["created_at"]).tzinfo is not None
    age = SEED["age_group"].spec()
    assert age["params"] == {
        "bins": [25, 35, 55],
        "labels": ["young", "young_adult", "adult", "senior"],
        "right": False,
    }
    assert age["outputs"][0]["dtype"] == {
        "kind": "Category",
        "categories": ["young", "young_adult", "adult", "senior"],
    }
    cm = category_map("n", {1: "one", None: "none"}, default="other").spec()
    assert cm["params"] == {"mapping": [[1, "one"], [None, "none"]], "default": "other"}
    assert days_since("s", now=NOW).spec()["params"] == {"now": NOW.isoformat()}
    assert _custom().get("amount_x2").spec()["params"] == {"vectorized": True}


def test_seed_scenario_helper_matches_the_spec() -> None:
    from redfeat.transforms.builtins import seed_scenario

    assert [t.spec() for t in seed_scenario(purchases="purchase_count")] == [
        t.spec() for t in seed()
    ]
