"""The config options `source create` and `source update` share, declared once, and how they
change a source's config: create applies them to the defaults, update to the stored config, and
only the options given change anything (a partial update changes only what it names)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
import yaml

from hookbay.errors import HookbayError
from hookbay.models import SourceConfig
from hookbay.settings import get_settings
from hookbay.signatures.registry import SCHEMES


def _option(*decls: str, help: str) -> Any:
    """One shared option: a dataclass field that carries its Typer declaration."""
    return dataclasses.field(default=None, metadata={"option": typer.Option(None, *decls, help=help)})


@dataclass(frozen=True)
class SourceOptions:
    """The shared options as given on the command line (None, or no item, when not given); the
    fields are the declarations, in --help order."""

    fmt: str | None = _option("--format", help="auto|json|ndjson|xml|csv|form")
    method: list[str] | None = _option("--allow-method", help="Allowed method (repeatable), default POST")
    max_body: int | None = _option("--max-body", help="Body size limit in bytes (default 1 MiB)")
    idempotency_header: str | None = _option("--idempotency-header", help="Extra header naming a delivery id")
    parser: str | None = _option("--parser", help="generic|contact|mapping")
    mapping_file: Path | None = _option("--mapping", help="Mapping file (YAML or JSON), a new mapping version; "
                                        "on create it implies --parser mapping")
    region: str | None = _option("--default-region", help="Region for phone numbers without +code, e.g. GB")
    sync: bool | None = _option("--sync/--async", help="Parse before answering (as ?wait=1)")
    signature: str | None = _option("--signature", help="|".join(SCHEMES) + " (none to remove)")
    signature_header: str | None = _option("--signature-header", help="hmac: header with the signature")
    algorithm: str | None = _option("--algorithm", help="hmac: sha1|sha256|sha512")
    encoding: str | None = _option("--encoding", help="hmac: hex|base64")
    prefix: str | None = _option("--prefix", help="hmac: text before the digest, e.g. sha256=")
    tolerance: int | None = _option("--tolerance", help="Signature timestamp tolerance, seconds (300)")
    allow_ip: list[str] | None = _option("--allow-ip", help="Allowed CIDR (repeatable; 'none' clears)")
    require_header: list[str] | None = _option("--require-header", help="'Name: value' (repeatable)")
    rate: float | None = _option("--rate", help="Rate limit, requests per second (0 removes)")
    burst: int | None = _option("--burst", help="Rate limit burst")
    retention_days: int | None = _option("--retention-days", help="Purge raw bodies after N days (0 keeps forever)")
    actions: Path | None = _option("--actions", help="YAML/JSON file with the list of actions ([] removes them)")
    allow_private: bool | None = _option("--allow-private-destinations/--no-allow-private-destinations",
                                         help="Let actions reach loopback/private addresses")
    relay: bool | None = _option("--relay/--no-relay", help="Relay mode: queue accepted requests for `hookbay agent`")
    allow_origin: list[str] | None = _option("--allow-origin", help=(
        "Browser origin allowed to post, e.g. https://shop.example.com (repeatable; '*' = any site; 'none' clears)"))
    redirect_url: str | None = _option("--redirect-url", help="Send HTML forms here (303) after the commit; '' clears")
    rate_per_ip: float | None = _option("--rate-per-ip", help="Requests per second per client address (0 = off)")
    burst_per_ip: int | None = _option("--burst-per-ip", help="Bucket size per client address (0 = default)")
    honeypot_field: str | None = _option("--honeypot-field", help="Form field humans leave empty ('' clears)")
    idempotency_key: str | None = _option("--idempotency-key", help=(
        "stripe|shopify|github|woocommerce|standard, header:NAME or body:JMESPATH ('' clears)"))
    idempotency_days: int | None = _option("--idempotency-days", help="How long dedupe keys are kept (default 30)")
    response_preset: str | None = _option("--response-preset", help="salesforce-ack ('' clears the custom response)")
    handshake: str | None = _option("--handshake", help="slack|meta|msgraph|zoom|dropbox ('' clears)")
    verify_token: str | None = _option("--verify-token", help="meta: the Verify Token given to the app dashboard")

    def named(self) -> bool:
        """Whether any option was given (zero and false too: `--rate 0` removes the limit,
        `--no-allow-private-destinations` closes the private network): only then does `source
        update` write a config."""
        return any(v not in (None, [], ()) for v in vars(self).values())

    def config(self, base: dict[str, Any]) -> dict[str, Any]:
        """``base`` (a stored config, or ``{}`` for the defaults) with the given options applied, validated."""
        cfg = dict(base)
        if self.signature is not None:
            if self.signature in ("", "none"):
                cfg["signature"] = None
            else:
                old = cfg.get("signature") or {}
                sig = dict(old) if old.get("scheme") == self.signature else {}
                sig["scheme"] = self.signature
                cfg["signature"] = sig
        if cfg.get("signature"):
            for key, value in (("header", self.signature_header), ("algorithm", self.algorithm),
                               ("encoding", self.encoding), ("prefix", self.prefix),
                               ("tolerance_s", self.tolerance)):
                if value is not None:
                    cfg["signature"][key] = value
        if self.allow_ip:
            cfg["allow_ips"] = [] if self.allow_ip == ["none"] else list(self.allow_ip)
        if self.require_header:
            cfg["required_headers"] = _required_headers(self.require_header)
        if self.rate is not None:
            cfg["rate"] = self.rate or None
        if self.burst is not None:
            cfg["burst"] = self.burst or None
        if self.retention_days is not None:
            cfg["retention_days"] = self.retention_days or None
        if self.actions is not None:
            cfg["actions"] = _load_actions(self.actions)
        if self.allow_private is not None:
            cfg["allow_private_destinations"] = self.allow_private
        if self.relay is not None:
            cfg["relay"] = self.relay
        if self.parser is not None:
            cfg["parser"] = self.parser
        if self.mapping_file is not None:
            cfg["mapping"] = _load_mapping(self.mapping_file)
            cfg.setdefault("parser", "mapping")
        if self.region is not None:
            cfg["default_region"] = self.region.upper() or None
        if self.sync is not None:
            cfg["sync"] = self.sync
        if self.fmt is not None:
            cfg["format"] = self.fmt
        if self.method:
            cfg["methods"] = [m.upper() for m in self.method]
        if self.max_body is not None:
            cfg["max_body_bytes"] = self.max_body
        if self.idempotency_header is not None:
            cfg["idempotency_header"] = self.idempotency_header or None
        _apply_edge(cfg, {k: getattr(self, k) for k in _EDGE_FLAGS})
        model = SourceConfig.model_validate(cfg)
        check_source_config(model, "config")
        return model.model_dump()


def source_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command the shared options: its ``opts: SourceOptions`` parameter stands for them in
    --help (in its place) and receives them as one ``SourceOptions``. Typer reads the signature, so
    the command's own parameters keep their declarations and the shared ones are declared once."""
    sig = inspect.signature(command, eval_str=True)
    hints = typing.get_type_hints(SourceOptions)
    shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.metadata["option"],
                                annotation=_without_none(hints[f.name])) for f in dataclasses.fields(SourceOptions)]
    params: list[inspect.Parameter] = []
    for p in sig.parameters.values():
        params += shared if p.name == "opts" else [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        given = {p.name: kwargs.pop(p.name) for p in shared}
        command(**kwargs, opts=SourceOptions(**given))

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params} | {"return": sig.return_annotation}
    return wrapper


def _without_none(hint: Any) -> Any:
    """``str | None`` as Typer reads it (``str``); the default None already makes it optional."""
    return next(a for a in typing.get_args(hint) if a is not type(None))


def check_source_config(cfg: SourceConfig, where: str) -> None:
    """The CLI acts as the admin, so only the rules that bind admins too apply (secret names)."""
    from hookbay.containment import check_config

    try:
        check_config(cfg, get_settings(), admin=True, prefix=where)
    except HookbayError as e:
        typer.echo(f"error: {e.message}: " + "; ".join(f"{d['path']}: {d['message']}" for d in e.detail), err=True)
        raise typer.Exit(2) from None


def _required_headers(items: list[str]) -> dict[str, str]:
    hdrs: dict[str, str] = {}
    for item in items:
        if item == "none":
            continue
        name, sep, value = item.partition(":")
        if not sep:
            typer.echo(f"error: --require-header wants 'Name: value', got {item!r}", err=True)
            raise typer.Exit(2)
        hdrs[name.strip()] = value.strip()
    return hdrs


def _load_mapping(path: Path) -> dict[str, Any]:
    from hookbay.parsers import compile
    from hookbay.parsers.mapping import MappingError

    try:
        return compile.parse_text(path.read_text()).to_dict()
    except (OSError, MappingError) as e:
        typer.echo(f"error: {path}: {e}", err=True)
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


_EDGE_FLAGS = ("allow_origin", "redirect_url", "rate_per_ip", "burst_per_ip", "honeypot_field", "idempotency_key",
               "idempotency_days", "response_preset", "handshake", "verify_token")


def _apply_edge(cfg: dict[str, Any], sec: dict[str, Any]) -> None:
    """Fold the given flags into a config dict; an empty value clears the setting."""
    if sec.get("allow_origin"):
        cfg["allowed_origins"] = [] if sec["allow_origin"] == ["none"] else list(sec["allow_origin"])
        if "*" in cfg["allowed_origins"]:
            typer.echo("warning: --allow-origin '*' lets any website post to this source from a browser", err=True)
    for flag, key in (("redirect_url", "redirect_url"), ("honeypot_field", "honeypot_field"),
                      ("idempotency_key", "idempotency_key")):
        if sec.get(flag) is not None:
            cfg[key] = sec[flag] or None
    if sec.get("rate_per_ip") is not None:
        cfg["rate_per_ip"] = sec["rate_per_ip"] or None
    if sec.get("burst_per_ip") is not None:
        cfg["burst_per_ip"] = sec["burst_per_ip"] or None
    if sec.get("idempotency_days") is not None:
        cfg["idempotency_days"] = sec["idempotency_days"]
    if sec.get("response_preset") is not None:
        cfg["response"] = {"preset": sec["response_preset"]} if sec["response_preset"] else None
    if sec.get("handshake") is not None:
        cfg["handshake"] = {"type": sec["handshake"]} if sec["handshake"] else None
    if sec.get("verify_token") is not None and cfg.get("handshake"):
        cfg["handshake"] = {**cfg["handshake"], "verify_token": sec["verify_token"]}
