"""`hookbay keys …`: encryption keys for data at rest."""

from __future__ import annotations

import typer

from hookbay.cli.common import JsonOpt, run_and_print
from hookbay.ops.access import Principal
from hookbay.ops.keys import reencrypt
from hookbay.settings import Settings
from hookbay.store import Store

app = typer.Typer(help="Encryption keys for data at rest.", no_args_is_help=True)


@app.command("generate")
def keys_generate(kid: str = typer.Option("k1", help="Key id")) -> None:
    """Print a new key entry for HOOKBAY_ENCRYPTION_KEY (put it first; keep old ones after it)."""
    from hookbay.crypto import generate_key

    typer.echo(f"{kid}:{generate_key()}")


@app.command("rotate")
def keys_rotate(batch: int = typer.Option(500, help="Rows per transaction"), as_json: bool = JsonOpt) -> None:
    """Re-encrypt stored bodies, headers and secrets with the first (active) key, batch by batch,
    while the server runs. Afterwards older keys can be removed from HOOKBAY_ENCRYPTION_KEY."""

    async def go(store: Store, s: Settings) -> dict[str, int]:
        return await reencrypt(store, Principal.cli(), batch)

    run_and_print(go, as_json, lambda res: f"re-encrypted {res['requests']} request(s) and {res['secrets']} secret(s)")

