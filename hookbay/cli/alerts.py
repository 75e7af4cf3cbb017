"""CLI for alerts: ``hookbay alerts`` (open and resolved alerts), ``alerts rules``, ``alerts apply
FILE`` (rules from YAML/JSON, matched by client and name) and ``alerts delete-rule``.

Added to the root command as ``alerts`` by ``cli/app.py``; like the other management commands it talks to the
database directly, as the admin, through the same checks as the API (``save_rule``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError

from hookbay.cli.common import JsonOpt, run_and_print
from hookbay.errors import BadRequest
from hookbay.settings import Settings
from hookbay.store import Store

app = typer.Typer(help="Alert rules and alerts (open and resolved).", invoke_without_command=True)


@app.callback()
def alerts_list(
    ctx: typer.Context,
    state: str = typer.Option(None, help="open or resolved (default: both)"),
    rule: str = typer.Option(None, help="Only this rule's alerts"),
    limit: int = typer.Option(100),
    as_json: bool = JsonOpt,
) -> None:
    """List alerts, newest first (with no subcommand)."""
    if ctx.invoked_subcommand is not None:
        return
    if state not in (None, "open", "resolved"):
        raise BadRequest("--state must be open or resolved")
    from hookbay.ops.alert_rules import alert_out
    from hookbay.store.alerts import AlertStore

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        return [alert_out(r) for r in await AlertStore(store).list_alerts(state=state, rule_id=rule, limit=limit)]

    run_and_print(go, as_json, _alert_lines)


def _alert_lines(rows: list[dict[str, Any]]) -> Iterator[str]:
    if not rows:
        yield "no alerts"
    for a in rows:
        end = f" -> {a['resolved_at']}" if a["resolved_at"] else ""
        yield (f"{a['state']:8} {a['opened_at']}{end}  {a['id']}  rule={a['rule_id']}  {a['summary']}"
               + (f"  [send failed: {a['last_error']}]" if a["last_error"] else ""))


@app.command("rules")
def alerts_rules(client: str = typer.Option(None, help="Only this client's rules"), as_json: bool = JsonOpt) -> None:
    """List alert rules."""
    from hookbay.ops.alert_rules import rule_out
    from hookbay.store.alerts import AlertStore

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        return [rule_out(r) for r in await AlertStore(store).list_rules(client)]

    run_and_print(go, as_json, _rule_lines)


def _rule_lines(rows: list[dict[str, Any]]) -> Iterator[str]:
    for r in rows:
        chans = ",".join(c["type"] for c in r.get("channels", [])) or "-"
        yield (f"{r['id']}  {r['client_id'] or '(global)':12} {r['name']!r}  {r['condition']}  "
               f"channels={chans}{'' if r['enabled'] else '  (disabled)'}")


@app.command("apply")
def alerts_apply(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="YAML/JSON: a list of rules, or {rules: [...]}"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would change, change nothing"),
    as_json: bool = JsonOpt,
) -> None:
    """Create or update rules from a file, each matched by (client_id, name); rules not in the file stay."""
    from hookbay.ops.alert_rules import RuleIn, rule_out, save_rule
    from hookbay.store.alerts import AlertStore

    doc = yaml.safe_load(file.read_text())
    items = doc.get("rules") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise BadRequest(f"{file}: expected a list of rules (or a mapping with `rules:`)")
    try:
        bodies = [RuleIn.model_validate(x) for x in items]
    except ValidationError as e:
        raise BadRequest(f"{file}: " + "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())) from None

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        alerts = AlertStore(store)
        plan = []
        for body in bodies:
            if body.source_id is not None:  # a name or token is stored as the id: compare with that
                body = body.model_copy(update={"source_id": (await store.get_source(body.source_id, body.client_id))["id"]})
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
                    plan.append({"name": body.name, "client_id": body.client_id, "action": "unchanged",
                                 "id": cur["id"]})
                    continue
                body = RuleIn.model_validate(wanted)
            action = "created" if cur is None else "changed"
            row = cur if dry_run else await save_rule(store, True, None, body, cur)
            plan.append({"name": body.name, "client_id": body.client_id, "action": action,
                         "id": row["id"] if row else None})
        return plan

    def lines(plan: list[dict[str, Any]]) -> Iterator[str]:
        yield from (f"{p['action']:9} {p['client_id'] or '(global)'} {p['name']!r}  {p['id'] or ''}" for p in plan)
        if dry_run:
            yield "dry run: nothing changed"

    run_and_print(go, as_json, lines)


@app.command("delete-rule")
def alerts_delete_rule(rule_id: str, as_json: bool = JsonOpt) -> None:
    """Delete a rule; its open alerts are closed without a resolved message."""
    from hookbay.store.alerts import AlertStore

    async def go(store: Store, s: Settings) -> dict[str, str]:
        await AlertStore(store).delete_rule(rule_id)
        return {"deleted": rule_id}

    run_and_print(go, as_json, lambda out: f"deleted {out['deleted']}")
