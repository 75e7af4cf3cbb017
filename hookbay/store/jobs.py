"""The job queue (the ``jobs`` and ``workers`` tables): jobs claimed with a lease by workers that
heartbeat, finished atomically with their records, profiles, orders and deliveries."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import sqlalchemy as sa

from hookbay.ids import now_us
from hookbay.results import ProcessResult
from hookbay.store import bulk, schema
from hookbay.store import orders as order_store
from hookbay.store import profiles as profile_store
from hookbay.store.deliveries import DeliveriesMixin, delivery_rows
from hookbay.store.requests import ClaimedJob

R, J, REC = schema.requests, schema.jobs, schema.records


class JobQueueMixin(DeliveriesMixin):
    """The ``JobQueue`` group; on :class:`DeliveriesMixin`, as a finished job inserts its deliveries."""

    async def heartbeat(self, worker_id: str) -> None:
        """Say this worker is alive (bookkeeping: not worth an fsync)."""
        W = schema.workers

        def beat(conn: sa.Connection) -> None:
            now = now_us()
            if not conn.execute(W.update().where(W.c.id == worker_id).values(heartbeat_at=now)).rowcount:
                conn.execute(W.insert().values(id=worker_id, started_at=now, heartbeat_at=now))

        await self.write(beat, durable=False)

    async def retire_worker(self, worker_id: str) -> None:
        """A worker stopping cleanly: its running jobs go back to pending, its heartbeat row goes."""
        W = schema.workers

        def retire(conn: sa.Connection) -> None:
            conn.execute(J.update().where(J.c.state == "running", J.c.locked_by == worker_id).values(
                state="pending", locked_by=None, locked_until=None))
            conn.execute(W.delete().where(W.c.id == worker_id))

        await self.write(retire)

    async def claim_jobs(self, worker_id: str, limit: int, lease_s: float,
                         stale_after_s: float | None = None) -> list[ClaimedJob]:
        """Claim running jobs whose worker died (its lease expired, or its heartbeat is older than
        ``stale_after_s``), then pending jobs that are due, the longest due first.

        Each kind is picked by its own range scan of ``ix_jobs_claim`` (state, run_after) that stops
        after ``limit`` rows, so a claim costs the same whatever the backlog (one query with an OR of
        both was planned as a scan and sort of every pending job). On PostgreSQL the planner, without
        statistics on a young jobs table, would still pick a bitmap scan plus sort of the whole
        backlog, so bitmap scans are off while the pending jobs are picked (``set_config`` local to
        the transaction, restored right after). Raw SQL: SQLAlchemy's per-row overhead on a few
        hundred ids and returned rows cost more than the statements themselves."""

        pg = self.is_postgres
        ph, lock = ("%s", " FOR UPDATE SKIP LOCKED") if pg else ("?", "")
        update = (f"UPDATE jobs SET state = 'running', locked_by = {ph}, locked_until = {ph}, attempts = attempts + 1"
                  " WHERE id IN ({pick}) RETURNING id, request_id, attempts, run_after")
        expired = update.format(pick=f"SELECT id FROM jobs WHERE state = 'running' AND (locked_until < {ph}"
                                     f" OR locked_by IN (SELECT id FROM workers WHERE heartbeat_at < {ph}))"
                                     f" ORDER BY id LIMIT {ph}{lock}")
        due = update.format(pick=f"SELECT id FROM jobs WHERE state = 'pending' AND run_after <= {ph}"
                                 f" ORDER BY run_after, id LIMIT {ph}{lock}")

        def claim(conn: sa.Connection) -> list[ClaimedJob]:
            now = now_us()
            until = now + int(lease_s * 1e6)
            stale = now - int(stale_after_s * 1e6) if stale_after_s else 0
            got = sorted(conn.exec_driver_sql(expired, (worker_id, until, now, stale, limit)), key=lambda r: r[0])
            if len(got) < limit:
                if pg:
                    prev = conn.exec_driver_sql(
                        "SELECT current_setting('enable_bitmapscan'), set_config('enable_bitmapscan', 'off', true)"
                    ).scalar()
                try:
                    rows = conn.exec_driver_sql(due, (worker_id, until, now, limit - len(got)))
                    got += sorted(rows, key=lambda r: (r[3], r[0]))
                finally:
                    if pg:
                        conn.exec_driver_sql("SELECT set_config('enable_bitmapscan', %s, true)", (prev,))
            return [ClaimedJob(r[0], r[1], r[2]) for r in got]

        # A claim is lease bookkeeping: if a power cut loses it, the jobs are simply pending again.
        return await self.write(claim, durable=False)

    async def claim_job_for(self, request_id: str, worker_id: str, lease_s: float) -> list[ClaimedJob]:
        def claim(conn: sa.Connection) -> list[ClaimedJob]:
            now = now_us()
            stmt = (
                J.update()
                .where(J.c.request_id == request_id,
                       sa.or_(J.c.state == "pending", sa.and_(J.c.state == "running", J.c.locked_until < now)))
                .values(state="running", locked_by=worker_id, locked_until=now + int(lease_s * 1e6),
                        attempts=J.c.attempts + 1)
                .returning(J.c.id, J.c.request_id, J.c.attempts)
            )
            return [ClaimedJob(r[0], r[1], r[2]) for r in conn.execute(stmt)]

        return await self.write(claim)

    async def finish_jobs(self, results: Sequence[ProcessResult], *, replace: bool = False) -> None:
        """Store records, profiles and receipts and drop the jobs, atomically. Records are unique per
        (request, index) and a request that already has records is skipped, so a job finished twice
        (its lease expired mid-way) never makes a second record. ``replace`` (replay) swaps them."""
        def fin(conn: sa.Connection) -> None:
            now = now_us()
            ids = [res.request_id for res in results]
            if replace:
                conn.execute(REC.delete().where(REC.c.request_id.in_(ids)))
                done: set[str] = set()
            else:
                done = {r[0] for r in bulk.select_in(conn, REC, ("request_id",), "request_id", ids)}
            todo = [res for res in results if res.request_id not in done]
            contacts = [
                {"client_id": res.client_id, "contact": rec["contact"], "consents": rec.get("consents", []),
                 "at": res.received_at, "request_id": res.request_id, "source_id": res.source_id, "rec": rec}
                for res in todo for rec in res.records if "contact" in rec
            ]
            if contacts:
                for it, pid in zip(contacts, profile_store.apply_contacts(conn, contacts, now), strict=True):
                    it["rec"]["profile_id"] = pid
            order_items = order_store.order_items(todo)
            if order_items:
                for it, oid in zip(order_items, order_store.apply_orders(conn, order_items, now), strict=True):
                    it["rec"]["order_id"] = oid
            recs = [
                {"request_id": res.request_id, "idx": i, "source_id": res.source_id,
                 "client_id": res.client_id, "parser": res.parser, "parser_version": res.parser_version,
                 "data": orjson.dumps(rec).decode(), "profile_id": rec.get("profile_id"), "created_at": now}
                for res in todo for i, rec in enumerate(res.records)
            ]
            bulk.insert_dicts(conn, REC, recs)
            bulk.update(conn, R, "id", ("state", "receipt", "processed_at"),
                        [(res.state, orjson.dumps(res.receipt.as_dict()).decode(), now, res.request_id)
                         for res in todo])
            self.insert_deliveries(conn, delivery_rows(todo, now))
            bulk.delete_in(conn, J, "request_id", ids)

        await self.write_retrying(fin)
        if self.delivery_event is not None and any(res.deliveries for res in results):
            self.delivery_event.set()

    async def retry_job(self, job_id: int, error: str, delay_s: float, give_up: bool, request_id: str,
                        code: str = "processing_error") -> None:
        """Put a job back for a later attempt, or (``give_up``) fail its request with ``code`` and
        ``error`` on its receipt. ``error`` is shown to users: it must not quote customer data."""
        def upd(conn: sa.Connection) -> None:
            if give_up:
                conn.execute(J.delete().where(J.c.id == job_id))
                conn.execute(R.update().where(R.c.id == request_id).values(
                    state="failed", processed_at=now_us(),
                    receipt=orjson.dumps({"errors": [{"path": "$", "code": code,
                                                      "message": error}], "warnings": []}).decode()))
            else:
                conn.execute(J.update().where(J.c.id == job_id).values(
                    state="pending", locked_by=None, locked_until=None, last_error=error,
                    run_after=now_us() + int(delay_s * 1e6)))

        await self.write(upd)

    async def oldest_due_job_age(self) -> float:
        """Seconds the longest-waiting due job has waited (0 when none): the processing lag."""
        def q(conn: sa.Connection) -> float:
            now = now_us()
            oldest = conn.execute(sa.select(sa.func.min(J.c.run_after)).where(
                J.c.state == "pending", J.c.run_after <= now)).scalar()
            return max(0.0, (now - oldest) / 1e6) if oldest is not None else 0.0

        return await self.read(q)

    async def queue_depth(self) -> int:
        def q(conn: sa.Connection) -> int:
            return int(conn.execute(sa.select(sa.func.count()).select_from(J)).scalar() or 0)

        return await self.read(q)
