"""What services share, and the small Protocols they see the store through.

``FeatureStore`` builds one ``Ctx`` and hands it to each service, with the Protocol the
service needs (``Reader``, ``Writer``, ``WriteObserver``) rather than the store itself: a
service never imports the facade, and mypy checks that the store satisfies the Protocol
where it is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from ..errors import Problem, wrap_redis
from .conn import Direct, Script
from .keys import Keys
from .metrics import Metrics
from .records import Version, WriteReport
from .registry import Registry, Resolved


@dataclass(frozen=True, slots=True, eq=False)
class Ctx:
    """The connection, key builder, registry, per-thread raw connections and operation
    metrics of one store."""

    client: redis.Redis
    keys: Keys
    registry: Registry
    direct: Direct
    metrics: Metrics

    def run(self, script: Script, keys: list[str], args: list[Any], *, what: str) -> Any:
        """One script call on this thread's raw connection; redis errors become
        BackendError prefixed with ``what``."""

        def step() -> Any:
            # on a cluster: to the node of the keys' slot, again after a redirection (a
            # redirected call did not run)
            return script.stream(self.direct.conn(keys[0] if keys else None), [(keys, args)])[0]

        with wrap_redis(f"{what}"):
            if self.direct.cluster is None:
                return step()
            return self.direct.retrying(step, what=what)


class Reader(Protocol):
    """Latest (or as-of) values by view, through every read path (derived views, cache)."""

    def get_many(
        self,
        view: str,
        entity_ids: Iterable[str | int],
        *,
        features: Sequence[str] | None = None,
        as_of: Any = None,
        with_meta: bool = False,
    ) -> list[Any]: ...


class Writer(Protocol):
    """Definitions and writes, with everything a write entails (derived views, cache)."""

    def apply(self, *objects: Any, allow_breaking: bool = False) -> dict[str, str]: ...

    def get(
        self,
        view: str,
        entity_id: str | int,
        *,
        features: Sequence[str] | None = None,
        as_of: Any = None,
    ) -> dict[str, Any] | None: ...

    def write(
        self, view: str, entity_id: str | int, values: Mapping[str, Any], *, event_time: Any = None
    ) -> Version: ...

    def write_many(
        self,
        view: str,
        rows: Any,
        *,
        entity_column: str = "entity_id",
        event_time_column: str | None = None,
        on_error: str = "raise",
        progress: Callable[[int, int], None] | None = None,
    ) -> WriteReport: ...


class WriteObserver(Protocol):
    """Sees every write on its way in and once it is stored: the custom validators and
    the profiles of ``store.quality``. Its refusals stop a write (ValidationError); its
    failures to record never do."""

    def check_row(self, res: Resolved, entity: str, payload: bytes) -> None: ...

    def check_columns(
        self, res: Resolved, ids: list[str], checked: dict[str, list[Any]], problems: Any
    ) -> list[Problem]: ...

    def written(self, res: Resolved, version: Version, et: int) -> None: ...

    def written_columns(
        self, res: Resolved, out: Mapping[str, Any], refused: Any, flat: list[int]
    ) -> None: ...

    def refused(self, view: str, n: int = 1) -> None: ...
