"""HTTP API and web page: ``create_app(store)`` returns an ASGI app (Starlette).

Every endpoint is declared once in ``Api.endpoints()``: its method and path, the scope a
token needs, and the msgspec types of its query, body and answer. The handlers decode with
those types and ``/openapi.json`` is generated from them (``redfeat.serve.openapi``).

JSON in and out (msgspec): datetimes as ISO 8601, vectors as lists, NaN and inf as null.
Errors are JSON ``{"error", "message"}`` (plus ``problems`` for a ValidationError) with
ValidationError 422, NotFoundError 404, ConflictError 409, ConfigurationError 400 and
BackendError 503. A body over ``max_body_bytes`` (16 MB) is 413, more than ``max_ids`` ids
(100,000) in one request 400, a POST body that is not ``application/json`` 415.

Security (``tokens``, ``allowed_hosts``, ``cors_origins``): with tokens every route but
``/livez`` and the login form needs ``Authorization: Bearer <token>`` with the route's
scope (401 without, 403 with too small a scope; nothing is read or written then). GET
requests also take the token from the page's login cookie (HttpOnly, SameSite=Strict); a
POST never does, so no other site can make a browser write. The Host header must be one of
``allowed_hosts`` (400 otherwise: DNS rebinding); no CORS unless ``cors_origins`` is set.

Where the time goes: a thread hop costs ~0.2-0.3 ms on this machine, more than reading an
entity, so small reads (up to ``inline_ids`` ids) run on the event loop and everything else
(writes, big reads, quality, series, the page) in the thread pool.

Entity ids and series names are read from the raw request path, one percent-encoded
segment at a time, so that any id round-trips: ``{``, ``}``, ``:``, unicode, and ``/``
sent as ``%2F`` (``urllib.parse.quote(id, safe="")``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, unquote

import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import (
    BackendError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    RedfeatError,
    ValidationError,
    wrap_redis,
)
from ..timeseries.analysis import InsufficientDataError
from . import auth as _auth
from .endpoint import Call, Endpoint
from .web import bins as _bins
from .web import wire

if TYPE_CHECKING:
    from ..store import FeatureStore
    from .prom import HttpMetrics

T = TypeVar("T")
MAX_BODY_BYTES = 16 << 20
MAX_IDS = 100_000
INLINE_IDS = 1_000  # reads of up to this many ids run on the event loop (no thread hop)
_DECODE_INLINE = 1 << 20  # bodies larger than this are decoded in the thread pool
_ENCODE_INLINE = 8_192  # answers of more rows or points than this are encoded in the pool
COOKIE = "redfeat_token"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "testserver")
access_log = logging.getLogger("redfeat.access")

_STATUS: list[tuple[type[RedfeatError], int]] = [
    (ValidationError, 422),
    (InsufficientDataError, 422),
    (NotFoundError, 404),
    (ConflictError, 409),
    (ConfigurationError, 400),
    (BackendError, 503),
]


class _Rest(Convertor[str]):
    """The rest of the path, newlines included (``path`` stops at a decoded newline); the
    handler reads the segments from the raw path anyway."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("rf_rest", _Rest())


def _rest(request: Request, marker: str) -> list[str]:
    """The raw path's segments after ``marker``, each percent-decoded once (an encoded
    ``/`` stays inside its segment). A mount prefix (``root_path``) is skipped first."""
    raw = (request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
    root = request.scope.get("root_path") or ""
    if root and raw.startswith(root):
        raw = raw[len(root) :]
    at = 0 if raw.startswith(marker) else raw.find(marker)
    rest = raw[at + len(marker) :] if at >= 0 else ""
    try:
        return [unquote(p, encoding="utf-8", errors="strict") for p in rest.split("/")]
    except UnicodeDecodeError:
        raise ConfigurationError("the path is not percent-encoded UTF-8") from None


def _list_fields(typ: type[Any]) -> frozenset[str]:
    """The query fields that take repeated parameters (msgspec's field introspection costs
    ~0.1 ms: Api keeps the answer per type)."""
    return frozenset(
        f.encode_name
        for f in msgspec.structs.fields(typ)
        if getattr(f.type, "__origin__", None) is list or f.type is list
    )


def _query(request: Request, typ: type[Any], lists: frozenset[str]) -> Any:
    params: dict[str, Any] = {}
    qp = request.query_params
    for key in qp:
        if key in lists:
            params[key] = qp.getlist(key)
        else:
            v = qp.get(key)
            if v != "":  # an empty field of a form: the default
                params[key] = v
    try:
        return msgspec.convert(params, typ, strict=False)
    except msgspec.ValidationError as exc:
        text, _, where = str(exc).rpartition(" - at `$.")
        if text and where.endswith("`"):  # name the parameter as it was sent
            raise ConfigurationError(f"query parameter {where[:-1]}: {text}") from None
        raise ConfigurationError(f"query parameters: {exc}") from None


def _is_json(content_type: str) -> bool:
    mt = content_type.split(";", 1)[0].strip().lower()
    return mt == "application/json" or (mt.startswith("application/") and mt.endswith("+json"))


class Api:
    """The endpoints, bound to one store."""

    def __init__(
        self,
        store: FeatureStore,
        *,
        max_body_bytes: int,
        max_ids: int,
        tokens: _auth.Tokens,
        inline_ids: int,
    ) -> None:
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.max_ids = max_ids
        self.tokens = tokens
        self.inline_ids = inline_ids
        self.metrics: HttpMetrics | None = None
        self._lists: dict[type[Any], frozenset[str]] = {}

    # -- plumbing ---------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await run_in_threadpool(fn, *args, **kwargs)

    def check_token(self, request: Request, scope: str) -> None:
        """401 without a known token, 403 with one that lacks ``scope``."""
        header = request.headers.get("authorization", "")
        kind, _, presented = header.partition(" ")
        presented = presented.strip()
        if kind.lower() != "bearer" or not presented:
            presented = ""
            if request.method in ("GET", "HEAD"):  # the page's login; never for a write
                presented = request.cookies.get(COOKIE, "")
        token = self.tokens.find(presented) if presented else None
        if token is None:
            msg = "a token is needed: send 'Authorization: Bearer <token>'"
            if presented:
                msg = "this token is not accepted (unknown or revoked)"
            raise HTTPException(401, msg, headers={"WWW-Authenticate": 'Bearer realm="redfeat"'})
        request.scope["redfeat.token"] = token.name
        if not token.allows(scope):
            raise HTTPException(
                403,
                f"token {token.name!r} has scopes {', '.join(token.scopes)}; this needs {scope}",
            )

    async def _body(self, request: Request, typ: type[T]) -> T:
        if not _is_json(request.headers.get("content-type", "")):
            raise HTTPException(415, "send the body as JSON with 'Content-Type: application/json'")
        limit = self.max_body_bytes
        too_big = f"at most {limit:,} bytes are accepted (create_app(max_body_bytes=...))"
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"the request body is {int(declared):,} bytes; {too_big}")
        chunks, size = [], 0
        async for chunk in request.stream():  # counted as it arrives, whatever was declared
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"the request body is over {limit:,} bytes; {too_big}")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if size > _DECODE_INLINE:
            return await run_in_threadpool(wire.decode, raw, typ)
        return wire.decode(raw, typ)  # type: ignore[no-any-return]

    def _ids(self, ids: list[Any]) -> list[Any]:
        if len(ids) > self.max_ids:
            raise ConfigurationError(
                f"{len(ids):,} ids in one request; at most {self.max_ids:,} are accepted "
                "(split the request, or create_app(max_ids=...))"
            )
        return ids

    def bind(self, ep: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        """The Starlette endpoint of ``ep``: token, body, query, handler, encoding."""
        lists = _list_fields(ep.query)

        async def endpoint(request: Request) -> Response:
            return await self.serve(ep, request, lists)

        return endpoint

    async def serve(
        self, ep: Endpoint, request: Request, lists: frozenset[str] | None = None
    ) -> Response:
        request.scope["redfeat.route"] = ep.path
        if self.tokens and ep.scope is not None:
            self.check_token(request, ep.scope)
        if lists is None:
            lists = self._lists.get(ep.query)
            if lists is None:
                lists = self._lists[ep.query] = _list_fields(ep.query)
        query = _query(request, ep.query, lists)
        body = None if ep.body is None else await self._body(request, ep.body)
        out = await ep.handler(Call(request, dict(request.path_params), query, body))
        if isinstance(out, Response):
            return out
        return Response(wire.encode(out), status_code=ep.status, media_type="application/json")

    async def _encoded(self, content: Any, rows: int) -> Response:
        """A JSON answer; a large one is encoded in the thread pool, off the loop."""
        if rows > _ENCODE_INLINE:
            body = await run_in_threadpool(wire.encode, content)
        else:
            body = wire.encode(content)
        return Response(body, media_type="application/json")

    # -- service ----------------------------------------------------------------------

    async def livez(self, c: Call) -> wire.Live:
        return wire.Live("up")

    async def page(self, c: Call) -> Response:
        from .web.page import render_page

        nonce = secrets.token_urlsafe(12)
        html = await self._run(render_page, self.store, dict(c.request.query_params), nonce)
        return HTMLResponse(html, headers=_page_headers(nonce))

    async def health(self, c: Call) -> wire.Health:
        window = c.query.window

        def work() -> wire.Health:
            with wrap_redis("the server does not answer"):
                self.store.client.ping()
            report = self.store.quality.health(window=window)
            return wire.Health("up", self.store.project, report.to_dict())

        return await self._run(work)

    async def stats(self, c: Call) -> Response:
        out = await self._run(self.store.stats, storage=c.query.storage)
        return await self._encoded(out, 0)

    async def metrics_text(self, c: Call) -> Response:
        assert self.metrics is not None
        body, content_type = await self._run(self.metrics.render)
        return Response(body, media_type=content_type)

    # -- views ------------------------------------------------------------------------

    async def views(self, c: Call) -> wire.ViewList:
        def work() -> wire.ViewList:
            return wire.ViewList(
                [{**v.spec(), "schema_version": v.schema_version} for v in self.store.views()]
            )

        return await self._run(work)

    async def view(self, c: Call) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            v = self.store.view(c.path["view"])
            return {**v.spec(), "schema_version": v.schema_version}

        return await self._run(work)

    async def entity_route(self, request: Request) -> Response:
        """GET .../entities/{id} (latest), .../entities/{id}/history and .../{id}/stats:
        one route, since an id may hold an encoded ``/history`` itself."""
        view = request.path_params["view"]
        parts = _rest(request, f"/views/{view}/entities/")  # view names need no escaping
        if len(parts) >= 2 and parts[-1] in ("history", "stats"):
            request.scope["redfeat.entity_id"] = "/".join(parts[:-1])
            ep = self._history_ep if parts[-1] == "history" else self._entity_stats_ep
            return await self.serve(ep, request)
        request.scope["redfeat.entity_id"] = "/".join(parts)  # bare slashes; %2F is safer
        return await self.serve(self._latest_ep, request)

    async def latest(self, c: Call) -> wire.Latest:
        view, q = c.path["view"], c.query
        entity_id = c.request.scope["redfeat.entity_id"]
        as_of = wire.parse_time(q.as_of, "as_of")
        features = wire.parse_list(q.features)
        if as_of is None:  # one round trip: on the loop (see the module's docstring)
            row = self.store.get(view, entity_id, features=features, cache=q.cache)
        else:  # as-of reads search the history: the thread pool
            row = await self._run(
                self.store.get, view, entity_id, features=features, as_of=as_of, cache=q.cache
            )
        if row is None:
            when = "" if as_of is None else f" as of {q.as_of}"
            raise NotFoundError(f"view {view!r}: no values for entity {entity_id!r}{when}")
        return wire.Latest(view, entity_id, row)

    async def history(self, c: Call) -> wire.History:
        view = c.path["view"]
        entity_id = c.request.scope["redfeat.entity_id"]
        versions = await self._run(self.store.history, view, entity_id, limit=c.query.limit)
        return wire.History(view, entity_id, [wire.version(v) for v in versions])

    async def entity_stats(self, c: Call) -> wire.EntityStatsOut:
        view = c.path["view"]
        entity_id = c.request.scope["redfeat.entity_id"]
        return wire.entity_stats(await self._run(self.store.entity_stats, view, entity_id))

    async def get_many(self, c: Call) -> Response:
        view, body = c.path["view"], c.body
        as_of = wire.parse_time(body.as_of, "as_of")
        ids = self._ids(body.ids)
        kw = {
            "features": body.features,
            "as_of": as_of,
            "with_meta": body.with_meta,
            "cache": body.cache,
        }
        if as_of is None and len(ids) <= self.inline_ids:
            rows = self.store.get_many(view, ids, **kw)
        else:
            rows = await self._run(self.store.get_many, view, ids, **kw)
        out = [wire.record(r) for r in rows] if body.with_meta else rows
        return await self._encoded(wire.Rows(view, out), len(out))

    async def features(self, c: Call) -> Response:
        body = c.body
        ids = None if body.ids is None else self._ids(body.ids)
        rows_in = None if body.entity_rows is None else self._ids(body.entity_rows)
        kw: dict[str, Any] = {
            "entity_rows": rows_in,
            "service": body.service,
            "full_feature_names": body.full_feature_names,
            "cache": body.cache,
        }
        if len(ids or rows_in or ()) <= self.inline_ids:
            rows = self.store.get_features(ids, body.features, **kw)
        else:
            rows = await self._run(self.store.get_features, ids, body.features, **kw)
        out = wire.FeatureRows(rows, body.ids, body.entity_rows)
        return await self._encoded(out, len(rows))

    async def services(self, c: Call) -> wire.ServiceList:
        def work() -> wire.ServiceList:
            specs = self.store.feature_services()
            return wire.ServiceList([{**s.spec(), "version": s.version} for s in specs])

        return await self._run(work)

    async def write(self, c: Call) -> wire.VersionOut:
        view, body = c.path["view"], c.body

        def work() -> Any:
            values = wire.typed_values(self.store.view(view), body.values)
            et: Any = body.event_time
            # as in write_many: text that is no time reaches validation, refused with its rule
            with contextlib.suppress(ConfigurationError):
                et = wire.parse_time(et, "event_time")
            return self.store.write(view, body.entity_id, values, event_time=et)

        return wire.version(await self._run(work))

    async def write_many(self, c: Call) -> Response:
        view, body = c.path["view"], c.body
        et_col = body.event_time_column
        if et_col is None and any("event_time" in r for r in body.rows):
            et_col = "event_time"

        def work() -> Any:
            definition = self.store.view(view)
            rows = []
            for r in body.rows:
                row = wire.typed_values(definition, r)
                if et_col is not None and isinstance(row.get(et_col), str):
                    # left as text if it does not parse: validation refuses the row, says why
                    with contextlib.suppress(ConfigurationError):
                        row[et_col] = wire.parse_time(row[et_col], et_col)
                rows.append(row)
            return self.store.write_many(
                view,
                rows,
                entity_column=body.entity_column,
                event_time_column=et_col,
                on_error=body.on_error,
            )

        report = await self._run(work)
        return await self._encoded(wire.write_report(report), len(report.refused))

    async def similar(self, c: Call) -> wire.Matches:
        view, body = c.path["view"], c.body

        def work() -> list[Any]:
            return self.store.similar(
                view,
                body.field,
                body.query,
                k=body.k,
                where=wire.where(body.where),
                include_values=body.include_values,
                index=body.index,
                consistent=body.consistent,
            )

        matches = await self._run(work)
        return wire.Matches(view, [wire.MatchOut(m.entity_id, m.score, m.values) for m in matches])

    # -- quality ----------------------------------------------------------------------

    async def drift(self, c: Call) -> dict[str, Any]:
        view, q = c.path["view"], c.query
        start = wire.parse_time(q.start, "start")
        end = wire.parse_time(q.end, "end")

        def work() -> dict[str, Any]:
            report = self.store.quality.drift(view, start=start, end=end)
            out = report.to_dict()
            if q.bins:
                stored = self.store.quality.baseline(view)
                if stored is None:  # removed since drift() read it
                    raise NotFoundError(f"view {view!r} has no baseline any more")
                cur = self.store.quality.profile(view, start=start, end=end)
                dists = _bins.distributions(self.store.view(view), stored[0], cur)
                out["bins"] = {n: d.to_dict() for n, d in dists.items()}
            return out

        return await self._run(work)

    async def profile(self, c: Call) -> dict[str, Any]:
        view, q = c.path["view"], c.query
        start = wire.parse_time(q.start, "start")
        end = wire.parse_time(q.end, "end")

        def work() -> dict[str, Any]:
            return self.store.quality.profile(view, start=start, end=end, source=q.source).to_dict()

        return await self._run(work)

    # -- time series ------------------------------------------------------------------

    async def series_list(self, c: Call) -> wire.SeriesList:
        def work() -> wire.SeriesList:
            return wire.SeriesList(
                [
                    wire.SeriesInfo(
                        s.name,
                        s.labels,
                        s.retention_ms,
                        [r.label for r in s.rollups],
                        s.duplicate_policy,
                    )
                    for s in self.store.timeseries.specs(c.query.filter)
                ]
            )

        return await self._run(work)

    async def series_route(self, request: Request) -> Response:
        """GET /series/{name}/range and /series/{name}/anomalies."""
        parts = _rest(request, "/series/")
        if len(parts) < 2 or parts[-1] not in ("range", "anomalies") or not parts[0]:
            raise HTTPException(404, "use /series/{name}/range or /series/{name}/anomalies")
        request.scope["redfeat.series"] = "/".join(parts[:-1])
        ep = self._range_ep if parts[-1] == "range" else self._anomalies_ep
        return await self.serve(ep, request)

    async def series_range(self, c: Call) -> Response:
        name, q = c.request.scope["redfeat.series"], c.query
        start = wire.parse_time(q.start, "start")
        end = wire.parse_time(q.end, "end")
        as_ms = q.time_format == "ms"
        aggs = [a.strip() for a in q.agg.split(",")]
        agg: str | list[str] = aggs if len(aggs) > 1 else q.agg

        def read() -> wire.Points:
            series = self.store.timeseries.open(name)  # a read never creates a series
            ts, vs = series.range(start, end, bucket=q.bucket, agg=agg, limit=q.limit)
            times = ts.astype("int64").tolist() if as_ms else ts
            return wire.Points(name, q.bucket, agg if q.bucket else None, times, vs)

        points = await self._run(read)
        return await self._encoded(points, len(points.timestamps))

    async def series_anomalies(self, c: Call) -> Response:
        import pandas as pd

        name, q = c.request.scope["redfeat.series"], c.query
        start = wire.parse_time(q.start, "start")
        end = wire.parse_time(q.end, "end")

        def anomalies() -> wire.Anomalies:
            frame = self.store.timeseries.open(name).anomalies(
                start, end, method=q.method, threshold=q.threshold, baseline=q.baseline
            )
            idx = pd.DatetimeIndex(frame.index).tz_convert(None)  # naive UTC
            ts = idx.to_numpy().astype("datetime64[ms]")
            times: Any = ts.astype("int64").tolist() if q.time_format == "ms" else ts
            # numpy arrays go out as lists (NaN as null): no copy into Python lists first
            values: Any = frame["value"].to_numpy()
            scores: Any = frame["score"].to_numpy()
            return wire.Anomalies(name, times, values, scores)

        out = await self._run(anomalies)
        return await self._encoded(out, len(out.values))

    # -- login (the page in a browser, when tokens are configured) ------------------

    async def login(self, request: Request) -> Response:
        """POST /login (a form with ``token``): sets the HttpOnly cookie GET requests
        accept, then back to the page. A form from another site is refused."""
        request.scope["redfeat.route"] = "/login"
        origin = request.headers.get("origin")
        if origin is not None and origin != "null":
            host = origin.split("://", 1)[-1]
            if host != request.headers.get("host"):
                raise HTTPException(403, "a login form from another site is refused")
        raw = b""
        async for chunk in request.stream():  # a token is short: never buffer more
            raw += chunk
            if len(raw) > 4096:
                raise HTTPException(413, "a sign-in form is at most 4,096 bytes")
        form = parse_qs(raw.decode("utf-8", "replace"))
        presented = (form.get("token") or [""])[0].strip()
        token = self.tokens.find(presented) if presented else None
        if token is None:
            from .web.page import login_page

            nonce = secrets.token_urlsafe(12)
            html = login_page("That token is not accepted.", nonce)
            return HTMLResponse(html, status_code=401, headers=_page_headers(nonce))
        resp = RedirectResponse("./", status_code=303)
        resp.set_cookie(
            COOKIE,
            presented,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            max_age=12 * 3600,
        )
        return resp

    async def logout(self, request: Request) -> Response:
        request.scope["redfeat.route"] = "/logout"
        resp = RedirectResponse("./", status_code=303)
        resp.delete_cookie(COOKIE, httponly=True, samesite="strict")
        return resp

    # -- the table ----------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        rd, wr = ("read", "write")
        views = "views"
        self._latest_ep = Endpoint(
            "GET",
            "/views/{view}/entities/{entity_id}",
            self.latest,
            "Latest (or as-of) values of one entity",
            query=wire.LatestQuery,
            response=wire.Latest,
            errors=(400, 404, 422, 503),
        )
        self._history_ep = Endpoint(
            "GET",
            "/views/{view}/entities/{entity_id}/history",
            self.history,
            "Stored versions of one entity, newest first",
            query=wire.HistoryQuery,
            response=wire.History,
            errors=(400, 404, 422, 503),
        )
        self._entity_stats_ep = Endpoint(
            "GET",
            "/views/{view}/entities/{entity_id}/stats",
            self.entity_stats,
            "What is stored for one entity: fields, versions kept, bytes, expiry",
            response=wire.EntityStatsOut,
            errors=(400, 404, 422, 503),
        )
        self._range_ep = Endpoint(
            "GET",
            "/series/{name}/range",
            self.series_range,
            "Points of a series, raw or in buckets",
            query=wire.RangeQuery,
            response=wire.Points,
            tag="series",
        )
        self._anomalies_ep = Endpoint(
            "GET",
            "/series/{name}/anomalies",
            self.series_anomalies,
            "Anomalous points of a series",
            query=wire.AnomaliesQuery,
            response=wire.Anomalies,
            errors=(400, 404, 422, 503),
            tag="series",
        )
        return [
            Endpoint(
                "GET",
                "/livez",
                self.livez,
                "Liveness: the process answers (no token, reads nothing)",
                scope=None,
                response=wire.Live,
                errors=(),
                tag="service",
            ),
            Endpoint(
                "GET",
                "/",
                self.page,
                "The web page",
                response=None,
                media_type="text/html",
                errors=(),
                tag="service",
            ),
            Endpoint(
                "GET",
                "/health",
                self.health,
                "The server answers; quality health of every view",
                query=wire.HealthQuery,
                response=wire.Health,
                errors=(400, 503),
                tag="service",
            ),
            Endpoint(
                "GET",
                "/stats",
                self.stats,
                "store.stats(): operations, realtime backlog, storage",
                scope="admin",
                query=wire.StatsQuery,
                response=wire.Report,
                errors=(400, 503),
                tag="service",
            ),
            Endpoint(
                "GET",
                "/metrics",
                self.metrics_text,
                "Prometheus metrics (text format)",
                response=None,
                media_type="text/plain",
                errors=(503,),
                tag="service",
            ),
            Endpoint(
                "GET",
                "/views",
                self.views,
                "Every view",
                response=wire.ViewList,
                errors=(503,),
                tag=views,
            ),
            Endpoint(
                "GET",
                "/views/{view}",
                self.view,
                "One view's definition",
                response=wire.Report,
                tag=views,
            ),
            self._latest_ep,
            self._history_ep,
            self._entity_stats_ep,
            Endpoint(
                "POST",
                "/views/{view}/get_many",
                self.get_many,
                "Latest (or as-of) values of many entities",
                body=wire.GetManyBody,
                response=wire.Rows,
                errors=(400, 404, 413, 415, 422, 503),
            ),
            Endpoint(
                "POST",
                "/features",
                self.features,
                "Features of several views, or a feature service, for ids or entity rows",
                body=wire.FeaturesBody,
                response=wire.FeatureRows,
                errors=(400, 404, 413, 415, 422, 503),
            ),
            Endpoint(
                "GET",
                "/services",
                self.services,
                "Every feature service, at its current version",
                response=wire.ServiceList,
                errors=(503,),
                tag=views,
            ),
            Endpoint(
                "POST",
                "/views/{view}/write",
                self.write,
                "Write one entity's values",
                scope=wr,
                body=wire.WriteBody,
                response=wire.VersionOut,
                status=201,
                errors=(400, 404, 409, 413, 415, 422, 503),
            ),
            Endpoint(
                "POST",
                "/views/{view}/write_many",
                self.write_many,
                "Write many rows; a report of what was written and refused",
                scope=wr,
                body=wire.WriteManyBody,
                response=wire.WriteReportOut,
                errors=(400, 404, 409, 413, 415, 422, 503),
            ),
            Endpoint(
                "POST",
                "/views/{view}/similar",
                self.similar,
                "Nearest entities by a vector field",
                scope=rd,
                body=wire.SimilarBody,
                response=wire.Matches,
                errors=(400, 404, 413, 415, 422, 503),
            ),
            Endpoint(
                "GET",
                "/quality/{view}/drift",
                self.drift,
                "Drift of a view against its baseline",
                query=wire.DriftQuery,
                response=wire.Report,
                tag="quality",
            ),
            Endpoint(
                "GET",
                "/quality/{view}/profile",
                self.profile,
                "Profile of a view's values over a window",
                query=wire.ProfileQuery,
                response=wire.Report,
                tag="quality",
            ),
            Endpoint(
                "GET",
                "/series",
                self.series_list,
                "Time series, filtered by labels",
                query=wire.SeriesListQuery,
                response=wire.SeriesList,
                errors=(400, 503),
                tag="series",
            ),
            self._range_ep,
            self._anomalies_ep,
        ]


def _page_headers(nonce: str) -> dict[str, str]:
    return {
        "content-security-policy": (
            f"default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
            "img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        ),
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-store",
    }


# -- errors ---------------------------------------------------------------------------------


async def _redfeat_error(request: Request, exc: Exception) -> Response:
    status = next((s for t, s in _STATUS if isinstance(exc, t)), 400)
    body: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, ValidationError):
        body.update(wire.validation_error(exc))
    if isinstance(exc, InsufficientDataError):
        body.update(needed=exc.needed, found=exc.found)
    return Response(wire.encode(body), status_code=status, media_type="application/json")


async def _internal_error(request: Request, exc: Exception) -> Response:
    # a bug, not a bad request: still JSON for the client (Starlette logs and re-raises it)
    body = {"error": "InternalError", "message": f"{type(exc).__name__}: {exc}"}
    return Response(wire.encode(body), status_code=500, media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 401 and request.scope.get("redfeat.route") == "/":
        from .web.page import login_page  # a browser: the login form instead of JSON

        nonce = secrets.token_urlsafe(12)
        headers = {**_page_headers(nonce), **(exc.headers or {})}
        said = None if str(exc.detail).startswith("a token is needed") else str(exc.detail)
        return HTMLResponse(login_page(said, nonce), status_code=401, headers=headers)
    body = {"error": "HTTPException", "message": exc.detail}
    return Response(
        wire.encode(body),
        status_code=exc.status_code,
        headers=exc.headers,
        media_type="application/json",
    )


# -- the outer layer: Host check, metrics, access log ------------------------------------------


def _host_ok(host: str, allowed: frozenset[str]) -> bool:
    if "*" in allowed:
        return True
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    name = name.lower().rstrip(".")
    if name in allowed:
        return True
    return any(a.startswith("*.") and name.endswith(a[1:]) for a in allowed)


class Gate:
    """Pure ASGI (no BaseHTTPMiddleware: it costs ~0.1 ms a request): the Host check, the
    request metrics and the access log, around everything else."""

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: frozenset[str],
        metrics: HttpMetrics | None,
        log: bool,
    ) -> None:
        self.app = app
        self.allowed = allowed_hosts
        self.metrics = metrics
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = ""
        for k, v in scope["headers"]:
            if k == b"host":
                host = v.decode("latin-1")
                break
        if not _host_ok(host, self.allowed):
            body = wire.encode(
                {
                    "error": "HTTPException",
                    "message": f"Host {host!r} is not served here (allowed_hosts / --allowed-host)",
                }
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            self._done(scope, 400, time.perf_counter(), len(body))
            return
        t0 = time.perf_counter()
        status = 500
        size = 0

        async def sending(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self._done(scope, status, t0, size)

    def _done(self, scope: Scope, status: int, t0: float, size: int) -> None:
        seconds = time.perf_counter() - t0
        route = scope.get("redfeat.route") or ("(unmatched)" if "route" not in scope else None)
        if route is None:
            route = getattr(scope["route"], "path", "(unmatched)")
        if self.metrics is not None:
            self.metrics.observe(scope["method"], route, status, seconds)
        if self.log:
            client = scope.get("client")
            access_log.info(
                json.dumps(
                    {
                        "ts": round(time.time(), 6),
                        "pid": os.getpid(),
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "ms": round(seconds * 1000, 3),
                        "bytes": size,
                        "client": client[0] if client else None,
                        "token": scope.get("redfeat.token"),
                    },
                    ensure_ascii=False,
                )
            )


def _check_int(what: str, n: Any, low: int = 1) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < low:
        raise ConfigurationError(f"create_app: {what} must be an int >= {low}, got {n!r}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address to bind) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_app(
    store: FeatureStore,
    *,
    close_store: bool = False,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_ids: int = MAX_IDS,
    tokens: _auth.Tokens | None = None,
    allowed_hosts: Iterable[str] | None = None,
    cors_origins: Sequence[str] = (),
    metrics: bool = True,
    access_log: bool = False,
    inline_ids: int = INLINE_IDS,
) -> Starlette:
    """The HTTP API and web page over ``store``.

    The caller keeps and closes the store, unless ``close_store``: then the app closes it
    when the server shuts down. A request body over ``max_body_bytes`` is refused with 413,
    more than ``max_ids`` ids in one get_many / features request with 400.

    ``tokens`` (``redfeat.serve.auth``): with any, every route but ``/livez`` needs one.
    ``allowed_hosts``: the Host names served (default: the loopback names; ``"*"`` any,
    ``"*.example.com"`` a domain). ``cors_origins``: origins allowed to call from a browser
    (none by default). ``metrics``: ``GET /metrics`` (Prometheus). ``access_log``: a JSON
    line per request on the ``redfeat.access`` logger. ``inline_ids``: reads of up to this
    many ids run on the event loop (0: every call goes through the thread pool)."""
    _check_int("max_body_bytes", max_body_bytes)
    _check_int("max_ids", max_ids)
    _check_int("inline_ids", inline_ids, 0)
    tokens = tokens if tokens is not None else _auth.Tokens()
    hosts = frozenset(
        h.lower().strip("[]") for h in (LOOPBACK_HOSTS if allowed_hosts is None else allowed_hosts)
    )
    if not hosts:
        raise ConfigurationError("create_app: allowed_hosts is empty: no request could be served")
    api = Api(
        store, max_body_bytes=max_body_bytes, max_ids=max_ids, tokens=tokens, inline_ids=inline_ids
    )
    http_metrics = None
    if metrics:
        from .prom import HttpMetrics

        http_metrics = api.metrics = HttpMetrics(store)
    endpoints = api.endpoints()
    if not metrics:
        endpoints = [e for e in endpoints if e.path != "/metrics"]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if http_metrics is not None:
                http_metrics.close()
            if close_store:
                await run_in_threadpool(store.close)

    # the hot reads first: Starlette tries the routes in order (~1-2 us each)
    routes: list[BaseRoute] = [
        Route("/views/{view}/entities/{rest:rf_rest}", api.entity_route, methods=["GET"]),
    ]
    for ep in endpoints:
        if ep.handler in (
            api.latest,
            api.history,
            api.entity_stats,
            api.series_range,
            api.series_anomalies,
        ):
            continue  # served by entity_route / series_route below
        routes.append(Route(ep.path, api.bind(ep), methods=[ep.method]))
    routes += [
        Route("/series/{rest:rf_rest}", api.series_route, methods=["GET"]),
        Route("/login", api.login, methods=["POST"]),
        Route("/logout", api.logout, methods=["POST"]),
    ]
    from . import openapi

    routes += openapi.routes(api.check_token, bool(tokens), endpoints)
    middleware = [Middleware(Gate, allowed_hosts=hosts, metrics=http_metrics, log=access_log)]
    if cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type"],
            )
        )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            RedfeatError: _redfeat_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.store = store
    app.state.endpoints = endpoints
    return app
