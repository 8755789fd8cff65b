"""Feature references ("view:feature"): grouped by view, checked against the schemas,
and named as output columns. Shared by get_features and training frames, which join each
view on its own entity's keys (views of several entities mix in one call)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import ConfigurationError, Problem, ValidationError
from .registry import Resolved
from .schema import Entity


@dataclass(frozen=True, slots=True)
class Wanted:
    """The features asked of one view, with their output column names."""

    res: Resolved
    features: list[str]
    outputs: list[str]


def plan(
    features: Sequence[str],
    resolve: Callable[[str], Resolved],
    full_feature_names: bool,
    *,
    purpose: str = "a training frame",
    on_read_ok: bool = False,
) -> list[Wanted]:
    """Group "view:feature" references by view and name the output columns (shared by
    training frames and store.get_features). ``purpose`` names the caller in errors."""
    if isinstance(features, str) or not features:
        raise ConfigurationError("features must be a non-empty list like ['view:feature', ...]")
    by_view: dict[str, list[str]] = {}
    for ref in features:
        view, sep, feat = str(ref).partition(":")
        if not sep or not feat:
            raise ConfigurationError(f"feature reference {ref!r} must look like 'view:feature'")
        by_view.setdefault(view, []).append(feat)
    resolved = {view: resolve(view) for view in by_view}
    wanted: list[Wanted] = []
    seen: dict[str, str] = {}
    problems: list[Problem] = []
    for view, feats in by_view.items():
        res = resolved[view]
        res.codec.select(feats)  # unknown features: ValidationError naming them
        if res.view.on_read and not on_read_ok:
            raise ConfigurationError(
                f"view {view!r} is computed on read and keeps no versions; for training "
                "frames define it materialised (on_read=False), or ask for its source's "
                "features and apply the transforms to the frame"
            )
        outs = []
        for f in feats:
            out = f"{view}__{f}" if full_feature_names else f
            if out in seen:
                problems.append(
                    Problem(
                        view,
                        None,
                        f,
                        "ambiguous_feature",
                        f,
                        f"{purpose}: feature {f!r} is requested from views {seen[out]!r} "
                        f"and {view!r}; pass full_feature_names=True",
                    )
                )
            seen[out] = view
            outs.append(out)
        wanted.append(Wanted(res, feats, outs))
    if problems:
        raise ValidationError(problems, outcome="nothing was read")
    return wanted


def shared_columns(used: dict[tuple[str, ...], Entity], cols: list[str], key: Entity) -> None:
    """Record that entity ``key`` is read from columns ``cols`` (of an entity_df or entity
    rows). Two entities may share columns only when both declared their join keys (as in
    Feast, a join key names a column); an undeclared entity's ``entity_id`` names one."""
    other = used.setdefault(tuple(cols), key)
    if other.name != key.name and not (other.declared and key.declared):
        raise ConfigurationError(
            f"entities {sorted([other.name, key.name])} would both be read from column(s) "
            f"{cols}: a column of ids names one entity; declare join keys "
            "(Entity(name, join_keys=[...])) and give each entity its own columns"
        )
