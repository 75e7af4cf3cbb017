"""The admin JSON API under ``/api/v1`` (FastAPI, OpenAPI at ``/api/v1/openapi.json``).

Bearer tokens: the admin token sees every client; a client token sees only its own client's
objects, and another client's object answers 404, exactly like a missing one.
"""

# No "from __future__ import annotations": FastAPI must resolve the local Annotated aliases at runtime.

import hmac
import secrets
from dataclasses import dataclass, replace
from typing import Annotated, Any

import orjson
import sqlalchemy as sa
import structlog
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from hookbay.api import docs as api_docs
from hookbay.api.alerts import add_alert_routes
from hookbay.api.deliveries import add_delivery_routes
from hookbay.audit import Actor, AuditEntry, entry_view, source_summary
from hookbay.changes import merge_patch, weakenings
from hookbay.containment import check_config
from hookbay.errors import BadRequest, Conflict, Forbidden, HookbayError, NotFound, Unauthorized, error_body
from hookbay.ids import now_us, ulid
from hookbay.models import (
    RequestDetail,
    RequestPage,
    RotateIn,
    SourceConfig,
    SourceCreate,
    SourceOut,
    SourceReplace,
    SourceUpdate,
)
from hookbay.processing.replay import OffLoop, replay
from hookbay.profiles import lookup_email, lookup_phone, profile_view
from hookbay.settings import Settings
from hookbay.signatures import generate_secret, validate_secret
from hookbay.store import RequestFilter, Store, hash_secret, schema
from hookbay.store.errors import describe
from hookbay.store.sources import SourceCache
from hookbay.views import parse_time, request_detail, request_summary, source_out


@dataclass(frozen=True)
class Principal:
    client_id: str | None
    token_id: str | None = None  # the client token's id (the admin token has none)
    peer: str | None = None  # where the request came from, for the audit log

    @property
    def is_admin(self) -> bool:
        return self.client_id is None

    @property
    def actor(self) -> Actor:
        return Actor(name="admin" if self.is_admin else f"client:{self.client_id}", client_id=self.client_id,
                     token_id=self.token_id, peer=self.peer)

    def audit(self, action: str, changes: list[str] | None = None, weakens: list[str] | None = None) -> AuditEntry:
        return AuditEntry(action=action, actor=self.actor, client_id=self.client_id, changes=changes or [],
                          weakens=weakens or [])


class ErrorOut(BaseModel):
    error: dict[str, Any] = Field(examples=[{"code": "not_found", "message": "Not Found"}])


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    client_id: str | None = Field(default=None, description="Scope to one client; null for an admin token")


class TokenOut(BaseModel):
    id: str
    name: str
    client_id: str | None
    token: str | None = Field(default=None, description="Shown once, at creation")


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


class ReplayIn(BaseModel):
    request_id: str | None = None
    source: str | None = None
    state: str | None = Field(default=None, pattern="^(pending|processed|failed)$")
    since: str | None = None
    until: str | None = None
    limit: int = Field(default=1000, ge=1, le=100_000)
    dry_run: bool = False
    all: bool = Field(default=False, description="Every request (up to limit): required when no request_id or "
                                                 "filter is given, so that an empty body never means everything")


class ReplayOut(BaseModel):
    dry_run: bool
    count: int
    items: list[dict[str, Any]]


log = structlog.get_logger("hookbay.admin")

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 422)
}


async def principal_for_token(store: Store, admin_hash_ref: dict[str, str | None], token: str) -> Principal:
    """The one check of an admin or client token, shared by the API's bearer header and the
    console's login form."""
    return await principal_for_hash(store, admin_hash_ref, hash_secret(token.strip()))


async def principal_for_hash(store: Store, admin_hash_ref: dict[str, str | None], h: str) -> Principal:
    """Who a token hash belongs to, now: the console keeps only the hash in its session cookie and
    asks again on every page, so a revoked or rotated token logs its sessions out at once."""
    admin_hash = admin_hash_ref.get("hash")
    if admin_hash and hmac.compare_digest(h, admin_hash):
        return Principal(None)

    def q(conn: sa.Connection) -> tuple[str | None, str] | None:
        T = schema.tokens
        row = conn.execute(sa.select(T.c.client_id, T.c.id).where(T.c.token_hash == h)).first()
        return (row[0], row[1]) if row else None

    found = await store.read(q)
    if found is None:
        raise Unauthorized("Invalid token", headers={"WWW-Authenticate": "Bearer"})
    return Principal(found[0], token_id=found[1])


class AuditPage(BaseModel):
    items: list[dict[str, Any]] = Field(description="Newest first: at, actor, token_id, client_id, action, target, "
                                        "peer, changes, weakens (checks the change removed or loosened), weakening")
    next_cursor: str | None


def with_peer(p: Principal, request: Request, settings: Settings) -> Principal:
    """The principal with where the request came from (proxy headers count only from trusted proxies)."""
    from hookbay.netaddr import client_address, parse_networks

    peer = client_address(request.client.host if request.client else None, request.scope.get("headers", []),
                          parse_networks(settings.trusted_proxy_list))
    return replace(p, peer=peer)


def scope_client(p: Principal, requested: str | None) -> str | None:
    """The client a caller may see: any (or the one asked for) for the admin, else its own; asking
    for another client's data is answered like a missing object."""
    if p.is_admin:
        return requested
    if requested is not None and requested != p.client_id:
        raise NotFound("Not Found")
    return p.client_id


# Source and replay operations, shared by the API routes and the web console so both validate,
# scope and reload the source cache the same way.

async def list_sources_as(store: Store, base_url: str, p: Principal, client_id: str | None = None) -> list[SourceOut]:
    rows = await store.list_sources(scope_client(p, client_id))
    counts = await store.secret_counts()
    return [source_out(r, base_url, secrets=counts.get(r["id"], 0)) for r in rows]


async def create_source_as(store: Store, cache: SourceCache, base_url: str, p: Principal,
                           body: SourceCreate, *, settings: Settings) -> SourceOut:
    if not p.is_admin and body.client_id != p.client_id:
        raise NotFound("Not Found")
    check_config(body.config, settings, admin=p.is_admin)
    secret, generated = initial_secret(body.config, body.secret)
    changes, _ = source_summary(None, body.config.model_dump(), name=body.name, enabled=body.enabled,
                                api_key="new" if body.api_key else None)
    if secret:
        changes.append("secret: [set]")
    row, key = await store.create_source(
        name=body.name, client_id=body.client_id, config=body.config.model_dump(), enabled=body.enabled,
        api_key=body.api_key, secret=secret, audit=p.audit("source.create", changes),
    )
    await cache.reload()
    return source_out(row, base_url, key, secrets=1 if secret else 0, secret=secret if generated else None)


async def update_source_as(store: Store, cache: SourceCache, base_url: str, p: Principal, source_id: str,
                           body: SourceUpdate, *, settings: Settings, action: str = "source.update") -> SourceOut:
    row = await store.get_source(source_id, scope_client(p, None))
    changes = body.model_dump(exclude_unset=True, exclude_none=True, exclude={"rotate_api_key", "remove_api_key"})
    if body.config is not None:
        check_config(body.config, settings, admin=p.is_admin,
                     current=SourceConfig.model_validate(orjson.loads(row["config"] or "{}")))
        changes["config"] = body.config.model_dump()
    api_key = ("rotated" if row.get("api_key_hash") else "new") if body.rotate_api_key else \
        ("removed" if body.remove_api_key and row.get("api_key_hash") else None)
    summary, weak = source_summary(row, changes.get("config"), name=changes.get("name"),
                                   enabled=changes.get("enabled"), api_key=api_key)
    new, key = await store.update_source(row["id"], changes, rotate_api_key=body.rotate_api_key,
                                         remove_api_key=body.remove_api_key,
                                         audit=p.audit(action, summary, weak))
    await cache.reload()
    return source_out(new, base_url, key, secrets=await store.secret_count(new["id"]))


async def patch_source_as(store: Store, cache: SourceCache, base_url: str, p: Principal, source_id: str,
                          patch: dict[str, Any], *, settings: Settings) -> SourceOut:
    """PATCH as JSON Merge Patch (RFC 7396) over the source's definition: keys present change,
    ``null`` removes, absent keys stay. A removed check is explicit by construction (the patch names
    it) and is logged as ``source_checks_weakened``."""
    row = await store.get_source(source_id, scope_client(p, None))
    if not isinstance(patch, dict):
        raise BadRequest("A merge patch is a JSON object")
    flags = {k: patch[k] for k in ("rotate_api_key", "remove_api_key") if k in patch}
    doc = {k: v for k, v in patch.items() if k not in flags}
    current = {"name": row["name"], "enabled": bool(row["enabled"]),
               "config": orjson.loads(row["config"] or "{}")}
    merged = merge_patch(current, doc)
    try:
        body = SourceUpdate.model_validate({**merged, **flags})
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None
    return await _update_checked(store, cache, base_url, p, row, body, explicit=None, settings=settings,
                                 action="source.patch")


async def replace_source_as(store: Store, cache: SourceCache, base_url: str, p: Principal, source_id: str,
                            body: SourceReplace, *, settings: Settings) -> SourceOut:
    """PUT: the whole definition. A check the new definition drops is refused unless the body names
    that field explicitly (``"signature": null``), so a forgotten field never silently weakens."""
    row = await store.get_source(source_id, scope_client(p, None))
    update = SourceUpdate(name=body.name, enabled=body.enabled, config=body.config)
    return await _update_checked(store, cache, base_url, p, row, update, explicit=body.config.model_fields_set,
                                 settings=settings, action="source.replace")


async def _update_checked(store: Store, cache: SourceCache, base_url: str, p: Principal, row: dict[str, Any],
                          body: SourceUpdate, *, explicit: set[str] | None, settings: Settings,
                          action: str) -> SourceOut:
    old = SourceConfig.model_validate(orjson.loads(row["config"] or "{}"))
    weakened = weakenings(old, body.config) if body.config is not None else {}
    if body.remove_api_key and row.get("api_key_hash"):
        weakened["api_key"] = "API key requirement removed"
    if explicit is not None:
        implicit = sorted(f for f in weakened if f != "api_key" and f not in explicit)
        if implicit:
            raise Conflict(
                "This definition would weaken the source's checks without naming them; to do it on purpose, "
                "include the field explicitly (e.g. \"signature\": null)",
                detail=[{"path": f"config.{f}", "message": weakened[f]} for f in implicit])
    out = await update_source_as(store, cache, base_url, p, row["id"], body, settings=settings, action=action)
    if weakened:
        log.warning("source_checks_weakened", source_id=row["id"], client_id=row["client_id"],
                    actor="admin" if p.is_admin else f"client:{p.client_id}", changes=sorted(weakened.values()))
    return out


async def rotate_secret_as(store: Store, cache: SourceCache, base_url: str, p: Principal, source_id: str,
                           body: RotateIn) -> SourceOut:
    row = await store.get_source(source_id, scope_client(p, None))
    cfg = SourceConfig.model_validate(orjson.loads(row["config"]))
    if cfg.signature is None:
        raise BadRequest("This source has no signature scheme; set config.signature first")
    if body.secret:
        initial_secret(cfg, body.secret)
    secret = body.secret or generate_secret(cfg.signature.scheme)
    grace = "old secrets retired now" if body.grace_seconds == 0 else (
        "old secrets kept" if body.grace_seconds is None else f"old secrets valid for {body.grace_seconds:g}s")
    await store.add_secret(row["id"], secret, retire_others_after_s=body.grace_seconds,
                           audit=p.audit("secret.rotate", ["secret: [changed]", grace]))
    await cache.reload()
    return source_out(row, base_url, secrets=await store.secret_count(row["id"]),
                      secret=None if body.secret else secret)


async def replay_as(store: Store, cache: SourceCache, p: Principal, body: ReplayIn,
                    off_loop: OffLoop | None = None) -> dict[str, Any]:
    """Replay as API, console and CLI do it. ``off_loop`` (the server's parse pool) keeps a tenant's
    replay of a pathological stored body off the event loop and under the parse budget."""
    client = scope_client(p, None)
    if not body.all and not any((body.request_id, body.source, body.state, body.since, body.until)):
        raise BadRequest('Give request_id, a filter (source, state, since, until) or "all": true')
    if body.request_id:
        await store.get_request(body.request_id, client)
        items = await replay(store, cache, request_ids=[body.request_id], dry_run=body.dry_run, off_loop=off_loop)
    else:
        source_id = (await store.get_source(body.source, client))["id"] if body.source else None
        try:
            flt = RequestFilter(
                source_id=source_id, client_id=client, state=body.state, limit=body.limit,
                since_us=parse_time(body.since) if body.since else None,
                until_us=parse_time(body.until) if body.until else None)
        except ValueError as e:
            raise BadRequest("Invalid time", detail=str(e)) from None
        items = await replay(store, cache, flt=flt, dry_run=body.dry_run, off_loop=off_loop)
    return {"dry_run": body.dry_run, "count": len(items), "items": items}


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

    from hookbay.relay.hub import (
        register_relay_routes,  # relay tokens, queue status and the agent's endpoints
    )

    register_relay_routes(app, store, principal, scope_client, ERRORS)

    @app.get("/api/v1/sources", response_model=list[SourceOut], responses=ERRORS, tags=["sources"])
    async def list_sources(p: Auth, client_id: str | None = None) -> list[SourceOut]:
        return await list_sources_as(store, base_url, p, client_id)

    @app.post("/api/v1/sources", response_model=SourceOut, status_code=201, responses=ERRORS, tags=["sources"])
    async def create_source(p: Auth, body: SourceCreate) -> SourceOut:
        return await create_source_as(store, cache, base_url, p, body, settings=settings)

    @app.get("/api/v1/sources/{source_id}", response_model=SourceOut, responses=ERRORS, tags=["sources"])
    async def get_source(p: Auth, source_id: str) -> SourceOut:
        row = await store.get_source(source_id, scope_client(p, None))
        return source_out(row, base_url, secrets=await store.secret_count(row["id"]))

    @app.post("/api/v1/sources/{source_id}/rotate", response_model=SourceOut, responses=ERRORS, tags=["sources"])
    async def rotate_secret(p: Auth, source_id: str, body: RotateIn) -> SourceOut:
        """Add a new signing secret; the previous ones stay valid for ``grace_seconds``."""
        return await rotate_secret_as(store, cache, base_url, p, source_id, body)

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
        return await patch_source_as(store, cache, base_url, p, source_id, patch, settings=settings)

    @app.put("/api/v1/sources/{source_id}", response_model=SourceOut, responses=ERRORS, tags=["sources"])
    async def replace_source(p: Auth, source_id: str, body: SourceReplace) -> SourceOut:
        """Replace the whole definition (name, enabled, config). Dropping a check (signature, IP
        allowlist, required header) needs the field named explicitly, e.g. ``"signature": null``;
        otherwise ``409`` lists what would be weakened."""
        return await replace_source_as(store, cache, base_url, p, source_id, body, settings=settings)

    @app.delete("/api/v1/sources/{source_id}", status_code=204, responses=ERRORS, tags=["sources"])
    async def delete_source(p: Auth, source_id: str) -> Response:
        row = await store.get_source(source_id, scope_client(p, None))
        await store.delete_source(row["id"], audit=p.audit("source.delete", [f"name: {orjson.dumps(row['name']).decode()}"]))
        await cache.reload()
        return Response(status_code=204)

    @app.get("/api/v1/requests", response_model=RequestPage, responses=ERRORS, tags=["requests"])
    async def list_requests(
        p: Auth,
        source: str | None = Query(default=None, description="Source id, token or name"),
        since: str | None = Query(default=None, description="ISO-8601 time or relative (15m, 2h, 3d)"),
        until: str | None = None,
        verdict: str | None = Query(default=None, pattern="^(accepted|rejected|duplicate)$"),
        state: str | None = Query(default=None, pattern="^(pending|processed|failed|rejected|duplicate)$"),
        q: str | None = Query(default=None, max_length=200, description="Text in headers or body"),
        limit: int = Query(default=50, ge=1, le=1000),
        before: str | None = Query(default=None, description="Cursor: the next_cursor of the previous page"),
    ) -> RequestPage:
        client = scope_client(p, None)
        source_id = None
        if source:
            source_id = (await store.get_source(source, client))["id"]
        try:
            f = RequestFilter(
                source_id=source_id, client_id=client,
                since_us=parse_time(since) if since else None, until_us=parse_time(until) if until else None,
                verdict=verdict, state=state, text=q, before_id=before, limit=limit,
            )
        except ValueError as e:
            raise BadRequest("Invalid time", detail=str(e)) from None
        rows = await store.search_requests(f)
        nxt = rows[-1]["id"] if len(rows) == limit else None
        return RequestPage(items=[request_summary(r) for r in rows], next_cursor=nxt)

    @app.get("/api/v1/requests/{request_id}", response_model=RequestDetail, responses=ERRORS, tags=["requests"])
    async def get_request(p: Auth, request_id: str) -> RequestDetail:
        row = await store.get_request(request_id, scope_client(p, None))
        recs = await store.records_for([request_id])
        return request_detail(row, recs[request_id])

    @app.get("/api/v1/requests/{request_id}/body", responses=ERRORS, tags=["requests"],
             response_class=Response)
    async def get_request_body(p: Auth, request_id: str) -> Response:
        row = await store.get_request(request_id, scope_client(p, None))
        return Response(content=bytes(row["body"] or b""),
                        media_type=row["content_type"] or "application/octet-stream")

    @app.get("/api/v1/profiles", response_model=list[ProfileOut], responses=ERRORS, tags=["profiles"])
    async def find_profiles(
        p: Auth, email: str | None = Query(default=None, max_length=320),
        phone: str | None = Query(default=None, max_length=64), client_id: str | None = None,
    ) -> list[dict[str, Any]]:
        if not email and not phone:
            raise BadRequest("Give email or phone")
        rows = await store.find_profiles(
            scope_client(p, client_id), email=lookup_email(email) if email else None,
            phone=lookup_phone(phone) if phone else None)
        return [profile_view(await store.get_profile(r["id"])) for r in rows]

    @app.get("/api/v1/profiles/{profile_id}", response_model=ProfileOut, responses=ERRORS, tags=["profiles"])
    async def get_profile(p: Auth, profile_id: str) -> dict[str, Any]:
        return profile_view(await store.get_profile(profile_id, scope_client(p, None)))

    @app.get("/api/v1/profiles/{profile_id}/export", responses=ERRORS, tags=["profiles"])
    async def export_profile(p: Auth, profile_id: str) -> JSONResponse:
        data = await export_profile_data(store, profile_id, scope_client(p, None))
        return JSONResponse(data, headers={"Content-Disposition": f'attachment; filename="{profile_id}.json"'})

    @app.delete("/api/v1/profiles/{profile_id}", response_model=ErasureOut, responses=ERRORS, tags=["profiles"])
    async def erase_profile(p: Auth, profile_id: str) -> dict[str, Any]:
        actor = "admin" if p.is_admin else f"client:{p.client_id}"
        return await store.erase_profile(profile_id, scope_client(p, None), actor, audit=p.audit("profile.erase"))

    @app.post("/api/v1/replay", response_model=ReplayOut, responses=ERRORS, tags=["requests"])
    async def replay_requests(p: Auth, body: ReplayIn, request: Request) -> dict[str, Any]:
        return await replay_as(store, cache, p, body, getattr(request.app.state, "parse_off_loop", None))

    add_delivery_routes(app, store, Auth, scope_client, ERRORS)
    add_alert_routes(app, store, Auth, scope_client, ERRORS)

    @app.get("/api/v1/tokens", response_model=list[TokenOut], responses=ERRORS, tags=["tokens"])
    async def list_tokens(p: Auth) -> list[TokenOut]:
        if not p.is_admin:
            raise Forbidden("Only the admin token can list tokens")
        return [TokenOut(id=t["id"], name=t["name"], client_id=t["client_id"]) for t in await store.list_tokens()]

    @app.delete("/api/v1/tokens/{token_id}", status_code=204, responses=ERRORS, tags=["tokens"])
    async def revoke_token(p: Auth, token_id: str) -> Response:
        if not p.is_admin:
            raise NotFound("Not Found")
        await store.revoke_token(token_id, audit=p.audit("token.revoke"))
        return Response(status_code=204)

    @app.post("/api/v1/tokens", response_model=TokenOut, status_code=201, responses=ERRORS, tags=["tokens"])
    async def create_token(p: Auth, body: TokenCreate) -> TokenOut:
        if not p.is_admin:
            raise Forbidden("Only the admin token can create tokens")
        out = await create_token_row(store, body.name, body.client_id, audit=p.audit("token.create"))
        return out

    @app.get("/api/v1/audit", response_model=AuditPage, responses=ERRORS, tags=["audit"])
    async def list_audit(
        p: Auth,
        since: str | None = Query(default=None, description="ISO-8601 time or relative (15m, 2h, 3d)"),
        until: str | None = None,
        limit: int = Query(default=50, ge=1, le=1000),
        before: str | None = Query(default=None, description="Cursor: the next_cursor of the previous page"),
    ) -> AuditPage:
        """Configuration changes, newest first. A client token sees only its own client's entries."""
        try:
            since_us, until_us = (parse_time(since) if since else None), (parse_time(until) if until else None)
        except ValueError as e:
            raise BadRequest("Invalid time", detail=str(e)) from None
        rows = await store.list_audit(scope_client(p, None), since_us=since_us, until_us=until_us,
                                      before_id=before, limit=limit)
        nxt = rows[-1]["id"] if len(rows) == limit else None
        return AuditPage(items=[entry_view(r) for r in rows], next_cursor=nxt)

    return app


async def create_token_row(store: Store, name: str, client_id: str | None,
                           audit: AuditEntry | None = None) -> TokenOut:
    from hookbay.store.audit import record

    tok = "hbt_" + secrets.token_urlsafe(32)
    tid = "tok_" + ulid()

    def ins(conn: sa.Connection) -> None:
        conn.execute(schema.tokens.insert().values(id=tid, name=name, token_hash=hash_secret(tok),
                                                   client_id=client_id, created_at=now_us()))
        if audit is not None:
            record(conn, audit.but(target=tid, client_id=client_id, changes=[
                f"name: {orjson.dumps(name).decode()}", f"scope: {'client ' + client_id if client_id else 'admin'}"]))

    await store.write(ins)
    return TokenOut(id=tid, name=name, client_id=client_id, token=tok)


async def export_profile_data(store: Store, profile_id: str, client_id: str | None) -> dict[str, Any]:
    """Everything held about one customer: the profile, its ledger and the records made for it."""
    from hookbay.views import record_view

    prof = profile_view(await store.get_profile(profile_id, client_id))
    recs = await store.records_for(prof["request_ids"])
    return {"profile": prof, "records": [record_view(r) | {"request_id": rid}
                                         for rid, rs in recs.items() for r in rs]}


def initial_secret(config: SourceConfig, given: str | None) -> tuple[str | None, bool]:
    """The secret a new source starts with: the provider's, or one we generate (shown once)."""
    if config.signature is None:
        return None, False
    if given:
        try:
            validate_secret(config.signature.scheme, given)
        except ValueError as e:
            raise BadRequest(f"Unusable signing secret: {e}") from None
        return given, False
    return generate_secret(config.signature.scheme), True
