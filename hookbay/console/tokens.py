"""The Tokens page (admin only): API tokens and relay tokens listed, created (the secret shown once)
and revoked, through the same operations as the admin API (:mod:`hookbay.ops.tokens`,
:mod:`hookbay.ops.relay`). A client token gets a 403 page, as the API answers."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from hookbay.console.base import Console, Ctx
from hookbay.errors import Forbidden
from hookbay.ops import relay as relay_ops
from hookbay.ops import sources as source_ops
from hookbay.ops import tokens as token_ops
from hookbay.ops.tokens import TokenCreate


def _admin(ctx: Ctx) -> None:
    if not ctx.principal.is_admin:
        raise Forbidden("Only the admin token manages tokens")


async def page(console: Console, request: Request, ctx: Ctx, *, status: int = 200, **extra: Any) -> Response:
    _admin(ctx)
    values: dict[str, Any] = {"created": None, "form_error": None, "notice": None, "values": {},
                              "relay_created": None, "relay_error": None, **extra}
    notice = request.query_params.get("notice")
    if notice == "revoked":
        values["notice"] = "Token revoked: it stops working now, and its console sessions end."
    elif notice == "relay-revoked":
        values["notice"] = "Relay token revoked: an agent using it is refused from its next pull."
    relay_sources = [s for s in await source_ops.source_choices(console.store, ctx.principal) if s.relay]
    return console.render(ctx, "tokens.html", status=status, items=await token_ops.list_tokens(console.store, ctx.principal),
                          relay_items=await relay_ops.list_all_relay_tokens(console.store, ctx.principal),
                          relay_sources=relay_sources, canonical="/ui/tokens", **values)


async def create(console: Console, request: Request, ctx: Ctx) -> Response:
    _admin(ctx)
    form = await console.form(request, ctx)
    try:
        body = TokenCreate(name=form.get("name", "").strip(), client_id=form.get("client_id", "").strip() or None)
    except ValidationError as e:
        msg = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        return await page(console, request, ctx, status=400, form_error=msg, values=form)
    out = await token_ops.create_token(console.store, ctx.principal, body.name, body.client_id)
    return await page(console, request, ctx, created=out)


async def revoke(console: Console, request: Request, ctx: Ctx) -> Response:
    await console.form(request, ctx)
    await token_ops.revoke_token(console.store, ctx.principal, request.path_params["token_id"])
    return RedirectResponse("/ui/tokens?notice=revoked", status_code=303)


async def create_relay(console: Console, request: Request, ctx: Ctx) -> Response:
    _admin(ctx)
    form = await console.form(request, ctx)
    name = form.get("name", "").strip()[:200] or "agent"
    if not form.get("source_id"):
        return await page(console, request, ctx, status=400, relay_error="Choose the source the agent pulls.")
    made = await relay_ops.create_relay_token(console.store, ctx.principal, form["source_id"], name)
    listed = await relay_ops.list_all_relay_tokens(console.store, ctx.principal)
    out = {**made.model_dump(), "source_name": next((t.source_name for t in listed if t.id == made.id),
                                                     made.source_id)}
    return await page(console, request, ctx, relay_created=out)


async def revoke_relay(console: Console, request: Request, ctx: Ctx) -> Response:
    form = await console.form(request, ctx)
    await relay_ops.revoke_relay_token(console.store, ctx.principal, form.get("source_id", ""),
                                       request.path_params["relay_token_id"])
    return RedirectResponse("/ui/tokens?notice=relay-revoked", status_code=303)
