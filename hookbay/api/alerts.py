"""Admin API routes for alert rules and alerts (``/api/v1/alert-rules``, ``/api/v1/alerts``).

A client token sees and sets only its own client's rules and alerts; global rules (no client) and
the server-wide conditions (processing lag, readiness) are the admin's, as is letting a channel
reach private addresses (the same rule as a source's ``allow_private_destinations``).
"""

# No "from __future__ import annotations": FastAPI resolves these annotations at runtime.

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError

from hookbay.changes import merge_patch
from hookbay.containment import ConfigRefused
from hookbay.errors import BadRequest
from hookbay.ops.alert_rules import RuleIn, alert_out, rule_out, save_rule
from hookbay.store import Store
from hookbay.store.alerts import AlertStore


class RuleOut(RuleIn):
    id: str
    created_at: str | None
    updated_at: str | None


class AlertOut(BaseModel):
    id: str
    rule_id: str
    client_id: str | None
    subject: str = Field(description="The source id the alert is about, or `system`")
    state: str = Field(description="open or resolved")
    summary: str
    detail: dict[str, Any]
    opened_at: str | None
    resolved_at: str | None
    notified_at: str | None = Field(description="When the last message (open, repeat, resolved) was sent")
    notifications: int
    last_error: str | None = Field(description="Why the last message failed on some channel, if it did")


def add_alert_routes(app: FastAPI, store: Store, auth: Any, scope_client: Callable[[Any, str | None], str | None],
                     errors: dict[int | str, dict[str, Any]]) -> None:
    Auth = auth
    alerts = AlertStore(store)

    @app.get("/api/v1/alert-rules", response_model=list[RuleOut], responses=errors, tags=["alerts"])
    async def list_alert_rules(p: Auth, client_id: str | None = None) -> list[dict[str, Any]]:  # type: ignore[valid-type]
        return [rule_out(r) for r in await alerts.list_rules(scope_client(p, client_id))]

    @app.post("/api/v1/alert-rules", response_model=RuleOut, status_code=201, responses=errors, tags=["alerts"])
    async def create_alert_rule(p: Auth, body: RuleIn) -> dict[str, Any]:  # type: ignore[valid-type]
        """A rule: a condition, its parameters and channels. A webhook channel without a secret gets
        one (shown here and in the rule, to verify messages with any Standard Webhooks library)."""
        return rule_out(await save_rule(store, p.is_admin, p.client_id, body))  # type: ignore[attr-defined]

    @app.get("/api/v1/alert-rules/{rule_id}", response_model=RuleOut, responses=errors, tags=["alerts"])
    async def get_alert_rule(p: Auth, rule_id: str) -> dict[str, Any]:  # type: ignore[valid-type]
        return rule_out(await alerts.get_rule(rule_id, scope_client(p, None)))

    @app.patch("/api/v1/alert-rules/{rule_id}", response_model=RuleOut, responses=errors, tags=["alerts"],
               openapi_extra={"requestBody": {"required": True, "content": {
                   "application/merge-patch+json": {"schema": {"type": "object"}},
                   "application/json": {"schema": {"type": "object"}}}}})
    async def update_alert_rule(p: Auth, rule_id: str, request: Request) -> dict[str, Any]:  # type: ignore[valid-type]
        """JSON Merge Patch (RFC 7396) over the rule as shown: keys present change, ``null``
        removes, absent keys stay (``channels`` is a list, so it is replaced whole)."""
        cur = await alerts.get_rule(rule_id, scope_client(p, None))
        try:
            patch = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise BadRequest("The body is not valid JSON") from None
        if not isinstance(patch, dict):
            raise BadRequest("A merge patch is a JSON object")
        shown = {k: v for k, v in rule_out(cur).items() if k not in ("id", "created_at", "updated_at")}
        try:
            body = RuleIn.model_validate(merge_patch(shown, patch))
        except ValidationError as e:
            raise ConfigRefused(detail=[{"path": ".".join(str(x) for x in err["loc"]), "message": err["msg"]}
                                        for err in e.errors()]) from None
        return rule_out(await save_rule(store, p.is_admin, p.client_id, body, cur))  # type: ignore[attr-defined]

    @app.delete("/api/v1/alert-rules/{rule_id}", status_code=204, responses=errors, tags=["alerts"])
    async def delete_alert_rule(p: Auth, rule_id: str) -> Response:  # type: ignore[valid-type]
        """Its open alerts are closed without a resolved message."""
        row = await alerts.get_rule(rule_id, scope_client(p, None))
        await alerts.delete_rule(row["id"])
        return Response(status_code=204)

    @app.get("/api/v1/alerts", response_model=list[AlertOut], responses=errors, tags=["alerts"])
    async def list_alerts(
        p: Auth,  # type: ignore[valid-type]
        state: str | None = Query(default=None, pattern="^(open|resolved)$"),
        rule_id: str | None = Query(default=None, max_length=40),
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        """Open and resolved alerts, newest first."""
        rows = await alerts.list_alerts(scope_client(p, None), state=state, rule_id=rule_id, limit=limit)
        return [alert_out(r) for r in rows]

    @app.get("/api/v1/alerts/{alert_id}", response_model=AlertOut, responses=errors, tags=["alerts"])
    async def get_alert(p: Auth, alert_id: str) -> dict[str, Any]:  # type: ignore[valid-type]
        return alert_out(await alerts.get_alert(alert_id, scope_client(p, None)))
