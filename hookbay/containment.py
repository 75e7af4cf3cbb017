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
from hookbay.models import SourceConfig
from hookbay.settings import Settings


class ConfigRefused(Unprocessable):
    """422 in the shape of a validation error, naming the field."""

    code = "invalid_request"
    message = "The request is invalid"


def _privileged(cfg: SourceConfig) -> set[tuple[Any, ...]]:
    """The admin-only choices the config's actions carry (each action type says which are its own:
    ``admin_choices``)."""
    out: set[tuple[Any, ...]] = set()
    for a in cfg.actions:
        out |= a.admin_choices(cfg.allow_private_destinations)
    return out


def _client_violations(cfg: SourceConfig, current: SourceConfig, prefix: str) -> list[dict[str, str]]:
    bad: list[dict[str, str]] = []
    if cfg.allow_private_destinations and not current.allow_private_destinations:
        bad.append({"path": f"{prefix}.allow_private_destinations",
                    "message": "only an admin may let actions reach private addresses"})
    allowed = _privileged(current)
    for i, a in enumerate(cfg.actions):
        for field, message in a.client_refusals(allowed, cfg.allow_private_destinations):
            bad.append({"path": f"{prefix}.actions.{i}.{field}", "message": message})
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
        for field, message in a.config_refusals(settings):
            bad.append({"path": f"{prefix}.actions.{i}.{field}", "message": message})
    ceiling = settings.max_body_bytes_limit
    if (not admin and cfg.max_body_bytes is not None and cfg.max_body_bytes > ceiling
            and cfg.max_body_bytes != (current.max_body_bytes if current else None)):
        bad.append({"path": f"{prefix}.max_body_bytes",
                    "message": f"at most {ceiling} bytes (HOOKBAY_MAX_BODY_BYTES_LIMIT); ask an admin for more"})
    if bad:
        raise ConfigRefused(detail=bad)
