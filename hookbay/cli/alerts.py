"""CLI for alerts: ``hookbay alerts`` (open and resolved alerts), ``alerts rules``, ``alerts apply
FILE`` (rules from YAML/JSON, matched by client and name) and ``alerts delete-rule``.

Added to the root command as ``alerts`` by ``cli/app.py``; like the other management commands it runs
the use cases in ``ops/alert_rules.py`` as the admin, with the same checks as the API.
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
from hookbay.ops.access import Principal
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
    from hookbay.ops.alert_rules import list_alerts

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        return await list_alerts(store, Principal.cli(), state=state, rule_id=rule, limit=limit)

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
    from hookbay.ops.alert_rules import list_rules

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        return await list_rules(store, Principal.cli(), client)

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
    from hookbay.ops.alert_rules import RuleIn, apply_rules

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
        return await apply_rules(store, Principal.cli(), bodies, dry_run=dry_run)

    def lines(plan: list[dict[str, Any]]) -> Iterator[str]:
        yield from (f"{p['action']:9} {p['client_id'] or '(global)'} {p['name']!r}  {p['id'] or ''}" for p in plan)
        if dry_run:
            yield "dry run: nothing changed"

    run_and_print(go, as_json, lines)


@app.command("delete-rule")
def alerts_delete_rule(rule_id: str, as_json: bool = JsonOpt) -> None:
    """Delete a rule; its open alerts are closed without a resolved message."""
    from hookbay.ops.alert_rules import delete_rule

    async def go(store: Store, s: Settings) -> dict[str, str]:
        await delete_rule(store, Principal.cli(), rule_id)
        return {"deleted": rule_id}

    run_and_print(go, as_json, lambda out: f"deleted {out['deleted']}")
