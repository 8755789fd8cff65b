"""Feature transformations (``from redfeat.transforms import bucketize, min_max``) and
derived views. The built-ins load pandas: they are imported on first use of a name."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .builtins import (
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
        seed_scenario,
        z_score,
    )

__all__ = [
    "Transform",
    "TransformRegistry",
    "bucketize",
    "category_map",
    "clip",
    "days_since",
    "derive",
    "derive_frame",
    "log1p",
    "min_max",
    "one_hot",
    "output_fields",
    "ratio",
    "seed_scenario",
    "z_score",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".builtins", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
