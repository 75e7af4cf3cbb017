"""Writing audit entries, inside the transaction of the change they describe, and the rows the audit
log and the token table are read as."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import sqlalchemy as sa

from hookbay.audit import AuditEntry
from hookbay.ids import now_us, ulid
from hookbay.store import schema


@dataclass(frozen=True, slots=True)
class StoredAuditEntry:
    """An ``audit_log`` row as stored; ``changes`` and ``weakens`` are its JSON text (lists of strings)."""

    id: str
    at: int
    actor: str
    token_id: str | None
    client_id: str | None
    action: str
    target: str | None
    peer: str | None
    changes: str
    weakens: str


@dataclass(frozen=True, slots=True)
class StoredToken:
    """An admin API token as listed: never its value or hash."""

    id: str
    name: str
    client_id: str | None
    created_at: int


def record(conn: sa.Connection, entry: AuditEntry) -> str:
    """Insert one entry on ``conn`` (the change's own transaction)."""
    aid = "aud_" + ulid()
    conn.execute(schema.audit_log.insert().values(
        id=aid, at=now_us(), actor=entry.actor.name[:200], token_id=entry.actor.token_id, client_id=entry.client_id,
        action=entry.action, target=entry.target, peer=(entry.actor.peer or "")[:64] or None,
        changes=orjson.dumps(entry.changes).decode(), weakens=orjson.dumps(entry.weakens).decode()))
    return aid
