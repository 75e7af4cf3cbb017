"""Sources and their signing secrets (the ``sources`` and ``source_secrets`` tables). Every change
bumps the sources revision, which the source cache (``store/sources.py``) reloads on."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import orjson
import sqlalchemy as sa

from hookbay.audit import AuditEntry
from hookbay.errors import AmbiguousSource, Conflict, EncryptionKeyMissing, NotFound
from hookbay.ids import new_source_id, now_us
from hookbay.store import schema
from hookbay.store.audit import record
from hookbay.store.core import StoreCore, hash_secret
from hookbay.store.source_rows import StoredSource

S = schema.sources


class SourcesMixin(StoreCore):
    """The ``Sources`` group."""

    async def create_source(
        self, *, name: str, client_id: str, config: dict[str, Any], enabled: bool = True, api_key: bool = False,
        secret: str | None = None, audit: AuditEntry | None = None,
    ) -> tuple[StoredSource, str | None]:
        key = "hbk_" + secrets.token_urlsafe(32) if api_key else None
        now = now_us()
        row = {
            "id": new_source_id(),
            "client_id": client_id,
            "name": name,
            "token": str(uuid.uuid4()),
            "enabled": enabled,
            "config": orjson.dumps(config).decode(),
            "api_key_hash": hash_secret(key) if key else None,
            "created_at": now,
            "updated_at": now,
        }

        def ins(conn: sa.Connection) -> StoredSource:
            exists = conn.execute(
                sa.select(S.c.id).where(S.c.client_id == client_id, S.c.name == name)
            ).scalar()
            if exists:
                raise Conflict(f"client {client_id!r} already has a source named {name!r}")
            conn.execute(S.insert().values(**row))
            if secret:
                from hookbay.ids import ulid

                sid = "sec_" + ulid()
                blob, kid = self.seal(secret.encode(), sid)
                conn.execute(schema.source_secrets.insert().values(
                    id=sid, source_id=row["id"], secret=blob, key_id=kid, created_at=now))
            _bump_sources_rev(conn)
            if audit is not None:
                record(conn, audit.but(target=row["id"], client_id=client_id))
            return StoredSource.of(row)

        return await self.write(ins), key

    async def update_source(self, source_id: str, changes: dict[str, Any], client_id: str | None = None,
                            rotate_api_key: bool = False, remove_api_key: bool = False,
                            audit: AuditEntry | None = None) -> tuple[StoredSource, str | None]:
        key = "hbk_" + secrets.token_urlsafe(32) if rotate_api_key else None
        values = dict(changes)
        if "config" in values:
            values["config"] = orjson.dumps(values["config"]).decode()
        if key:
            values["api_key_hash"] = hash_secret(key)
        elif remove_api_key:
            values["api_key_hash"] = None
        values["updated_at"] = now_us()

        def upd(conn: sa.Connection) -> StoredSource:
            cond = [S.c.id == source_id]
            if client_id is not None:
                cond.append(S.c.client_id == client_id)
            if "name" in values:
                clash = conn.execute(
                    sa.select(S.c.id).where(
                        S.c.name == values["name"], S.c.id != source_id,
                        S.c.client_id == sa.select(S.c.client_id).where(S.c.id == source_id).scalar_subquery(),
                    )
                ).scalar()
                if clash:
                    raise Conflict(f"a source named {values['name']!r} already exists")
            n = conn.execute(S.update().where(*cond).values(**values)).rowcount
            if not n:
                raise NotFound("source not found")
            _bump_sources_rev(conn)
            new = StoredSource.of(conn.execute(sa.select(S).where(S.c.id == source_id)).mappings().one())
            if audit is not None:
                record(conn, audit.but(target=source_id, client_id=new.client_id))
            return new

        return await self.write(upd), key

    async def delete_source(self, source_id: str, client_id: str | None = None,
                            audit: AuditEntry | None = None) -> None:
        def rm(conn: sa.Connection) -> None:
            cond = [S.c.id == source_id]
            if client_id is not None:
                cond.append(S.c.client_id == client_id)
            owner = conn.execute(sa.select(S.c.client_id).where(*cond)).scalar()
            if owner is None or not conn.execute(S.delete().where(*cond)).rowcount:
                raise NotFound("source not found")
            _bump_sources_rev(conn)
            if audit is not None:
                record(conn, audit.but(target=source_id, client_id=owner))

        await self.write(rm)

    async def get_source(self, ref: str, client_id: str | None = None) -> StoredSource:
        """Find a source by id, token, or (client, name)."""

        def q(conn: sa.Connection) -> StoredSource | None:
            cond = sa.or_(S.c.id == ref, S.c.token == ref, S.c.name == ref)
            stmt = sa.select(S).where(cond)
            if client_id is not None:
                stmt = stmt.where(S.c.client_id == client_id)
            rows = conn.execute(stmt).mappings().all()
            exact = [r for r in rows if r["id"] == ref or r["token"] == ref]
            if exact:
                return StoredSource.of(exact[0])
            if len(rows) > 1:  # the same name under several clients: never pick one silently
                raise AmbiguousSource(f"source name {ref!r} is ambiguous: use the id or --client",
                                      detail={"clients": sorted({str(r["client_id"]) for r in rows})})
            return StoredSource.of(rows[0]) if rows else None

        row = await self.read(q)
        if row is None:
            raise NotFound("source not found")
        return row

    async def list_sources(self, client_id: str | None = None) -> list[StoredSource]:
        def q(conn: sa.Connection) -> list[StoredSource]:
            stmt = sa.select(S).order_by(S.c.client_id, S.c.name)
            if client_id is not None:
                stmt = stmt.where(S.c.client_id == client_id)
            return [StoredSource.of(r) for r in conn.execute(stmt).mappings()]

        return await self.read(q)

    async def sources_revision(self) -> str:
        def q(conn: sa.Connection) -> str:
            v = conn.execute(sa.select(schema.meta.c.value).where(schema.meta.c.key == "sources_rev")).scalar()
            return v or "0"

        return await self.read(q)


class SecretsMixin(StoreCore):
    """The ``Secrets`` group, sealed at rest (AAD = the secret's id)."""

    async def source_secrets(self) -> dict[str, list[tuple[str, int | None]]]:
        SS = schema.source_secrets

        def q(conn: sa.Connection) -> dict[str, list[tuple[str, int | None]]]:
            out: dict[str, list[tuple[str, int | None]]] = {}
            now = now_us()
            rows = conn.execute(sa.select(SS).where(sa.or_(SS.c.expires_at.is_(None), SS.c.expires_at > now))
                                .order_by(SS.c.created_at.desc())).mappings()
            for r in rows:
                try:
                    secret = self.unseal(r["secret"], r["id"]).decode()
                except EncryptionKeyMissing:
                    continue
                out.setdefault(r["source_id"], []).append((secret, r["expires_at"]))
            return out

        return await self.read(q)

    async def add_secret(self, source_id: str, secret: str, *, retire_others_after_s: float | None = None,
                         audit: AuditEntry | None = None) -> None:
        """Add a signing secret. Existing active secrets stay valid for ``retire_others_after_s``
        (the rotation grace period; 0 retires them now, None keeps them)."""
        from hookbay.ids import ulid

        SS = schema.source_secrets
        sid = "sec_" + ulid()
        blob, kid = self.seal(secret.encode(), sid)

        def w(conn: sa.Connection) -> None:
            now = now_us()
            if retire_others_after_s is not None:
                conn.execute(SS.update().where(
                    SS.c.source_id == source_id, sa.or_(SS.c.expires_at.is_(None), SS.c.expires_at > now)
                ).values(expires_at=now + int(retire_others_after_s * 1e6)))
            conn.execute(SS.insert().values(id=sid, source_id=source_id, secret=blob, key_id=kid, created_at=now))
            _bump_sources_rev(conn)
            if audit is not None:
                owner = conn.execute(sa.select(S.c.client_id).where(S.c.id == source_id)).scalar()
                record(conn, audit.but(target=source_id, client_id=owner))

        await self.write(w)

    async def secret_counts(self) -> dict[str, int]:
        SS = schema.source_secrets

        def q(conn: sa.Connection) -> dict[str, int]:
            now = now_us()
            rows = conn.execute(sa.select(SS.c.source_id, sa.func.count()).where(
                sa.or_(SS.c.expires_at.is_(None), SS.c.expires_at > now)).group_by(SS.c.source_id))
            return {r[0]: int(r[1]) for r in rows}

        return await self.read(q)

    async def secret_count(self, source_id: str) -> int:
        SS = schema.source_secrets

        def q(conn: sa.Connection) -> int:
            now = now_us()
            return int(conn.execute(sa.select(sa.func.count()).select_from(SS).where(
                SS.c.source_id == source_id, sa.or_(SS.c.expires_at.is_(None), SS.c.expires_at > now))).scalar() or 0)

        return await self.read(q)


def _bump_sources_rev(conn: sa.Connection) -> None:
    """Mark a source change; on PostgreSQL also NOTIFY, delivered to running servers when this commits."""
    m = schema.meta
    rev = secrets.token_hex(8)
    if conn.execute(m.update().where(m.c.key == "sources_rev").values(value=rev)).rowcount == 0:
        conn.execute(m.insert().values(key="sources_rev", value=rev))
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_notify('hookbay_sources', :rev)"), {"rev": rev})
