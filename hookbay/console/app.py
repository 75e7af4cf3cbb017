"""The web console under ``/ui/``: server-rendered pages over the same operations as the admin API.

Its own Starlette app (not part of the admin API's OpenAPI document), dispatched by the root app.
Authentication is the admin API's token check behind a login form and a session cookie; a client
token sees only its client's objects through the operations layer's scoping
(:func:`hookbay.ops.access.scope_client`), and another client's object answers 404 exactly as in
the API. Every POST carries a CSRF token; every page is sent with a CSP that allows no inline
script or style, and may not be framed.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args
from urllib.parse import parse_qsl, quote

import orjson
from jinja2 import Environment, PackageLoader, StrictUndefined
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from hookbay.actions.registry import ACTION_TYPES
from hookbay.console import alerts as alert_pages
from hookbay.console import audit as audit_pages
from hookbay.console import bulk as bulk_pages
from hookbay.console import charts
from hookbay.console import deliveries as delivery_query
from hookbay.console import mapping as mapping_pages
from hookbay.console import profiles as profile_pages
from hookbay.console import requests as request_query
from hookbay.console import rerun as rerun_pages
from hookbay.console import sources as source_pages
from hookbay.console import tokens as token_pages
from hookbay.console.bodyview import body_anchor
from hookbay.console.requests import RequestQuery, request_extras
from hookbay.console.session import (
    COOKIE_PATH,
    LOGIN_COOKIE,
    LOGIN_NONCE_SECONDS,
    SESSION_COOKIE,
    Session,
    Sessions,
    check,
)
from hookbay.errors import BadRequest, Forbidden, HookbayError, NotFound, PayloadTooLarge, Unauthorized
from hookbay.ids import now_us
from hookbay.ingest.asgi import Receive, Scope, Send
from hookbay.ingest.endpoint import dry_run
from hookbay.models import Format, Parser, RotateIn, SourceCreate, SourceUpdate
from hookbay.ops import deliveries as delivery_ops
from hookbay.ops import requests as request_ops
from hookbay.ops import sources as source_ops
from hookbay.ops import traffic as traffic_ops
from hookbay.ops.access import Principal, scope_client, with_peer
from hookbay.ops.requests import source_id_for
from hookbay.ops.tokens import principal_for_hash, principal_for_token
from hookbay.settings import Settings
from hookbay.signatures.registry import REGISTRY as SIGNATURE_SCHEMES
from hookbay.store import RequestFilter, Store, hash_secret
from hookbay.store.sources import SourceCache
from hookbay.views import iso

SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
VERDICTS = ("accepted", "rejected", "duplicate")
STATES = ("pending", "processed", "failed", "rejected", "duplicate", "ping")
DELIVERY_STATES = ("pending", "running", "succeeded", "dead", "skipped")
FORMATS = get_args(Format)
PARSERS = tuple(p for p in get_args(Parser) if p != "mapping")  # a mapping needs more than a form
SCHEMES = tuple(n for n, s in SIGNATURE_SCHEMES.items() if not s.configurable)  # a form gives only name and secret
GRACE = ((0, "retire the old secrets now"), (3600, "keep old secrets 1 hour"),
         (86400, "keep old secrets 24 hours"), (7 * 86400, "keep old secrets 7 days"))
NOTICES = {
    "saved": "Saved.",
    "retried": "Queued to run again now.",
    "api-key-removed": "The API key was removed: the source accepts requests without one.",
    "deleted": "Source deleted: its URL answers 404 now; its stored requests stay in the log.",
}
NAV = {"request": "requests", "source": "sources", "profile": "profiles", "delivery": "deliveries"}
TAIL_LIMIT = 50
TEXT_PREVIEW = 256 * 1024
HEX_PREVIEW = 1024


@dataclass(frozen=True, slots=True)
class Ctx:
    """Who is looking: the principal behind the session cookie, and the page's CSRF token."""

    principal: Principal
    session: Session
    csrf: str

    @property
    def client(self) -> str | None:
        return scope_client(self.principal, None)


Handler = Callable[[Request, Ctx], Awaitable[Response]]


def when(value: str | None) -> str:
    """``2024-05-01T12:00:00.123456Z`` -> ``2024-05-01 12:00:00.123 UTC``: readable, still exact
    enough to line requests up."""
    if not value:
        return ""
    m = re.match(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d{1,3})?", value)
    return f"{m.group(1)} {m.group(2)}{m.group(3) or ''} UTC" if m else value


def pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


def hexdump(data: bytes) -> str:
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        hx = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{off:08x}  {hx:<47}  |{text}|")
    return "\n".join(lines)


def safe_next(value: str | None) -> str:
    """Only a console path may follow login: never another site (open redirect)."""
    if value and value.startswith("/ui/") and "//" not in value and "\\" not in value:
        return value
    return "/ui/"


class Console:
    def __init__(self, store: Store, cache: SourceCache, settings: Settings,
                 admin_hash_ref: dict[str, str | None]) -> None:
        self.store = store
        self.cache = cache
        self.settings = settings
        self.admin_hash_ref = admin_hash_ref
        self.parse_off_loop: Callable[..., Awaitable[Any]] | None = None  # the server's parse pool
        self.sessions = Sessions(store, settings.trusted_proxy_list)
        self.form_limit = 3 * max(settings.max_body_bytes, 1 << 20) + 65536
        self.env = Environment(loader=PackageLoader("hookbay.console", "templates"), autoescape=True,
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(when=when, pretty=pretty, body_anchor=body_anchor)
        r = self._route
        self.app = Starlette(
            routes=[
                Route("/ui", self.to_slash),
                Route("/ui/login", self.login_page, methods=["GET"]),
                Route("/ui/login", self.login_submit, methods=["POST"]),
                Route("/ui/logout", r(self.logout), methods=["POST"]),
                Route("/ui/", r(self.tail), methods=["GET"]),
                Route("/ui/api/requests", self.tail_json, methods=["GET"]),
                Route("/ui/requests/{request_id}", r(self.request_page), methods=["GET"]),
                Route("/ui/requests/{request_id}/body", r(self.request_body), methods=["GET"]),
                Route("/ui/requests/{request_id}/replay", r(lambda rq, c: rerun_pages.replay(self, rq, c)),
                      methods=["POST"]),
                Route("/ui/requests/{request_id}/redeliver",
                      r(lambda rq, c: rerun_pages.confirm_redeliver(self, rq, c)), methods=["GET"]),
                Route("/ui/requests/{request_id}/redeliver", r(lambda rq, c: rerun_pages.redeliver(self, rq, c)),
                      methods=["POST"]),
                Route("/ui/requests/{request_id}/resend", r(lambda rq, c: rerun_pages.resend(self, rq, c)),
                      methods=["POST"]),
                Route("/ui/sources", r(self.sources), methods=["GET"]),
                Route("/ui/sources", r(self.create_source), methods=["POST"]),
                Route("/ui/sources/{source_id}", r(self.source_page), methods=["GET"]),
                Route("/ui/sources/{source_id}", r(self.edit_source), methods=["POST"]),
                Route("/ui/sources/{source_id}/rotate", r(self.rotate_secret), methods=["POST"]),
                Route("/ui/sources/{source_id}/api-key", r(self.api_key), methods=["POST"]),
                *source_pages.routes(self),
                *mapping_pages.routes(self),
                Route("/ui/playground", r(self.playground), methods=["GET", "POST"]),
                Route("/ui/profiles", r(lambda rq, c: profile_pages.search(self, rq, c)), methods=["GET"]),
                Route("/ui/profiles/{profile_id}", r(lambda rq, c: profile_pages.detail(self, rq, c)), methods=["GET"]),
                Route("/ui/profiles/{profile_id}/export", r(lambda rq, c: profile_pages.export(self, rq, c)),
                      methods=["GET"]),
                Route("/ui/profiles/{profile_id}/erase", r(lambda rq, c: profile_pages.confirm_erase(self, rq, c)),
                      methods=["GET"]),
                Route("/ui/profiles/{profile_id}/erase", r(lambda rq, c: profile_pages.erase(self, rq, c)),
                      methods=["POST"]),
                Route("/ui/deliveries", r(self.deliveries), methods=["GET"]),
                Route("/ui/deliveries/{delivery_id}", r(self.delivery_page), methods=["GET"]),
                Route("/ui/deliveries/{delivery_id}/retry", r(self.retry_delivery), methods=["POST"]),
                Route("/ui/charts", r(self.charts), methods=["GET"]),
                Route("/ui/tokens", r(lambda rq, c: token_pages.page(self, rq, c)), methods=["GET"]),
                Route("/ui/tokens", r(lambda rq, c: token_pages.create(self, rq, c)), methods=["POST"]),
                Route("/ui/tokens/relay", r(lambda rq, c: token_pages.create_relay(self, rq, c)), methods=["POST"]),
                Route("/ui/tokens/relay/{relay_token_id}/revoke", r(lambda rq, c: token_pages.revoke_relay(self, rq, c)),
                      methods=["POST"]),
                Route("/ui/tokens/{token_id}/revoke", r(lambda rq, c: token_pages.revoke(self, rq, c)),
                      methods=["POST"]),
                Route("/ui/bulk/requests", r(lambda rq, c: bulk_pages.confirm_requests(self, rq, c)),
                      methods=["GET"]),
                Route("/ui/bulk/requests", r(lambda rq, c: bulk_pages.run_requests(self, rq, c)), methods=["POST"]),
                Route("/ui/bulk/deliveries", r(lambda rq, c: bulk_pages.confirm_deliveries(self, rq, c)),
                      methods=["GET"]),
                Route("/ui/bulk/deliveries", r(lambda rq, c: bulk_pages.run_deliveries(self, rq, c)),
                      methods=["POST"]),
                Route("/ui/alerts", r(lambda rq, c: alert_pages.page(self, rq, c)), methods=["GET"]),
                Route("/ui/audit", r(lambda rq, c: audit_pages.page(self, rq, c)), methods=["GET"]),
                Mount("/ui/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static"),
            ],
            exception_handlers={HTTPException: self._http_error},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Add the security headers to every console response, pages, redirects and files alike."""

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((k, v) for k, v in SECURITY_HEADERS if k not in have)]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    # --- plumbing -------------------------------------------------------------------------

    async def _context(self, request: Request) -> Ctx | None:
        session = await self.sessions.read(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return None
        try:
            p = await principal_for_hash(self.store, self.admin_hash_ref, session.token_hash)
        except Unauthorized:
            return None  # the token was revoked or the admin token rotated since login
        p = with_peer(p, request, self.settings)  # console changes are audited with where they came from
        return Ctx(principal=p, session=session, csrf=await self.sessions.csrf_token(session))

    async def signed_in(self, cookie: str | None) -> bool:
        """Whether a session cookie belongs to a signed-in user now (for the API docs)."""
        session = await self.sessions.read(cookie)
        if session is None:
            return False
        try:
            await principal_for_hash(self.store, self.admin_hash_ref, session.token_hash)
        except Unauthorized:
            return False
        return True

    def _route(self, fn: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A page that needs a session: without one, off to the login page (and back after)."""

        async def endpoint(request: Request) -> Response:
            ctx = await self._context(request)
            if ctx is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                resp = RedirectResponse(f"/ui/login?next={quote(target, safe='/')}", status_code=303)
                if SESSION_COOKIE in request.cookies:
                    resp.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
                return resp
            try:
                return await fn(request, ctx)
            except HookbayError as e:
                return self.render(ctx, "error.html", status=e.status, headers=e.headers or None,
                                   status_code=e.status, message=e.message)

        return endpoint

    def render(self, ctx: Ctx | None, name: str, *, status: int = 200, headers: dict[str, str] | None = None,
               **values: Any) -> HTMLResponse:
        page = name.split(".")[0]
        html = self.env.get_template(name).render({
            "me": ctx.principal if ctx else None, "csrf": ctx.csrf if ctx else "", "notice": None, "error": None,
            "nav": NAV.get(page, page), "canonical": None, **values})
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        code = getattr(exc, "status_code", 500)
        msg = {404: "Not found", 405: "Method not allowed"}.get(code, "Error")
        return self.render(None, "error.html", status=code, status_code=code, message=msg)

    async def _read_form(self, request: Request) -> dict[str, str]:
        """URL-encoded forms only (the console sends nothing else), read with a size limit."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return {}
        clen = request.headers.get("content-length")
        if clen and clen.isdigit() and int(clen) > self.form_limit:
            raise PayloadTooLarge(detail={"limit_bytes": self.form_limit})
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.form_limit:
                raise PayloadTooLarge(detail={"limit_bytes": self.form_limit})
            chunks.append(chunk)
        form: dict[str, str] = {}
        for k, v in parse_qsl(b"".join(chunks).decode("utf-8", "replace"), keep_blank_values=True):
            form.setdefault(k, v)
        return form

    async def form(self, request: Request, ctx: Ctx) -> dict[str, str]:
        """The posted form, after its CSRF token is checked: a missing or wrong token is a 403."""
        form = await self._read_form(request)
        if not check(ctx.csrf, form.get("csrf")):
            raise Forbidden("Missing or invalid CSRF token: reload the page and try again")
        return form

    def _cookie_secure(self, request: Request) -> bool:
        return self.sessions.is_https(request.url.scheme, request.client.host if request.client else None,
                                      request.headers.get("x-forwarded-proto"))

    async def _source_names(self, ctx: Ctx) -> dict[str, str]:
        return await source_ops.source_names(self.store, ctx.principal)

    async def to_slash(self, request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=308)

    # --- login ----------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        if await self._context(request) is not None:
            return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
        return await self._login_form(request)

    async def _login_form(self, request: Request, error: str | None = None, status: int = 200,
                          next_path: str | None = None) -> Response:
        nonce = request.cookies.get(LOGIN_COOKIE) or ""
        fresh = not re.fullmatch(r"[A-Za-z0-9_-]{32}", nonce)
        if fresh:
            nonce = Sessions.new_nonce()
        resp = self.render(None, "login.html", status=status, login_csrf=await self.sessions.login_csrf_token(nonce),
                           next=safe_next(next_path or request.query_params.get("next")), login_error=error)
        if fresh:
            resp.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_NONCE_SECONDS, path=COOKIE_PATH, httponly=True,
                            samesite="strict", secure=self._cookie_secure(request))
        return resp

    async def login_submit(self, request: Request) -> Response:
        """Check the pasted token with the admin API's own check; on success start a session."""
        try:
            form = await self._read_form(request)
        except PayloadTooLarge as e:
            return self.render(None, "error.html", status=413, status_code=413, message=e.message)
        nonce = request.cookies.get(LOGIN_COOKIE) or ""
        if not nonce or not check(await self.sessions.login_csrf_token(nonce), form.get("csrf")):
            return self.render(None, "error.html", status=403, status_code=403,
                               message="Missing or invalid CSRF token: reload the login page and try again")
        token = form.get("token", "").strip()
        try:
            if not token:
                raise Unauthorized("Paste a token")
            await principal_for_token(self.store, self.admin_hash_ref, token)
        except Unauthorized:
            return await self._login_form(request, "That token is not valid.", status=401, next_path=form.get("next"))
        cookie = await self.sessions.issue(hash_secret(token))
        resp = RedirectResponse(safe_next(form.get("next")), status_code=303)
        resp.set_cookie(SESSION_COOKIE, cookie, path=COOKIE_PATH, httponly=True, samesite="strict",
                        secure=self._cookie_secure(request))
        resp.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
        return resp

    async def logout(self, request: Request, ctx: Ctx) -> Response:
        await self.form(request, ctx)
        await self.sessions.revoke(ctx.session)
        resp = RedirectResponse("/ui/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict",
                           secure=self._cookie_secure(request))
        return resp

    # --- requests -------------------------------------------------------------------------

    async def _tail_filter(self, request: Request, ctx: Ctx) -> tuple[RequestFilter, RequestQuery]:
        q = request.query_params
        source_id = await request_ops.source_id_for(self.store, ctx.client, q.get("source"))
        query = request_query.parse(q, ctx.client, VERDICTS, STATES, source_id)
        return query.flt, query

    async def _tail_items(self, flt: RequestFilter, ctx: Ctx) -> list[dict[str, Any]]:
        names = await self._source_names(ctx)
        out = []
        for s in await request_ops.list_requests(self.store, ctx.principal, flt):
            out.append({"id": s.id, "url": f"/ui/requests/{s.id}", "source_id": s.source_id,
                        "source": names.get(s.source_id or "", s.source_id or ""), "received_at": s.received_at,
                        "received": when(s.received_at), "verdict": s.verdict, "state": s.state,
                        "status": s.status, "rule": s.rule or "", "method": s.method, "body_size": s.body_size})
        return out

    async def tail(self, request: Request, ctx: Ctx) -> Response:
        """Filtered, paged requests; on the first page console.js polls :meth:`tail_json` with the
        same filters to keep the table current."""
        _, query = await self._tail_filter(request, ctx)
        rows, older, newer = request_query.page_of(query, await self._tail_items(query.flt, ctx))
        return self.render(ctx, "requests.html", items=rows, chosen=query.chosen, query=query, older=older,
                           newer=newer, filter_errors=query.errors, ranges=request_query.RANGES,
                           sources=await source_ops.source_choices(self.store, ctx.principal), verdicts=VERDICTS,
                           states=STATES)

    async def tail_json(self, request: Request) -> Response:
        ctx = await self._context(request)
        if ctx is None:
            return JSONResponse({"error": {"code": "unauthorized", "message": "Log in again"}}, status_code=401,
                                headers={"Cache-Control": "no-store"})
        try:
            _, query = await self._tail_filter(request, ctx)
            flt = request_query.tail_filter(query)
        except NotFound:
            return JSONResponse({"error": {"code": "not_found", "message": "Not Found"}}, status_code=404)
        return JSONResponse({"items": await self._tail_items(flt, ctx), "at": iso(now_us())},
                            headers={"Cache-Control": "no-store"})

    async def request_view(self, request_id: str, ctx: Ctx) -> dict[str, Any]:
        detail, raw = await request_ops.get_request_with_body(self.store, ctx.principal, request_id)
        d = detail.model_dump()
        d["body_missing"] = raw is None
        d["body_text"] = d["body"][:TEXT_PREVIEW] if d["body"] is not None else None
        d["body_truncated"] = raw is not None and len(raw) > (TEXT_PREVIEW if d["body"] is not None else HEX_PREVIEW)
        d["body_hex"] = hexdump(raw[:HEX_PREVIEW]) if raw is not None and d["body"] is None else None
        d["body_base64"] = (d["body_base64"] or "")[:TEXT_PREVIEW] if d["body"] is None else None
        names = await self._source_names(ctx)
        d["source_name"] = names.get(d["source_id"] or "", d["source_id"] or "")
        d.update(await request_extras(self.store, d, ctx.principal, self.settings.base_url))
        return d

    async def request_page(self, request: Request, ctx: Ctx) -> Response:
        req = await self.request_view(request.path_params["request_id"], ctx)
        n = request.query_params.get("redelivered", "")
        notice = f"{int(n)} deliver{'y' if n == '1' else 'ies'} queued to run again now." if n.isdigit() else None
        return self.render(ctx, "request.html", req=req, replayed=None, preview=None, stale=False, resent=None,
                           notice=notice)

    async def request_body(self, request: Request, ctx: Ctx) -> Response:
        """The exact bytes, as a download: never rendered by the browser as the sender's HTML."""
        rid = request.path_params["request_id"]
        body, _ = await request_ops.request_body(self.store, ctx.principal, rid)
        return Response(body, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{rid}.bin"',
                                 "Cache-Control": "no-store"})

    # --- sources --------------------------------------------------------------------------

    async def sources(self, request: Request, ctx: Ctx, *, status: int = 200, error: str | None = None,
                      values: dict[str, str] | None = None) -> Response:
        items = await source_ops.list_sources(self.store, self.settings.base_url, ctx.principal)
        return self.render(ctx, "sources.html", status=status, items=items, formats=FORMATS, parsers=PARSERS,
                           schemes=SCHEMES, form_error=error, values=values or {}, canonical="/ui/sources",
                           notice=NOTICES.get(request.query_params.get("notice", "")))

    async def create_source(self, request: Request, ctx: Ctx) -> Response:
        form = await self.form(request, ctx)
        client = ctx.principal.client_id or form.get("client_id", "").strip()
        body: dict[str, Any] = {"name": form.get("name", "").strip(), "client_id": client,
                                "api_key": form.get("api_key") == "on",
                                "config": {"format": form.get("format") or "auto",
                                           "parser": form.get("parser") or "generic"}}
        if form.get("signature"):
            body["config"]["signature"] = {"scheme": form["signature"]}
            if form.get("secret", "").strip():
                body["secret"] = form["secret"].strip()
        try:
            out = await source_ops.create_source(self.store, self.cache, self.settings.base_url, ctx.principal,
                                                 SourceCreate.model_validate(body), settings=self.settings)
        except ValidationError as e:
            return await self.sources(request, ctx, status=400, error=_validation_message(e), values=form)
        except HookbayError as e:
            if e.status == 404:
                raise
            return await self.sources(request, ctx, status=e.status, error=e.message, values=form)
        return await self._source(ctx, out.id, created=True, shown_api_key=out.api_key, shown_secret=out.secret)

    async def _source(self, ctx: Ctx, source_id: str, *, status: int = 200, **extra: Any) -> Response:
        src = await source_ops.get_source(self.store, self.settings.base_url, ctx.principal, source_id)
        recent = await self._tail_items(RequestFilter(source_id=src.id, client_id=ctx.client, limit=10), ctx)
        values = {"created": False, "shown_api_key": None, "shown_secret": None, "form_error": None, **extra}
        return self.render(ctx, "source.html", status=status, src=src, recent=recent, grace=GRACE,
                           canonical=f"/ui/sources/{quote(src.id)}",
                           config_json=pretty(src.config.model_dump(exclude_defaults=True)), **values)

    async def source_page(self, request: Request, ctx: Ctx) -> Response:
        return await self._source(ctx, request.path_params["source_id"],
                                  notice=NOTICES.get(request.query_params.get("notice", "")))

    async def edit_source(self, request: Request, ctx: Ctx) -> Response:
        form = await self.form(request, ctx)
        sid = request.path_params["source_id"]
        try:
            body = SourceUpdate.model_validate({"name": form.get("name", "").strip(),
                                                "enabled": form.get("enabled") == "true"})
            await source_ops.update_source(self.store, self.cache, self.settings.base_url, ctx.principal, sid,
                                           body, settings=self.settings)
        except ValidationError as e:
            return await self._source(ctx, sid, status=400, form_error=_validation_message(e))
        except HookbayError as e:
            if e.status == 404:
                raise
            return await self._source(ctx, sid, status=e.status, form_error=e.message)
        return RedirectResponse(f"/ui/sources/{quote(sid)}?notice=saved", status_code=303)

    async def rotate_secret(self, request: Request, ctx: Ctx) -> Response:
        """A new signing secret (the provider's, or generated and shown once); the old ones stay
        valid for the chosen grace period."""
        form = await self.form(request, ctx)
        sid = request.path_params["source_id"]
        try:
            grace = int(form.get("grace_seconds") or 86400)
            body = RotateIn(secret=form.get("secret", "").strip() or None, grace_seconds=grace)
            out = await source_ops.rotate_secret(self.store, self.cache, self.settings.base_url, ctx.principal,
                                                 sid, secret=body.secret, grace_seconds=body.grace_seconds)
        except (ValueError, ValidationError) as e:
            msg = _validation_message(e) if isinstance(e, ValidationError) else "Invalid grace period"
            return await self._source(ctx, sid, status=400, form_error=msg)
        except HookbayError as e:
            if e.status == 404:
                raise
            return await self._source(ctx, sid, status=e.status, form_error=e.message)
        return await self._source(ctx, sid, shown_secret=out.secret,
                                  notice="New signing secret added." if not out.secret else None)

    async def api_key(self, request: Request, ctx: Ctx) -> Response:
        """Issue a new API key (shown once; the old one stops working now) or drop the requirement."""
        form = await self.form(request, ctx)
        sid = request.path_params["source_id"]
        remove = form.get("action") == "remove"
        out = await source_ops.update_source(self.store, self.cache, self.settings.base_url, ctx.principal, sid,
                                             SourceUpdate(rotate_api_key=not remove, remove_api_key=remove),
                                             settings=self.settings)
        if remove:
            return RedirectResponse(f"/ui/sources/{quote(sid)}?notice=api-key-removed", status_code=303)
        return await self._source(ctx, sid, shown_api_key=out.api_key)

    # --- playground -----------------------------------------------------------------------

    async def playground(self, request: Request, ctx: Ctx) -> Response:
        """Paste a body, see what the source's parser and actions would make of it; nothing is
        stored and no action runs (the ``/V1/Test`` answer, without the sender's checks)."""
        sources = await source_ops.source_choices(self.store, ctx.principal)
        values = {"source": request.query_params.get("source", ""), "content_type": "application/json",
                  "body": ""}
        result = None
        status = 200
        if request.method == "POST":
            form = await self.form(request, ctx)
            values = {"source": form.get("source", ""), "content_type": form.get("content_type", "").strip(),
                      "body": form.get("body", "")}
            sid = await source_ops.source_id(self.store, ctx.principal, values["source"])
            await self.cache.maybe_reload()
            src = await self.cache.get_by_id(sid)
            if src is None:
                raise BadRequest("This source's stored configuration does not load; fix it with the API or CLI")
            # browsers send a textarea's line breaks as CRLF; senders of JSON/NDJSON/CSV mostly use LF
            body = values["body"].replace("\r\n", "\n").encode()
            if len(body) > src.max_body:
                raise PayloadTooLarge(detail={"limit_bytes": src.max_body})
            if self.parse_off_loop is not None:
                result = await self.parse_off_loop(dry_run, body, values["content_type"] or None, src, self.settings)
            else:
                result = dry_run(body, values["content_type"] or None, src, self.settings)
            status = 200 if result["state"] == "processed" else 422
        return self.render(ctx, "playground.html", status=status, sources=sources, values=values, result=result,
                           canonical=f"/ui/playground?source={quote(values['source'])}" if result else None)

    # --- deliveries -----------------------------------------------------------------------

    async def deliveries(self, request: Request, ctx: Ctx) -> Response:
        chosen = await self._delivery_filter(request.query_params, ctx)
        page = await delivery_ops.list_deliveries(self.store, ctx.principal, **delivery_query.op_args(chosen),
                                                  before=delivery_query.cursor(request.query_params),
                                                  limit=delivery_query.PAGE)
        nxt = page["next_cursor"]
        return self.render(ctx, "deliveries.html", items=page["items"], state=chosen["state"],
                           chosen=chosen, states=DELIVERY_STATES, action_types=ACTION_TYPES,
                           ranges=request_query.RANGES, sources=await source_ops.source_choices(self.store, ctx.principal),
                           older=delivery_query.link(chosen, before=nxt) if nxt else "",
                           this=delivery_query.link(chosen),
                           notice=NOTICES.get(request.query_params.get("notice", "")))

    async def _delivery_filter(self, q: Any, ctx: Ctx) -> dict[str, str]:
        return delivery_query.parse(q, DELIVERY_STATES, await source_id_for(self.store, ctx.client, q.get("source")))

    async def delivery_page(self, request: Request, ctx: Ctx) -> Response:
        d = await delivery_ops.get_delivery(self.store, ctx.principal, request.path_params["delivery_id"])
        return self.render(ctx, "delivery.html", d=d, record=await delivery_ops.delivery_input(self.store, ctx.principal, d),
                           notice=NOTICES.get(request.query_params.get("notice", "")))

    async def retry_delivery(self, request: Request, ctx: Ctx) -> Response:
        await self.form(request, ctx)
        did = request.path_params["delivery_id"]
        try:
            await delivery_ops.retry_delivery(self.store, ctx.principal, did)
        except HookbayError as e:
            if e.status != 409:
                raise
            d = await delivery_ops.get_delivery(self.store, ctx.principal, did)
            return self.render(ctx, "delivery.html", status=409, d=d, error=e.message,
                               record=await delivery_ops.delivery_input(self.store, ctx.principal, d),
                               canonical=f"/ui/deliveries/{quote(did)}")
        return RedirectResponse(f"/ui/deliveries/{quote(did)}?notice=retried", status_code=303)

    # --- charts ---------------------------------------------------------------------------

    async def charts(self, request: Request, ctx: Ctx) -> Response:
        start = charts.window(now_us())
        rows = await traffic_ops.traffic(self.store, ctx.principal, start, charts.HOUR_US)
        return self.render(ctx, "charts.html", generated=when(iso(now_us())), **charts.hourly(rows, start))


def _validation_message(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts)


def create_console_app(store: Store, cache: SourceCache, settings: Settings,
                       admin_hash_ref: dict[str, str | None]) -> Console:
    return Console(store, cache, settings, admin_hash_ref)

