"""Derived views: features computed from a source view by transforms.

``FeatureView("user_derived", entity=user, source="user_profile", transforms=[...])`` takes
its fields from the transforms' outputs. It is materialised (written with the source's
entity and event time whenever the source is written) or, with ``on_read=True``, computed
when read. The registry keeps each transform's spec (name, inputs, outputs, parameters,
hash of its code); a process rebuilds built-ins from that and finds custom transforms in
its own registry by name. Code is never stored or executed from data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..core.context import Ctx, Reader
from ..core.registry import Resolved
from ..core.schema import FeatureView
from ..errors import ConfigurationError, NotFoundError

if TYPE_CHECKING:
    from . import builtins as tr

EVENT_TIME = "__redfeat_event_time"


def _out(spec: dict[str, Any]) -> str:
    return str(spec["outputs"][0]["name"])


def rebuild(spec: dict[str, Any], registry: tr.TransformRegistry, view: str) -> tr.Transform:
    """A Transform from its registry spec: built-ins from their parameters, custom ones
    from this process's registry (with the same code hash, or a clear error)."""
    from . import builtins as tr  # pandas: loaded when a derived view is first used

    name, params, ins = spec["name"], spec.get("params") or {}, spec["inputs"]
    if spec.get("kind") == "custom":
        try:
            found = registry.get(name)
        except NotFoundError as exc:
            raise NotFoundError(
                f"view {view!r} needs the custom transform {name!r}, which is not registered "
                "in this process: define it with @store.transform(...) before using the view"
            ) from exc
        if spec.get("code_hash") and found.code_hash != spec["code_hash"]:
            raise ConfigurationError(
                f"view {view!r}: transform {name!r} in this process differs from the one the "
                "view was applied with (code hash); apply the view again to use this code"
            )
        return found
    builders: dict[str, Any] = {
        "bucketize": lambda: tr.bucketize(
            ins[0],
            params["bins"],
            params["labels"],
            right=params.get("right", False),
            output=_out(spec),
        ),
        "min_max": lambda: tr.min_max(
            ins[0], params["lo"], params["hi"], clip=params.get("clip", True), output=_out(spec)
        ),
        "z_score": lambda: tr.z_score(ins[0], params["mean"], params["std"], output=_out(spec)),
        "log1p": lambda: tr.log1p(ins[0], output=_out(spec)),
        "clip": lambda: tr.clip(ins[0], params.get("lo"), params.get("hi"), output=_out(spec)),
        "ratio": lambda: tr.ratio(ins[0], ins[1], output=_out(spec)),
        "one_hot": lambda: _one_hot(spec),
        "category_map": lambda: tr.category_map(
            ins[0], dict(params["mapping"]), default=params.get("default"), output=_out(spec)
        ),
        "days_since": lambda: tr.days_since(ins[0], output=_out(spec)),
    }
    if name not in builders:
        raise ConfigurationError(f"view {view!r}: unknown built-in transform {name!r}")
    built: tr.Transform = builders[name]()
    return built


def _one_hot(spec: dict[str, Any]) -> tr.Transform:
    from . import builtins as tr

    cats = spec["params"]["categories"]
    first = str(spec["outputs"][0]["name"])
    # outputs are "<prefix>_<category>": recover the prefix from the first one
    prefix = first[: len(first) - len(str(cats[0])) - 1] if cats else spec["inputs"][0]
    return tr.one_hot(spec["inputs"][0], cats, output=prefix)


def check_source(view: FeatureView, source: FeatureView) -> None:
    """The transforms of ``view`` read only fields that ``source`` has."""
    have = {f.name for f in source.fields}
    for t_spec in view.transform_specs:
        missing = [i for i in t_spec["inputs"] if i not in have]
        if missing:
            raise ConfigurationError(
                f"view {view.name!r}: transform {t_spec['name']!r} reads {missing}, which "
                f"source view {source.name!r} does not have (fields: {sorted(have)})"
            )
    if source.entity != view.entity:
        raise ConfigurationError(
            f"view {view.name!r} (entity {view.entity!r}) cannot derive from {source.name!r} "
            f"(entity {source.entity!r})"
        )


def compute(transforms: Sequence[tr.Transform], values: dict[str, Any]) -> dict[str, Any]:
    """The derived values (outputs only) for one row of source values."""
    from . import builtins as tr

    names = [f.name for f in tr.output_fields(transforms)]
    full = tr.derive(transforms, values)
    return {n: full[n] for n in names}


class Deriver:
    """Derived views of one store: their transforms (rebuilt from the registry's specs,
    cached per view definition), which views derive from a source, and on-read views."""

    def __init__(
        self, ctx: Ctx, registry: Callable[[], tr.TransformRegistry], reader: Reader
    ) -> None:
        self._ctx = ctx
        self._registry = registry  # this process's custom transforms (built on first use)
        self._reader = reader
        self._cache: dict[tuple[str, int], list[tr.Transform]] = {}

    def transforms(self, view: FeatureView) -> list[tr.Transform]:
        key = (view.name, hash(repr(view.transform_specs)))
        found = self._cache.get(key)
        if found is None:
            found = [rebuild(s, self._registry(), view.name) for s in view.transform_specs]
            self._cache[key] = found
        return found

    def values(self, view: FeatureView, source_values: dict[str, Any]) -> dict[str, Any]:
        return compute(self.transforms(view), source_values)

    def frame(self, view: FeatureView, frame: Any) -> Any:
        """Derived columns (outputs only) for a pandas frame of source values."""
        from . import builtins as tr

        outs = [f.name for f in tr.output_fields(self.transforms(view))]
        return tr.derive_frame(self.transforms(view), frame)[outs]

    def writable(self, view: str) -> tuple[Resolved, list[Resolved]]:
        """The view and its materialised derived views, once those are known to be
        computable in this process (a missing custom transform fails before anything is
        written)."""
        res = self._ctx.registry.get(view)
        if res.view.on_read:
            raise ConfigurationError(
                f"view {view!r} is computed on read from {res.view.source!r}; write that instead"
            )
        deps = self._ctx.registry.dependents(view)
        for dep in deps:
            self.transforms(dep.view)
        return res, deps

    def read(
        self,
        res: Resolved,
        ids: list[Any],
        feats: list[str] | None,
        as_of: Any,
        with_meta: bool,
    ) -> list[Any]:
        """An on_read view: read its source, compute the transforms now."""
        assert res.view.source is not None
        res.codec.select(feats)  # unknown features: ValidationError
        rows = self._reader.get_many(res.view.source, ids, as_of=as_of, with_meta=with_meta)
        out: list[Any] = []
        for row in rows:
            values = row.values if with_meta else row
            derived = None
            if values is not None:
                derived = self.values(res.view, values)
                if feats is not None:
                    derived = {f: derived[f] for f in feats}
            out.append(dataclasses.replace(row, values=derived) if with_meta else derived)
        return out


def with_event_time(rows: Any) -> tuple[Any, str]:
    """rows plus a column holding one event time (now) for all of them, and its name: a
    bulk write and its derived views get the same event time."""
    now = datetime.now(UTC)
    mod = type(rows).__module__
    if mod.startswith("pandas"):
        return rows.assign(**{EVENT_TIME: now}), EVENT_TIME
    if mod.startswith("pyarrow"):
        import pyarrow as pa

        return rows.append_column(
            EVENT_TIME, pa.array([now] * rows.num_rows, pa.timestamp("us", tz="UTC"))
        ), EVENT_TIME
    return [{**r, EVENT_TIME: now} if isinstance(r, Mapping) else r for r in rows], EVENT_TIME


def source_frame(rows: Any) -> Any:
    """Rows of a bulk write as a pandas frame with a fresh index."""
    mod = type(rows).__module__
    if mod.startswith("pandas"):
        return rows.reset_index(drop=True)
    if mod.startswith("pyarrow"):
        return rows.to_pandas()
    import pandas as pd

    return pd.DataFrame(list(rows))
