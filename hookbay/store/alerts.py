"""Alert rules and alerts in the store, and the measurements the rules read.

All state is in the database (not in a process), so the evaluator may run in ``serve`` or in a
separate ``hookbay worker``; a lease in ``meta`` makes one evaluator act at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from hookbay.errors import NotFound
from hookbay.ids import now_us, ulid
from hookbay.store import schema
from hookbay.store.alert_rows import StoredAlert, StoredAlertRule
from hookbay.store.interface import StoreInterface
from hookbay.store.source_rows import StoredSource

AR, AL, D, R, RT, S, META = (schema.alert_rules, schema.alerts, schema.deliveries, schema.requests,
                             schema.relay_tokens, schema.sources, schema.meta)
LEASE_KEY = "alerts_evaluator"


@dataclass(slots=True)
class Transition:
    """One change the evaluator makes: ``open`` (new row), ``repeat`` or ``resolve`` (existing)."""

    kind: str
    alert: StoredAlert


class AlertStore:
    def __init__(self, store: StoreInterface) -> None:
        self.store = store

    # --- rules ------------------------------------------------------------------------------

    async def create_rule(self, client_id: str | None, name: str, enabled: bool,
                          definition: dict[str, Any]) -> StoredAlertRule:
        now = now_us()
        row = {"id": "alr_" + ulid(), "client_id": client_id, "name": name, "enabled": enabled,
               "definition": orjson.dumps(definition).decode(), "created_at": now, "updated_at": now}

        def w(conn: sa.Connection) -> None:
            conn.execute(AR.insert().values(**row))

        await self.store.write(w)
        return StoredAlertRule.of(row)

    async def get_rule(self, rule_id: str, client_id: str | None = None) -> StoredAlertRule:
        """``client_id`` None = the admin (every rule); else only that client's rules."""
        def q(conn: sa.Connection) -> Any:
            stmt = sa.select(AR).where(AR.c.id == rule_id)
            if client_id is not None:
                stmt = stmt.where(AR.c.client_id == client_id)
            return conn.execute(stmt).mappings().first()

        row = await self.store.read(q)
        if row is None:
            raise NotFound("Alert rule not found")
        return StoredAlertRule.of(row)

    async def find_rule(self, client_id: str | None, name: str) -> StoredAlertRule | None:
        def q(conn: sa.Connection) -> Any:
            cond = AR.c.client_id.is_(None) if client_id is None else AR.c.client_id == client_id
            return conn.execute(sa.select(AR).where(cond, AR.c.name == name)).mappings().first()

        row = await self.store.read(q)
        return StoredAlertRule.of(row) if row else None

    async def list_rules(self, client_id: str | None = None, *, enabled_only: bool = False) -> list[StoredAlertRule]:
        def q(conn: sa.Connection) -> list[Any]:
            stmt = sa.select(AR).order_by(AR.c.created_at, AR.c.id)
            if client_id is not None:
                stmt = stmt.where(AR.c.client_id == client_id)
            if enabled_only:
                stmt = stmt.where(AR.c.enabled.is_(True))
            return list(conn.execute(stmt).mappings())

        return [StoredAlertRule.of(r) for r in await self.store.read(q)]

    async def update_rule(self, rule_id: str, name: str, enabled: bool, definition: dict[str, Any]) -> StoredAlertRule:
        def w(conn: sa.Connection) -> None:
            n = conn.execute(AR.update().where(AR.c.id == rule_id).values(
                name=name, enabled=enabled, definition=orjson.dumps(definition).decode(),
                updated_at=now_us())).rowcount
            if not n:
                raise NotFound("Alert rule not found")

        await self.store.write(w)
        return await self.get_rule(rule_id)

    async def delete_rule(self, rule_id: str) -> None:
        """Its open alerts are closed with it (no resolved message: nothing was fixed)."""
        def w(conn: sa.Connection) -> None:
            if not conn.execute(AR.delete().where(AR.c.id == rule_id)).rowcount:
                raise NotFound("Alert rule not found")
            conn.execute(AL.update().where(AL.c.rule_id == rule_id, AL.c.state == "open").values(
                state="resolved", resolved_at=now_us(), last_error="rule deleted"))

        await self.store.write(w)

    # --- alerts ------------------------------------------------------------------------------

    async def list_alerts(self, client_id: str | None = None, *, state: str | None = None,
                          rule_id: str | None = None, limit: int = 100) -> list[StoredAlert]:
        def q(conn: sa.Connection) -> list[Any]:
            stmt = sa.select(AL).order_by(AL.c.opened_at.desc(), AL.c.id.desc()).limit(limit)
            if client_id is not None:
                stmt = stmt.where(AL.c.client_id == client_id)
            if state is not None:
                stmt = stmt.where(AL.c.state == state)
            if rule_id is not None:
                stmt = stmt.where(AL.c.rule_id == rule_id)
            return list(conn.execute(stmt).mappings())

        return [StoredAlert.of(r) for r in await self.store.read(q)]

    async def get_alert(self, alert_id: str, client_id: str | None = None) -> StoredAlert:
        def q(conn: sa.Connection) -> Any:
            stmt = sa.select(AL).where(AL.c.id == alert_id)
            if client_id is not None:
                stmt = stmt.where(AL.c.client_id == client_id)
            return conn.execute(stmt).mappings().first()

        row = await self.store.read(q)
        if row is None:
            raise NotFound("Alert not found")
        return StoredAlert.of(row)

    async def open_alerts(self) -> list[StoredAlert]:
        return await self.list_alerts(state="open", limit=100_000)

    async def apply(self, transitions: list[Transition]) -> None:
        """Store the evaluator's decisions in one transaction, before any message is sent: a crash
        between the two loses a message rather than opening an alert twice."""
        def w(conn: sa.Connection) -> None:
            for t in transitions:
                a = t.alert
                if t.kind == "open":
                    conn.execute(AL.insert().values(
                        id=a.id, rule_id=a.rule_id, client_id=a.client_id, subject=a.subject,
                        state="open", summary=a.summary, detail=orjson.dumps(a.detail).decode(),
                        opened_at=a.opened_at, notified_at=a.notified_at, notifications=1))
                else:
                    vals: dict[str, Any] = {"summary": a.summary, "detail": orjson.dumps(a.detail).decode(),
                                            "notified_at": a.notified_at, "notifications": a.notifications}
                    if t.kind == "resolve":
                        vals.update(state="resolved", resolved_at=a.resolved_at)
                    conn.execute(AL.update().where(AL.c.id == a.id, AL.c.state == "open").values(**vals))

        if transitions:
            await self.store.write(w)

    async def record_error(self, alert_id: str, error: str | None) -> None:
        def w(conn: sa.Connection) -> None:
            conn.execute(AL.update().where(AL.c.id == alert_id).values(last_error=error[:1000] if error else None))

        await self.store.write(w, durable=False)

    # --- the evaluator's lease -------------------------------------------------------------------

    async def take_lease(self, holder: str, lease_s: float) -> bool:
        """Compare-and-set on one ``meta`` row: true when ``holder`` now holds the lease (it did, or
        the previous holder's expired). Atomic on both dialects without row locks."""
        now = now_us()
        value = f"{holder} {now + int(lease_s * 1e6)}"

        def w(conn: sa.Connection) -> bool:
            cur = conn.execute(sa.select(META.c.value).where(META.c.key == LEASE_KEY)).scalar()
            if cur is None:
                ins = self.store.dialect.insert(META).values(key=LEASE_KEY, value=value).on_conflict_do_nothing()
                return bool(conn.execute(ins).rowcount)
            who, _, until = cur.rpartition(" ")
            if who != holder and int(until or 0) > now:
                return False
            return bool(conn.execute(META.update().where(META.c.key == LEASE_KEY, META.c.value == cur)
                                     .values(value=value)).rowcount)

        return bool(await self.store.write(w, durable=False))

    # --- measurements --------------------------------------------------------------------------

    async def sources(self) -> list[StoredSource]:
        def q(conn: sa.Connection) -> list[StoredSource]:
            return [StoredSource.of(r) for r in conn.execute(sa.select(S)).mappings()]

        return await self.store.read(q)

    async def dead_letters_since(self, since_us: int) -> dict[str, dict[str, Any]]:
        """Per source: deliveries that became dead letters since ``since_us`` (ids and action types
        only: the error text may quote personal data)."""
        def q(conn: sa.Connection) -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            rows = conn.execute(sa.select(D.c.source_id, D.c.id, D.c.action_type, D.c.last_status, D.c.updated_at)
                                .where(D.c.state == "dead", D.c.updated_at >= since_us)
                                .order_by(D.c.updated_at.desc()))
            for sid, did, atype, status, _ in rows:
                e = out.setdefault(sid, {"dead_letters": 0, "latest_delivery_id": did, "latest_status": status,
                                         "action_types": []})
                e["dead_letters"] += 1
                if atype not in e["action_types"]:
                    e["action_types"].append(atype)
            return out

        return await self.store.read(q)

    async def request_counts_since(self, since_us: int) -> dict[str, dict[str, int]]:
        """Per source: requests received since ``since_us``, how many were rejected, how many failed
        processing (index range on ``ix_requests_received_at``)."""
        def q(conn: sa.Connection) -> dict[str, dict[str, int]]:
            rejected = sa.func.sum(sa.case((R.c.verdict == "rejected", 1), else_=0))
            failed = sa.func.sum(sa.case((R.c.state == "failed", 1), else_=0))
            rows = conn.execute(sa.select(R.c.source_id, sa.func.count(), rejected, failed)
                                .where(R.c.received_at >= since_us, R.c.source_id.is_not(None))
                                .group_by(R.c.source_id))
            return {sid: {"total": int(n), "rejected": int(rj or 0), "failed": int(f or 0)} for sid, n, rj, f in rows}

        return await self.store.read(q)

    async def last_received(self, source_ids: list[str]) -> dict[str, int]:
        """The newest request per source (one index lookup each on ``ix_requests_source_received``)."""
        def q(conn: sa.Connection) -> dict[str, int]:
            out = {}
            for sid in source_ids:
                v = conn.execute(sa.select(sa.func.max(R.c.received_at)).where(R.c.source_id == sid)).scalar()
                if v is not None:
                    out[sid] = int(v)
            return out

        return await self.store.read(q) if source_ids else {}

    async def relay_last_seen(self) -> dict[str, int]:
        """Per source with relay tokens: the latest pull by any of its agents, or when its newest
        token was created if none has pulled since."""
        def q(conn: sa.Connection) -> dict[str, int]:
            rows = conn.execute(sa.select(RT.c.source_id, sa.func.max(RT.c.last_pull_at), sa.func.max(RT.c.created_at))
                                .group_by(RT.c.source_id))
            return {sid: int(max(p or 0, c or 0)) for sid, p, c in rows}

        return await self.store.read(q)
