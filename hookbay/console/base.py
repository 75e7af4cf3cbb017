"""The console's core, below every page module: the ``Console`` (rendering, sign-in sessions, CSRF
checked forms, the store and settings), who is looking (``Ctx``), and the constants and helpers the
pages share. Page modules import from here only; :mod:`hookbay.console.app` composes them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson
from jinja2 import Environment, PackageLoader, StrictUndefined
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute

from hookbay.console import requests as request_query
from hookbay.console.bodyview import body_anchor
from hookbay.console.requests import RequestQuery, request_extras
from hookbay.console.session import COOKIE_PATH, SESSION_COOKIE, Session, Sessions, check
from hookbay.errors import Forbidden, HookbayError, PayloadTooLarge, Unauthorized
from hookbay.ingest.asgi import Receive, Scope, Send
from hookbay.ops import requests as request_ops
from hookbay.ops import sources as source_ops
from hookbay.ops.access import Principal, scope_client, with_peer
from hookbay.ops.tokens import principal_for_hash
from hookbay.settings import Settings
from hookbay.store import RequestFilter, Store
from hookbay.store.sources import SourceCache

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
NOTICES = {
    "saved": "Saved.",
    "retried": "Queued to run again now.",
    "api-key-removed": "The API key was removed: the source accepts requests without one.",
    "deleted": "Source deleted: its URL answers 404 now; its stored requests stay in the log.",
}
NAV = {"request": "requests", "source": "sources", "profile": "profiles", "delivery": "deliveries"}
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


def validation_message(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts)



class Console:
    """The console as an ASGI app: its Starlette routes behind the security headers, and what every
    page needs (the store, settings, sessions, templates, the session check and CSRF-checked forms)."""

    def __init__(self, store: Store, cache: SourceCache, settings: Settings,
                 admin_hash_ref: dict[str, str | None], routes: Callable[[Console], list[BaseRoute]]) -> None:
        """``routes`` are the pages' routes, given this console (:func:`hookbay.console.app.create_console_app`
        composes them)."""
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
        self.app = Starlette(routes=routes(self), exception_handlers={HTTPException: self._http_error})

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

    async def context(self, request: Request) -> Ctx | None:
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

    def route(self, fn: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A page that needs a session: without one, off to the login page (and back after)."""

        async def endpoint(request: Request) -> Response:
            ctx = await self.context(request)
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

    async def read_form(self, request: Request) -> dict[str, str]:
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
        form = await self.read_form(request)
        if not check(ctx.csrf, form.get("csrf")):
            raise Forbidden("Missing or invalid CSRF token: reload the page and try again")
        return form

    def cookie_secure(self, request: Request) -> bool:
        return self.sessions.is_https(request.url.scheme, request.client.host if request.client else None,
                                      request.headers.get("x-forwarded-proto"))

    async def source_names(self, ctx: Ctx) -> dict[str, str]:
        return await source_ops.source_names(self.store, ctx.principal)

    # --- requests -------------------------------------------------------------------------

    async def tail_filter(self, request: Request, ctx: Ctx) -> tuple[RequestFilter, RequestQuery]:
        q = request.query_params
        source_id = await request_ops.source_id_for(self.store, ctx.client, q.get("source"))
        query = request_query.parse(q, ctx.client, VERDICTS, STATES, source_id)
        return query.flt, query

    async def tail_items(self, flt: RequestFilter, ctx: Ctx) -> list[dict[str, Any]]:
        names = await self.source_names(ctx)
        out = []
        for s in await request_ops.list_requests(self.store, ctx.principal, flt):
            out.append({"id": s.id, "url": f"/ui/requests/{s.id}", "source_id": s.source_id,
                        "source": names.get(s.source_id or "", s.source_id or ""), "received_at": s.received_at,
                        "received": when(s.received_at), "verdict": s.verdict, "state": s.state,
                        "status": s.status, "rule": s.rule or "", "method": s.method, "body_size": s.body_size})
        return out

    async def request_view(self, request_id: str, ctx: Ctx) -> dict[str, Any]:
        detail, raw = await request_ops.get_request_with_body(self.store, ctx.principal, request_id)
        d = detail.model_dump()
        d["body_missing"] = raw is None
        d["body_text"] = d["body"][:TEXT_PREVIEW] if d["body"] is not None else None
        d["body_truncated"] = raw is not None and len(raw) > (TEXT_PREVIEW if d["body"] is not None else HEX_PREVIEW)
        d["body_hex"] = hexdump(raw[:HEX_PREVIEW]) if raw is not None and d["body"] is None else None
        d["body_base64"] = (d["body_base64"] or "")[:TEXT_PREVIEW] if d["body"] is None else None
        names = await self.source_names(ctx)
        d["source_name"] = names.get(d["source_id"] or "", d["source_id"] or "")
        d.update(await request_extras(self.store, d, ctx.principal, self.settings.base_url))
        return d
