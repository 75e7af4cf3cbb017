"""The request page's fixes: Replay first shows the dry-run diff and applies only on a second,
explicit step; Re-run actions lists the deliveries that would run again and queues exactly those
once confirmed; Resend sends the stored request to a URL typed in (:mod:`hookbay.ops.rerun`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from hookbay.console.base import Console, Ctx
from hookbay.ops import rerun


def diff_lines(diff: str) -> list[dict[str, str]]:
    """The unified diff as lines with a kind (add, del, hunk, head, same) for the stylesheet."""
    out = []
    for line in diff.splitlines():
        kind = ("head" if line.startswith(("+++", "---")) else "add" if line.startswith("+")
                else "del" if line.startswith("-") else "hunk" if line.startswith("@@") else "same")
        out.append({"kind": kind, "text": line})
    return out


async def replay(console: Console, request: Request, ctx: Ctx) -> Response:
    """Without ``apply``: the dry run, shown with an Apply button carrying its digest. With it: the
    replay, unless the dry run has changed since (then the new preview is shown instead)."""
    form = await console.form(request, ctx)
    rid = request.path_params["request_id"]
    stale = False
    if form.get("apply"):
        done = await rerun.apply_replay(console.store, console.cache, ctx.principal, rid,
                                        form.get("digest", "")[:64], console.parse_off_loop)
        if done.applied:
            return await _request(console, ctx, rid, replayed=done.item)
        preview, stale = done.item, True
    else:
        preview = await rerun.preview_replay(console.store, console.cache, ctx.principal, rid,
                                             console.parse_off_loop)
    preview["lines"] = diff_lines(preview.get("diff") or "")
    return await _request(console, ctx, rid, preview=preview, stale=stale)


async def _request(console: Console, ctx: Ctx, rid: str, **extra: Any) -> Response:
    return console.render(ctx, "request.html", req=await console.request_view(rid, ctx),
                          canonical=f"/ui/requests/{quote(rid)}", **{"replayed": None, "preview": None,
                                                                      "stale": False, "resent": None, **extra})


async def confirm_redeliver(console: Console, request: Request, ctx: Ctx) -> Response:
    rid = request.path_params["request_id"]
    plan = await rerun.redeliver_plan(console.store, ctx.principal, rid)
    return console.render(ctx, "redeliver.html", rid=rid, ready=plan["ready"], busy=plan["busy"])


async def redeliver(console: Console, request: Request, ctx: Ctx) -> Response:
    form = await console.form(request, ctx)
    rid = request.path_params["request_id"]
    ids = [i for i in form.get("ids", "").split(",") if i][:rerun.MAX_DELIVERIES]
    queued = await rerun.redeliver(console.store, ctx.principal, rid, ids)
    return RedirectResponse(f"/ui/requests/{quote(rid)}?redelivered={len(queued)}", status_code=303)


async def resend(console: Console, request: Request, ctx: Ctx) -> Response:
    """The answer of the typed URL (or why it was not sent) shown on the request page."""
    form = await console.form(request, ctx)
    rid = request.path_params["request_id"]
    url = form.get("url", "").strip()[:2000]
    out = await rerun.resend(console.store, ctx.principal, rid, url, allow_private=form.get("allow_private") == "1")
    return await _request(console, ctx, rid, resent=out)
