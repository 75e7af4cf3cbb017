"""CLI for provider connections: ``hookbay providers add --client C --type mailchimp|acoustic
--key-env NAME [--pod us-1]``, ``providers list``, ``providers remove``, ``providers apply FILE``.

Registered on the main app with one import line; it talks to the database directly, as the admin,
through the same checks as the API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError

from hookbay.cli.main import JsonOpt, _print_json, _run, app
from hookbay.errors import BadRequest
from hookbay.settings import Settings
from hookbay.store import Store

providers_app = typer.Typer(help="Provider connections per client (ProviderType 3 = Mailchimp, 7 = Acoustic).")
app.add_typer(providers_app, name="providers")


def _valid(data: dict[str, Any]) -> Any:
    from hookbay.providers import ConnectionIn

    try:
        return ConnectionIn.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "connection"
        raise BadRequest(f"{where}: {str(first['msg']).removeprefix('Value error, ')}") from None


async def _put(store: Store, s: Settings, conns: list[Any]) -> list[dict[str, Any]]:
    from hookbay.api.providers import check_connection, connection_out
    from hookbay.audit import AuditEntry, cli_actor
    from hookbay.containment import ConfigRefused
    from hookbay.store.providers import ProviderStore

    out = []
    for c in conns:
        try:
            check_connection(c, s)
        except ConfigRefused as e:
            raise BadRequest(str((e.detail or [{}])[0].get("message", e.message))) from None
        out.append(connection_out(await ProviderStore(store).put(
            c.client_id, c.type, c.key_env, c.pod, audit=AuditEntry("provider.put", cli_actor()))))
    return out


@providers_app.command("add")
def providers_add(
    client: str = typer.Option(..., help="The client the connection is for"),
    type_: str = typer.Option(..., "--type", help="mailchimp or acoustic"),
    key_env: str = typer.Option(..., help="Environment variable holding the key (under HOOKBAY_SECRET_ENV_PREFIX)"),
    pod: str = typer.Option(None, help="Acoustic: the pod of the API host (us-1, eu-1, ...)"),
    as_json: bool = JsonOpt,
) -> None:
    """Create or replace a client's connection to a provider."""
    conn = _valid({"client_id": client, "type": type_, "key_env": key_env, "pod": pod})
    [row] = _run(lambda store, s: _put(store, s, [conn]), as_json)
    if as_json:
        _print_json(row)
    else:
        missing = "" if row["key_present"] else f" (warning: {row['key_env']} is not set in this environment)"
        typer.echo(f"{row['client_id']}: {row['type']} via {row['key_env']}{missing}")


@providers_app.command("apply")
def providers_apply(file: Path, as_json: bool = JsonOpt) -> None:
    """Connections from YAML/JSON: a list of {client_id, type, key_env, pod}."""
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise BadRequest(f"{file}: {e}") from None
    if not isinstance(data, list):
        raise BadRequest(f"{file}: expected a list of connections")
    conns = [_valid(d if isinstance(d, dict) else {}) for d in data]
    rows = _run(lambda store, s: _put(store, s, conns), as_json)
    if as_json:
        _print_json(rows)
    else:
        typer.echo(f"applied {len(rows)} connection{'s' if len(rows) != 1 else ''}")


@providers_app.command("list")
def providers_list(client: str = typer.Option(None), as_json: bool = JsonOpt) -> None:
    """List connections (never keys: only the variable names, and whether they are set here)."""
    from hookbay.api.providers import connection_out
    from hookbay.store.providers import ProviderStore

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        return [connection_out(r) for r in await ProviderStore(store).list(client)]

    rows = _run(go, as_json)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        typer.echo("no provider connections")
    for r in rows:
        typer.echo(f"{r['client_id']:20} {r['type']:10} {r['key_env']}{' pod=' + r['pod'] if r['pod'] else ''}"
                   f"{'' if r['key_present'] else '  (not set here)'}")


@providers_app.command("remove")
def providers_remove(client: str = typer.Option(...), type_: str = typer.Option(..., "--type")) -> None:
    """Remove a client's connection to a provider."""
    from hookbay.audit import AuditEntry, cli_actor
    from hookbay.store.providers import ProviderStore

    async def go(store: Store, s: Settings) -> None:
        await ProviderStore(store).delete(client, type_, audit=AuditEntry("provider.delete", cli_actor()))

    _run(go)
    typer.echo(f"removed {client}'s {type_} connection")
