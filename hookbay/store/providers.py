"""Provider connections in the database (see :mod:`hookbay.providers`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from hookbay.audit import AuditEntry
from hookbay.errors import NotFound
from hookbay.ids import now_us
from hookbay.store import schema
from hookbay.store.audit import record

if TYPE_CHECKING:
    from hookbay.store.interface import StoreInterface

PC = schema.provider_connections


@dataclass(frozen=True, slots=True)
class ProviderConnection:
    """A client's connection to a provider: the name of the server variable holding its key, never the key."""

    client_id: str
    type: str
    key_env: str
    pod: str | None
    created_at: int
    updated_at: int


_COLUMNS = [PC.c[f] for f in ProviderConnection.__slots__]


class ProviderStore:
    def __init__(self, store: StoreInterface) -> None:
        self.store = store

    async def put(self, client_id: str, type_: str, key_env: str, pod: str | None,
                  audit: AuditEntry | None = None) -> ProviderConnection:
        """Create or replace the client's connection to this provider."""
        now = now_us()

        def w(conn: sa.Connection) -> ProviderConnection:
            old = conn.execute(sa.select(PC).where(PC.c.client_id == client_id, PC.c.type == type_)).mappings().first()
            if old is None:
                conn.execute(PC.insert().values(client_id=client_id, type=type_, key_env=key_env, pod=pod,
                                                created_at=now, updated_at=now))
            else:
                conn.execute(PC.update().where(PC.c.client_id == client_id, PC.c.type == type_).values(
                    key_env=key_env, pod=pod, updated_at=now))
            if audit is not None:
                record(conn, audit.but(target=f"{client_id}/{type_}", client_id=client_id,
                                       changes=[f"key_env: {key_env}", f"pod: {pod}"]))
            return ProviderConnection(*conn.execute(
                sa.select(*_COLUMNS).where(PC.c.client_id == client_id, PC.c.type == type_)).one())

        return await self.store.write(w)

    async def list(self, client_id: str | None = None) -> list[ProviderConnection]:
        def q(conn: sa.Connection) -> list[ProviderConnection]:
            stmt = sa.select(*_COLUMNS).order_by(PC.c.client_id, PC.c.type)
            if client_id is not None:
                stmt = stmt.where(PC.c.client_id == client_id)
            return [ProviderConnection(*r) for r in conn.execute(stmt)]

        return await self.store.read(q)

    async def get(self, client_id: str, type_: str) -> ProviderConnection | None:
        rows = [r for r in await self.list(client_id) if r.type == type_]
        return rows[0] if rows else None

    async def delete(self, client_id: str, type_: str, audit: AuditEntry | None = None) -> None:
        def w(conn: sa.Connection) -> None:
            n = conn.execute(PC.delete().where(PC.c.client_id == client_id, PC.c.type == type_)).rowcount
            if not n:
                raise NotFound(f"client {client_id} has no {type_} connection")
            if audit is not None:
                record(conn, audit.but(target=f"{client_id}/{type_}", client_id=client_id, changes=["deleted"]))

        await self.store.write(w)

    async def connected(self) -> dict[str, set[str]]:
        """Each client's connected provider names (a small table: read whole)."""
        out: dict[str, set[str]] = {}
        for r in await self.list():
            out.setdefault(r.client_id, set()).add(r.type)
        return out
