"""Alert rules as the API and ``hookbay alerts`` set them, with the containment checks: a client
sets only its own client's rules; global rules, the server-wide conditions and channels that reach
private addresses are the admin's. (The evaluator that acts on the rules is :mod:`hookbay.ops.alerts`.)
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError

from hookbay.changes import merge_patch
from hookbay.containment import ConfigRefused
from hookbay.errors import BadRequest, Forbidden, NotFound
from hookbay.ops.access import Principal, scope_client
from hookbay.ops.alerts import SYSTEM_CONDITIONS, RuleDefinition, SlackChannel, WebhookChannel
from hookbay.store import StoreInterface
from hookbay.store.alert_rows import StoredAlert, StoredAlertRule
from hookbay.store.alerts import AlertStore
from hookbay.views import iso

RULE_FIELDS = ("name", "client_id", "enabled")


class RuleIn(RuleDefinition):
    name: str = Field(min_length=1, max_length=200)
    client_id: str | None = Field(default=None, max_length=100, description=(
        "The client whose sources the rule watches; null = every client (admin only). A client token's "
        "rules are always its own client's"))
    enabled: bool = True


def rule_out(row: StoredAlertRule) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "client_id": row.client_id, "enabled": row.enabled,
            **row.definition, "created_at": iso(row.created_at), "updated_at": iso(row.updated_at)}


def alert_out(row: StoredAlert) -> dict[str, Any]:
    return {"id": row.id, "rule_id": row.rule_id, "client_id": row.client_id, "subject": row.subject,
            "state": row.state, "summary": row.summary, "detail": row.detail,
            "opened_at": iso(row.opened_at), "resolved_at": iso(row.resolved_at),
            "notified_at": iso(row.notified_at), "notifications": row.notifications,
            "last_error": row.last_error}


def _urls(d: RuleDefinition) -> set[str]:
    return {c.url for c in d.channels if isinstance(c, WebhookChannel | SlackChannel)}


async def save_rule(store: StoreInterface, is_admin: bool, own_client: str | None, body: RuleIn,
                    current: StoredAlertRule | None = None) -> StoredAlertRule:
    """Create (``current`` None) or replace a rule after the containment checks; shared by the API
    and ``hookbay alerts apply`` (which runs as the admin)."""
    alerts = AlertStore(store)
    client = body.client_id
    if not is_admin:
        client = own_client if client is None else client
        if client != own_client:
            raise NotFound("Not Found")
        if body.condition in SYSTEM_CONDITIONS:
            raise Forbidden(f"Only an admin may set a rule on the server-wide condition {body.condition}")
        if body.allow_private_destinations:
            cur = RuleDefinition.model_validate(current.definition) if current else None
            if cur is None or not cur.allow_private_destinations or not _urls(body) <= _urls(cur):
                raise Forbidden("Only an admin may let alert channels reach private addresses",
                                detail=[{"path": "allow_private_destinations",
                                         "message": "only an admin may let channels reach private addresses"}])
    if current is not None and client != current.client_id:
        raise BadRequest("A rule's client_id cannot be changed; create a new rule")
    d = RuleDefinition.model_validate(body.model_dump(exclude=set(RULE_FIELDS))).with_secrets()
    if d.source_id is not None:
        try:
            d.source_id = (await store.get_source(d.source_id, client)).id
        except NotFound:
            raise ConfigRefused(detail=[{"path": "source_id", "message": "no such source"}]) from None
    definition = d.model_dump(exclude_none=True)
    if current is None:
        return await alerts.create_rule(client, body.name, body.enabled, definition)
    return await alerts.update_rule(current.id, body.name, body.enabled, definition)


async def list_rules(store: StoreInterface, p: Principal, client_id: str | None = None) -> list[dict[str, Any]]:
    """The rules a caller sees: a client its own client's (global rules are the admin's)."""
    return [rule_out(r) for r in await AlertStore(store).list_rules(scope_client(p, client_id))]


async def get_rule(store: StoreInterface, p: Principal, rule_id: str) -> dict[str, Any]:
    return rule_out(await AlertStore(store).get_rule(rule_id, scope_client(p, None)))


async def create_rule(store: StoreInterface, p: Principal, body: RuleIn) -> dict[str, Any]:
    return rule_out(await save_rule(store, p.is_admin, p.client_id, body))


async def patch_rule(store: StoreInterface, p: Principal, rule_id: str, patch: dict[str, Any]) -> dict[str, Any]:
    """JSON Merge Patch (RFC 7396) over the rule as shown."""
    cur = await AlertStore(store).get_rule(rule_id, scope_client(p, None))
    shown = {k: v for k, v in rule_out(cur).items() if k not in ("id", "created_at", "updated_at")}
    try:
        body = RuleIn.model_validate(merge_patch(shown, patch))
    except ValidationError as e:
        raise ConfigRefused(detail=[{"path": ".".join(str(x) for x in err["loc"]), "message": err["msg"]}
                                    for err in e.errors()]) from None
    return rule_out(await save_rule(store, p.is_admin, p.client_id, body, cur))


async def delete_rule(store: StoreInterface, p: Principal, rule_id: str) -> None:
    """Its open alerts are closed without a resolved message; an unknown (or another client's) id is a 404."""
    alerts = AlertStore(store)
    row = await alerts.get_rule(rule_id, scope_client(p, None))
    await alerts.delete_rule(row.id)


async def apply_rules(store: StoreInterface, p: Principal, bodies: list[RuleIn], *, dry_run: bool = False) -> list[dict[str, Any]]:
    """Create or replace each rule, matched by (client_id, name); a rule equal to the stored one is
    left alone, so applying the same file twice changes nothing. Rules not listed stay."""
    alerts = AlertStore(store)
    plan = []
    for body in bodies:
        if body.source_id is not None:  # a name or token is stored as the id: compare with that
            body = body.model_copy(update={"source_id": (await store.get_source(body.source_id, body.client_id)).id})
        cur = await alerts.find_rule(body.client_id, body.name)
        if cur is not None:
            shown = {k: v for k, v in rule_out(cur).items() if k not in ("id", "created_at", "updated_at")}
            wanted = body.model_dump(exclude_none=True)
            # a webhook channel without a secret keeps the one it has (apply stays idempotent)
            for i, ch in enumerate(wanted.get("channels", [])):
                old = shown.get("channels", [])
                if ch["type"] == "webhook" and "secret" not in ch and i < len(old) and old[i].get("url") == ch["url"]:
                    ch["secret"] = old[i].get("secret")
            if wanted == {k: v for k, v in shown.items() if v is not None}:
                plan.append({"name": body.name, "client_id": body.client_id, "action": "unchanged", "id": cur.id})
                continue
            body = RuleIn.model_validate(wanted)
        action = "created" if cur is None else "changed"
        row = cur if dry_run else await save_rule(store, p.is_admin, p.client_id, body, cur)
        plan.append({"name": body.name, "client_id": body.client_id, "action": action,
                     "id": row.id if row else None})
    return plan


async def list_alerts(store: StoreInterface, p: Principal, *, state: str | None = None, rule_id: str | None = None,
                      limit: int = 100) -> list[dict[str, Any]]:
    """Alerts newest first; a rule named by id must be one the caller sees (else 404)."""
    client = scope_client(p, None)
    if rule_id is not None:
        rule_id = (await AlertStore(store).get_rule(rule_id, client)).id
    return [alert_out(r) for r in await AlertStore(store).list_alerts(client, state=state, rule_id=rule_id,
                                                                      limit=limit)]


async def get_alert(store: StoreInterface, p: Principal, alert_id: str) -> dict[str, Any]:
    return alert_out(await AlertStore(store).get_alert(alert_id, scope_client(p, None)))


def channel_summary(channel: dict[str, Any]) -> str:
    """Where a channel sends, without its secret or the secret part of a URL (a Slack hook's path)."""
    from urllib.parse import urlsplit

    if channel.get("type") == "email":
        return f"email {channel.get('to', '')}"
    host = urlsplit(str(channel.get("url", ""))).hostname or "?"
    return f"{channel.get('type')} {host}"
