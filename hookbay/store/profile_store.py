"""Reading profiles for the layers above (lookups, pages, one profile with all that hangs off it)
and erasing one. Applying contacts to profiles is :mod:`hookbay.store.profiles`."""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa

from hookbay.audit import AuditEntry
from hookbay.errors import NotFound
from hookbay.ids import now_us
from hookbay.store import orders as order_store
from hookbay.store import schema
from hookbay.store.audit import record
from hookbay.store.core import StoreCore
from hookbay.store.merges import forget_merges, merged_from, resolve_profile_id
from hookbay.store.profile_rows import StoredConsentEvent, StoredProfile, StoredProfileDetail

R, REC = schema.requests, schema.records
_PROFILE_COLUMNS = tuple(schema.profiles.c[n]
                         for n in ("id", "client_id", "email", "phone", "created_at", "updated_at"))


class ProfilesMixin(StoreCore):
    async def find_profiles(self, client_id: str | None, *, email: str | None = None,
                            phone: str | None = None) -> list[StoredProfile]:
        PK, P = schema.profile_keys, schema.profiles

        def q(conn: sa.Connection) -> list[StoredProfile]:
            conds = []
            if email:
                conds.append(sa.and_(PK.c.kind == "email", PK.c.value == email))
            if phone:
                conds.append(sa.and_(PK.c.kind == "phone", PK.c.value == phone))
            if not conds:
                return []
            ids = sa.select(PK.c.profile_id).where(sa.or_(*conds))
            if client_id is not None:
                ids = ids.where(PK.c.client_id == client_id)
            stmt = sa.select(*_PROFILE_COLUMNS).where(P.c.id.in_(ids)).order_by(P.c.id)
            return [StoredProfile.of(r) for r in conn.execute(stmt).mappings()]

        return await self.read(q)

    async def find_profiles_by_name(self, client_id: str | None, words: list[str], *,
                                    limit: int = 50) -> list[StoredProfile]:
        """Profiles whose first or last name starts with each word (case-insensitive for ASCII),
        newest first. The fields are orjson text with ``value`` first in each field, so a prefix is
        a LIKE on ``"first_name":{"value":"<word>``, the same on both dialects (a scan of the
        client's profiles: fine for the console's search box, not for bulk lookups)."""
        P = schema.profiles

        def like(name: str, word: str) -> sa.ColumnElement[bool]:
            lit = orjson.dumps(word.lower()).decode()[1:-1]
            lit = lit.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            return sa.func.lower(P.c.fields).like(f'%"{name}":{{"value":"{lit}%', escape="\\")

        def q(conn: sa.Connection) -> list[StoredProfile]:
            stmt = sa.select(*_PROFILE_COLUMNS)
            if client_id is not None:
                stmt = stmt.where(P.c.client_id == client_id)
            for w in words:
                stmt = stmt.where(sa.or_(like("first_name", w), like("last_name", w)))
            stmt = stmt.order_by(P.c.id.desc()).limit(limit)
            return [StoredProfile.of(r) for r in conn.execute(stmt).mappings()]

        return await self.read(q) if words else []

    async def list_profiles(self, client_id: str | None, *, limit: int = 50,
                            before_id: str | None = None) -> list[StoredProfile]:
        """Profiles, newest id first (ids are time-ordered), a page at a time: the console's list
        when no email or phone is searched for."""
        P = schema.profiles

        def q(conn: sa.Connection) -> list[StoredProfile]:
            stmt = sa.select(*_PROFILE_COLUMNS)
            if client_id is not None:
                stmt = stmt.where(P.c.client_id == client_id)
            if before_id:
                stmt = stmt.where(P.c.id < before_id)
            stmt = stmt.order_by(P.c.id.desc()).limit(limit)
            return [StoredProfile.of(r) for r in conn.execute(stmt).mappings()]

        return await self.read(q)

    async def get_profile(self, profile_id: str, client_id: str | None = None) -> StoredProfileDetail:
        """The profile ``profile_id`` lives under now (a merged-away id finds its survivor)."""
        P, PK, CE = schema.profiles, schema.profile_keys, schema.consent_events

        def q(conn: sa.Connection) -> StoredProfileDetail | None:
            pid = resolve_profile_id(conn, profile_id)
            stmt = sa.select(P).where(P.c.id == pid)
            if client_id is not None:
                stmt = stmt.where(P.c.client_id == client_id)
            row = conn.execute(stmt).mappings().first()
            if row is None:
                return None
            keys = (sa.select(PK.c.kind, PK.c.value).where(PK.c.profile_id == pid)
                    .order_by(PK.c.kind, PK.c.value))
            ledger = sa.select(CE).where(CE.c.profile_id == pid).order_by(CE.c.occurred_at, CE.c.id)
            return StoredProfileDetail(
                id=row["id"], client_id=row["client_id"], email=row["email"], phone=row["phone"],
                created_at=row["created_at"], updated_at=row["updated_at"],
                fields=orjson.loads(row["fields"]),
                keys=[(k, v) for k, v in conn.execute(keys)],
                ledger=[StoredConsentEvent.of(r) for r in conn.execute(ledger).mappings()],
                request_ids=list(conn.execute(
                    sa.select(REC.c.request_id).where(REC.c.profile_id == pid).distinct()).scalars()),
                merged_from=merged_from(conn, pid),
                purchases=order_store.purchase_facts(conn, pid),
                recent_orders=order_store.list_orders(conn, client_id=None, profile_id=pid, limit=10),
            )

        row = await self.read(q)
        if row is None:
            raise NotFound("profile not found")
        return row

    async def erase_profile(self, profile_id: str, client_id: str | None, actor: str,
                            audit: AuditEntry | None = None) -> dict[str, Any]:
        """Right to be forgotten: the profile, its keys and consent ledger, the records made from
        its requests, and those requests' raw bodies and headers. The erasure itself is logged."""
        from hookbay.ids import ulid

        P, PK, CE, E = schema.profiles, schema.profile_keys, schema.consent_events, schema.erasures

        def erase(conn: sa.Connection, profile_id: str = profile_id) -> dict[str, Any]:
            profile_id = resolve_profile_id(conn, profile_id)
            stmt = sa.select(P.c.client_id).where(P.c.id == profile_id)
            if client_id is not None:
                stmt = stmt.where(P.c.client_id == client_id)
            owner = conn.execute(stmt).scalar()
            if owner is None:
                raise NotFound("profile not found")
            req_ids = list(conn.execute(
                sa.select(REC.c.request_id).where(REC.c.profile_id == profile_id).distinct()).scalars())
            summary = {
                "requests_scrubbed": conn.execute(R.update().where(R.c.id.in_(req_ids)).values(
                    body=None, headers="[]", query="", receipt=orjson.dumps({"erased": True}).decode(),
                )).rowcount if req_ids else 0,
                "records_deleted": conn.execute(REC.delete().where(REC.c.request_id.in_(req_ids))).rowcount
                if req_ids else 0,
                "consent_events_deleted": conn.execute(CE.delete().where(CE.c.profile_id == profile_id)).rowcount,
                "keys_deleted": conn.execute(PK.delete().where(PK.c.profile_id == profile_id)).rowcount,
                "merged_ids_forgotten": forget_merges(conn, profile_id),
                "orders_deleted": order_store.erase_orders(conn, profile_id),
            }
            conn.execute(P.delete().where(P.c.id == profile_id))
            erasure_id = "era_" + ulid()
            conn.execute(E.insert().values(id=erasure_id, client_id=owner, profile_id=profile_id,
                                           erased_at=now_us(), actor=actor, summary=orjson.dumps(summary).decode()))
            if audit is not None:
                record(conn, audit.but(target=profile_id, client_id=owner, changes=[
                    f"erasure: {erasure_id}", *(f"{k}: {v}" for k, v in summary.items())]))
            return {"erasure_id": erasure_id, "profile_id": profile_id, **summary}

        return await self.write(erase)
