"""`hookbay orders`: orders with their lines, read as the admin."""

from __future__ import annotations

from typing import Any

import typer

from hookbay.cli.common import OPT_FILTER_CLIENT, JsonOpt, run_and_print, time_option
from hookbay.settings import Settings
from hookbay.store import Store

commands = typer.Typer()


@commands.command("orders")
def orders_list(
    profile: str = typer.Option(None, help="Only this buyer's orders (a merged-away profile id works)"),
    source: str = typer.Option(None, help="Only this source's orders (id, token or name)"),
    since: str = typer.Option(None, help="Placed at or after: ISO-8601 or relative (3d)"),
    limit: int = typer.Option(100),
    client: str = OPT_FILTER_CLIENT,
    as_json: bool = JsonOpt,
) -> None:
    """List orders, newest placed first, with their lines."""
    from hookbay.ops.access import Principal
    from hookbay.ops.orders import list_orders

    time_option("--since", since)  # a bad time names the flag

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        return await list_orders(store, Principal.cli(), profile=profile, source=source, since=since,
                                 client_id=client, limit=limit)

    run_and_print(go, as_json, lambda rows: [
        f"{o['placed_at']}  {o['external_id']:>14}  {o['status'] or '-':12} {o['total']:>12} "
        f"{o['currency']}  lines={len(o['lines'])}  buyer={o['profile_id'] or '-'}  {o['id']}" for o in rows
    ] or ["no orders"])
