"""`hookbay source …`: create, inspect, change, rotate, delete and apply sources."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import typer
import yaml
from pydantic import ValidationError

from hookbay.cli.common import (
    OPT_SOURCE_CLIENT,
    JsonOpt,
    propagate,
    run,
    run_and_print,
    show,
)
from hookbay.cli.errors import describe_error
from hookbay.cli.source_options import SourceOptions, check_source_config, source_options
from hookbay.models import SourceConfig, SourceCreate, SourceUpdate
from hookbay.ops import sources as source_ops
from hookbay.ops.access import Principal
from hookbay.settings import Settings
from hookbay.store import Store

app = typer.Typer(help="Create, inspect and change sources (ingest URLs).", no_args_is_help=True)


def _source_lines(out: dict[str, Any]) -> Iterator[str]:
    yield f"id:         {out['id']}"
    yield f"client:     {out['client_id']}"
    yield f"name:       {out['name']}"
    yield f"ingest URL: {out['ingest_url']}"
    yield f"enabled:    {out['enabled']}"
    yield f"api key:    {'required' if out['api_key_required'] else 'not required'}"
    yield f"config:     {orjson.dumps(out['config']).decode()}"
    yield f"secrets:    {out.get('signing_secrets', 0)} active signing secret(s)"
    if out.get("api_key"):
        yield f"API key (shown once, store it now): {out['api_key']}"
    if out.get("secret"):
        yield f"signing secret (shown once, give it to the sender): {out['secret']}"


@app.command("create")
@source_options
def source_create(
    name: str = typer.Option(..., help="Display name, unique per client"),
    client: str = typer.Option(..., help="Client (tenant) id"),
    api_key: bool = typer.Option(False, "--api-key", help="Require an API key; it is printed once"),
    opts: SourceOptions = SourceOptions(),
    secret: str = typer.Option(None, "--secret", help="The provider's signing secret (generated if absent)"),
    disabled: bool = typer.Option(False, "--disabled", help="Create it disabled"),
    as_json: bool = JsonOpt,
) -> None:
    """Create a source and print its secret ingest URL."""
    cfg = opts.config({})
    spec = SourceCreate(name=name, client_id=client, config=SourceConfig.model_validate(cfg), secret=secret,
                        api_key=api_key, enabled=not disabled)

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        return (await source_ops.create_source(store, None, s.base_url, Principal.cli(), spec,
                                               settings=s)).model_dump()

    run_and_print(go, as_json, _source_lines)


@app.command("list")
def source_list(client: str = typer.Option(None, help="Only this client"), as_json: bool = JsonOpt) -> None:
    """List sources."""

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        return [o.model_dump() for o in await source_ops.list_sources(store, s.base_url, Principal.cli(), client)]

    run_and_print(go, as_json, lambda rows: (
        f"{r['id']}  {r['client_id']}/{r['name']}  {r['ingest_url']}  "
        f"secrets={r['signing_secrets']}{'' if r['enabled'] else '  (disabled)'}" for r in rows))


@app.command("show")
def source_show(ref: str = typer.Argument(..., help="Source id, token or name"), client: str = OPT_SOURCE_CLIENT,
                as_json: bool = JsonOpt) -> None:
    """Show one source."""

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        return (await source_ops.get_source(store, s.base_url, Principal.cli(), ref, client)).model_dump()

    run_and_print(go, as_json, _source_lines)


@app.command("update")
@source_options
def source_update(
    ref: str = typer.Argument(..., help="Source id, token or name"),
    name: str = typer.Option(None),
    enable: bool = typer.Option(None, "--enable/--disable"),
    opts: SourceOptions = SourceOptions(),
    api_key: bool = typer.Option(False, "--api-key", help="Require an API key / issue a new one (printed once)"),
    remove_api_key: bool = typer.Option(False, "--remove-api-key"),
    client: str = OPT_SOURCE_CLIENT,
    as_json: bool = JsonOpt,
) -> None:
    """Change a source; only the options given change."""

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        source_id, config = await source_ops.stored_config(store, Principal.cli(), ref, client)
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = name
        if enable is not None:
            changes["enabled"] = enable
        if opts.named():
            changes["config"] = opts.config(config)
        body = SourceUpdate.model_validate({**changes, "rotate_api_key": api_key, "remove_api_key": remove_api_key})
        return (await source_ops.update_source(store, None, s.base_url, Principal.cli(), source_id, body,
                                               settings=s)).model_dump()

    run_and_print(go, as_json, _source_lines, wait_for_servers=True)


@app.command("rotate")
def source_rotate(
    ref: str = typer.Argument(..., help="Source id, token or name"),
    secret: str = typer.Option(None, "--secret", help="The new signing secret (generated if absent)"),
    grace: str = typer.Option("24h", "--grace", help="How long old secrets stay valid: 0, 30m, 24h, 7d"),
    api_key: bool = typer.Option(False, "--api-key", help="Rotate the API key instead (immediately)"),
    client: str = OPT_SOURCE_CLIENT,
    as_json: bool = JsonOpt,
) -> None:
    """Rotate a source's signing secret (old ones valid for --grace) or its API key."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    g = grace.strip().lower()
    try:
        grace_s = float(g) if g[-1].isdigit() else float(g[:-1]) * units[g[-1]]
    except (KeyError, ValueError, IndexError):
        typer.echo(f"error: bad --grace {grace!r}", err=True)
        raise typer.Exit(2) from None

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        if api_key:
            return (await source_ops.rotate_api_key(store, None, s.base_url, Principal.cli(), ref,
                                                    client_id=client)).model_dump()
        return (await source_ops.rotate_secret(store, None, s.base_url, Principal.cli(), ref, secret=secret,
                                               grace_seconds=grace_s, client_id=client)).model_dump()

    run_and_print(go, as_json, _source_lines, wait_for_servers=True)


@app.command("delete")
def source_delete(ref: str = typer.Argument(..., help="Source id, token or name"), client: str = OPT_SOURCE_CLIENT,
                  as_json: bool = JsonOpt) -> None:
    """Delete a source (its stored requests stay in the log)."""

    async def go(store: Store, s: Settings) -> dict[str, str]:
        return {"deleted": await source_ops.delete_source(store, None, Principal.cli(), ref, client_id=client)}

    run_and_print(go, as_json, lambda out: f"deleted {out['deleted']}", wait_for_servers=True)


@app.command("apply")
def source_apply(
    file: Path = typer.Argument(..., exists=True, readable=True),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and change nothing"),
    prune: bool = typer.Option(False, "--prune", help="Delete sources of the file's clients that it does not list"),
    as_json: bool = JsonOpt,
) -> None:
    """Declare sources in YAML. Prints a plan (created / changed with a field diff / unchanged),
    then applies it; idempotent. A change that weakens a source's checks (signature, IP allowlist,
    required header, methods, API key, outbound guard) is applied only when the file names the
    field explicitly (``signature: null``); otherwise nothing is applied. Sources not in the file
    stay unless ``--prune``. A ``secret`` in the file becomes the source's only signing secret
    when it differs."""
    from hookbay.ops.apply import apply_plan, plan_sources

    try:
        doc = yaml.safe_load(file.read_text()) or {}
        items = doc.get("sources", []) if isinstance(doc, dict) else []
        specs = [SourceCreate.model_validate(i) for i in items]
    except (OSError, yaml.YAMLError, ValidationError) as e:
        lines = describe_error(e) if isinstance(e, (OSError, ValidationError)) else [" ".join(str(e).split())]
        typer.echo(f"error: {file}: " + "; ".join(lines), err=True)
        raise typer.Exit(2) from None
    for i, spec in enumerate(specs):
        check_source_config(spec.config, f"sources.{i}.config")

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        steps = await plan_sources(store, Principal.cli(), specs, prune=prune)
        result: dict[str, Any] = {"plan": [st.view() for st in steps]}
        if dry_run or any(st.refused for st in steps):
            result["applied"] = False
            return result
        result["applied"] = True
        result["results"] = await apply_plan(store, None, s.base_url, Principal.cli(), steps)
        return result

    result = run(go, as_json)
    if result["applied"]:
        propagate()
    refused = any(st["refused"] for st in result["plan"])
    show(result, as_json, lambda r: _apply_lines(r, dry_run and not refused))
    if refused:
        typer.echo("error: nothing applied: the file would silently weaken a source's checks (see REFUSED above)",
                   err=True)
        raise typer.Exit(1)


def _apply_lines(result: dict[str, Any], dry_run: bool) -> Iterator[str]:
    for st in result["plan"]:
        yield f"{st['action']:9}  {st['client_id']}/{st['name']}"
        yield from (f"           {line}" for line in st["changes"])
        yield from (f"           weakens: {line}" for line in st["weakens"])
        yield from (f"           REFUSED: {line}" for line in st["refused"])
    for r in result.get("results", []):
        if r.get("ingest_url") and r["action"] != "unchanged":
            yield f"{r['action']:9}  {r['client_id']}/{r['name']}  {r['ingest_url']}"
        if r.get("api_key"):
            yield f"           API key (shown once): {r['api_key']}"
        if r.get("secret"):
            yield f"           signing secret (shown once): {r['secret']}"
    if dry_run:
        yield "dry run: nothing applied"

