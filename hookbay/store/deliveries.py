"""Deliveries in the store: rows created with the records, claimed with a lease, one attempt row
per try, dead letters retried by id or by filter.

A mixin of :class:`~hookbay.store.base.Store` (on :class:`~hookbay.store.core.StoreCore`) so the store
stays one interface; writes go through the same single writer (group commit) as everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from hookbay.errors import NotFound
from hookbay.ids import now_us, ulid
from hookbay.results import ProcessResult
from hookbay.store import schema
from hookbay.store.core import StoreCore

D, DA, REC, R = schema.deliveries, schema.delivery_attempts, schema.records, schema.requests
TERMINAL = ("succeeded", "dead", "skipped")
DEAD_LETTER = "dead"
CONSENT_CHANNELS = ("email", "sms", "phone", "mail")


def new_delivery_id() -> str:
    return "dlv_" + ulid()


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One try of a delivery (a ``delivery_attempts`` row)."""

    id: int
    delivery_id: str
    attempt: int
    started_at: int
    latency_us: int
    status: int | None
    outcome: str
    response_excerpt: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Delivery:
    """A ``deliveries`` row; ``attempt_log`` is filled only by ``get_delivery``."""

    id: str
    request_id: str
    record_idx: int
    action_idx: int
    source_id: str
    client_id: str
    action_type: str
    action_name: str
    destination: str
    state: str
    attempts: int
    run_after: int
    locked_until: int | None
    locked_by: str | None
    last_status: int | None
    last_error: str | None
    created_at: int
    updated_at: int
    once_key: str | None
    attempt_log: tuple[DeliveryAttempt, ...] = ()


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    client_id: str | None = None
    source_id: str | None = None
    request_id: str | None = None
    state: str | None = None
    action_type: str | None = None
    error: str | None = None  # substring of last_error
    destination: str | None = None  # substring of the destination
    since_us: int | None = None
    until_us: int | None = None
    before_id: str | None = None
    limit: int = 50

    def where(self) -> list[sa.ColumnElement[bool]]:
        conds: list[sa.ColumnElement[bool]] = []
        for col, value in ((D.c.client_id, self.client_id), (D.c.source_id, self.source_id),
                           (D.c.request_id, self.request_id), (D.c.state, self.state),
                           (D.c.action_type, self.action_type)):
            if value is not None:
                conds.append(col == value)
        if self.error:
            pattern = "%" + self.error.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            conds.append(D.c.last_error.like(pattern, escape="\\"))
        if self.destination:
            pattern = "%" + self.destination.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            conds.append(D.c.destination.like(pattern, escape="\\"))
        if self.since_us is not None:
            conds.append(D.c.created_at >= self.since_us)
        if self.until_us is not None:
            conds.append(D.c.created_at < self.until_us)
        return conds


@dataclass(frozen=True, slots=True)
class ClaimedDelivery(Delivery):
    """A delivery as :meth:`DeliveriesMixin.claim_deliveries` hands it to a worker: the same row,
    with the lease (``locked_by``, ``locked_until``) that lets only this worker finish it."""

    locked_until: int
    locked_by: str


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one try produced; ``state`` is the delivery's state afterwards."""

    state: str
    started_at: int
    latency_us: int
    outcome: str
    status: int | None = None
    excerpt: str | None = None
    error: str | None = None
    run_after: int | None = None


@dataclass(frozen=True, slots=True)
class DeliveryContext:
    """What an action runs on: the record (None if it is gone) and its profile as the action may show
    it (``id``, current ``fields``, ``consent`` per channel), or None for a record without one."""

    record: dict[str, Any] | None
    profile: dict[str, Any] | None


def delivery_rows(results: Sequence[ProcessResult], now: int) -> list[dict[str, Any]]:
    """Rows for the deliveries planned by the worker (``ProcessResult.deliveries``)."""
    return [
        {"id": new_delivery_id(), "request_id": res.request_id, "record_idx": d.record_idx,
         "action_idx": d.action_idx, "source_id": res.source_id, "client_id": res.client_id,
         "action_type": d.action_type, "action_name": d.action_name, "destination": d.destination,
         "state": "pending", "attempts": 0, "run_after": now, "created_at": now, "updated_at": now,
         "once_key": d.once_key}
        for res in results for d in res.deliveries
    ]


class DeliveriesMixin(StoreCore):
    """The ``Deliveries`` group."""

    def insert_deliveries(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        """Inside a write: a re-finished job (lease expired) or a replay never doubles a delivery."""
        if rows:
            conn.execute(self.dialect.insert(D).on_conflict_do_nothing(), rows)

    async def claim_deliveries(self, worker_id: str, limit: int, lease_s: float,
                               exclude_destinations: set[str] | frozenset[str] = frozenset()) -> list[ClaimedDelivery]:
        """Due pending deliveries, and running ones whose lease expired (their worker died),
        skipping destinations this worker already has at their concurrency limit."""
        if limit <= 0:
            return []

        def claim(conn: sa.Connection) -> list[ClaimedDelivery]:
            now = now_us()
            ready = sa.or_(
                sa.and_(D.c.state == "pending", D.c.run_after <= now),
                sa.and_(D.c.state == "running", D.c.locked_until < now),
            )
            pick = sa.select(D.c.id).where(ready)
            if exclude_destinations:
                pick = pick.where(D.c.destination.not_in(list(exclude_destinations)))
            pick = pick.order_by(D.c.run_after, D.c.id).limit(limit).with_for_update(skip_locked=True)
            stmt = (
                D.update()
                .where(D.c.id.in_(pick.scalar_subquery() if not self.is_postgres else pick))
                .values(state="running", locked_by=worker_id, locked_until=now + int(lease_s * 1e6),
                        attempts=D.c.attempts + 1, updated_at=now)
                .returning(*D.c)
            )
            return [ClaimedDelivery(**r) for r in conn.execute(stmt).mappings()]

        # Lease bookkeeping: if a power cut loses the claim, the deliveries are simply due again.
        out: list[ClaimedDelivery] = await self.write(claim, durable=False)
        return out

    async def release_deliveries(self, ids: list[str], worker_id: str) -> None:
        """Give back claimed deliveries that this worker has no slot for, as if never claimed."""
        if not ids:
            return

        def w(conn: sa.Connection) -> None:
            conn.execute(D.update().where(D.c.id.in_(ids), D.c.state == "running", D.c.locked_by == worker_id)
                         .values(state="pending", locked_by=None, locked_until=None, attempts=D.c.attempts - 1))

        await self.write(w, durable=False)

    async def delivery_context(self, claimed: list[ClaimedDelivery]) -> dict[str, DeliveryContext]:
        """The record and its profile (current fields and consent) per delivery id, read once for a batch."""
        def q(conn: sa.Connection) -> dict[str, DeliveryContext]:
            out: dict[str, DeliveryContext] = {}
            req_ids = list({c.request_id for c in claimed})
            recs = {(r.request_id, r.idx): r for r in conn.execute(
                sa.select(REC.c.request_id, REC.c.idx, REC.c.data, REC.c.profile_id).where(
                    REC.c.request_id.in_(req_ids)))}
            pids = {r.profile_id for r in recs.values() if r.profile_id}
            profiles: dict[str, dict[str, Any]] = {}
            if pids:
                P, CE = schema.profiles, schema.consent_events
                for p in conn.execute(sa.select(P.c.id, P.c.fields).where(P.c.id.in_(pids))):
                    fields = {k: v["value"] for k, v in orjson.loads(p.fields).items()}
                    profiles[p.id] = {"id": p.id, "fields": fields, "consent": {}}
                # The current state is the latest event per channel: one index probe each, however
                # long the ledger has grown.
                latest = sa.select(CE.c.granted).where(
                    CE.c.profile_id == sa.bindparam("pid"), CE.c.channel == sa.bindparam("ch")
                ).order_by(CE.c.occurred_at.desc(), CE.c.id.desc()).limit(1)
                for pid, prof in profiles.items():
                    for ch in CONSENT_CHANNELS:
                        granted = conn.execute(latest, {"pid": pid, "ch": ch}).scalar()
                        if granted is not None:
                            prof["consent"][ch] = bool(granted)
            for c in claimed:
                rec = recs.get((c.request_id, c.record_idx))
                out[c.id] = DeliveryContext(
                    record=orjson.loads(rec.data) if rec is not None else None,
                    profile=profiles.get(rec.profile_id) if rec is not None and rec.profile_id else None)
            return out

        ctx: dict[str, DeliveryContext] = await self.read(q)
        return ctx

    async def finish_delivery(self, claimed: ClaimedDelivery, result: AttemptResult) -> bool:
        """Record the attempt and the delivery's new state, unless the claim's lease was lost
        (another worker re-claimed it after this one stalled); returns whether it was recorded."""
        return (await self.finish_deliveries([(claimed, result)]))[0]

    async def finish_deliveries(self, items: list[tuple[ClaimedDelivery, AttemptResult]]) -> list[bool]:
        """:meth:`finish_delivery` for many in one write: one savepoint, not one per delivery."""

        def w(conn: sa.Connection) -> list[bool]:
            now = now_us()
            out: list[bool] = []
            attempts = []
            for claimed, result in items:
                values: dict[str, Any] = {"state": result.state, "locked_by": None, "locked_until": None,
                                          "last_status": result.status, "last_error": result.error,
                                          "updated_at": now}
                if result.run_after is not None:
                    values["run_after"] = result.run_after
                n = conn.execute(D.update().where(D.c.id == claimed.id, D.c.state == "running",
                                                  D.c.locked_by == claimed.locked_by).values(**values)).rowcount
                out.append(bool(n))
                if n:
                    attempts.append({
                        "delivery_id": claimed.id, "attempt": claimed.attempts, "started_at": result.started_at,
                        "latency_us": result.latency_us, "status": result.status, "outcome": result.outcome,
                        "response_excerpt": result.excerpt, "error": result.error})
            if attempts:
                conn.execute(DA.insert(), attempts)
            return out

        done: list[bool] = await self.write(w)
        return done

    async def list_deliveries(self, f: DeliveryFilter) -> list[Delivery]:
        def q(conn: sa.Connection) -> list[Delivery]:
            stmt = sa.select(D).where(*f.where())
            if f.before_id:
                stmt = stmt.where(D.c.id < f.before_id)
            return [Delivery(**r) for r in conn.execute(stmt.order_by(D.c.id.desc()).limit(f.limit)).mappings()]

        rows: list[Delivery] = await self.read(q)
        return rows

    async def get_delivery(self, delivery_id: str, client_id: str | None = None) -> Delivery:
        def q(conn: sa.Connection) -> Delivery | None:
            stmt = sa.select(D).where(D.c.id == delivery_id)
            if client_id is not None:
                stmt = stmt.where(D.c.client_id == client_id)
            row = conn.execute(stmt).mappings().first()
            if row is None:
                return None
            log = tuple(DeliveryAttempt(**a) for a in conn.execute(
                sa.select(DA).where(DA.c.delivery_id == delivery_id).order_by(DA.c.id)).mappings())
            return Delivery(**row, attempt_log=log)

        row: Delivery | None = await self.read(q)
        if row is None:
            raise NotFound("delivery not found")
        return row

    async def retry_deliveries(self, f: DeliveryFilter, ids: list[str] | None = None) -> list[str]:
        """Put dead letters (or, by id, any finished delivery) back in the queue, due now, with a
        fresh retry schedule. By filter only dead letters move; returns the ids queued."""

        def w(conn: sa.Connection) -> list[str]:
            now = now_us()
            conds = f.where()
            if ids is not None:
                conds.append(D.c.id.in_(ids))
                conds.append(D.c.state.in_(("dead", "skipped", "succeeded")))
            else:
                conds.append(D.c.state == DEAD_LETTER)
            picked = list(conn.execute(sa.select(D.c.id).where(*conds)).scalars())
            for i in range(0, len(picked), 500):
                conn.execute(D.update().where(D.c.id.in_(picked[i:i + 500])).values(
                    state="pending", run_after=now, attempts=0, locked_by=None, locked_until=None, updated_at=now))
            return picked

        done: list[str] = await self.write(w)
        if done and self.delivery_event is not None:
            self.delivery_event.set()
        return done

    async def delivery_counts(self) -> dict[str, int]:
        def q(conn: sa.Connection) -> dict[str, int]:
            return {s: int(n) for s, n in conn.execute(sa.select(D.c.state, sa.func.count()).group_by(D.c.state))}

        counts: dict[str, int] = await self.read(q)
        return counts
