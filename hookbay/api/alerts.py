"""Admin API routes for alert rules and alerts (``/api/v1/alert-rules``, ``/api/v1/alerts``).

A client token sees and sets only its own client's rules and alerts; global rules (no client) and
the server-wide conditions (processing lag, readiness) are the admin's, as is letting a channel
reach private addresses (the same rule as a source's ``allow_private_destinations``).
"""

# No "from __future__ import annotations": FastAPI resolves these annotations at runtime.

from typing import Any

import orjson
from fastapi import FastAPI, Query, Request, Response
from pydantic import BaseModel, Field

from hookbay.errors import BadRequest
from hookbay.ops import alert_rules as rule_ops
from hookbay.ops.alert_rules import RuleIn
from hookbay.store import Store


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


def add_alert_routes(app: FastAPI, store: Store, auth: Any, errors: dict[int | str, dict[str, Any]]) -> None:
    Auth = auth

    @app.get("/api/v1/alert-rules", response_model=list[RuleOut], responses=errors, tags=["alerts"])
    async def list_alert_rules(p: Auth, client_id: str | None = None) -> list[dict[str, Any]]:  # type: ignore[valid-type]
        return await rule_ops.list_rules(store, p, client_id)

    @app.post("/api/v1/alert-rules", response_model=RuleOut, status_code=201, responses=errors, tags=["alerts"])
    async def create_alert_rule(p: Auth, body: RuleIn) -> dict[str, Any]:  # type: ignore[valid-type]
        """A rule: a condition, its parameters and channels. A webhook channel without a secret gets
        one (shown here and in the rule, to verify messages with any Standard Webhooks library)."""
        return await rule_ops.create_rule(store, p, body)

    @app.get("/api/v1/alert-rules/{rule_id}", response_model=RuleOut, responses=errors, tags=["alerts"])
    async def get_alert_rule(p: Auth, rule_id: str) -> dict[str, Any]:  # type: ignore[valid-type]
        return await rule_ops.get_rule(store, p, rule_id)

    @app.patch("/api/v1/alert-rules/{rule_id}", response_model=RuleOut, responses=errors, tags=["alerts"],
               openapi_extra={"requestBody": {"required": True, "content": {
                   "application/merge-patch+json": {"schema": {"type": "object"}},
                   "application/json": {"schema": {"type": "object"}}}}})
    async def update_alert_rule(p: Auth, rule_id: str, request: Request) -> dict[str, Any]:  # type: ignore[valid-type]
        """JSON Merge Patch (RFC 7396) over the rule as shown: keys present change, ``null``
        removes, absent keys stay (``channels`` is a list, so it is replaced whole)."""
        await rule_ops.get_rule(store, p, rule_id)  # an unknown rule is a 404 before a bad body is a 400
        try:
            patch = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise BadRequest("The body is not valid JSON") from None
        if not isinstance(patch, dict):
            raise BadRequest("A merge patch is a JSON object")
        return await rule_ops.patch_rule(store, p, rule_id, patch)

    @app.delete("/api/v1/alert-rules/{rule_id}", status_code=204, responses=errors, tags=["alerts"])
    async def delete_alert_rule(p: Auth, rule_id: str) -> Response:  # type: ignore[valid-type]
        """Its open alerts are closed without a resolved message."""
        await rule_ops.delete_rule(store, p, rule_id)
        return Response(status_code=204)

    @app.get("/api/v1/alerts", response_model=list[AlertOut], responses=errors, tags=["alerts"])
    async def list_alerts(
        p: Auth,  # type: ignore[valid-type]
        state: str | None = Query(default=None, pattern="^(open|resolved)$"),
        rule_id: str | None = Query(default=None, max_length=40),
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        """Open and resolved alerts, newest first."""
        return await rule_ops.list_alerts(store, p, state=state, rule_id=rule_id, limit=limit)

    @app.get("/api/v1/alerts/{alert_id}", response_model=AlertOut, responses=errors, tags=["alerts"])
    async def get_alert(p: Auth, alert_id: str) -> dict[str, Any]:  # type: ignore[valid-type]
        return await rule_ops.get_alert(store, p, alert_id)
