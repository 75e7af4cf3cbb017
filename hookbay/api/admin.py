"""The admin JSON API under ``/api/v1`` (FastAPI, OpenAPI at ``/api/v1/openapi.json``).

Bearer tokens: the admin token sees every client; a client token sees only its own client's
objects, and another client's object answers 404, exactly like a missing one.
"""

# No "from __future__ import annotations": FastAPI must resolve the local Annotated aliases at runtime.

from typing import Annotated, Any

import orjson
import structlog
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from hookbay.api import docs as api_docs
from hookbay.api.alerts import add_alert_routes
from hookbay.api.deliveries import add_delivery_routes
from hookbay.api.orders import OrderOut, add_order_routes
from hookbay.api.providers import add_provider_routes
from hookbay.errors import BadRequest, HookbayError, Unauthorized, error_body
from hookbay.models import RequestDetail, RequestPage, RotateIn, SourceCreate, SourceOut, SourceReplace
from hookbay.ops import audit as audit_ops
from hookbay.ops import profiles as profile_ops
from hookbay.ops import requests as request_ops
from hookbay.ops import sources as source_ops
from hookbay.ops import tokens as token_ops
from hookbay.ops.access import Principal, with_peer
from hookbay.ops.requests import ReplayIn
from hookbay.ops.tokens import TokenCreate, TokenOut, principal_for_token
from hookbay.settings import Settings
from hookbay.store import Store
from hookbay.store.errors import describe
from hookbay.store.sources import SourceCache


class ErrorOut(BaseModel):
    error: dict[str, Any] = Field(examples=[{"code": "not_found", "message": "Not Found"}])


class ProfileOut(BaseModel):
    id: str
    client_id: str
    email: str | None
    phone: str | None
    fields: dict[str, Any] = Field(description="Each field with its value, when it was set and by which request")
    consent: dict[str, Any] = Field(description="Current state per channel: the latest explicit event")
    ledger: list[dict[str, Any]]
    keys: list[dict[str, Any]]
    request_ids: list[str]
    merged_from: list[str] = Field(default_factory=list, description="Ids of profiles merged into this one; "
                                   "looking any of them up answers this profile")
    purchases: dict[str, Any] = Field(default_factory=dict, description=(
        "Purchase facts: order_count, totals per currency (minor units and text), first and last order time"))
    recent_orders: list[OrderOut] = Field(default_factory=list, description="The ten most recent orders")
    created_at: str | None
    updated_at: str | None


class ErasureOut(BaseModel):
    erasure_id: str
    profile_id: str
    requests_scrubbed: int
    records_deleted: int
    consent_events_deleted: int
    keys_deleted: int
    merged_ids_forgotten: int = 0
    orders_deleted: int = 0


class ReplayOut(BaseModel):
    dry_run: bool
    count: int
    items: list[dict[str, Any]]


log = structlog.get_logger("hookbay.admin")

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 422)
}


class AuditPage(BaseModel):
    items: list[dict[str, Any]] = Field(description="Newest first: at, actor, token_id, client_id, action, target, "
                                        "peer, changes, weakens (checks the change removed or loosened), weakening")
    next_cursor: str | None


def create_admin_app(store: Store, cache: SourceCache, base_url: str, admin_hash_ref: dict[str, str | None],
                     settings: Settings) -> FastAPI:
    app = FastAPI(
        title="hookbay admin API",
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # served from the package by api_docs.install, not from a CDN
        redoc_url=None,
    )
    api_docs.install(app)

    @app.exception_handler(HookbayError)
    async def _hb(_: Request, e: HookbayError) -> JSONResponse:
        return JSONResponse(e.to_dict(), status_code=e.status, headers=e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        msg = "Not Found" if e.status_code == 404 else str(e.detail)
        return JSONResponse(error_body(code, msg), status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception) -> JSONResponse:
        log.error("admin_api_error", path=request.url.path, **describe(e))
        return JSONResponse(error_body("internal_error", "Internal server error"), status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        detail = [{"path": ".".join(str(p) for p in err.get("loc", ())), "message": err.get("msg")}
                  for err in e.errors()]
        return JSONResponse(error_body("invalid_request", "The request is invalid", detail), status_code=422)

    async def principal(request: Request) -> Principal:
        known = request.scope.get("hookbay.principal")  # checked by AdminGuard before the body was read
        if known is not None:
            return with_peer(known, request, settings)
        auth = request.headers.get("authorization", "")
        scheme, _, tok = auth.partition(" ")
        if scheme.lower() != "bearer" or not tok:
            raise Unauthorized("Bearer token required", headers={"WWW-Authenticate": "Bearer"})
        return with_peer(await principal_for_token(store, admin_hash_ref, tok), request, settings)

    Auth = Annotated[Principal, Depends(principal)]

    from hookbay.ops import relay as relay_ops
    from hookbay.relay.hub import RelayStatus, RelayTokenCreate, RelayTokenOut, register_relay_routes

    register_relay_routes(app, store, ERRORS)  # the agent's endpoints

    @app.get("/api/v1/sources/{source_id}/relay", response_model=RelayStatus, responses=ERRORS, tags=["relay"])
    async def get_relay_status(p: Auth, source_id: str) -> RelayStatus:
        """Queue depth, leased messages and the oldest message's age and last error."""
        return await relay_ops.queue_status(store, p, source_id)

    @app.post("/api/v1/sources/{source_id}/relay-tokens", response_model=RelayTokenOut, status_code=201,
              responses=ERRORS, tags=["relay"])
    async def create_relay_token(p: Auth, source_id: str, body: RelayTokenCreate) -> RelayTokenOut:
        """A token for `hookbay agent` on this source (shown once; only its hash is stored)."""
        return await relay_ops.create_relay_token(store, p, source_id, body.name)

    @app.get("/api/v1/sources/{source_id}/relay-tokens", response_model=list[RelayTokenOut], responses=ERRORS,
             tags=["relay"])
    async def list_relay_tokens(p: Auth, source_id: str) -> list[RelayTokenOut]:
        return await relay_ops.list_relay_tokens(store, p, source_id)

    @app.delete("/api/v1/sources/{source_id}/relay-tokens/{token_id}", status_code=204, responses=ERRORS,
                tags=["relay"])
    async def revoke_relay_token(p: Auth, source_id: str, token_id: str) -> Response:
        await relay_ops.revoke_relay_token(store, p, source_id, token_id)
        return Response(status_code=204)

    @app.get("/api/v1/sources", response_model=list[SourceOut], responses=ERRORS, tags=["sources"])
    async def list_sources(p: Auth, client_id: str | None = None) -> list[SourceOut]:
        return await source_ops.list_sources(store, base_url, p, client_id)

    @app.post("/api/v1/sources", response_model=SourceOut, status_code=201, responses=ERRORS, tags=["sources"])
    async def create_source(p: Auth, body: SourceCreate) -> SourceOut:
        return await source_ops.create_source(store, cache, base_url, p, body, settings=settings)

    @app.get("/api/v1/sources/{source_id}", response_model=SourceOut, responses=ERRORS, tags=["sources"])
    async def get_source(p: Auth, source_id: str) -> SourceOut:
        return await source_ops.get_source(store, base_url, p, source_id)

    @app.post("/api/v1/sources/{source_id}/rotate", response_model=SourceOut, responses=ERRORS, tags=["sources"])
    async def rotate_secret(p: Auth, source_id: str, body: RotateIn) -> SourceOut:
        """Add a new signing secret; the previous ones stay valid for ``grace_seconds``."""
        return await source_ops.rotate_secret(store, cache, base_url, p, source_id, secret=body.secret,
                                              grace_seconds=body.grace_seconds)

    @app.patch("/api/v1/sources/{source_id}", response_model=SourceOut, responses=ERRORS, tags=["sources"],
               openapi_extra={"requestBody": {"required": True, "content": {
                   "application/merge-patch+json": {"schema": {"type": "object"}},
                   "application/json": {"schema": {"type": "object"}}}}})
    async def update_source(p: Auth, source_id: str, request: Request) -> SourceOut:
        """JSON Merge Patch (RFC 7396): keys present change, ``null`` removes, absent keys stay.
        ``{"config": {"rate": 5}}`` changes the rate and nothing else; ``{"config": {"signature":
        null}}`` removes the signature check (logged). ``rotate_api_key``/``remove_api_key``: true."""
        try:
            patch = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise BadRequest("The body is not valid JSON") from None
        try:
            return await source_ops.patch_source(store, cache, base_url, p, source_id, patch, settings=settings)
        except ValidationError as e:
            raise RequestValidationError(e.errors()) from None

    @app.put("/api/v1/sources/{source_id}", response_model=SourceOut, responses=ERRORS, tags=["sources"])
    async def replace_source(p: Auth, source_id: str, body: SourceReplace) -> SourceOut:
        """Replace the whole definition (name, enabled, config). Dropping a check (signature, IP
        allowlist, required header) needs the field named explicitly, e.g. ``"signature": null``;
        otherwise ``409`` lists what would be weakened."""
        return await source_ops.replace_source(store, cache, base_url, p, source_id, body, settings=settings)

    @app.delete("/api/v1/sources/{source_id}", status_code=204, responses=ERRORS, tags=["sources"])
    async def delete_source(p: Auth, source_id: str) -> Response:
        await source_ops.delete_source(store, cache, p, source_id)
        return Response(status_code=204)

    @app.get("/api/v1/requests", response_model=RequestPage, responses=ERRORS, tags=["requests"])
    async def list_requests(
        p: Auth,
        source: str | None = Query(default=None, description="Source id, token or name"),
        since: str | None = Query(default=None, description="ISO-8601 time or relative (15m, 2h, 3d)"),
        until: str | None = None,
        verdict: str | None = Query(default=None, pattern="^(accepted|rejected|duplicate|spam)$"),
        state: str | None = Query(default=None,
                                  pattern="^(pending|processed|failed|rejected|duplicate|spam|handshake)$"),
        q: str | None = Query(default=None, max_length=200, description="Text in headers or body"),
        limit: int = Query(default=50, ge=1, le=1000),
        before: str | None = Query(default=None, description="Cursor: the next_cursor of the previous page"),
    ) -> RequestPage:
        return await request_ops.search_requests(store, p, source=source, since=since, until=until,
                                                 verdict=verdict, state=state, q=q, limit=limit, before=before)

    @app.get("/api/v1/requests/{request_id}", response_model=RequestDetail, responses=ERRORS, tags=["requests"])
    async def get_request(p: Auth, request_id: str) -> RequestDetail:
        return await request_ops.get_request(store, p, request_id)

    @app.get("/api/v1/requests/{request_id}/body", responses=ERRORS, tags=["requests"],
             response_class=Response)
    async def get_request_body(p: Auth, request_id: str) -> Response:
        body, content_type = await request_ops.request_body(store, p, request_id)
        return Response(content=body, media_type=content_type or "application/octet-stream")

    @app.get("/api/v1/profiles", response_model=list[ProfileOut], responses=ERRORS, tags=["profiles"])
    async def find_profiles(
        p: Auth, email: str | None = Query(default=None, max_length=320),
        phone: str | None = Query(default=None, max_length=64), client_id: str | None = None,
    ) -> list[dict[str, Any]]:
        return await profile_ops.find_profiles(store, p, email=email, phone=phone, client_id=client_id)

    @app.get("/api/v1/profiles/{profile_id}", response_model=ProfileOut, responses=ERRORS, tags=["profiles"])
    async def get_profile(p: Auth, profile_id: str) -> dict[str, Any]:
        return await profile_ops.get_profile(store, p, profile_id)

    @app.get("/api/v1/profiles/{profile_id}/export", responses=ERRORS, tags=["profiles"])
    async def export_profile(p: Auth, profile_id: str) -> JSONResponse:
        data = await profile_ops.export_profile(store, p, profile_id)
        return JSONResponse(data, headers={"Content-Disposition": f'attachment; filename="{profile_id}.json"'})

    @app.delete("/api/v1/profiles/{profile_id}", response_model=ErasureOut, responses=ERRORS, tags=["profiles"])
    async def erase_profile(p: Auth, profile_id: str) -> dict[str, Any]:
        return await profile_ops.erase_profile(store, p, profile_id)

    @app.post("/api/v1/replay", response_model=ReplayOut, responses=ERRORS, tags=["requests"])
    async def replay_requests(p: Auth, body: ReplayIn, request: Request) -> dict[str, Any]:
        return await request_ops.replay_requests(store, cache, p, body,
                                                 getattr(request.app.state, "parse_off_loop", None))

    add_delivery_routes(app, store, Auth, ERRORS)
    add_alert_routes(app, store, Auth, ERRORS)
    add_order_routes(app, store, Auth, ERRORS)
    add_provider_routes(app, store, Auth, ERRORS, settings)

    @app.get("/api/v1/tokens", response_model=list[TokenOut], responses=ERRORS, tags=["tokens"])
    async def list_tokens(p: Auth) -> list[TokenOut]:
        return [TokenOut(id=t.id, name=t.name, client_id=t.client_id)
                for t in await token_ops.list_tokens(store, p)]

    @app.delete("/api/v1/tokens/{token_id}", status_code=204, responses=ERRORS, tags=["tokens"])
    async def revoke_token(p: Auth, token_id: str) -> Response:
        await token_ops.revoke_token(store, p, token_id)
        return Response(status_code=204)

    @app.post("/api/v1/tokens", response_model=TokenOut, status_code=201, responses=ERRORS, tags=["tokens"])
    async def create_token(p: Auth, body: TokenCreate) -> TokenOut:
        return await token_ops.create_token(store, p, body.name, body.client_id)

    @app.get("/api/v1/audit", response_model=AuditPage, responses=ERRORS, tags=["audit"])
    async def list_audit(
        p: Auth,
        since: str | None = Query(default=None, description="ISO-8601 time or relative (15m, 2h, 3d)"),
        until: str | None = None,
        limit: int = Query(default=50, ge=1, le=1000),
        before: str | None = Query(default=None, description="Cursor: the next_cursor of the previous page"),
    ) -> AuditPage:
        """Configuration changes, newest first. A client token sees only its own client's entries."""
        return AuditPage(**await audit_ops.list_audit(store, p, since=since, until=until, before=before,
                                                      limit=limit))

    return app
