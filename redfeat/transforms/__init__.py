"""Feature transformations (``from redfeat.transforms import bucketize, min_max``) and
derived views."""

from __future__ import annotations

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
