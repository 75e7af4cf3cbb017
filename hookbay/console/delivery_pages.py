"""Deliveries: the filtered list, one delivery with its input, and a retry."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from hookbay.actions.registry import ACTION_TYPES
from hookbay.console import deliveries as delivery_query
from hookbay.console import requests as request_query
from hookbay.console.base import DELIVERY_STATES, NOTICES, Console, Ctx
from hookbay.errors import HookbayError
from hookbay.ops import deliveries as delivery_ops
from hookbay.ops import sources as source_ops
from hookbay.ops.requests import source_id_for


async def deliveries(console: Console, request: Request, ctx: Ctx) -> Response:
    chosen = await _delivery_filter(console, request.query_params, ctx)
    page = await delivery_ops.list_deliveries(console.store, ctx.principal, **delivery_query.op_args(chosen),
                                              before=delivery_query.cursor(request.query_params),
                                              limit=delivery_query.PAGE)
    nxt = page["next_cursor"]
    return console.render(ctx, "deliveries.html", items=page["items"], state=chosen["state"],
                          chosen=chosen, states=DELIVERY_STATES, action_types=ACTION_TYPES,
                          ranges=request_query.RANGES, sources=await source_ops.source_choices(console.store, ctx.principal),
                          older=delivery_query.link(chosen, before=nxt) if nxt else "",
                          this=delivery_query.link(chosen),
                          notice=NOTICES.get(request.query_params.get("notice", "")))


async def _delivery_filter(console: Console, q: Any, ctx: Ctx) -> dict[str, str]:
    return delivery_query.parse(q, DELIVERY_STATES, await source_id_for(console.store, ctx.client, q.get("source")))


async def delivery_page(console: Console, request: Request, ctx: Ctx) -> Response:
    d = await delivery_ops.get_delivery(console.store, ctx.principal, request.path_params["delivery_id"])
    return console.render(ctx, "delivery.html", d=d, record=await delivery_ops.delivery_input(console.store, ctx.principal, d),
                          notice=NOTICES.get(request.query_params.get("notice", "")))


async def retry_delivery(console: Console, request: Request, ctx: Ctx) -> Response:
    await console.form(request, ctx)
    did = request.path_params["delivery_id"]
    try:
        await delivery_ops.retry_delivery(console.store, ctx.principal, did)
    except HookbayError as e:
        if e.status != 409:
            raise
        d = await delivery_ops.get_delivery(console.store, ctx.principal, did)
        return console.render(ctx, "delivery.html", status=409, d=d, error=e.message,
                              record=await delivery_ops.delivery_input(console.store, ctx.principal, d),
                              canonical=f"/ui/deliveries/{quote(did)}")
    return RedirectResponse(f"/ui/deliveries/{quote(did)}?notice=retried", status_code=303)
