"""`hookbay source …`: create, inspect, change, rotate, delete and apply sources."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import typer
import yaml
from pydantic import ValidationError

from hookbay.audit import source_summary
from hookbay.cli.common import (
    OPT_SOURCE_CLIENT,
    JsonOpt,
    audit_entry,
    fail,
    log,
    os_user,
    propagate,
    run,
    run_and_print,
    show,
)
from hookbay.cli.errors import describe_error
from hookbay.cli.source_options import SourceOptions, check_source_config, source_options
from hookbay.errors import BadRequest, HookbayError
from hookbay.models import SourceConfig, SourceCreate
from hookbay.settings import Settings
from hookbay.store import Store
from hookbay.views import source_out

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
    from hookbay.ops.sources import initial_secret

    cfg = opts.config({})
    spec = SourceCreate(name=name, client_id=client, config=SourceConfig.model_validate(cfg), secret=secret)
    try:
        first_secret, generated = initial_secret(spec.config, secret)
    except HookbayError as e:
        fail(e, as_json)

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        summary, _ = source_summary(None, cfg, name=name, enabled=not disabled, api_key="new" if api_key else None)
        row, key = await store.create_source(name=name, client_id=client, config=cfg, enabled=not disabled,
                                             api_key=api_key, secret=first_secret,
                                             audit=audit_entry("source.create", summary + ["secret: [set]"] * bool(first_secret)))
        return source_out(row, s.base_url, key, secrets=1 if first_secret else 0,
                          secret=first_secret if generated else None).model_dump()

    run_and_print(go, as_json, _source_lines)


@app.command("list")
def source_list(client: str = typer.Option(None, help="Only this client"), as_json: bool = JsonOpt) -> None:
    """List sources."""

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        counts = await store.secret_counts()
        return [source_out(r, s.base_url, secrets=counts.get(r["id"], 0)).model_dump()
                for r in await store.list_sources(client)]

    run_and_print(go, as_json, lambda rows: (
        f"{r['id']}  {r['client_id']}/{r['name']}  {r['ingest_url']}  "
        f"secrets={r['signing_secrets']}{'' if r['enabled'] else '  (disabled)'}" for r in rows))


@app.command("show")
def source_show(ref: str = typer.Argument(..., help="Source id, token or name"), client: str = OPT_SOURCE_CLIENT,
                as_json: bool = JsonOpt) -> None:
    """Show one source."""

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        row = await store.get_source(ref, client)
        return source_out(row, s.base_url, secrets=await store.secret_count(row["id"])).model_dump()

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
        row = await store.get_source(ref, client)
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = name
        if enable is not None:
            changes["enabled"] = enable
        if opts.named():
            changes["config"] = opts.config(orjson.loads(row["config"]))
        summary, weak = source_summary(
            row, changes.get("config"), name=changes.get("name"), enabled=changes.get("enabled"),
            api_key=("rotated" if row["api_key_hash"] else "new") if api_key
            else "removed" if remove_api_key and row["api_key_hash"] else None)
        new, key = await store.update_source(row["id"], changes, rotate_api_key=api_key,
                                             remove_api_key=remove_api_key, audit=audit_entry("source.update", summary, weak))
        return source_out(new, s.base_url, key, secrets=await store.secret_count(row["id"])).model_dump()

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
    from hookbay.signatures import generate_secret

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    g = grace.strip().lower()
    try:
        grace_s = float(g) if g[-1].isdigit() else float(g[:-1]) * units[g[-1]]
    except (KeyError, ValueError, IndexError):
        typer.echo(f"error: bad --grace {grace!r}", err=True)
        raise typer.Exit(2) from None

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        row = await store.get_source(ref, client)
        if api_key:
            if row["api_key_hash"] is None:
                raise BadRequest("This source does not require an API key, so there is none to rotate; "
                                 "to start requiring one, use `hookbay source update SOURCE --api-key`")
            new, key = await store.update_source(row["id"], {}, rotate_api_key=True,
                                                 audit=audit_entry("api_key.rotate", ["api_key: [changed]"]))
            return source_out(new, s.base_url, key, secrets=await store.secret_count(row["id"])).model_dump()
        cfg = SourceConfig.model_validate(orjson.loads(row["config"]))
        if cfg.signature is None:
            raise BadRequest("This source has no signature scheme; set one with --signature first")
        if secret:
            from hookbay.ops.sources import initial_secret

            initial_secret(cfg, secret)
        new_secret = secret or generate_secret(cfg.signature.scheme)
        await store.add_secret(row["id"], new_secret, retire_others_after_s=grace_s,
                               audit=audit_entry("secret.rotate", ["secret: [changed]", f"old secrets valid for {grace_s:g}s"]))
        return source_out(row, s.base_url, secrets=await store.secret_count(row["id"]),
                          secret=None if secret else new_secret).model_dump()

    run_and_print(go, as_json, _source_lines, wait_for_servers=True)


@app.command("delete")
def source_delete(ref: str = typer.Argument(..., help="Source id, token or name"), client: str = OPT_SOURCE_CLIENT,
                  as_json: bool = JsonOpt) -> None:
    """Delete a source (its stored requests stay in the log)."""

    async def go(store: Store, s: Settings) -> dict[str, str]:
        row = await store.get_source(ref, client)
        await store.delete_source(row["id"], audit=audit_entry(
            "source.delete", [f"name: {orjson.dumps(row['name']).decode()}"]))
        return {"deleted": str(row["id"])}

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
    from hookbay.changes import config_diff, weakenings
    from hookbay.ops.sources import initial_secret

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

    async def plan(store: Store) -> list[dict[str, Any]]:
        existing = {(r["client_id"], r["name"]): r for r in await store.list_sources()}
        secrets = await store.source_secrets()
        steps: list[dict[str, Any]] = []
        for spec in specs:
            cur = existing.pop((spec.client_id, spec.name), None)
            step: dict[str, Any] = {"client_id": spec.client_id, "name": spec.name, "spec": spec, "cur": cur,
                                    "changes": [], "weakens": [], "refused": []}
            if cur is None:
                step["action"] = "create"
                steps.append(step)
                continue
            old_cfg = orjson.loads(cur["config"])
            new_cfg = spec.config.model_dump()
            step["changes"] = config_diff(old_cfg, new_cfg)
            if bool(cur["enabled"]) != spec.enabled:
                step["changes"].append(f"enabled: {bool(cur['enabled'])} -> {spec.enabled}")
            want_key = spec.api_key and cur["api_key_hash"] is None
            drop_key = not spec.api_key and cur["api_key_hash"] is not None
            if want_key:
                step["changes"].append("api_key: [new key]")
            weak = weakenings(SourceConfig.model_validate(old_cfg), spec.config)
            if drop_key:
                step["changes"].append("api_key: required -> not required")
                weak["api_key"] = "API key requirement removed"
            explicit = set(spec.config.model_fields_set) | ({"api_key"} & set(spec.model_fields_set))
            step["weakens"] = [f"{f}: {why}" for f, why in sorted(weak.items()) if f in explicit]
            step["refused"] = [f"{f}: {why} (name `{f}` explicitly in the file to do this on purpose)"
                               for f, why in sorted(weak.items()) if f not in explicit]
            if spec.secret and spec.config.signature is not None and \
                    spec.secret not in {sec for sec, _ in secrets.get(cur["id"], [])}:
                step["changes"].append("secret: [changed]")
            step["action"] = "change" if step["changes"] else "unchanged"
            steps.append(step)
        if prune:
            clients = {spec.client_id for spec in specs}
            for (client, name), row in sorted(existing.items()):
                if client in clients:
                    steps.append({"client_id": client, "name": name, "action": "delete", "cur": row,
                                  "changes": [], "weakens": [], "refused": []})
        return steps

    async def apply(store: Store, s: Settings, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for step in steps:
            spec, cur = step.get("spec"), step["cur"]
            key = shown_secret = None
            if step["action"] == "delete":
                await store.delete_source(cur["id"], audit=audit_entry(
                    "source.apply.delete", [f"name: {orjson.dumps(cur['name']).decode()}", "pruned: not in the file"]))
                out.append({"action": "deleted", "client_id": step["client_id"], "name": step["name"],
                            "id": cur["id"]})
                continue
            assert spec is not None
            if cur is None:
                first, generated = initial_secret(spec.config, spec.secret)
                summary, _ = source_summary(None, spec.config.model_dump(), name=spec.name, enabled=spec.enabled,
                                            api_key="new" if spec.api_key else None)
                row, key = await store.create_source(name=spec.name, client_id=spec.client_id,
                                                     config=spec.config.model_dump(), enabled=spec.enabled,
                                                     api_key=spec.api_key, secret=first, audit=audit_entry(
                                                         "source.apply.create", summary + ["secret: [set]"] * bool(first)))
                shown_secret = first if generated else None
                action = "created"
            elif step["action"] == "change":
                changes: dict[str, Any] = {"config": spec.config.model_dump(), "enabled": spec.enabled}
                row, key = await store.update_source(
                    cur["id"], changes, rotate_api_key=spec.api_key and cur["api_key_hash"] is None,
                    remove_api_key=not spec.api_key and cur["api_key_hash"] is not None,
                    audit=audit_entry("source.apply.update", step["changes"], step["weakens"]))
                if spec.secret and any(c.startswith("secret:") for c in step["changes"]):
                    initial_secret(spec.config, spec.secret)
                    await store.add_secret(cur["id"], spec.secret, retire_others_after_s=0)
                if step["weakens"]:
                    log.warning("source_checks_weakened", source_id=cur["id"], client_id=cur["client_id"],
                                actor=f"cli:{os_user()}", changes=step["weakens"])
                action = "updated"
            else:
                row, action = cur, "unchanged"
            o = source_out(row, s.base_url, key, secret=shown_secret,
                           secrets=await store.secret_count(row["id"])).model_dump()
            o["action"] = action
            o["changes"], o["weakens"] = step["changes"], step["weakens"]
            out.append(o)
        return out

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        steps = await plan(store)
        refused = [st for st in steps if st["refused"]]
        result: dict[str, Any] = {"plan": [
            {k: st[k] for k in ("action", "client_id", "name", "changes", "weakens", "refused")} for st in steps]}
        if dry_run or refused:
            result["applied"] = False
            return result
        result["applied"] = True
        result["results"] = await apply(store, s, steps)
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

