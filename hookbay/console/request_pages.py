"""The request log: the live tail (its page, and the JSON console.js polls), one request, and its
raw body as a download.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hookbay.console import requests as request_query
from hookbay.console.base import STATES, VERDICTS, Console, Ctx
from hookbay.errors import NotFound
from hookbay.ids import now_us
from hookbay.ops import requests as request_ops
from hookbay.ops import sources as source_ops
from hookbay.views import iso


async def tail(console: Console, request: Request, ctx: Ctx) -> Response:
    """Filtered, paged requests; on the first page console.js polls :func:`tail_json` with the
    same filters to keep the table current."""
    _, query = await console.tail_filter(request, ctx)
    rows, older, newer = request_query.page_of(query, await console.tail_items(query.flt, ctx))
    return console.render(ctx, "requests.html", items=rows, chosen=query.chosen, query=query, older=older,
                          newer=newer, filter_errors=query.errors, ranges=request_query.RANGES,
                          sources=await source_ops.source_choices(console.store, ctx.principal), verdicts=VERDICTS,
                          states=STATES)


async def tail_json(console: Console, request: Request) -> Response:
    ctx = await console.context(request)
    if ctx is None:
        return JSONResponse({"error": {"code": "unauthorized", "message": "Log in again"}}, status_code=401,
                            headers={"Cache-Control": "no-store"})
    try:
        _, query = await console.tail_filter(request, ctx)
        flt = request_query.tail_filter(query)
    except NotFound:
        return JSONResponse({"error": {"code": "not_found", "message": "Not Found"}}, status_code=404)
    return JSONResponse({"items": await console.tail_items(flt, ctx), "at": iso(now_us())},
                        headers={"Cache-Control": "no-store"})


async def request_page(console: Console, request: Request, ctx: Ctx) -> Response:
    req = await console.request_view(request.path_params["request_id"], ctx)
    n = request.query_params.get("redelivered", "")
    notice = f"{int(n)} deliver{'y' if n == '1' else 'ies'} queued to run again now." if n.isdigit() else None
    return console.render(ctx, "request.html", req=req, replayed=None, preview=None, stale=False, resent=None,
                          notice=notice)


async def request_body(console: Console, request: Request, ctx: Ctx) -> Response:
    """The exact bytes, as a download: never rendered by the browser as the sender's HTML."""
    rid = request.path_params["request_id"]
    body, _ = await request_ops.request_body(console.store, ctx.principal, rid)
    return Response(body, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{rid}.bin"',
                             "Cache-Control": "no-store"})
