"""CLI for orders: ``hookbay orders [--profile ID] [--source REF] [--client C] [--since T]``.

Registered on the main app with one import line; like the other management commands it reads the
database directly, as the admin.
"""

from __future__ import annotations

from typing import Any

import typer

from hookbay.cli.main import JsonOpt, _print_json, _run, _time, app
from hookbay.orders import order_view
from hookbay.settings import Settings
from hookbay.store import Store


@app.command("orders")
def orders_list(
    profile: str = typer.Option(None, help="Only this buyer's orders (a merged-away profile id works)"),
    source: str = typer.Option(None, help="Only this source's orders (id, token or name)"),
    client: str = typer.Option(None, help="Only this client's orders"),
    since: str = typer.Option(None, help="Placed at or after: ISO-8601 or relative (3d)"),
    limit: int = typer.Option(100),
    as_json: bool = JsonOpt,
) -> None:
    """List orders, newest placed first, with their lines."""
    from hookbay.store.orders import OrderStore

    since_us = _time("--since", since)

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        source_id = (await store.get_source(source, client))["id"] if source else None
        rows = await OrderStore(store).list(client, profile_id=profile, source_id=source_id, since_us=since_us,
                                            limit=limit)
        return [order_view(r) for r in rows]

    rows = _run(go, as_json)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        typer.echo("no orders")
    for o in rows:
        typer.echo(f"{o['placed_at']}  {o['external_id']:>14}  {o['status'] or '-':12} {o['total']:>12} "
                   f"{o['currency']}  lines={len(o['lines'])}  buyer={o['profile_id'] or '-'}  {o['id']}")
