"""The playground: what a source's parser and actions make of a pasted body, nothing stored."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from hookbay.console.base import Console, Ctx
from hookbay.errors import BadRequest, PayloadTooLarge
from hookbay.ingest.endpoint import dry_run
from hookbay.ops import sources as source_ops


async def playground(console: Console, request: Request, ctx: Ctx) -> Response:
    """Paste a body, see what the source's parser and actions would make of it; nothing is
    stored and no action runs (the ``/V1/Test`` answer, without the sender's checks)."""
    sources = await source_ops.source_choices(console.store, ctx.principal)
    values = {"source": request.query_params.get("source", ""), "content_type": "application/json",
              "body": ""}
    result = None
    status = 200
    if request.method == "POST":
        form = await console.form(request, ctx)
        values = {"source": form.get("source", ""), "content_type": form.get("content_type", "").strip(),
                  "body": form.get("body", "")}
        sid = await source_ops.source_id(console.store, ctx.principal, values["source"])
        await console.cache.maybe_reload()
        src = await console.cache.get_by_id(sid)
        if src is None:
            raise BadRequest("This source's stored configuration does not load; fix it with the API or CLI")
        # browsers send a textarea's line breaks as CRLF; senders of JSON/NDJSON/CSV mostly use LF
        body = values["body"].replace("\r\n", "\n").encode()
        if len(body) > src.max_body:
            raise PayloadTooLarge(detail={"limit_bytes": src.max_body})
        if console.parse_off_loop is not None:
            result = await console.parse_off_loop(dry_run, body, values["content_type"] or None, src, console.settings)
        else:
            result = dry_run(body, values["content_type"] or None, src, console.settings)
        status = 200 if result["state"] == "processed" else 422
    return console.render(ctx, "playground.html", status=status, sources=sources, values=values, result=result,
                          canonical=f"/ui/playground?source={quote(values['source'])}" if result else None)
