"""The options `source create` and `source update` share, and how they become a source config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml

from hookbay.errors import HookbayError
from hookbay.models import SourceConfig
from hookbay.settings import get_settings

OPT_SIGNATURE = typer.Option(None, "--signature",
                             help="standard|github|stripe|shopify|woocommerce|slack|hmac (none to remove)")
OPT_SIGNATURE_HEADER = typer.Option(None, "--signature-header", help="hmac: header with the signature")
OPT_ALGORITHM = typer.Option(None, "--algorithm", help="hmac: sha1|sha256|sha512")
OPT_ENCODING = typer.Option(None, "--encoding", help="hmac: hex|base64")
OPT_PREFIX = typer.Option(None, "--prefix", help="hmac: text before the digest, e.g. sha256=")
OPT_TOLERANCE = typer.Option(None, "--tolerance", help="Signature timestamp tolerance, seconds (300)")
OPT_ALLOW_IP = typer.Option(None, "--allow-ip", help="Allowed CIDR (repeatable; 'none' clears)")
OPT_REQUIRE_HEADER = typer.Option(None, "--require-header", help="'Name: value' (repeatable)")
OPT_RATE = typer.Option(None, "--rate", help="Rate limit, requests per second (0 removes)")
OPT_BURST = typer.Option(None, "--burst", help="Rate limit burst")
OPT_RETENTION = typer.Option(None, "--retention-days", help="Purge raw bodies after N days (0 keeps forever)")
OPT_ACTIONS = typer.Option(None, "--actions", help="YAML/JSON file with the list of actions ([] removes them)")
OPT_ALLOW_PRIVATE = typer.Option(None, "--allow-private-destinations/--no-allow-private-destinations",
                                 help="Let actions reach loopback/private addresses")
OPT_RELAY = typer.Option(None, "--relay/--no-relay", help="Relay mode: queue accepted requests for `hookbay agent`")


def build_config(base: dict[str, Any], fmt: str | None, methods: list[str] | None, max_body: int | None,
            idem: str | None, parser: str | None = None, mapping_file: Path | None = None,
            region: str | None = None, sync: bool | None = None, sec: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = dict(base)
    sec = sec or {}
    if sec.get("signature") is not None:
        scheme = sec["signature"]
        if scheme in ("", "none"):
            cfg["signature"] = None
        else:
            sig = dict(cfg.get("signature") or {}) if (cfg.get("signature") or {}).get("scheme") == scheme else {}
            sig["scheme"] = scheme
            cfg["signature"] = sig
    if cfg.get("signature"):
        for flag, key in (("signature_header", "header"), ("algorithm", "algorithm"), ("encoding", "encoding"),
                          ("prefix", "prefix"), ("tolerance", "tolerance_s")):
            if sec.get(flag) is not None:
                cfg["signature"][key] = sec[flag]
    if sec.get("allow_ip"):
        cfg["allow_ips"] = [] if sec["allow_ip"] == ["none"] else list(sec["allow_ip"])
    if sec.get("require_header"):
        hdrs: dict[str, str] = {}
        for item in sec["require_header"]:
            if item == "none":
                continue
            name, sep, value = item.partition(":")
            if not sep:
                typer.echo(f"error: --require-header wants 'Name: value', got {item!r}", err=True)
                raise typer.Exit(2)
            hdrs[name.strip()] = value.strip()
        cfg["required_headers"] = hdrs
    if sec.get("rate") is not None:
        cfg["rate"] = sec["rate"] or None
    if sec.get("burst") is not None:
        cfg["burst"] = sec["burst"] or None
    if sec.get("retention_days") is not None:
        cfg["retention_days"] = sec["retention_days"] or None
    if sec.get("actions") is not None:
        cfg["actions"] = _load_actions(sec["actions"])
    if sec.get("allow_private") is not None:
        cfg["allow_private_destinations"] = sec["allow_private"]
    if sec.get("relay") is not None:
        cfg["relay"] = sec["relay"]
    if parser is not None:
        cfg["parser"] = parser
    if mapping_file is not None:
        from hookbay.parsers.mapping import Mapping, MappingError

        try:
            cfg["mapping"] = Mapping.parse_text(mapping_file.read_text()).to_dict()
        except (OSError, MappingError) as e:
            typer.echo(f"error: {mapping_file}: {e}", err=True)
            raise typer.Exit(2) from None
        cfg.setdefault("parser", "mapping")
    if region is not None:
        cfg["default_region"] = region.upper() or None
    if sync is not None:
        cfg["sync"] = sync
    if fmt is not None:
        cfg["format"] = fmt
    if methods:
        cfg["methods"] = [m.upper() for m in methods]
    if max_body is not None:
        cfg["max_body_bytes"] = max_body
    if idem is not None:
        cfg["idempotency_header"] = idem or None
    model = SourceConfig.model_validate(cfg)
    check_source_config(model, "config")
    return model.model_dump()


def check_source_config(cfg: SourceConfig, where: str) -> None:
    """The CLI acts as the admin, so only the rules that bind admins too apply (secret names)."""
    from hookbay.containment import check_config

    try:
        check_config(cfg, get_settings(), admin=True, prefix=where)
    except HookbayError as e:
        typer.echo(f"error: {e.message}: " + "; ".join(f"{d['path']}: {d['message']}" for d in e.detail), err=True)
        raise typer.Exit(2) from None


def _load_actions(path: Path) -> list[Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        typer.echo(f"error: {path}: {e}", err=True)
        raise typer.Exit(2) from None
    if isinstance(data, dict) and "actions" in data:
        data = data["actions"]
    if not isinstance(data, list):
        typer.echo(f"error: {path}: expected a list of actions", err=True)
        raise typer.Exit(2)
    return data

