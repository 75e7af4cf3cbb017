"""The audit log (the ``audit_log`` table): entries written inside the transaction of the change
they describe, the rows it is read as, and the store's ``Audit`` group."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import sqlalchemy as sa

from hookbay.audit import AuditEntry
from hookbay.ids import now_us, ulid
from hookbay.store import schema
from hookbay.store.core import StoreCore


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


def record(conn: sa.Connection, entry: AuditEntry) -> str:
    """Insert one entry on ``conn`` (the change's own transaction)."""
    aid = "aud_" + ulid()
    conn.execute(schema.audit_log.insert().values(
        id=aid, at=now_us(), actor=entry.actor.name[:200], token_id=entry.actor.token_id, client_id=entry.client_id,
        action=entry.action, target=entry.target, peer=(entry.actor.peer or "")[:64] or None,
        changes=orjson.dumps(entry.changes).decode(), weakens=orjson.dumps(entry.weakens).decode()))
    return aid


class AuditMixin(StoreCore):
    """The ``Audit`` group."""

    async def record_audit(self, entry: AuditEntry) -> None:
        """An entry for a change made outside the store's own methods (right after it)."""
        def w(conn: sa.Connection) -> None:
            record(conn, entry)

        await self.write(w)

    async def list_audit(self, client_id: str | None = None, *, since_us: int | None = None,
                         until_us: int | None = None, before_id: str | None = None,
                         limit: int = 50, action: str | None = None, actor: str | None = None,
                         target: str | None = None) -> list[StoredAuditEntry]:
        """Entries newest first (ids are time-ordered); ``client_id`` limits them to one client's;
        ``action`` is a prefix (``source.`` or ``source.update``), ``actor`` and ``target`` exact."""
        A = schema.audit_log

        def q(conn: sa.Connection) -> list[StoredAuditEntry]:
            stmt = sa.select(*(A.c[f] for f in StoredAuditEntry.__slots__))
            if action:
                pattern = action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                stmt = stmt.where(A.c.action.like(pattern, escape="\\"))
            if actor:
                stmt = stmt.where(A.c.actor == actor)
            if target:
                stmt = stmt.where(A.c.target == target)
            if client_id is not None:
                stmt = stmt.where(A.c.client_id == client_id)
            if since_us is not None:
                stmt = stmt.where(A.c.at >= since_us)
            if until_us is not None:
                stmt = stmt.where(A.c.at < until_us)
            if before_id:
                stmt = stmt.where(A.c.id < before_id)
            return [StoredAuditEntry(*r) for r in conn.execute(stmt.order_by(A.c.id.desc()).limit(limit))]

        return await self.read(q)
