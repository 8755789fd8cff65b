"""Custom validators: Python checks of whole rows, beyond the schema's field constraints.

A validator takes a row (field -> typed value) and returns what is wrong with it: None (or
True, or an empty list) when the row is fine, else a message, a ``(field, message)`` pair,
a ``{field: message}`` dict, or a list of those. ``severity="error"`` refuses the row,
``"warning"`` writes it and counts and reports the warning. Validators live in the process
that registers them (functions are never stored in Redis).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigurationError, Problem

SEVERITIES = ("error", "warning")

RowCheck = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class Validator:
    view: str
    name: str
    severity: str
    fn: RowCheck

    def run(self, row: dict[str, Any], entity: str | None, index: int | None) -> list[Problem]:
        try:
            found = self.fn(row)
        except Exception as exc:  # a bug in a check is reported where it happened
            found = f"validator raised {type(exc).__name__}: {exc}"
        return [
            Problem(self.view, entity, fld, self.name, _value(row, fld), msg, index, self.severity)
            for fld, msg in _normalise(found, self.name)
        ]


def _value(row: Mapping[str, Any], fld: str | None) -> Any:
    return None if fld is None else row.get(fld)


def _normalise(found: Any, name: str) -> list[tuple[str | None, str]]:
    if isinstance(found, np.bool_):  # a numpy comparison, returned as is
        found = bool(found)
    if found is None or found is True:
        return []
    if found is False:
        return [(None, f"row failed check {name!r}")]
    if isinstance(found, str):
        return [(None, found)] if found else []
    if isinstance(found, Mapping):
        return [(str(k), str(v)) for k, v in found.items()]
    if isinstance(found, tuple) and len(found) == 2 and isinstance(found[1], str):
        return [(None if found[0] is None else str(found[0]), found[1])]
    if isinstance(found, list | tuple | set):
        out: list[tuple[str | None, str]] = []
        for item in found:
            out.extend(_normalise(item, name))
        return out
    raise ConfigurationError(
        f"validator {name!r} returned {type(found).__name__}: return None when the row is "
        "fine, else a message, a (field, message) pair, a {field: message} dict or a list"
    )


def make(view: str, fn: RowCheck, severity: str, name: str | None) -> Validator:
    if severity not in SEVERITIES:
        raise ConfigurationError(f"severity must be 'error' or 'warning', got {severity!r}")
    if not callable(fn):
        raise ConfigurationError(f"a validator must be callable, got {type(fn).__name__}")
    label = name or getattr(fn, "__name__", None) or "validator"
    return Validator(view, str(label), severity, fn)


def run_rows(
    checks: list[Validator],
    rows: list[tuple[int | None, str | None, dict[str, Any]]],
) -> tuple[dict[int | None, list[Problem]], list[Problem]]:
    """Run every check on every (index, entity, row): (errors by index, warnings)."""
    errors: dict[int | None, list[Problem]] = {}
    warnings: list[Problem] = []
    for index, entity, row in rows:
        for v in checks:
            for p in v.run(row, entity, index):
                if p.severity == "error":
                    errors.setdefault(index, []).append(p)
                else:
                    warnings.append(p)
    return errors, warnings
