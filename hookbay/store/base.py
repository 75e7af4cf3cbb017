"""The store: one interface over SQLAlchemy Core, the same for every dialect.

Writes go through the single :class:`Writer` (group commit); reads run on a small pool of
connections in worker threads, so the event loop never blocks on the database.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import random
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import orjson
import sqlalchemy as sa

from hookbay import metrics
from hookbay.audit import AuditEntry
from hookbay.crypto import DecryptError, Keyring, MissingKeyError, open_value, seal_value
from hookbay.errors import AmbiguousSource, Conflict, EncryptionKeyMissing, NotFound
from hookbay.ids import new_source_id, now_us, request_id_floor, request_id_ms, ulid
from hookbay.results import ProcessResult
from hookbay.store import bulk, schema, search
from hookbay.store import orders as order_store
from hookbay.store import profiles as profile_store
from hookbay.store import ratelimit as rate_store
from hookbay.store.audit import StoredAuditEntry, StoredToken, record
from hookbay.store.deliveries import DeliveriesMixin, delivery_rows
from hookbay.store.dialects import Dialect, PostgresDialect, SQLiteDialect, dialect_for
from hookbay.store.errors import is_retryable
from hookbay.store.profile_rows import StoredConsentEvent, StoredProfile, StoredProfileDetail
from hookbay.store.requests import (
    SUMMARY_FIELDS,
    RequestRow,
    StoredRecord,
    StoredRequest,
    StoredRequestSummary,
    TrafficBucket,
)
from hookbay.store.source_rows import StoredSource
from hookbay.store.writer import Writer

T = TypeVar("T")
S, R, J, REC = schema.sources, schema.requests, schema.jobs, schema.records
_PROFILE_COLUMNS = tuple(schema.profiles.c[n]
                         for n in ("id", "client_id", "email", "phone", "created_at", "updated_at"))


def hash_secret(value: str) -> str:
    """API keys and tokens are 32 random bytes, so one SHA-256 is enough (no password stretching needed)."""
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(slots=True)
class ClaimedJob:
    job_id: int
    request_id: str
    attempts: int


@dataclass(slots=True)
class RequestFilter:
    source_id: str | None = None
    client_id: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    verdict: str | None = None
    state: str | None = None
    text: str | None = None
    rule: str | None = None
    status: int | None = None
    after_id: str | None = None
    before_id: str | None = None
    limit: int = 50



async def wait_for_wakeup(ev: asyncio.Event | None, poll_s: float) -> None:
    """Sleep until ``ev`` is set (a commit of new work) or ``poll_s`` passes, then clear it.
    Without an event (store not started in this loop) just sleep: polling is the fallback."""
    if ev is None:
        await asyncio.sleep(poll_s)
        return
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(ev.wait(), poll_s)
    ev.clear()

class Store(DeliveriesMixin):
    def __init__(self, url: str, *, busy_timeout_ms: int = 5000, batch_max: int = 512,
                 keyring: Keyring | None = None, sensitive_headers: frozenset[str] = frozenset()) -> None:
        self.url = url
        self.keyring = keyring
        self.sensitive_headers = sensitive_headers
        self.dialect: Dialect = dialect_for(url, busy_timeout_ms)
        self.read_engine = self.dialect.create_engine(writer=False)
        self.write_engine = self.dialect.create_engine(writer=True)
        self.text_indexer = search.TextIndexer(
            self.dialect.create_engine(writer=True), getattr(self.dialect, "wal_over_limit", lambda: False))
        self.job_event: asyncio.Event | None = None
        self.delivery_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.writer = Writer(
            self.write_engine,
            batch_max=batch_max,
            notify_sql=self.dialect.notify_sql,
            on_commit=self._jobs_committed,
            ingest_lanes=getattr(self.dialect, "ingest_lanes", 0),
        )
        if isinstance(self.dialect, SQLiteDialect):
            self.writer.before_commit = self.dialect.cap_wal
        self._limiter = anyio.CapacityLimiter(8)

    @property
    def is_postgres(self) -> bool:
        return isinstance(self.dialect, PostgresDialect)

    # --- lifecycle ------------------------------------------------------------------------

    def migrate(self) -> None:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).resolve().parent.parent / "migrations"))
        with self.write_engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.job_event = asyncio.Event()
        self.delivery_event = asyncio.Event()
        self.writer.start()
        self.dialect.start_background()
        if self.text_indexer is not None:
            self.text_indexer.start()

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self.writer.stop)
        await anyio.to_thread.run_sync(self.dialect.stop_background)
        if self.text_indexer is not None:
            await anyio.to_thread.run_sync(self.text_indexer.stop)
        self.read_engine.dispose()
        self.write_engine.dispose()

    def _jobs_committed(self, _new: bool) -> None:
        loop, ev = self._loop, self.job_event
        if loop is not None and ev is not None and not loop.is_closed():
            loop.call_soon_threadsafe(ev.set)

    # --- plumbing -------------------------------------------------------------------------

    async def read(self, fn: Callable[[sa.Connection], T]) -> T:
        def run() -> T:
            with self.read_engine.connect() as conn:
                return fn(conn)

        return await anyio.to_thread.run_sync(run, limiter=self._limiter)

    async def lease_rate_tokens(self, source_id: str, rate: float, burst: float, want: int) -> rate_store.Lease:
        """Up to ``want`` tokens from the source's bucket shared by all processes (PostgreSQL only),
        on a reader connection: a lease must not wait behind the writer's group commit."""
        def run() -> rate_store.Lease:
            with self.read_engine.connect() as conn:
                return rate_store.lease_tokens(conn, source_id, rate, burst, want)

        return await anyio.to_thread.run_sync(run, limiter=self._limiter)

    async def write(self, fn: Callable[[sa.Connection], T], *, durable: bool = True) -> T:
        result: T = await self.writer.run(fn, durable=durable)
        return result

    async def maintain(self, fn: Callable[[sa.Connection], T], *, statement_timeout_ms: int | None = None) -> T:
        """Run ``fn`` in a transaction of its own connection, off the writer: partition DDL and
        batch copies wait for locks that ingest commits must not queue behind. PostgreSQL:
        ``statement_timeout_ms`` replaces the default (0 = none) for work known to be long."""
        def run() -> T:
            with self.read_engine.connect() as conn, conn.begin():
                if statement_timeout_ms is not None and self.is_postgres:
                    conn.execute(sa.text(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}"))
                return fn(conn)

        return await anyio.to_thread.run_sync(run, limiter=self._limiter)

    async def write_retrying(self, fn: Callable[[sa.Connection], T], attempts: int = 6) -> T:
        """:meth:`write`, run again when it lost a race with another worker: a deadlock, a
        serialization failure or a lock timeout (PostgreSQL), or a :class:`ConcurrentChange` seen by
        the profile rules. Each run is a fresh transaction (savepoint) that sees the winner's work."""
        for attempt in range(1, attempts + 1):
            try:
                return await self.write(fn)
            except Exception as e:
                if attempt == attempts or not is_retryable(e):
                    raise
                metrics.write_retries_total.inc()
                await asyncio.sleep(random.uniform(0, 0.01 * 2 ** attempt))
        raise AssertionError("unreachable")

    async def ping(self) -> bool:
        def q(conn: sa.Connection) -> bool:
            return conn.execute(sa.text("SELECT 1")).scalar() == 1

        return await self.read(q)

    # --- sources --------------------------------------------------------------------------

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

    # --- requests -------------------------------------------------------------------------

    async def search_requests(self, f: RequestFilter) -> list[StoredRequestSummary]:
        cols = [R.c[name] for name in SUMMARY_FIELDS]  # in the dataclass's order: built from each row as it is

        def q(conn: sa.Connection) -> list[StoredRequestSummary]:
            stmt = sa.select(*cols)
            if f.source_id:
                stmt = stmt.where(R.c.source_id == f.source_id)
            if f.client_id:
                stmt = stmt.where(R.c.client_id == f.client_id)
            # ids are time-ordered: bounds on the id too (a second wider: the id and received_at are
            # read from the clock one after the other) keep a newest-first walk short; received_at
            # itself is checked row by row (``+ 0``), as a planner that ranges over its index must
            # sort a week of rows for one page
            received_at = R.c.received_at + 0
            if f.since_us is not None:
                stmt = stmt.where(received_at >= f.since_us,
                                  R.c.id >= request_id_floor(max(0, f.since_us // 1000 - 1000)))
            if f.until_us is not None:
                stmt = stmt.where(received_at < f.until_us,
                                  R.c.id < request_id_floor(f.until_us // 1000 + 1000))
            if f.verdict:
                stmt = stmt.where(R.c.verdict == f.verdict)
            if f.state:
                stmt = stmt.where(R.c.state == f.state)
            if f.rule:
                stmt = stmt.where(R.c.rule == f.rule)
            if f.status is not None:
                stmt = stmt.where(R.c.status == f.status)
            if f.after_id:
                stmt = stmt.where(R.c.id > f.after_id)
            elif f.before_id:
                stmt = stmt.where(R.c.id < f.before_id)
            if f.text:
                found = search.find(conn, stmt, R.c.id, f.text, postgres=self.is_postgres,
                                    descending=not f.after_id, limit=f.limit)
                return [StoredRequestSummary.of(r) for r in found]
            stmt = stmt.order_by(R.c.id.asc() if f.after_id else R.c.id.desc())
            return [StoredRequestSummary(*r) for r in conn.execute(stmt.limit(f.limit))]

        return await self.read(q)

    async def get_request(self, request_id: str, client_id: str | None = None) -> StoredRequest:
        made_ms = request_id_ms(request_id) if self.is_postgres else None

        def q(conn: sa.Connection) -> dict[str, Any] | None:
            stmt = sa.select(R).where(R.c.id == request_id)
            if client_id is not None:
                stmt = stmt.where(R.c.client_id == client_id)
            if made_ms is not None:
                # a partitioned request log: look in the partitions of the id's time first (received_at
                # is read from the clock right after the id is made), then everywhere
                near = stmt.where(R.c.received_at.between((made_ms - 60_000) * 1000, (made_ms + 60_000) * 1000))
                row = conn.execute(near).mappings().first()
                if row:
                    return dict(row)
            row = conn.execute(stmt).mappings().first()
            return dict(row) if row else None

        row = await self.read(q)
        if row is None:
            raise NotFound("request not found")
        return self.open_request_row(row)

    async def records_for(self, request_ids: Iterable[str]) -> dict[str, list[StoredRecord]]:
        ids = list(request_ids)

        def q(conn: sa.Connection) -> dict[str, list[StoredRecord]]:
            out: dict[str, list[StoredRecord]] = {i: [] for i in ids}
            if not ids:
                return out
            stmt = sa.select(REC).where(REC.c.request_id.in_(ids)).order_by(REC.c.request_id, REC.c.idx)
            for r in conn.execute(stmt).mappings():
                out[r["request_id"]].append(StoredRecord(**r))
            return out

        return await self.read(q)

    async def traffic(self, client_id: str | None, since_us: int, bucket_us: int) -> list[TrafficBucket]:
        """Request counts per time bucket since ``since_us``, by verdict, state and rejecting rule:
        what the console's traffic and failure charts draw. ``bucket`` is the bucket's index
        counted from ``since_us``; one range scan of ``ix_requests_received_at``."""

        def q(conn: sa.Connection) -> list[TrafficBucket]:
            bucket = ((R.c.received_at - since_us) // bucket_us).label("bucket")
            stmt = (sa.select(bucket, R.c.verdict, R.c.state, R.c.rule, sa.func.count().label("n"))
                    .where(R.c.received_at >= since_us)
                    .group_by(bucket, R.c.verdict, R.c.state, R.c.rule))
            if client_id is not None:
                stmt = stmt.where(R.c.client_id == client_id)
            return [TrafficBucket(bucket=int(r.bucket), verdict=r.verdict, state=r.state, rule=r.rule,
                                  n=int(r.n)) for r in conn.execute(stmt)]

        return await self.read(q)

    async def count_requests(self, **eq: Any) -> int:
        def q(conn: sa.Connection) -> int:
            stmt = sa.select(sa.func.count()).select_from(R)
            for k, v in eq.items():
                stmt = stmt.where(R.c[k] == v)
            return int(conn.execute(stmt).scalar() or 0)

        return await self.read(q)

    # --- jobs -----------------------------------------------------------------------------

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

    async def load_requests(self, ids: list[str]) -> dict[str, StoredRequest]:
        """By id, each decrypted; a row sealed with a missing key comes with ``open_error`` instead
        of failing the whole batch."""
        cols = [c.name for c in R.c]

        def q(conn: sa.Connection) -> dict[str, StoredRequest]:
            out = {}
            for r in bulk.select_in(conn, R, cols, "id", ids):
                row = dict(zip(cols, r, strict=True))
                try:
                    out[row["id"]] = self.open_request_row(row)
                except EncryptionKeyMissing as e:
                    row["body"] = None
                    out[row["id"]] = StoredRequest.of(row, open_error=e)
            return out

        return await self.read(q)

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

    # --- encryption at rest -------------------------------------------------------------

    def seal(self, plaintext: bytes, aad: str) -> tuple[bytes, str | None]:
        if self.keyring is None:
            return plaintext, None
        return seal_value(self.keyring, plaintext, aad.encode()), self.keyring.active_kid

    def unseal(self, blob: bytes, aad: str) -> bytes:
        try:
            return open_value(self.keyring, bytes(blob), aad.encode())
        except MissingKeyError as e:
            raise EncryptionKeyMissing(detail={"key_id": getattr(e, "kid", None)}) from None
        except DecryptError:
            raise EncryptionKeyMissing("Stored data failed authentication with the configured key") from None

    def seal_request_row(self, row: RequestRow | dict[str, Any]) -> None:
        """Encrypt the body and sensitive header values of a request row in place (AAD = its id)."""
        if self.keyring is None:
            return
        rid = row["id"]
        body = row["body"]
        if body is not None:
            row["body"] = seal_value(self.keyring, body, rid.encode())
        row["key_id"] = self.keyring.active_kid
        if self.sensitive_headers:
            hs = orjson.loads(row["headers"])
            changed = False
            for pair in hs:
                if pair[0].lower() in self.sensitive_headers:
                    pair[1] = "enc:" + base64.b64encode(seal_value(self.keyring, pair[1].encode("latin-1"),
                                                                   rid.encode())).decode()
                    changed = True
            if changed:
                row["headers"] = orjson.dumps(hs).decode()

    def open_request_row(self, row: Mapping[str, Any]) -> StoredRequest:
        """A whole ``requests`` row as read, decrypted."""
        if row["key_id"] is None:
            return StoredRequest.of(row)
        opened = dict(row)
        self.unseal_request_row(opened)
        return StoredRequest.of(opened)

    def unseal_request_row(self, row: dict[str, Any]) -> None:
        """Decrypt the body and sealed header values of a (possibly partial) request row in place."""
        if row.get("key_id") is None:
            return
        rid = row["id"]
        if row.get("body") is not None:
            row["body"] = self.unseal(row["body"], rid)
        hs = orjson.loads(row["headers"])
        for pair in hs:
            if isinstance(pair[1], str) and pair[1].startswith("enc:"):
                pair[1] = self.unseal(base64.b64decode(pair[1][4:]), rid).decode("latin-1")
        row["headers"] = orjson.dumps(hs).decode()

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

    async def reencrypt(self, batch: int = 500, audit: AuditEntry | None = None) -> dict[str, int]:
        """Re-seal rows written under an older key with the active key, a batch per transaction,
        while the server keeps running (``hookbay keys rotate``). The audit entry goes with the last
        batch, naming the active key id (never the key)."""
        if self.keyring is None:
            raise EncryptionKeyMissing("No HOOKBAY_ENCRYPTION_KEY is configured")
        kid = self.keyring.active_kid
        SS = schema.source_secrets
        counts = {"requests": 0, "secrets": 0}
        while True:
            def step(conn: sa.Connection) -> int:
                rows = conn.execute(sa.select(R.c.id, R.c.body, R.c.headers, R.c.key_id).where(
                    sa.or_(R.c.key_id.is_(None), R.c.key_id != kid)).limit(batch)).mappings().all()
                for r in rows:
                    row = dict(r)
                    self.unseal_request_row(row)
                    self.seal_request_row(row)
                    conn.execute(R.update().where(R.c.id == r["id"]).values(
                        body=row["body"], headers=row["headers"], key_id=kid))
                return len(rows)

            n = await self.write(step)
            counts["requests"] += n
            if n < batch:
                break

        def secrets_step(conn: sa.Connection) -> int:
            rows = conn.execute(sa.select(SS).where(sa.or_(SS.c.key_id.is_(None), SS.c.key_id != kid))).mappings().all()
            for r in rows:
                plain = self.unseal(r["secret"], r["id"])
                blob, _ = self.seal(plain, r["id"])
                conn.execute(SS.update().where(SS.c.id == r["id"]).values(secret=blob, key_id=kid))
            if audit is not None:
                record(conn, audit.but(target=kid, changes=[
                    *audit.changes, f"active key: {kid}", f"requests re-encrypted: {counts['requests']}",
                    f"secrets re-encrypted: {len(rows)}"]))
            return len(rows)

        counts["secrets"] = await self.write(secrets_step)
        return counts

    # --- profiles -------------------------------------------------------------------------

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
            pid = profile_store.resolve_profile_id(conn, profile_id)
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
                merged_from=profile_store.merged_from(conn, pid),
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
            profile_id = profile_store.resolve_profile_id(conn, profile_id)
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
                "merged_ids_forgotten": profile_store.forget_merges(conn, profile_id),
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

    async def purge_bodies(self, retention: dict[str, int], *, now_us_: int | None = None,
                           dry_run: bool = False) -> dict[str, int]:
        """Drop raw bodies older than each source's retention (days). Requests still waiting to be
        processed, or still queued for a relay agent, keep theirs: purging them would lose data."""
        now = now_us_ if now_us_ is not None else now_us()
        out: dict[str, int] = {}
        for source_id, days in retention.items():
            cutoff = now - days * 86_400_000_000
            cond = (R.c.source_id == source_id, R.c.received_at < cutoff, R.c.body.is_not(None),
                    R.c.state != "pending", ~_waiting_for_relay_agent())

            def purge(conn: sa.Connection, cond: tuple[Any, ...] = cond) -> int:
                if dry_run:
                    return int(conn.execute(sa.select(sa.func.count()).select_from(R).where(*cond)).scalar() or 0)
                return int(conn.execute(R.update().where(*cond).values(body=None)).rowcount or 0)

            out[source_id] = await self.write(purge)
        return out

    async def forget_idempotency_keys(self, days_by_source: dict[str, int], *, now_us_: int | None = None) -> int:
        """Clear dedupe keys older than each source's ``idempotency_days``: the key is unique per
        source for that window, after which a new event may reuse it."""
        now = now_us_ if now_us_ is not None else now_us()
        total = 0
        for source_id, days in days_by_source.items():
            cutoff = now - days * 86_400_000_000

            def forget(conn: sa.Connection, source_id: str = source_id, cutoff: int = cutoff) -> int:
                return int(conn.execute(R.update().where(
                    R.c.source_id == source_id, R.c.received_at < cutoff, R.c.idempotency_key.is_not(None),
                ).values(idempotency_key=None)).rowcount or 0)

            total += await self.write(forget)
        return total

    # --- tokens ---------------------------------------------------------------------------

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

    # --- audit log ------------------------------------------------------------------------

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

    # --- tokens / meta --------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        def q(conn: sa.Connection) -> str | None:
            return conn.execute(sa.select(schema.meta.c.value).where(schema.meta.c.key == key)).scalar()

        return await self.read(q)

    async def set_meta_if_absent(self, key: str, value: str) -> bool:
        """Race-free: ``serve --processes N`` starts N processes that bootstrap at once."""
        def w(conn: sa.Connection) -> bool:
            stmt = self.dialect.insert(schema.meta).values(key=key, value=value).on_conflict_do_nothing()
            return conn.execute(stmt.returning(schema.meta.c.key)).first() is not None

        return await self.write(w)

    async def set_meta(self, key: str, value: str) -> None:
        def w(conn: sa.Connection) -> None:
            stmt = self.dialect.insert(schema.meta).values(key=key, value=value)
            conn.execute(stmt.on_conflict_do_update(index_elements=[schema.meta.c.key], set_={"value": value}))

        await self.write(w)


def _waiting_for_relay_agent() -> sa.Exists:
    """A request still queued for `hookbay agent` keeps its body: nothing is lost while it is offline."""
    M = schema.relay_messages
    return sa.exists().where(M.c.request_id == R.c.id, M.c.state == "ready")


def _bump_sources_rev(conn: sa.Connection) -> None:
    """Mark a source change; on PostgreSQL also NOTIFY, delivered to running servers when this commits."""
    m = schema.meta
    rev = secrets.token_hex(8)
    if conn.execute(m.update().where(m.c.key == "sources_rev").values(value=rev)).rowcount == 0:
        conn.execute(m.insert().values(key="sources_rev", value=rev))
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_notify('hookbay_sources', :rev)"), {"rev": rev})
