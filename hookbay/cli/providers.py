"""`hookbay providers …`: provider connections per client (ProviderType 3 = Mailchimp, 7 = Acoustic),
through the same checks as the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError

from hookbay.cli.common import JsonOpt, run_and_print
from hookbay.errors import BadRequest
from hookbay.providers import ConnectionIn
from hookbay.settings import Settings
from hookbay.store import Store

app = typer.Typer(help="Provider connections per client (ProviderType 3 = Mailchimp, 7 = Acoustic).",
                  no_args_is_help=True)


def _valid(data: dict[str, Any]) -> ConnectionIn:
    try:
        return ConnectionIn.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "connection"
        raise BadRequest(f"{where}: {str(first['msg']).removeprefix('Value error, ')}") from None


async def _put(store: Store, s: Settings, conns: list[ConnectionIn]) -> list[dict[str, Any]]:
    from hookbay.containment import ConfigRefused
    from hookbay.ops.access import Principal
    from hookbay.ops.providers import put_connections

    try:
        return await put_connections(store, Principal.cli(), s, conns)
    except ConfigRefused as e:
        raise BadRequest(str((e.detail or [{}])[0].get("message", e.message))) from None


@app.command("add")
def providers_add(
    client: str = typer.Option(..., help="The client the connection is for"),
    type_: str = typer.Option(..., "--type", help="mailchimp or acoustic"),
    key_env: str = typer.Option(..., help="Environment variable holding the key (under HOOKBAY_SECRET_ENV_PREFIX)"),
    pod: str = typer.Option(None, help="Acoustic: the pod of the API host (us-1, eu-1, ...)"),
    as_json: bool = JsonOpt,
) -> None:
    """Create or replace a client's connection to a provider."""
    conn = _valid({"client_id": client, "type": type_, "key_env": key_env, "pod": pod})

    def text(rows: list[dict[str, Any]]) -> str:
        row = rows[0]
        missing = "" if row["key_present"] else f" (warning: {row['key_env']} is not set in this environment)"
        return f"{row['client_id']}: {row['type']} via {row['key_env']}{missing}"

    run_and_print(lambda store, s: _put(store, s, [conn]), as_json, text, json=lambda rows: rows[0])


@app.command("apply")
def providers_apply(file: Path, as_json: bool = JsonOpt) -> None:
    """Connections from YAML/JSON: a list of {client_id, type, key_env, pod}."""
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise BadRequest(f"{file}: {e}") from None
    if not isinstance(data, list):
        raise BadRequest(f"{file}: expected a list of connections")
    conns = [_valid(d if isinstance(d, dict) else {}) for d in data]
    run_and_print(lambda store, s: _put(store, s, conns), as_json,
                  lambda rows: f"applied {len(rows)} connection{'s' if len(rows) != 1 else ''}")


@app.command("list")
def providers_list(client: str = typer.Option(None, help="Only this client's connections"),
                   as_json: bool = JsonOpt) -> None:
    """List connections (never keys: only the variable names, and whether they are set here)."""
    from hookbay.ops.access import Principal
    from hookbay.ops.providers import list_connections

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        return await list_connections(store, Principal.cli(), client)

    run_and_print(go, as_json, lambda rows: [
        f"{r['client_id']:20} {r['type']:10} {r['key_env']}{' pod=' + r['pod'] if r['pod'] else ''}"
        f"{'' if r['key_present'] else '  (not set here)'}" for r in rows] or ["no provider connections"])


@app.command("remove")
def providers_remove(client: str = typer.Option(..., help="The client whose connection goes"),
                     type_: str = typer.Option(..., "--type", help="mailchimp or acoustic"),
                     as_json: bool = JsonOpt) -> None:
    """Remove a client's connection to a provider."""
    from hookbay.ops.access import Principal
    from hookbay.ops.providers import delete_connection

    async def go(store: Store, s: Settings) -> dict[str, str]:
        await delete_connection(store, Principal.cli(), client, type_)
        return {"client_id": client, "type": type_, "removed": "yes"}

    run_and_print(go, as_json, lambda out: f"removed {client}'s {type_} connection")
