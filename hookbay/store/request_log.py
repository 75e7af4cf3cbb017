"""The request log's operations (the ``requests`` and ``records`` tables): finding and reading
requests, and how long their bodies and dedupe keys are kept. Its row types are in
``store/requests.py``, which the core imports (so the operations live here, not there)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from hookbay.errors import EncryptionKeyMissing, NotFound
from hookbay.ids import now_us, request_id_floor, request_id_ms
from hookbay.store import bulk, schema, search
from hookbay.store.core import StoreCore
from hookbay.store.requests import (
    SUMMARY_FIELDS,
    StoredRecord,
    StoredRequest,
    StoredRequestSummary,
    TrafficBucket,
)

R, REC = schema.requests, schema.records


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


class RequestLogMixin(StoreCore):
    """The ``RequestLog`` group, but ``traffic`` (still in ``store/base.py``)."""

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

    async def count_requests(self, **eq: Any) -> int:
        def q(conn: sa.Connection) -> int:
            stmt = sa.select(sa.func.count()).select_from(R)
            for k, v in eq.items():
                stmt = stmt.where(R.c[k] == v)
            return int(conn.execute(stmt).scalar() or 0)

        return await self.read(q)

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


def _waiting_for_relay_agent() -> sa.Exists:
    """A request still queued for `hookbay agent` keeps its body: nothing is lost while it is offline."""
    M = schema.relay_messages
    return sa.exists().where(M.c.request_id == R.c.id, M.c.state == "ready")
