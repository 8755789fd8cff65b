"""Derived views: features computed from a source view by transforms.

``FeatureView("user_derived", entity=user, source="user_profile", transforms=[...])`` takes
its fields from the transforms' outputs. It is materialised (written with the source's
entity and event time whenever the source is written) or, with ``on_read=True``, computed
when read. The registry keeps each transform's spec (name, inputs, outputs, parameters,
hash of its code); a process rebuilds built-ins from that and finds custom transforms in
its own registry by name. Code is never stored or executed from data.

A derived version is written right after its source version, by the same process. So that
a process killed in between leaves nothing behind for good, a writer holds a *lease* in
Redis while it writes a source that has derived views (``Leases``): the server time since
which its unfinished calls run, refreshed about once a second. A lease whose process is
gone (same host, pid not alive) or silent for ``LEASE_TIMEOUT_MS`` marks a span of the
change feed whose derived versions are checked and written again (``writes.Recovery``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..core.context import Ctx, Reader
from ..core.registry import Resolved
from ..core.schema import FeatureView
from ..errors import (
    BackendError,
    ConfigurationError,
    NotFoundError,
    Problem,
    RedfeatError,
    wrap_redis,
)

if TYPE_CHECKING:
    from . import builtins as tr

EVENT_TIME = "__redfeat_event_time"

LEASE_BEAT = 1.0  # s between refreshes of a busy lease
LEASE_TIMEOUT_MS = 30_000  # a lease not refreshed for this long belongs to a dead writer
LEASE_MARGIN_MS = 1000  # taken off a lease's start: the client's clock is not the server's

# KEYS[1] the derive hash. ARGV[1] the lease field, ARGV[2] how long ago (ms) this
# process's oldest unfinished call began ("" = none: drop the lease), ARGV[3] a margin (ms).
# The value is "<since ms>:<now ms>" in server time, the clock of the change feed's ids.
LEASE = r"""
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local since = now - tonumber(ARGV[2]) - tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f:%.0f', since, now))
return now
"""


def lease_field(token: str) -> str:
    return "L:" + token


def lease_token() -> str:
    """host|pid|random: the host and pid tell a dead writer on this machine at once."""
    return f"{socket.gethostname()}|{os.getpid()}|{uuid.uuid4().hex[:8]}"


class Leases:
    """This process's lease on deriving (see the module docstring).

    ``hold()`` wraps one write call of a source with derived views: the first call of a
    busy period records the lease before anything is written; the lease is refreshed at
    most once a second (``beat``), with its start moved up to the oldest call still
    running, and dropped once the process has been idle for a second. Cost: one small
    script call when a busy period starts, then at most ~2 a second."""

    def __init__(self, ctx: Ctx) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.token = lease_token()
        self._pid = os.getpid()
        self._calls: dict[int, float] = {}
        self._next = 0
        self._busy = False  # a lease is recorded in Redis
        self._last = 0.0
        self._script: Any = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[Callable[[], None]]:
        with self._lock:
            if os.getpid() != self._pid:  # a forked child: its own lease
                self._reset()
            call = self._next
            self._next += 1
            self._calls[call] = time.monotonic()
            try:
                if not self._busy:
                    self._publish()
            except BaseException:
                del self._calls[call]
                raise
        try:
            yield self.beat
        finally:
            with self._lock:
                self._calls.pop(call, None)
                if time.monotonic() - self._last >= LEASE_BEAT:
                    # the lease stays as it was if the server is down: still covering
                    with contextlib.suppress(BackendError):
                        self._publish()

    def beat(self) -> None:
        """Refresh the lease if it is due (call it as a long write progresses)."""
        if time.monotonic() - self._last >= LEASE_BEAT:
            with self._lock:
                if time.monotonic() - self._last >= LEASE_BEAT:
                    self._publish()

    def release(self) -> None:
        """Drop the lease (the store closes): nothing of this process is unfinished."""
        with self._lock:
            self._calls.clear()
            if self._busy and os.getpid() == self._pid:
                with contextlib.suppress(RedfeatError):
                    self._publish()

    def _publish(self) -> None:
        now = time.monotonic()
        ago = "" if not self._calls else str(int((now - min(self._calls.values())) * 1000))
        if self._script is None:
            self._script = self._ctx.client.register_script(LEASE)
        # On the client's pool, never on this thread's raw connection: a beat comes from
        # the progress callback of a write whose replies are still in flight there.
        with wrap_redis("recording the lease of a derived-view writer failed"):
            self._script(
                keys=[self._ctx.keys.derive], args=[lease_field(self.token), ago, LEASE_MARGIN_MS]
            )
        self._busy = bool(self._calls)
        self._last = now


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

    def checked_values(
        self, dep: Resolved, source_values: Mapping[str, Any], entity: str
    ) -> tuple[dict[str, Any] | None, list[Problem]]:
        """One derived row and what refuses it: a transform that fails on the source
        values, or derived values the derived view's schema refuses."""
        try:
            values = self.values(dep.view, dict(source_values))
        except Exception as exc:  # a transform's own error, whatever it is, refuses the row
            return None, [_transform_problem(dep.name, entity, exc, None)]
        _arr, problems = dep.codec.problems_for(entity, values)
        return values, [_relabel(p, dep.name) for p in problems]

    def checked_frame(
        self, dep: Resolved, frame: Any, entity_column: str, event_time_column: str
    ) -> tuple[Any, dict[int, list[Problem]]]:
        """The derived rows of a source frame (index 0..n-1), with its entity and event
        time columns, and the rows they refuse, by position: a transform that fails on
        them, or derived values the derived view's schema refuses."""
        import pandas as pd

        from ..core.columns import validate
        from .core import output_fields

        problems: dict[int, list[Problem]] = {}
        ids = frame[entity_column].tolist() if entity_column in frame else [None] * len(frame)
        try:
            derived = self.frame(dep.view, frame)
        except Exception:
            # The vectorised path failed somewhere: find the rows, one at a time.
            outs = [f.name for f in output_fields(self.transforms(dep.view))]
            records: list[dict[str, Any]] = []
            for i, row in enumerate(frame.to_dict("records")):
                try:
                    records.append(self.values(dep.view, row))
                except Exception as exc:
                    problems[i] = [_transform_problem(dep.name, _str(ids[i]), exc, i)]
                    records.append(dict.fromkeys(outs))
            derived = pd.DataFrame(records, columns=outs, index=frame.index)
        derived.insert(0, entity_column, frame[entity_column].to_numpy())
        derived.insert(1, event_time_column, frame[event_time_column].to_numpy())
        report = validate(
            dep.codec, derived, entity_column=entity_column, event_time_column=event_time_column
        )
        for p in report.problems:
            # entity ids and event times are the source's: its own check reports them
            if p.row is not None and p.row not in problems and p.field in dep.codec.fields:
                problems.setdefault(p.row, []).append(_relabel(p, dep.name))
        return derived, problems

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


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _transform_problem(view: str, entity: str | None, exc: Exception, row: int | None) -> Problem:
    return Problem(
        view,
        entity,
        None,
        "transform",
        None,
        f"derived view {view!r}: a transform failed on this row: {type(exc).__name__}: {exc}",
        row,
    )


def _relabel(p: Problem, view: str) -> Problem:
    return dataclasses.replace(p, view=view, message=f"derived view {view!r}: {p.message}")


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
