"""API tokens (the ``tokens`` table): admin or scoped to one client, stored as hashes."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import orjson
import sqlalchemy as sa

from hookbay.audit import AuditEntry
from hookbay.errors import NotFound
from hookbay.ids import now_us, ulid
from hookbay.store import schema
from hookbay.store.audit import record
from hookbay.store.core import StoreCore, hash_secret


@dataclass(frozen=True, slots=True)
class StoredToken:
    """An admin API token as listed: never its value or hash."""

    id: str
    name: str
    client_id: str | None
    created_at: int


class TokensMixin(StoreCore):
    """The ``Tokens`` group."""

    async def list_tokens(self) -> list[StoredToken]:
        T = schema.tokens

        def q(conn: sa.Connection) -> list[StoredToken]:
            rows = conn.execute(sa.select(T.c.id, T.c.name, T.c.client_id, T.c.created_at).order_by(T.c.created_at))
            return [StoredToken(*r) for r in rows]

        return await self.read(q)

    async def revoke_token(self, token_id: str, audit: AuditEntry | None = None) -> None:
        T = schema.tokens

        def rm(conn: sa.Connection) -> None:
            owner = conn.execute(sa.select(T.c.client_id).where(T.c.id == token_id)).first()
            if owner is None or not conn.execute(T.delete().where(T.c.id == token_id)).rowcount:
                raise NotFound("token not found")
            if audit is not None:
                record(conn, audit.but(target=token_id, client_id=owner[0]))

        await self.write(rm)

    async def token_owner(self, token_hash: str) -> tuple[str | None, str] | None:
        """``(client_id, token id)`` of the API token with this hash, or None."""
        T = schema.tokens

        def q(conn: sa.Connection) -> tuple[str | None, str] | None:
            row = conn.execute(sa.select(T.c.client_id, T.c.id).where(T.c.token_hash == token_hash)).first()
            return (row[0], row[1]) if row else None

        return await self.read(q)

    async def create_token(self, name: str, client_id: str | None,
                           audit: AuditEntry | None = None) -> tuple[str, str]:
        """A new API token: ``(id, token)``; only its hash is stored, so the token is shown once."""
        tok = "hbt_" + secrets.token_urlsafe(32)
        tid = "tok_" + ulid()

        def ins(conn: sa.Connection) -> None:
            conn.execute(schema.tokens.insert().values(id=tid, name=name, token_hash=hash_secret(tok),
                                                       client_id=client_id, created_at=now_us()))
            if audit is not None:
                record(conn, audit.but(target=tid, client_id=client_id, changes=[
                    f"name: {orjson.dumps(name).decode()}",
                    f"scope: {'client ' + client_id if client_id else 'admin'}"]))

        await self.write(ins)
        return tid, tok
