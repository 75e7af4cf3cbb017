"""The audit log: who changed which source, secret, key or token, what changed, and from where.

An entry is written in the same transaction as the change (the store methods take an ``audit=``
argument), so a change is never kept without its entry. What changed is a field-level summary built
with :func:`hookbay.changes.config_diff`, which masks secrets as ``[set]``: no secret value, token or
key is ever put in an entry, and a change that removes or loosens a check is listed in ``weakens``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import orjson

from hookbay.changes import config_diff, weakenings
from hookbay.models import SourceConfig


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change and from where: ``admin`` or ``client:<id>`` (with the token id) and the
    peer address for the API and console; ``cli:<os user>`` and ``cli`` for the command line."""

    name: str
    client_id: str | None = None
    token_id: str | None = None
    peer: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    action: str
    actor: Actor
    client_id: str | None = None
    target: str | None = None
    changes: list[str] = field(default_factory=list)
    weakens: list[str] = field(default_factory=list)

    def but(self, **kw: Any) -> AuditEntry:
        """A copy with fields only known inside the transaction (a new row's id, a token's client)."""
        return replace(self, **kw)


def cli_actor() -> Actor:
    import getpass

    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return Actor(name=f"cli:{user}", peer="cli")


class SourceState(Protocol):
    """What a change summary reads of a source as it was (the store's ``StoredSource``)."""

    @property
    def name(self) -> str: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def config(self) -> dict[str, Any]: ...


def source_summary(row: SourceState | None, new_config: dict[str, Any] | None, *, name: str | None = None,
                   enabled: bool | None = None, api_key: str | None = None) -> tuple[list[str], list[str]]:
    """What a source change does, field by field, and the checks it weakens. ``row`` is the source
    before (None for a new one); ``api_key`` is ``"new"``, ``"rotated"`` or ``"removed"``."""
    old_cfg = row.config if row else {}
    changes: list[str] = []
    weak: dict[str, str] = {}
    if row is None or (name is not None and name != row.name):
        changes.append(f"name: {orjson.dumps(row.name).decode() + ' -> ' if row else ''}"
                       f"{orjson.dumps(name).decode()}")
    if enabled is not None and (row is None or row.enabled != enabled):
        changes.append(f"enabled: {row.enabled if row else None} -> {enabled}")
    if new_config is not None:
        changes += config_diff(old_cfg, new_config)
        if row is not None:
            weak = weakenings(SourceConfig.model_validate(old_cfg), SourceConfig.model_validate(new_config))
    if api_key == "new":
        changes.append("api_key: [set]")
    elif api_key == "rotated":
        changes.append("api_key: [changed]")
    elif api_key == "removed":
        changes.append("api_key: [removed]")
        weak["api_key"] = "API key requirement removed"
    return changes, [f"{f}: {why}" for f, why in sorted(weak.items())]
