"""The API docs, offline: Swagger UI's files come from the ``swagger-ui-bundle`` package (no CDN),
the document declares the bearer scheme every admin route takes, and it describes the endpoints
served beside the admin API (ingest, receipt, test, health, readiness, metrics) so one document
covers everything a client calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path

from hookbay.errors import NotFound

DOCS = "/api/v1/docs"
STATIC = "/api/v1/docs/static"
ASSETS = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"})
_ERROR = {"description": "The one error shape", "content": {"application/json": {"schema": {
    "type": "object", "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "detail": {}}}}}}}}
_TOKEN = {"name": "token", "in": "path", "required": True, "schema": {"type": "string"},
          "description": "The source's ingest token (its ingest URL)"}
_ANY_BODY = {"required": False, "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
_JSON = {"content": {"application/json": {"schema": {"type": "object"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _ERROR for c in codes}


EXTRA_PATHS: dict[str, Any] = {
    "/V1/Data/{token}": {"post": {
        "tags": ["ingest"], "summary": "Send a webhook to a source", "security": [],
        "description": "Stored before the answer; `?wait=1` answers with the receipt. The source's own checks "
                       "apply: methods, allowlist, API key (`X-API-Key`), signature, rate limit, body size.",
        "parameters": [_TOKEN, {"name": "wait", "in": "query", "required": False, "schema": {"type": "string"}}],
        "requestBody": _ANY_BODY,
        "responses": {"200": {"description": "Accepted: `{status, request_id}` (or the receipt with ?wait=1)", **_JSON},
                      **_errors(400, 401, 403, 404, 405, 413, 415, 429, 503)}}},
    "/V1/Requests/{request_id}": {"get": {
        "tags": ["ingest"], "summary": "A request's receipt: state, records, field errors", "security": [],
        "parameters": [{"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "The receipt", **_JSON}, **_errors(404)}}},
    "/V1/Test/{token}": {"post": {
        "tags": ["ingest"], "summary": "Dry run: what the source's parser and actions make of a body", "security": [],
        "description": "Nothing is stored and no action runs; the sender's checks apply, except the rate limit.",
        "parameters": [_TOKEN], "requestBody": _ANY_BODY,
        "responses": {"200": {"description": "Records, errors, warnings, matching actions", **_JSON},
                      **_errors(400, 401, 403, 404, 413, 415, 422)}}},
    "/healthz": {"get": {"tags": ["operations"], "summary": "Liveness: the process answers", "security": [],
                         "responses": {"200": {"description": "Alive", **_JSON}}}},
    "/readyz": {"get": {"tags": ["operations"], "summary": "Readiness: the database answers", "security": [],
                        "responses": {"200": {"description": "Ready", **_JSON}, **_errors(503)}}},
    "/metrics": {"get": {"tags": ["operations"], "summary": "Prometheus metrics",
                         "description": "Needs `Authorization: Bearer <HOOKBAY_METRICS_TOKEN>` when that is set.",
                         "security": [{}, {"bearer": []}],
                         "responses": {"200": {"description": "Prometheus text format",
                                               "content": {"text/plain": {"schema": {"type": "string"}}}},
                                       **_errors(401)}}},
}


def install(app: FastAPI) -> None:
    """Serve Swagger UI from the package and extend the generated document (create the app with
    ``docs_url=None``)."""
    @app.get(STATIC + "/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise NotFound("No such file")
        return FileResponse(Path(swagger_ui_path) / name, headers={"Cache-Control": "public, max-age=86400"})

    @app.get(DOCS, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "", title=f"{app.title} docs",
                                   swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{STATIC}/swagger-ui.css",
                                   swagger_favicon_url=f"{STATIC}/favicon-32x32.png")

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["bearer"] = {"type": "http", "scheme": "bearer",
                                 "description": "The admin token, or a client token (that client's objects only)"}
            for ops in schema.get("paths", {}).values():
                for op in ops.values():
                    op.setdefault("security", [{"bearer": []}])
            schema.setdefault("paths", {}).update(EXTRA_PATHS)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
