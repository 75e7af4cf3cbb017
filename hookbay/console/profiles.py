"""The Profiles pages: search by email, phone or name; a profile with each field's provenance (the
request and source that set it), the consent ledger, its records, orders and merges; export as a
JSON download and erasure after a confirmation that says what goes (:mod:`hookbay.ops.profiles`)."""

from __future__ import annotations

from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import Response

from hookbay.console.base import Console, Ctx
from hookbay.console.requests import _cursor
from hookbay.ops import profiles as profile_ops
from hookbay.ops import sources as source_ops

PAGE = 50
MAX_QUERY = 320


async def search(console: Console, request: Request, ctx: Ctx) -> Response:
    q = request.query_params.get("q", "").strip()[:MAX_QUERY]
    before = _cursor(request.query_params.get("before"))
    page = await profile_ops.search_profiles(console.store, ctx.principal, q, limit=PAGE, before=before)
    return console.render(ctx, "profiles.html", items=page["items"], q=q, next_cursor=page["next_cursor"],
                          kind=profile_ops.search_kind(q) if q else "")


async def detail(console: Console, request: Request, ctx: Ctx) -> Response:
    prof = await profile_ops.get_profile(console.store, ctx.principal, request.path_params["profile_id"])
    names = await source_ops.source_names(console.store, ctx.principal)
    records = await profile_ops.profile_records(console.store, prof)
    return console.render(ctx, "profile.html", prof=prof, names=names, records=records,
                          asked=request.path_params["profile_id"])


async def export(console: Console, request: Request, ctx: Ctx) -> Response:
    """Everything held about the customer (the API's export), as a file to hand over."""
    out = await profile_ops.export_profile(console.store, ctx.principal, request.path_params["profile_id"])
    pid = out["profile"]["id"]
    return Response(orjson.dumps(out, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS), media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{pid}.json"', "Cache-Control": "no-store"})


async def confirm_erase(console: Console, request: Request, ctx: Ctx) -> Response:
    prof = await profile_ops.get_profile(console.store, ctx.principal, request.path_params["profile_id"])
    return console.render(ctx, "profile_erase.html", prof=prof, erased=None, nav="profiles")


async def erase(console: Console, request: Request, ctx: Ctx) -> Response:
    form = await console.form(request, ctx)
    pid = request.path_params["profile_id"]
    prof = await profile_ops.get_profile(console.store, ctx.principal, pid)
    if form.get("confirm", "").strip() != prof["id"]:
        return console.render(ctx, "profile_erase.html", status=400, prof=prof, erased=None, nav="profiles",
                              error="Type the profile's id to confirm the erasure.",
                              canonical=f"/ui/profiles/{quote(prof['id'])}/erase")
    done = await profile_ops.erase_profile(console.store, ctx.principal, prof["id"])
    return console.render(ctx, "profile_erase.html", prof=prof, erased=done, nav="profiles",
                          canonical="/ui/profiles")
