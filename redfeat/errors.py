"""The exceptions redfeat raises.

RedfeatError
├── ConfigurationError   bad arguments, bad definitions, unusable server set-up
├── ValidationError      rows refused by a view's schema (``.problems`` lists them all)
├── NotFoundError        unknown view, entity, version
│   └── FeedTrimmedError change events a cursor asks for were trimmed from the feed
├── ConflictError        a definition change that would break stored data
└── BackendError         the server failed or could not be reached (chained ``from``)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class RedfeatError(Exception):
    """Base of every exception redfeat raises."""


class ConfigurationError(RedfeatError):
    """A definition, argument or server set-up cannot be used as given."""


class NotFoundError(RedfeatError):
    """A view, entity or version does not exist."""


class FeedTrimmedError(NotFoundError):
    """Change events after ``since`` were trimmed from ``view``'s feed (its ``feed_cap``
    or ``feed_retention``) before they were read. ``resume`` is the oldest cursor kept:
    reload what depends on the view (``get_many``, ``export``), then read on from it."""

    def __init__(self, view: str, since: str, resume: str | None) -> None:
        self.view = view
        self.since = since
        self.resume = resume
        super().__init__(
            f"view {view!r}: change events after cursor {since!r} were trimmed from the feed "
            "(feed_cap / feed_retention) before they were read; reload the view's state "
            f"(get_many or export), then read on with changes(since={resume!r})"
        )


class ConflictError(RedfeatError):
    """A change would break data already stored (e.g. changing a field's type)."""


class BackendError(RedfeatError):
    """The Redis/Valkey server failed or could not be reached."""


def backend_error(what: str, exc: BaseException) -> BackendError:
    """The one place a redis-py error becomes a BackendError (raise it ``from exc``): the
    message says what failed and the server's answer, and for a connection that failed,
    that the server may be down."""
    import redis

    hint = ""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        hint = " (the server did not answer: is it running and reachable?)"
    return BackendError(f"{what}: {exc}{hint}")


@contextlib.contextmanager
def wrap_redis(what: str) -> Iterator[None]:
    """``with wrap_redis("view 'v': read"):`` turns a redis-py error inside into a
    BackendError saying what failed."""
    import redis  # here, not at the top: redfeat.errors stays importable without it

    try:
        yield
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        # the cluster client's own errors (no node to route to: closed, or every startup
        # node unreachable) are not RedisErrors
        raise backend_error(what, exc) from exc


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a value was refused."""

    view: str
    entity: str | None
    field: str | None
    rule: str
    value: Any
    message: str
    row: int | None = None
    severity: str = "error"  # "warning": reported, the row is written anyway

    def __str__(self) -> str:
        where = f"view {self.view!r}"
        if self.row is not None:
            where += f", row {self.row}"
        if self.entity is not None:
            where += f", entity {self.entity!r}"
        if self.field is not None:
            where += f", field {self.field!r}"
        tag = "rule" if self.severity == "error" else "warning"
        return f"{where}: {self.message} [{tag}: {self.rule}]"


class ValidationError(RedfeatError):
    """Input refused before anything was written; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem], *, outcome: str = "nothing was written") -> None:
        self.problems = problems
        head = f"{len(problems)} problem(s); {outcome}"
        shown = "\n  ".join(str(p) for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{head}:\n  {shown}{more}")
