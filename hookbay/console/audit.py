"""The Audit page: who changed what (sources, secrets, keys, tokens, profiles erased), from where,
and which checks a change weakened; filtered by action, actor, target, client and time, a page at a
time (:mod:`hookbay.ops.audit`). A client token sees only its own client's entries."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from hookbay.console.base import Console, Ctx
from hookbay.console.requests import RANGES, _cursor
from hookbay.ops import audit as audit_ops

FIELDS = ("action", "actor", "target", "client", "range")
PAGE = 50


async def page(console: Console, request: Request, ctx: Ctx) -> Response:
    q = request.query_params
    chosen = {k: (q.get(k) or "").strip()[:200] for k in FIELDS}
    if chosen["range"] not in RANGES:
        chosen["range"] = ""
    if not ctx.principal.is_admin:
        chosen["client"] = ""  # a client's entries are its own: nothing to choose
    out = await audit_ops.list_audit(console.store, ctx.principal, since=chosen["range"] or None,
                                     before=_cursor(q.get("before")), limit=PAGE,
                                     client_id=chosen["client"] or None, action=chosen["action"] or None,
                                     actor=chosen["actor"] or None, target=chosen["target"] or None)
    params = {k: v for k, v in chosen.items() if v}
    older = "?" + urlencode({**params, "before": out["next_cursor"]}) if out["next_cursor"] else ""
    return console.render(ctx, "audit.html", items=out["items"], chosen=chosen, ranges=RANGES, older=older)
