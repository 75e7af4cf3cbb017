"""`hookbay profiles …`: find, show, export and erase customer profiles."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import typer

from hookbay.cli.common import JsonOpt, run, run_and_print
from hookbay.ops import profiles as profile_ops
from hookbay.ops.access import Principal
from hookbay.settings import Settings
from hookbay.store import Store

app = typer.Typer(help="Customer profiles: find, show, export, erase.", no_args_is_help=True)


@app.command("find")
def profiles_find(
    email: str = typer.Option(None), phone: str = typer.Option(None), client: str = typer.Option(None),
    as_json: bool = JsonOpt,
) -> None:
    """Find profiles by email or phone (normalised the same way as incoming contacts)."""
    if not email and not phone:
        typer.echo("error: give --email or --phone", err=True)
        raise typer.Exit(2)

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        return await profile_ops.find_profiles(store, Principal.cli(), email=email, phone=phone, client_id=client)

    run_and_print(go, as_json, lambda found: (f"{p['id']}  {p['client_id']}  {p['email'] or '-'}  {p['phone'] or '-'}"
                                              for p in found))


@app.command("show")
def profiles_show(profile_id: str, as_json: bool = JsonOpt) -> None:
    """Show a profile: each field with the request that set it, current consent and the ledger."""
    async def go(store: Store, s: Settings) -> dict[str, Any]:
        return await profile_ops.get_profile(store, Principal.cli(), profile_id)

    run_and_print(go, as_json, _profile_lines)


def _profile_lines(p: dict[str, Any]) -> Iterator[str]:
    yield f"{p['id']}  client {p['client_id']}  updated {p['updated_at']}"
    for name, f in p["fields"].items():
        yield f"  {name:14} {orjson.dumps(f['value']).decode():40} {f['set_at']}  {f['request_id']}"
    for ch, c in p["consent"].items():
        yield f"  consent {ch:6} {'opt-in' if c['granted'] else 'opt-out'}  {c['occurred_at']}  {c['request_id']}"
    yield f"  ledger: {len(p['ledger'])} events; requests: {len(p['request_ids'])}"


@app.command("export")
def profiles_export(profile_id: str, out: Path = typer.Option(None, "--out", help="Write to this file")) -> None:
    """Export everything held about one profile as JSON."""
    async def go(store: Store, s: Settings) -> dict[str, Any]:
        return await profile_ops.export_profile(store, Principal.cli(), profile_id)

    data = orjson.dumps(run(go), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    if out:
        out.write_bytes(data)
        typer.echo(f"wrote {out}")
    else:
        sys.stdout.write(data.decode() + "\n")


@app.command("erase")
def profiles_erase(
    profile_id: str, yes: bool = typer.Option(False, "--yes", help="Do not ask"), as_json: bool = JsonOpt,
) -> None:
    """Erase a profile, its consent ledger, its records and its requests' raw bodies (logged)."""
    if not yes and not typer.confirm(f"Erase {profile_id} and the raw bodies of its requests?"):
        raise typer.Exit(1)

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        return await profile_ops.erase_profile(store, Principal.cli(), profile_id)

    run_and_print(go, as_json, lambda res: " ".join(f"{k}={v}" for k, v in res.items()))

