"""Signing in with a pasted token, and out: the login form carries its own CSRF token (tied to a
nonce cookie, as there is no session yet); success starts a session cookie.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from hookbay.console.base import Console, Ctx, safe_next
from hookbay.console.session import (
    COOKIE_PATH,
    LOGIN_COOKIE,
    LOGIN_NONCE_SECONDS,
    SESSION_COOKIE,
    Sessions,
    check,
)
from hookbay.errors import PayloadTooLarge, Unauthorized
from hookbay.ops.tokens import principal_for_token
from hookbay.store import hash_secret


async def to_slash(console: Console, request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=308)


async def login_page(console: Console, request: Request) -> Response:
    if await console.context(request) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return await _login_form(console, request)


async def _login_form(console: Console, request: Request, error: str | None = None, status: int = 200,
                      next_path: str | None = None) -> Response:
    nonce = request.cookies.get(LOGIN_COOKIE) or ""
    fresh = not re.fullmatch(r"[A-Za-z0-9_-]{32}", nonce)
    if fresh:
        nonce = Sessions.new_nonce()
    resp = console.render(None, "login.html", status=status, login_csrf=await console.sessions.login_csrf_token(nonce),
                          next=safe_next(next_path or request.query_params.get("next")), login_error=error)
    if fresh:
        resp.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_NONCE_SECONDS, path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=console.cookie_secure(request))
    return resp


async def login_submit(console: Console, request: Request) -> Response:
    """Check the pasted token with the admin API's own check; on success start a session."""
    try:
        form = await console.read_form(request)
    except PayloadTooLarge as e:
        return console.render(None, "error.html", status=413, status_code=413, message=e.message)
    nonce = request.cookies.get(LOGIN_COOKIE) or ""
    if not nonce or not check(await console.sessions.login_csrf_token(nonce), form.get("csrf")):
        return console.render(None, "error.html", status=403, status_code=403,
                              message="Missing or invalid CSRF token: reload the login page and try again")
    token = form.get("token", "").strip()
    try:
        if not token:
            raise Unauthorized("Paste a token")
        await principal_for_token(console.store, console.admin_hash_ref, token)
    except Unauthorized:
        return await _login_form(console, request, "That token is not valid.", status=401, next_path=form.get("next"))
    cookie = await console.sessions.issue(hash_secret(token))
    resp = RedirectResponse(safe_next(form.get("next")), status_code=303)
    resp.set_cookie(SESSION_COOKIE, cookie, path=COOKIE_PATH, httponly=True, samesite="strict",
                    secure=console.cookie_secure(request))
    resp.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return resp


async def logout(console: Console, request: Request, ctx: Ctx) -> Response:
    await console.form(request, ctx)
    await console.sessions.revoke(ctx.session)
    resp = RedirectResponse("/ui/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict",
                       secure=console.cookie_secure(request))
    return resp
