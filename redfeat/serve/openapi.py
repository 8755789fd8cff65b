"""The OpenAPI 3.1 document of the HTTP API, generated from the endpoint table, and the
interactive docs page (Swagger UI 5 from the ``openapi-ui-bundles`` package: no CDN).

Nothing here is written by hand per route: the paths, methods and scopes come from
``http.Endpoint``; the parameters from the fields of each endpoint's query Struct; the
bodies and answers from msgspec's JSON Schema of the same Structs the handlers decode and
encode with (``msgspec.json.schema_components``), so the document cannot drift from the code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from .web import wire

if TYPE_CHECKING:
    from .endpoint import Endpoint

REF = "#/components/schemas/{name}"
VIEW_NAME = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"}
ANY_ID = {"type": "string", "minLength": 1}
_PARAM = re.compile(r"\{(\w+)\}")
_STATUS_TEXT = {
    400: "Bad request: malformed parameters or body, or a bad Host header",
    401: "No token, or one that is not accepted",
    403: "The token lacks the scope this route needs",
    404: "No such view, entity, series or route",
    409: "Conflict",
    413: "The body is over the size limit",
    415: "The body is not application/json",
    422: "Refused by validation (problems lists each field and rule)",
    503: "The Redis server does not answer",
}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("redfeat")
    except Exception:  # not installed (a checkout on sys.path)
        return "0"


def build(endpoints: list[Endpoint], *, secured: bool, root_path: str = "") -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``endpoints`` (``secured``: tokens are configured)."""
    types: list[Any] = [wire.ErrorBody]
    for ep in endpoints:
        types += [ep.query] + ([ep.body] if ep.body is not None else [])
        if ep.response is not None:
            types.append(ep.response)
    refs, components = msgspec.json.schema_components(types, ref_template=REF)
    schema_of = dict(zip(map(id, types), refs, strict=True))
    error = {"$ref": REF.format(name="ErrorBody")}
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        params: list[dict[str, Any]] = []
        for name in _PARAM.findall(ep.path):
            schema = VIEW_NAME if name == "view" else ANY_ID
            params.append({"name": name, "in": "path", "required": True, "schema": schema})
        q = components.pop(ep.query.__name__, None) if ep.query is not wire.NoQuery else None
        for f in msgspec.structs.fields(ep.query):
            assert q is not None
            prop = dict(q["properties"][f.encode_name])
            param: dict[str, Any] = {
                "name": f.encode_name,
                "in": "query",
                "required": f.encode_name in q.get("required", []),
                "schema": prop,
            }
            if prop.get("type") == "array":
                param.update(style="form", explode=True)
            params.append(param)
        responses: dict[str, Any] = {}
        if ep.response is None:
            content = {ep.media_type: {"schema": {"type": "string"}}}
        else:
            content = {"application/json": {"schema": schema_of[id(ep.response)]}}
        responses[str(ep.status)] = {
            "description": "OK" if ep.status == 200 else "Created",
            "content": content,
        }
        codes = set(ep.errors)
        if secured and ep.scope is not None:
            codes |= {401, 403}
        for code in sorted(codes):
            responses[str(code)] = {
                "description": _STATUS_TEXT[code],
                "content": {"application/json": {"schema": error}},
            }
        op: dict[str, Any] = {
            "operationId": ep.operation_id,
            "summary": ep.summary,
            "tags": [ep.tag],
            "parameters": params,
            "responses": responses,
        }
        if ep.scope is not None:
            op["description"] = f"Needs a token with the `{ep.scope}` scope (or `admin`)."
        if secured:
            op["security"] = [{"bearer": []}] if ep.scope is not None else []
        if ep.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[id(ep.body)]}},
            }
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    components.pop("NoQuery", None)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "redfeat",
            "version": _version(),
            "description": (
                "A feature store on Redis. JSON in and out; times are ISO 8601 (naive = UTC) "
                "or epoch seconds; entity ids and series names go in the path "
                'percent-encoded. Errors are `{"error", "message"}`.'
            ),
        },
        "servers": [{"url": root_path or "/"}],
        "paths": paths,
        "components": {"schemas": components},
    }
    if secured:
        doc["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API token (`redfeat token create`); scopes read, write, admin",
            }
        }
    return doc


@cache
def _static_dir() -> Path:
    from openapi_ui_bundles import swagger_ui

    return Path(swagger_ui.static_path)


_STATIC = {"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"}
_INIT = b"""window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true,
    withCredentials: true});
});
"""
_DOCS = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>redfeat API</title><link rel="stylesheet" href="docs/static/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/static/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div><script src="docs/static/swagger-ui-bundle.js"></script>
<script src="docs/static/init.js"></script></body></html>"""
_DOCS_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
}


def routes(
    check_token: Callable[[Request, str], None], secured: bool, endpoints: list[Endpoint]
) -> list[BaseRoute]:
    """GET /openapi.json, /docs and /docs/static/{file} (all behind the read scope)."""
    docs: dict[str, dict[str, Any]] = {}

    def guard(request: Request, route: str) -> None:
        request.scope["redfeat.route"] = route
        if secured:
            check_token(request, "read")

    async def document(request: Request) -> Response:
        guard(request, "/openapi.json")
        root = request.scope.get("root_path") or ""
        if root not in docs:
            docs[root] = build(endpoints, secured=secured, root_path=root)
        return Response(wire.encode(docs[root]), media_type="application/json")

    async def page(request: Request) -> Response:
        guard(request, "/docs")
        return HTMLResponse(_DOCS, headers=_DOCS_HEADERS)

    async def static(request: Request) -> Response:
        guard(request, "/docs/static/{file}")
        name = request.path_params["file"]
        if name == "init.js":
            return Response(_INIT, media_type="text/javascript", headers=_DOCS_HEADERS)
        if name not in _STATIC:
            raise HTTPException(404, f"no docs file {name!r}")
        return FileResponse(_static_dir() / name, headers={"cache-control": "max-age=3600"})

    return [
        Route("/openapi.json", document, methods=["GET"]),
        Route("/docs", page, methods=["GET"]),
        Route("/docs/static/{file}", static, methods=["GET"]),
    ]
