"""CLI flags for the ingest edge (issue #15) shared by `source create` and `source update`: defined
here so the command modules only list them."""

from __future__ import annotations

from typing import Any

import typer

OPT_ALLOW_ORIGIN = typer.Option(None, "--allow-origin", help=(
    "Browser origin allowed to post, e.g. https://shop.example.com (repeatable; '*' = any site; 'none' clears)"))
OPT_REDIRECT_URL = typer.Option(None, "--redirect-url", help="Send HTML forms here (303) after the commit; '' clears")
OPT_RATE_PER_IP = typer.Option(None, "--rate-per-ip", help="Requests per second per client address (0 = off)")
OPT_BURST_PER_IP = typer.Option(None, "--burst-per-ip", help="Bucket size per client address (0 = default)")
OPT_HONEYPOT = typer.Option(None, "--honeypot-field", help="Form field humans leave empty ('' clears)")
OPT_IDEMPOTENCY_KEY = typer.Option(None, "--idempotency-key", help=(
    "stripe|shopify|github|woocommerce|standard, header:NAME or body:JMESPATH ('' clears)"))
OPT_IDEMPOTENCY_DAYS = typer.Option(None, "--idempotency-days", help="How long dedupe keys are kept (default 30)")
OPT_RESPONSE = typer.Option(None, "--response-preset", help="salesforce-ack ('' clears the custom response)")
OPT_HANDSHAKE = typer.Option(None, "--handshake", help="slack|meta|msgraph|zoom|dropbox ('' clears)")
OPT_VERIFY_TOKEN = typer.Option(None, "--verify-token", help="meta: the Verify Token given to the app dashboard")

FLAGS = ("allow_origin", "redirect_url", "rate_per_ip", "burst_per_ip", "honeypot_field", "idempotency_key",
         "idempotency_days", "response_preset", "handshake", "verify_token")


def options(params: dict[str, Any]) -> dict[str, Any]:
    """The edge flags among a command's parameters (pass ``locals()``)."""
    return {k: params.get(k) for k in FLAGS}


def apply(cfg: dict[str, Any], sec: dict[str, Any]) -> None:
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
