"""`hookbay token …`: admin API tokens."""

from __future__ import annotations

from typing import Any

import typer

from hookbay.cli.common import JsonOpt, run_and_print
from hookbay.ops import tokens as token_ops
from hookbay.ops.access import Principal
from hookbay.settings import Settings, get_settings
from hookbay.store import Store

app = typer.Typer(help="Admin API tokens.", no_args_is_help=True)


@app.command("list")
def token_list(as_json: bool = JsonOpt) -> None:
    """List API tokens (never their values)."""

    async def go(store: Store, s: Settings) -> list[token_ops.TokenListed]:
        return await token_ops.list_tokens(store, Principal.cli())

    run_and_print(go, as_json, lambda rows: (f"{t.id}  {t.name}  client={t.client_id or '(admin)'}"
                                             for t in rows))


@app.command("revoke")
def token_revoke(token_id: str, as_json: bool = JsonOpt) -> None:
    """Revoke an API token at once."""

    async def go(store: Store, s: Settings) -> dict[str, str]:
        await token_ops.revoke_token(store, Principal.cli(), token_id)
        return {"revoked": token_id}

    run_and_print(go, as_json, lambda out: f"revoked {out['revoked']}")


@app.command("rotate-admin")
def token_rotate_admin(as_json: bool = JsonOpt) -> None:
    """Replace the generated admin token (printed once); a running server switches within seconds."""
    if get_settings().admin_token:
        typer.echo("error: the admin token comes from HOOKBAY_ADMIN_TOKEN; change it there", err=True)
        raise typer.Exit(2)

    async def go(store: Store, s: Settings) -> dict[str, str]:
        return {"admin_token": await token_ops.rotate_admin_token(store, Principal.cli())}

    run_and_print(go, as_json, lambda out: f"new admin token (shown once, store it now): {out['admin_token']}")


@app.command("create")
def token_create(
    name: str = typer.Option(...), client: str = typer.Option(None, help="Scope the token to one client"),
    as_json: bool = JsonOpt,
) -> None:
    """Create an API token (printed once)."""
    async def go(store: Store, s: Settings) -> dict[str, Any]:
        return (await token_ops.create_token(store, Principal.cli(), name, client)).model_dump()

    run_and_print(go, as_json, lambda out: f"{out['id']}  token (shown once): {out['token']}")

