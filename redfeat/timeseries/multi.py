"""Queries over many series: label filters (like TS.MRANGE / TS.QUERYINDEX), mrange with
GROUPBY/REDUCE, and correlation."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ConfigurationError
from .analysis import InsufficientDataError
from .spec import SeriesSpec

_FILTER = re.compile(r"^([^=!,()]+)(!=|=)(.*)$", re.S)
REDUCERS = ("avg", "sum", "min", "max", "range", "count", "std", "var")


@dataclass(frozen=True)
class Matcher:
    label: str
    negate: bool
    values: tuple[str, ...]  # empty: "has no such label" (negated: "has it")

    def __call__(self, labels: dict[str, str]) -> bool:
        v = labels.get(self.label)
        hit = v is None if not self.values else v in self.values
        return hit != self.negate


def parse_filters(filters: Iterable[str] | str) -> list[Matcher]:
    """``l=v``, ``l!=v``, ``l=(a,b)``, ``l!=(a,b)``, ``l=`` (no label l), ``l!=`` (has l)."""
    if isinstance(filters, str):
        filters = [filters]
    elif isinstance(filters, bytes | Mapping) or not isinstance(filters, Iterable):
        raise ConfigurationError(
            f"label filters must be a str or a list of str like ['region=eu'], got {filters!r}"
        )
    out: list[Matcher] = []
    for f in filters:
        m = _FILTER.match(f) if isinstance(f, str) else None
        if m is None:
            raise ConfigurationError(
                f"label filter {f!r} is not one of l=v, l!=v, l=(a,b), l!=(a,b), l=, l!="
            )
        label, op, value = m.group(1), m.group(2), m.group(3)
        if label != label.strip():
            # label names never carry surrounding spaces (check_labels refuses them): such
            # a filter would silently match nothing (values are matched exactly, spaces too)
            raise ConfigurationError(
                f"label filter {f!r} has spaces around the label name; write "
                f"{label.strip()}{op}{value}"
            )
        if value.startswith("(") and value.endswith(")"):
            values = tuple(x for x in value[1:-1].split(",") if x)
        else:
            values = (value,) if value else ()
        out.append(Matcher(label, op == "!=", values))
    return out


def select(specs: list[SeriesSpec], filters: Iterable[str] | str) -> list[SeriesSpec]:
    matchers = parse_filters(filters)
    return [s for s in specs if all(m(s.labels) for m in matchers)]


def _reduce(frame: pd.DataFrame, reducer: str) -> pd.Series:
    fn: dict[str, Callable[[], pd.Series]] = {
        "avg": lambda: frame.mean(axis=1),
        "sum": lambda: frame.sum(axis=1, min_count=1),
        "min": lambda: frame.min(axis=1),
        "max": lambda: frame.max(axis=1),
        "range": lambda: frame.max(axis=1) - frame.min(axis=1),
        "count": lambda: frame.count(axis=1).astype(float),
        "std": lambda: frame.std(axis=1, ddof=1),
        "var": lambda: frame.var(axis=1, ddof=1),
    }
    return fn[reducer]()


def group(
    results: dict[str, tuple[np.ndarray, np.ndarray]],
    specs: list[SeriesSpec],
    group_by: str,
    reducer: str,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Series grouped by the value of label ``group_by`` and reduced per timestamp, keyed
    ``"<label>=<value>"`` like TS.MRANGE GROUPBY; series without the label are left out."""
    if reducer not in REDUCERS:
        raise ConfigurationError(f"reduce {reducer!r} is not one of {REDUCERS}")
    groups: dict[str, list[str]] = {}
    for s in specs:
        if group_by in s.labels:
            groups.setdefault(s.labels[group_by], []).append(s.name)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for value in sorted(groups):
        cols = {
            n: pd.Series(results[n][1], index=results[n][0]) for n in groups[value] if n in results
        }
        df = pd.DataFrame(cols).sort_index()
        red = _reduce(df, reducer).dropna() if len(df) else pd.Series(dtype=float)
        out[f"{group_by}={value}"] = (
            red.index.to_numpy().astype("datetime64[ms]"),
            red.to_numpy(dtype=np.float64),
        )
    return out


def pearson(columns: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """Pearson matrix over the buckets every series has (inner join)."""
    df = pd.DataFrame({n: pd.Series(v, index=t) for n, (t, v) in columns.items()}).dropna()
    if len(df) < 3:
        raise InsufficientDataError(
            f"series {sorted(columns)} share {len(df)} bucket(s); correlation needs at least 3",
            needed=3,
            found=len(df),
        )
    flat = [n for n in df.columns if df[n].min() == df[n].max()]
    if flat:
        # a constant series has no variance: its correlation is undefined, not 0
        raise InsufficientDataError(
            f"series {flat} are constant over the {len(df)} shared bucket(s); their "
            "correlation is undefined (leave them out or widen the range)",
            needed=1,
            found=0,
        )
    return df.corr(method="pearson")
