"""The mapping editor: a source's mapping as YAML beside a preview of what the draft makes of the
source's last stored requests (or a pasted body), saved as a new version, then an offer to replay
the requests that failed. Everything goes through :mod:`hookbay.ops.mappings`."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hookbay.console.base import Console, Ctx
from hookbay.errors import HookbayError
from hookbay.ops import mappings as mapping_ops
from hookbay.ops import sources as source_ops

STARTER = """version: 1
target: contact
fields:
  Email: {expr: email}
  SourceName: {constant: Web}
  SourceType: {constant: Form}
"""


async def _page(console: Console, ctx: Ctx, sid: str, *, status: int = 200, **values: Any) -> Response:
    src = await source_ops.get_source(console.store, console.settings.base_url, ctx.principal, sid)
    saved = mapping_ops.to_yaml(src.config.mapping)
    page: dict[str, Any] = {"draft": saved or STARTER, "body": "", "content_type": "application/json",
                            "draft_errors": [], "preview": None, "saved_version": None, "failed": None,
                            "replayed": None, **values}
    return console.render(ctx, "sources_mapping.html", status=status, src=src, has_mapping=bool(saved),
                          canonical=f"/ui/sources/{quote(src.id)}/mapping", **page)


async def page(console: Console, request: Request, ctx: Ctx) -> Response:
    return await _page(console, ctx, request.path_params["source_id"])


async def submit(console: Console, request: Request, ctx: Ctx) -> Response:
    """``action=preview`` runs the draft and writes nothing; ``action=save`` stores it as the next
    version and counts the source's failed requests, to offer their replay."""
    form = await console.form(request, ctx)
    sid = request.path_params["source_id"]
    values: dict[str, Any] = {"draft": form.get("draft", "").replace("\r\n", "\n"),
                              "body": form.get("body", "").replace("\r\n", "\n"),
                              "content_type": form.get("content_type", "").strip() or "application/json"}
    try:
        draft = mapping_ops.parse_draft(values["draft"])
    except HookbayError as e:
        await source_ops.get_source(console.store, console.settings.base_url, ctx.principal, sid)  # theirs: 404
        return await _page(console, ctx, sid, status=422, draft_errors=e.detail or [{"path": "$", "message": e.message}],
                           error=e.message, **values)
    if form.get("action") == "save":
        try:
            out, version = await mapping_ops.save(console.store, console.cache, console.settings.base_url,
                                                  ctx.principal, sid, draft, settings=console.settings)
        except ValidationError as e:
            msgs = [{"path": ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in e.errors()]
            return await _page(console, ctx, sid, status=422, draft_errors=msgs, error="Not saved", **values)
        failed = await mapping_ops.failed_count(console.store, ctx.principal, out.id)
        return await _page(console, ctx, out.id, saved_version=version, failed=failed,
                           **{**values, "draft": mapping_ops.to_yaml(out.config.mapping)})
    body = values["body"].encode() if values["body"].strip() else None
    preview = await mapping_ops.preview(console.store, ctx.principal, sid, draft, settings=console.settings,
                                        body=body, content_type=values["content_type"],
                                        off_loop=console.parse_off_loop)
    return await _page(console, ctx, sid, preview=preview, **values)


async def replay_failed(console: Console, request: Request, ctx: Ctx) -> Response:
    """Replay the source's failed requests with the mapping now saved (the replay operation)."""
    await console.form(request, ctx)
    sid = request.path_params["source_id"]
    out = await mapping_ops.replay_failed(console.store, console.cache, ctx.principal, sid,
                                          off_loop=console.parse_off_loop)
    done = [i for i in out["items"] if "new_state" in i]
    fixed = sum(1 for i in done if i["new_state"] == "processed")
    return await _page(console, ctx, sid, replayed={"count": len(done), "fixed": fixed, "items": out["items"]},
                       notice=f"Replayed {len(done)} failed request(s): {fixed} processed now.")


def routes(console: Console) -> list[Route]:
    r = console.route
    return [
        Route("/ui/sources/{source_id}/mapping", r(lambda rq, c: page(console, rq, c)), methods=["GET"]),
        Route("/ui/sources/{source_id}/mapping", r(lambda rq, c: submit(console, rq, c)), methods=["POST"]),
        Route("/ui/sources/{source_id}/mapping/replay", r(lambda rq, c: replay_failed(console, rq, c)),
              methods=["POST"]),
    ]
