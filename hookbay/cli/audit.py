"""`hookbay audit`: the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer

from hookbay.cli.common import JsonOpt, run_and_print, time_option
from hookbay.ops import audit as audit_ops
from hookbay.ops.access import Principal
from hookbay.settings import Settings
from hookbay.store import Store

commands = typer.Typer()


@commands.command("audit")
def audit_cmd(
    since: str = typer.Option(None, "--since", help="ISO-8601 time or relative (15m, 2h, 3d)"),
    client: str = typer.Option(None, "--client", help="Only this client's entries"),
    limit: int = typer.Option(100, "--limit", min=1, help="Most entries, newest first"),
    as_json: bool = JsonOpt,
) -> None:
    """Show the audit log: who changed which source, secret, key or token, what and from where."""
    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        time_option("--since", since)  # a bad value is named by its flag
        page = await audit_ops.list_audit(store, Principal.cli(), since=since, limit=limit, client_id=client)
        items: list[dict[str, Any]] = page["items"]
        return items

    run_and_print(go, as_json, _entry_lines)


def _entry_lines(rows: list[dict[str, Any]]) -> Iterator[str]:
    for e in rows:
        who = e["actor"] + (f" ({e['token_id']})" if e["token_id"] else "")
        yield (f"{e['at']}  {e['action']:20} {e['target'] or '-'}  client={e['client_id'] or '-'}  "
               f"by {who} from {e['peer'] or '-'}")
        yield from (f"    {line}" for line in e["changes"])
        yield from (f"    WEAKENS: {line}" for line in e["weakens"])

