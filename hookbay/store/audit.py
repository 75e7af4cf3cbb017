"""Writing audit entries, inside the transaction of the change they describe."""

from __future__ import annotations

import orjson
import sqlalchemy as sa

from hookbay.audit import AuditEntry
from hookbay.ids import now_us, ulid
from hookbay.store import schema


def record(conn: sa.Connection, entry: AuditEntry) -> str:
    """Insert one entry on ``conn`` (the change's own transaction)."""
    aid = "aud_" + ulid()
    conn.execute(schema.audit_log.insert().values(
        id=aid, at=now_us(), actor=entry.actor.name[:200], token_id=entry.actor.token_id, client_id=entry.client_id,
        action=entry.action, target=entry.target, peer=(entry.actor.peer or "")[:64] or None,
        changes=orjson.dumps(entry.changes).decode(), weakens=orjson.dumps(entry.weakens).decode()))
    return aid
