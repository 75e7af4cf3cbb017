"""The Alerts page: open and resolved alerts with the rule that raised each, and the rules
themselves (what they watch and where they send, never a channel's secret), through
:mod:`hookbay.ops.alert_rules`. Rules are set with the API or ``hookbay alerts``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hookbay.console.base import Console, Ctx
from hookbay.ops import alert_rules
from hookbay.ops import sources as source_ops

STATES = ("open", "resolved")
PARAMS = ("minutes", "threshold", "count", "min_requests", "seconds", "repeat_minutes")


async def page(console: Console, request: Request, ctx: Ctx) -> Response:
    q = request.query_params
    state = q.get("state", "") if q.get("state", "") in STATES else ""
    rule_id = (q.get("rule") or "").strip()[:40] or None
    alerts = await alert_rules.list_alerts(console.store, ctx.principal, state=state or None, rule_id=rule_id)
    rules = await alert_rules.list_rules(console.store, ctx.principal)
    names = await source_ops.source_names(console.store, ctx.principal)
    by_id = {r["id"]: r for r in rules}
    for r in rules:
        r["params"] = ", ".join(f"{k} {r[k]}" for k in PARAMS if r.get(k) is not None
                                and not (k == "count" and r["condition"] != "error_ratio")
                                and not (k == "min_requests" and r["condition"] != "error_ratio"))
        r["channel_list"] = [alert_rules.channel_summary(c) for c in r.get("channels") or []]
        r["source_name"] = names.get(r.get("source_id") or "", r.get("source_id") or "")
    for a in alerts:
        a["rule_name"] = by_id.get(a["rule_id"], {}).get("name", a["rule_id"])
        a["subject_name"] = names.get(a["subject"], a["subject"])
    return console.render(ctx, "alerts.html", alerts=alerts, rules=rules, state=state, rule_id=rule_id or "",
                          states=STATES, rule_name=by_id[rule_id]["name"] if rule_id in by_id else "")
