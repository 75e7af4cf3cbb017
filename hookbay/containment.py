"""Who may set what in a source's configuration.

A client token configures its own sources, but no value it sets may pick a server-side secret or
endpoint, lift the outbound-address guard or raise a limit past the admin ceiling: those choices
are the admin's. A client may still send such a value back unchanged (a read-modify-write of a
config an admin prepared), so the rules compare with the stored config. Every caller that writes a
config (API, console, CLI) goes through :func:`check_config`; delivery re-checks secret names at
send time in case a stored config predates the rules.
"""

from __future__ import annotations

from typing import Any

from hookbay.errors import Forbidden, Unprocessable
from hookbay.models import ForwardAction, MailchimpAction, SourceConfig
from hookbay.settings import Settings

DEFAULT_MAILCHIMP_KEY_ENV = "HOOKBAY_MAILCHIMP_API_KEY"


class ConfigRefused(Unprocessable):
    """422 in the shape of a validation error, naming the field."""

    code = "invalid_request"
    message = "The request is invalid"


def secret_env_allowed(name: str, settings: Settings) -> bool:
    """Only provider keys may be read from the environment, never the server's own settings."""
    return name == DEFAULT_MAILCHIMP_KEY_ENV or name.startswith(settings.secret_env_prefix)


def _host_header(action: ForwardAction) -> str | None:
    for k, v in action.headers.items():
        if k.strip().lower() == "host":
            return v
    return None


def _privileged(cfg: SourceConfig) -> set[tuple[Any, ...]]:
    """The admin-only choices an action carries: which key goes to which endpoint, a forward's Host
    (which selects a virtual host behind the address the guard checked), and a forward's URL on a
    source the admin let reach private addresses (else a tenant could turn an approved on-premises
    destination into the metadata endpoint)."""
    out: set[tuple[Any, ...]] = set()
    for a in cfg.actions:
        if isinstance(a, MailchimpAction):
            out.add(("mailchimp", a.api_key_env, a.base_url))
        elif isinstance(a, ForwardAction):
            if (h := _host_header(a)) is not None:
                out.add(("forward", a.url, h))
            if cfg.allow_private_destinations:
                out.add(("forward-url", a.url))
    return out


def _client_violations(cfg: SourceConfig, current: SourceConfig, prefix: str) -> list[dict[str, str]]:
    bad: list[dict[str, str]] = []
    if cfg.allow_private_destinations and not current.allow_private_destinations:
        bad.append({"path": f"{prefix}.allow_private_destinations",
                    "message": "only an admin may let actions reach private addresses"})
    allowed = _privileged(current)
    for i, a in enumerate(cfg.actions):
        if isinstance(a, MailchimpAction) and ("mailchimp", a.api_key_env, a.base_url) not in allowed:
            keys = {p[1] for p in allowed if p[0] == "mailchimp"}
            field = "base_url" if a.api_key_env in keys else "api_key_env"
            bad.append({"path": f"{prefix}.actions.{i}.{field}", "message": (
                "only an admin may choose the server-side key or endpoint of a provider action; "
                "ask an admin to add it")})
        elif isinstance(a, ForwardAction):
            if (h := _host_header(a)) is not None and ("forward", a.url, h) not in allowed:
                bad.append({"path": f"{prefix}.actions.{i}.headers.Host",
                            "message": "only an admin may set a forward's Host header"})
            if cfg.allow_private_destinations and ("forward-url", a.url) not in allowed:
                bad.append({"path": f"{prefix}.actions.{i}.url", "message": (
                    "this source may reach private addresses, so only an admin may change where it forwards")})
    return bad


def check_config(cfg: SourceConfig, settings: Settings, *, admin: bool, current: SourceConfig | None = None,
                 prefix: str = "config") -> None:
    """Raise 403 for a field a client may not set, else 422 for a secret name outside the allowlist
    or a body limit above the ceiling. ``current`` is the stored config (None for a new source)."""
    if not admin:
        bad = _client_violations(cfg, current or SourceConfig(), prefix)
        if bad:
            raise Forbidden(f"Only an admin may set {bad[0]['path']}", detail=bad)
    bad = []
    for i, a in enumerate(cfg.actions):
        if isinstance(a, MailchimpAction) and not secret_env_allowed(a.api_key_env, settings):
            bad.append({"path": f"{prefix}.actions.{i}.api_key_env", "message": (
                f"a provider key must be in an environment variable whose name starts with "
                f"{settings.secret_env_prefix} (HOOKBAY_SECRET_ENV_PREFIX)")})
    ceiling = settings.max_body_bytes_limit
    if (not admin and cfg.max_body_bytes is not None and cfg.max_body_bytes > ceiling
            and cfg.max_body_bytes != (current.max_body_bytes if current else None)):
        bad.append({"path": f"{prefix}.max_body_bytes",
                    "message": f"at most {ceiling} bytes (HOOKBAY_MAX_BODY_BYTES_LIMIT); ask an admin for more"})
    if bad:
        raise ConfigRefused(detail=bad)
