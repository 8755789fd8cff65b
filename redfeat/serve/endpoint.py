"""One operation of the HTTP API, as the router, the token check and the OpenAPI
document (``redfeat.serve.openapi``) all read it; and what its handler gets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from .web import wire


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One operation: what the router, the token check and the OpenAPI document share."""

    method: str
    path: str  # the documented path, e.g. /views/{view}/entities/{entity_id}
    handler: Callable[..., Awaitable[Any]]
    summary: str
    scope: str | None = "read"  # None: open to anyone (the liveness probe)
    query: type[Any] = wire.NoQuery
    body: type[Any] | None = None
    response: Any = None  # the type of a 2xx answer's JSON; None: not JSON
    status: int = 200
    errors: tuple[int, ...] = (400, 404, 503)
    media_type: str = "application/json"
    tag: str = "features"
    doc: str = ""

    @property
    def operation_id(self) -> str:
        return self.handler.__name__.strip("_")


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler gets: the request, its path parameters, query and body, decoded."""

    request: Request
    path: dict[str, str]
    query: Any
    body: Any
