"""HTTP API and web page: ``create_app(store)`` returns an ASGI app (Starlette).

JSON in and out (msgspec): datetimes as ISO 8601, vectors as lists, NaN and inf as null.
Errors are JSON ``{"error", "message"}`` (plus ``problems`` for a ValidationError) with
ValidationError 422, NotFoundError 404, ConflictError 409, ConfigurationError 400 and
BackendError 503. Store calls block, so each runs in Starlette's thread pool (so do the
decoding of a large body and the encoding of the bulk endpoints' answers). A body over
``max_body_bytes`` (16 MB) is 413, more than ``max_ids`` ids (100,000) in one request 400.

Entity ids and series names are read from the raw request path, one percent-encoded
segment at a time, so that any id round-trips: ``{``, ``}``, ``:``, unicode, and ``/``
sent as ``%2F`` (``urllib.parse.quote(id, safe="")``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

import pandas as pd
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

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
from ..timeseries.series import Series
from .web import bins as _bins
from .web import wire
from .web.page import render_page

if TYPE_CHECKING:
    from ..store import FeatureStore

T = TypeVar("T")
MAX_BODY_BYTES = 16 << 20
MAX_IDS = 100_000
_DECODE_INLINE = 1 << 20  # bodies larger than this are decoded in the thread pool

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


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return wire.encode(content)


async def _json(content: Any, status_code: int = 200) -> Response:
    """A JSON response encoded in the thread pool: a large one does not hold the loop."""
    body = await run_in_threadpool(wire.encode, content)
    return Response(body, status_code=status_code, media_type="application/json")


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


class Api:
    """The endpoints, bound to one store."""

    def __init__(self, store: FeatureStore, max_body_bytes: int, max_ids: int) -> None:
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.max_ids = max_ids
        # store.similar builds an index (with a change-event thread) on first use: two
        # first requests at once would build two and leak one, so first uses take turns

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await run_in_threadpool(fn, *args, **kwargs)

    async def _body(self, request: Request, typ: type[T]) -> T:
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

    # -- service --------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        html = await self._run(render_page, self.store, dict(request.query_params))
        return HTMLResponse(html)

    async def health(self, request: Request) -> Response:
        window = request.query_params.get("window") or "24h"

        def work() -> dict[str, Any]:
            with wrap_redis("the server does not answer"):
                self.store.client.ping()
            report = self.store.quality.health(window=window)
            return {"status": "up", "project": self.store.project, "quality": report.to_dict()}

        return JSON(await self._run(work))

    async def stats(self, request: Request) -> Response:
        storage = request.query_params.get("storage")
        with_storage = True if storage is None else wire.parse_bool(storage, "storage")
        return JSON(await self._run(self.store.stats, storage=with_storage))

    # -- views ----------------------------------------------------------------------

    def _view_dict(self, name: str) -> dict[str, Any]:
        v = self.store.view(name)
        return {**v.spec(), "schema_version": v.schema_version}

    async def views(self, request: Request) -> Response:
        def work() -> list[dict[str, Any]]:
            return [{**v.spec(), "schema_version": v.schema_version} for v in self.store.views()]

        return JSON({"views": await self._run(work)})

    async def view(self, request: Request) -> Response:
        return JSON(await self._run(self._view_dict, request.path_params["view"]))

    async def entity(self, request: Request) -> Response:
        """GET .../entities/{id} (latest) and .../entities/{id}/history."""
        view = request.path_params["view"]
        parts = _rest(request, f"/views/{view}/entities/")  # view names need no escaping
        q = request.query_params
        if len(parts) >= 2 and parts[-1] == "history":
            entity_id = "/".join(parts[:-1])  # an id sent with bare slashes; %2F is safer
            limit = wire.parse_int(q.get("limit"), "limit", 10)
            versions = await self._run(self.store.history, view, entity_id, limit=limit)
            return JSON(
                {
                    "view": view,
                    "entity_id": entity_id,
                    "versions": [wire.version(v) for v in versions],
                }
            )
        entity_id = "/".join(parts)
        as_of = wire.parse_time(q.get("as_of"), "as_of")
        features = wire.parse_list(q.get("features"))
        row = await self._run(self.store.get, view, entity_id, features=features, as_of=as_of)
        if row is None:
            when = "" if as_of is None else f" as of {q.get('as_of')}"
            raise NotFoundError(f"view {view!r}: no values for entity {entity_id!r}{when}")
        return JSON({"view": view, "entity_id": entity_id, "values": row})

    async def get_many(self, request: Request) -> Response:
        view = request.path_params["view"]
        body = await self._body(request, wire.GetManyBody)
        rows = await self._run(
            self.store.get_many,
            view,
            self._ids(body.ids),
            features=body.features,
            as_of=wire.parse_time(body.as_of, "as_of"),
            with_meta=body.with_meta,
        )
        out = [wire.record(r) for r in rows] if body.with_meta else rows
        return await _json({"view": view, "rows": out})

    async def features(self, request: Request) -> Response:
        body = await self._body(request, wire.FeaturesBody)
        rows = await self._run(
            self.store.get_features,
            None if body.ids is None else self._ids(body.ids),
            body.features,
            entity_rows=None if body.entity_rows is None else self._ids(body.entity_rows),
            service=body.service,
            full_feature_names=body.full_feature_names,
        )
        if body.entity_rows is not None:
            return await _json({"entity_rows": body.entity_rows, "rows": rows})
        return await _json({"ids": body.ids, "rows": rows})

    async def services(self, request: Request) -> Response:
        def work() -> list[dict[str, Any]]:
            specs = self.store.feature_services()
            return [{**s.spec(), "version": s.version} for s in specs]

        return JSON({"services": await self._run(work)})

    async def write(self, request: Request) -> Response:
        view = request.path_params["view"]
        body = await self._body(request, wire.WriteBody)

        def work() -> Any:
            values = wire.typed_values(self.store.view(view), body.values)
            et: Any = body.event_time
            # as in write_many: text that is no time reaches validation, refused with its rule
            with contextlib.suppress(ConfigurationError):
                et = wire.parse_time(et, "event_time")
            return self.store.write(view, body.entity_id, values, event_time=et)

        return JSON(wire.version(await self._run(work)), status_code=201)

    async def write_many(self, request: Request) -> Response:
        view = request.path_params["view"]
        body = await self._body(request, wire.WriteManyBody)
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

        return await _json(wire.write_report(await self._run(work)))

    async def similar(self, request: Request) -> Response:
        view = request.path_params["view"]
        body = await self._body(request, wire.SimilarBody)

        def work() -> list[Any]:
            def search() -> list[Any]:
                return self.store.similar(
                    view,
                    body.field,
                    body.query,
                    k=body.k,
                    where=wire.where(body.where),
                    include_values=body.include_values,
                    index=body.index,
                )

            return search()

        matches = await self._run(work)
        return JSON(
            {
                "view": view,
                "matches": [
                    {"entity_id": m.entity_id, "score": m.score, "values": m.values}
                    for m in matches
                ],
            }
        )

    # -- quality --------------------------------------------------------------------

    async def drift(self, request: Request) -> Response:
        view = request.path_params["view"]
        q = request.query_params
        start = wire.parse_time(q.get("start"), "start")
        end = wire.parse_time(q.get("end"), "end")
        with_bins = wire.parse_bool(q.get("bins"), "bins")

        def work() -> dict[str, Any]:
            report = self.store.quality.drift(view, start=start, end=end)
            out = report.to_dict()
            if with_bins:
                stored = self.store.quality.baseline(view)
                if stored is None:  # removed since drift() read it
                    raise NotFoundError(f"view {view!r} has no baseline any more")
                cur = self.store.quality.profile(view, start=start, end=end)
                dists = _bins.distributions(self.store.view(view), stored[0], cur)
                out["bins"] = {n: d.to_dict() for n, d in dists.items()}
            return out

        return JSON(await self._run(work))

    async def profile(self, request: Request) -> Response:
        view = request.path_params["view"]
        q = request.query_params
        prof = await self._run(
            self.store.quality.profile,
            view,
            start=wire.parse_time(q.get("start"), "start"),
            end=wire.parse_time(q.get("end"), "end"),
            source=q.get("source") or "write",
        )
        return JSON(prof.to_dict())

    # -- time series ----------------------------------------------------------------

    async def series_list(self, request: Request) -> Response:
        filters = request.query_params.getlist("filter")

        def work() -> list[dict[str, Any]]:
            return [
                {
                    "name": s.name,
                    "labels": s.labels,
                    "retention_ms": s.retention_ms,
                    "rollups": [r.label for r in s.rollups],
                    "duplicate_policy": s.duplicate_policy,
                }
                for s in self.store.timeseries.specs(filters)
            ]

        return JSON({"series": await self._run(work)})

    def open_series(self, name: str) -> Series:
        """An existing series (NotFoundError otherwise: a read never creates one)."""
        return self.store.timeseries.open(name)

    async def series(self, request: Request) -> Response:
        """GET /series/{name}/range and /series/{name}/anomalies."""
        parts = _rest(request, "/series/")
        if len(parts) < 2 or parts[-1] not in ("range", "anomalies"):
            raise HTTPException(404, "use /series/{name}/range or /series/{name}/anomalies")
        name, action = "/".join(parts[:-1]), parts[-1]
        q = request.query_params
        start = wire.parse_time(q.get("start"), "start")
        end = wire.parse_time(q.get("end"), "end")
        time_format = q.get("time_format") or "iso"
        if time_format not in ("iso", "ms"):
            raise ConfigurationError(f"time_format must be 'iso' or 'ms', got {time_format!r}")
        as_ms = time_format == "ms"

        def times(ts: Any) -> Any:
            return ts.astype("int64").tolist() if as_ms else ts

        if action == "anomalies":

            def anomalies() -> dict[str, Any]:
                frame = self.open_series(name).anomalies(
                    start,
                    end,
                    method=q.get("method") or "zscore",
                    threshold=wire.parse_float(q.get("threshold"), "threshold"),
                    baseline=q.get("baseline") or "1d",
                )
                idx = pd.DatetimeIndex(frame.index).tz_convert(None)  # naive UTC
                ts = idx.to_numpy().astype("datetime64[ms]")
                return {
                    "name": name,
                    "timestamps": times(ts),
                    "values": frame["value"].to_numpy(),
                    "scores": frame["score"].to_numpy(),
                }

            return await _json(await self._run(anomalies))

        bucket = q.get("bucket") or None
        agg = q.get("agg") or "avg"
        limit = None if not q.get("limit") else wire.parse_int(q.get("limit"), "limit", 0)

        def read() -> dict[str, Any]:
            ts, vs = self.open_series(name).range(start, end, bucket=bucket, agg=agg, limit=limit)
            return {
                "name": name,
                "bucket": bucket,
                "agg": agg if bucket else None,
                "timestamps": times(ts),
                "values": vs,
            }

        return await _json(await self._run(read))


async def _redfeat_error(request: Request, exc: Exception) -> Response:
    status = next((s for t, s in _STATUS if isinstance(exc, t)), 400)
    body: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, ValidationError):
        body.update(wire.validation_error(exc))
    if isinstance(exc, InsufficientDataError):
        body.update(needed=exc.needed, found=exc.found)
    return JSON(body, status_code=status)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # a bug, not a bad request: still JSON for the client (Starlette logs and re-raises it)
    body = {"error": "InternalError", "message": f"{type(exc).__name__}: {exc}"}
    return JSON(body, status_code=500)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSON({"error": "HTTPException", "message": exc.detail}, status_code=exc.status_code)


def create_app(
    store: FeatureStore,
    *,
    close_store: bool = False,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_ids: int = MAX_IDS,
) -> Starlette:
    """The HTTP API and web page over ``store``. The caller keeps and closes the store,
    unless ``close_store``: then the app closes it when the server shuts down. A request
    body over ``max_body_bytes`` is refused with 413, more than ``max_ids`` ids in one
    get_many / features request with 400."""
    for what, n in (("max_body_bytes", max_body_bytes), ("max_ids", max_ids)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigurationError(f"create_app: {what} must be an int >= 1, got {n!r}")
    api = Api(store, max_body_bytes, max_ids)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if close_store:
                await run_in_threadpool(store.close)

    get, post = ["GET"], ["POST"]
    routes = [
        Route("/", api.page, methods=get),
        Route("/health", api.health, methods=get),
        Route("/stats", api.stats, methods=get),
        Route("/views", api.views, methods=get),
        Route("/views/{view}", api.view, methods=get),
        Route("/views/{view}/entities/{rest:rf_rest}", api.entity, methods=get),
        Route("/views/{view}/get_many", api.get_many, methods=post),
        Route("/views/{view}/write", api.write, methods=post),
        Route("/views/{view}/write_many", api.write_many, methods=post),
        Route("/views/{view}/similar", api.similar, methods=post),
        Route("/features", api.features, methods=post),
        Route("/services", api.services, methods=get),
        Route("/quality/{view}/drift", api.drift, methods=get),
        Route("/quality/{view}/profile", api.profile, methods=get),
        Route("/series", api.series_list, methods=get),
        Route("/series/{rest:rf_rest}", api.series, methods=get),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            RedfeatError: _redfeat_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.store = store
    return app
