"""The relay queue (indirect mode): a durable FIFO per source that ``hookbay agent`` pulls.

Messages are enqueued by the writer in the same group commit as their request (``writer.py``), so
the identity id is each source's arrival order. Semantics, like an SQS FIFO message group:

* **pull** leases the first ``max`` unacked messages of a source in id order under one new lease
  id, but only when the head (the oldest unacked message) is available: not delayed by a nack and
  not under an unexpired lease. Otherwise nothing is returned (head-of-line blocking keeps order).
  A pull that names the lease id of the head's current lease re-leases it: an agent that lost the
  answer to its pull retries with the same id and gets the same messages at once.
* **ack** marks a message done when its lease id matches, even after the lease expired, as long as
  nobody re-leased it; acking twice with the same lease id is fine. A stale lease id is a conflict.
* **nack** makes the message available again after a delay, records the error, and releases the
  later messages of the same lease.

Writes go through the single writer like every other write; "is the head available?" checks,
which long-polls repeat, run on the read pool first so an idle poll never queues a write.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from hookbay.audit import AuditEntry
from hookbay.errors import Conflict, NotFound
from hookbay.ids import now_us, ulid
from hookbay.store import schema
from hookbay.store.audit import record
from hookbay.store.core import hash_secret
from hookbay.store.interface import StoreInterface

M, R, RT, S = schema.relay_messages, schema.requests, schema.relay_tokens, schema.sources

MAX_ERROR = 2000


@dataclass(slots=True, frozen=True)
class RelayCredential:
    token_id: str
    source_id: str
    client_id: str


@dataclass(slots=True, frozen=True)
class RelayedRequest:
    """What the agent replays of a stored request (decrypted; ``body`` None once purged)."""

    received_at: int
    method: str
    path: str
    query: str
    headers: str  # the stored JSON list of [name, value] pairs
    content_type: str | None
    body: bytes | None


@dataclass(slots=True, frozen=True)
class LeasedMessage:
    """One message of a pull, under the pull's lease id; ``request`` None if the row is gone."""

    id: int
    request_id: str
    lease_id: str
    deliveries: int
    request: RelayedRequest | None


@dataclass(slots=True, frozen=True)
class QueueHead:
    id: int
    request_id: str
    created_at: int
    available_at: int
    locked_until: int | None
    lease_id: str | None
    deliveries: int
    last_error: str | None


@dataclass(slots=True, frozen=True)
class QueueStatus:
    """A source's queue at ``now`` (µs): messages not acked, how many are leased, the oldest."""

    now: int
    depth: int
    leased: int
    head: QueueHead | None


@dataclass(slots=True, frozen=True)
class RelayToken:
    """A relay token of one source (never its secret)."""

    id: str
    source_id: str
    name: str
    created_at: int


@dataclass(slots=True, frozen=True)
class SourceRelayToken:
    """A relay token with the source it pulls (never its secret)."""

    id: str
    name: str
    created_at: int
    source_id: str
    source_name: str
    client_id: str


def new_lease_id() -> str:
    return "lse_" + ulid()


class RelayQueue:
    def __init__(self, store: StoreInterface) -> None:
        self.store = store

    # --- the queue ------------------------------------------------------------------------

    async def head_available(self, source_id: str, lease_id: str | None = None) -> bool:
        """Whether a pull would lease something now (a read; the pull itself re-checks)."""

        def q(conn: sa.Connection) -> bool:
            head = conn.execute(
                sa.select(M.c.available_at, M.c.locked_until, M.c.lease_id)
                .where(M.c.source_id == source_id, M.c.state == "ready").order_by(M.c.id).limit(1)
            ).first()
            return head is not None and _available(head, now_us(), lease_id)

        return await self.store.read(q)

    async def pull(self, source_id: str, max_messages: int, visibility_s: float,
                   lease_id: str | None = None) -> tuple[str | None, list[LeasedMessage]]:
        """Lease the available prefix of the queue; returns the lease id and the messages, each
        with its request (method, path, query, headers, decrypted body; body None if purged)."""
        lid = lease_id or new_lease_id()
        is_pg = self.store.is_postgres

        def lease(conn: sa.Connection) -> list[tuple[int, str, int]]:
            now = now_us()
            stmt = (sa.select(M.c.id, M.c.request_id, M.c.available_at, M.c.locked_until, M.c.lease_id,
                              M.c.deliveries)
                    .where(M.c.source_id == source_id, M.c.state == "ready").order_by(M.c.id).limit(max_messages))
            if is_pg:
                stmt = stmt.with_for_update()  # concurrent pulls of one source take turns
            rows = conn.execute(stmt).all()
            if not rows or not _available(rows[0], now, lease_id):
                return []
            take = []
            for r in rows:
                if r.available_at > now:  # a later message still delayed: the batch ends before it
                    break
                take.append((r.id, r.request_id, r.deliveries))
            conn.execute(M.update().where(M.c.id.in_([t[0] for t in take])).values(
                lease_id=lid, locked_until=now + int(visibility_s * 1e6)))
            return take

        taken = await self.store.write(lease)
        if not taken:
            return None, []
        reqs = await self._requests([t[1] for t in taken])
        return lid, [LeasedMessage(id=mid, request_id=rid, lease_id=lid, deliveries=deliveries,
                                   request=reqs.get(rid)) for mid, rid, deliveries in taken]

    async def _requests(self, ids: list[str]) -> dict[str, RelayedRequest]:
        def q(conn: sa.Connection) -> dict[str, dict[str, Any]]:
            rows = conn.execute(sa.select(R.c.id, R.c.received_at, R.c.method, R.c.path, R.c.query, R.c.headers,
                                          R.c.content_type, R.c.body, R.c.key_id).where(R.c.id.in_(ids))).mappings()
            return {r["id"]: dict(r) for r in rows}

        rows = await self.store.read(q)
        out = {}
        for rid, row in rows.items():
            # Raises EncryptionKeyMissing when the key is not configured: the head cannot be
            # delivered without it, and the operator has to fix that (the pull answers 500).
            self.store.unseal_request_row(row)
            body = row["body"]
            out[rid] = RelayedRequest(received_at=row["received_at"], method=row["method"], path=row["path"],
                                      query=row["query"], headers=row["headers"], content_type=row["content_type"],
                                      body=bytes(body) if body is not None else None)
        return out

    async def ack(self, source_id: str, message_id: int, lease_id: str) -> bool:
        """Mark a message acked; returns False when it already was (same lease id: idempotent)."""

        def w(conn: sa.Connection) -> bool:
            n = conn.execute(M.update().where(
                M.c.id == message_id, M.c.source_id == source_id, M.c.state == "ready", M.c.lease_id == lease_id,
            ).values(state="acked", acked_at=now_us(), locked_until=None, deliveries=M.c.deliveries + 1)).rowcount
            if n:
                return True
            row = _message(conn, source_id, message_id)
            if row.state == "acked" and row.lease_id == lease_id:
                return False
            raise _stale(row)

        return await self.store.write(w)

    async def ack_many(self, source_id: str, items: list[tuple[int, str]]) -> dict[int, str]:
        """Ack several messages in one transaction (what the agent sends while it forwards). Returns
        per message id: "acked", "already_acked", "conflict" (stale lease) or "not_found"."""

        def w(conn: sa.Connection) -> dict[int, str]:
            now = now_us()
            out: dict[int, str] = {}
            by_lease: dict[str, list[int]] = {}
            for mid, lid in items:
                by_lease.setdefault(lid, []).append(mid)
            for lid, mids in by_lease.items():
                done = conn.execute(M.update().where(
                    M.c.id.in_(mids), M.c.source_id == source_id, M.c.state == "ready", M.c.lease_id == lid,
                ).values(state="acked", acked_at=now, locked_until=None, deliveries=M.c.deliveries + 1)
                    .returning(M.c.id)).scalars().all()
                out.update((mid, "acked") for mid in done)
            rest = [(mid, lid) for mid, lid in items if mid not in out]
            if rest:
                found = {r.id: r for r in conn.execute(sa.select(M.c.id, M.c.state, M.c.lease_id).where(
                    M.c.id.in_([mid for mid, _ in rest]), M.c.source_id == source_id))}
                for mid, lid in rest:
                    r = found.get(mid)
                    out[mid] = ("not_found" if r is None else
                                "already_acked" if r.state == "acked" and r.lease_id == lid else "conflict")
            return out

        return await self.store.write(w)

    async def nack(self, source_id: str, message_id: int, lease_id: str, delay_s: float,
                   error: str | None) -> int:
        """Give a message back: available again in ``delay_s``; later messages of the same lease are
        released too (the agent stopped its batch). Returns the time it becomes available (µs)."""

        def w(conn: sa.Connection) -> int:
            now = now_us()
            at = now + int(delay_s * 1e6)
            n = conn.execute(M.update().where(
                M.c.id == message_id, M.c.source_id == source_id, M.c.state == "ready", M.c.lease_id == lease_id,
            ).values(lease_id=None, locked_until=None, available_at=at, deliveries=M.c.deliveries + 1,
                     last_error=(error or "")[:MAX_ERROR] or None)).rowcount
            if not n:
                raise _stale(_message(conn, source_id, message_id))
            conn.execute(M.update().where(
                M.c.source_id == source_id, M.c.lease_id == lease_id, M.c.state == "ready", M.c.id > message_id,
            ).values(lease_id=None, locked_until=None))
            return at

        return await self.store.write(w)

    async def status(self, source_id: str) -> QueueStatus:
        def q(conn: sa.Connection) -> QueueStatus:
            now = now_us()
            ready = (M.c.source_id == source_id, M.c.state == "ready")
            depth = int(conn.execute(sa.select(sa.func.count()).select_from(M).where(*ready)).scalar() or 0)
            leased = int(conn.execute(sa.select(sa.func.count()).select_from(M).where(
                *ready, M.c.locked_until > now)).scalar() or 0)
            h = conn.execute(sa.select(M).where(*ready).order_by(M.c.id).limit(1)).first()
            head = QueueHead(id=h.id, request_id=h.request_id, created_at=h.created_at, available_at=h.available_at,
                             locked_until=h.locked_until, lease_id=h.lease_id, deliveries=h.deliveries,
                             last_error=h.last_error) if h is not None else None
            return QueueStatus(now=now, depth=depth, leased=leased, head=head)

        return await self.store.read(q)

    async def ready_by_source(self) -> dict[str, int]:
        """Messages not yet acknowledged (waiting or leased), per source (for /metrics)."""

        def q(conn: sa.Connection) -> dict[str, int]:
            return {r[0]: int(r[1]) for r in conn.execute(
                sa.select(M.c.source_id, sa.func.count()).where(M.c.state == "ready").group_by(M.c.source_id))}

        return await self.store.read(q)

    PRUNE_CHUNK = 5000

    async def prune_acked(self, acked_before_us: int, *, dry_run: bool = False) -> int:
        """Delete messages acked before the cutoff, a chunk per transaction so the writer is never
        held for long. Until then a retried ack still answers ``already_acked``; after, ``not_found``.
        The requests themselves stay (they are the request log)."""
        old = (M.c.state == "acked", M.c.acked_at < acked_before_us)
        if dry_run:
            def count(conn: sa.Connection) -> int:
                return int(conn.execute(sa.select(sa.func.count()).select_from(M).where(*old)).scalar() or 0)

            return await self.store.read(count)

        def chunk(conn: sa.Connection) -> int:
            ids = sa.select(M.c.id).where(*old).limit(self.PRUNE_CHUNK).scalar_subquery()
            return int(conn.execute(M.delete().where(M.c.id.in_(ids))).rowcount or 0)

        total = 0
        while True:
            n = await self.store.write(chunk)
            total += n
            if n < self.PRUNE_CHUNK:
                return total

    # --- relay tokens ---------------------------------------------------------------------

    async def create_token(self, source_id: str, name: str,
                           audit: AuditEntry | None = None) -> tuple[RelayToken, str]:
        """A new relay token and its value, shown once: only its hash is stored."""
        token = "hbr_" + secrets.token_urlsafe(32)
        made = RelayToken(id="rtk_" + ulid(), source_id=source_id, name=name, created_at=now_us())

        def w(conn: sa.Connection) -> None:
            conn.execute(RT.insert().values(id=made.id, source_id=source_id, name=name, token_hash=hash_secret(token),
                                            created_at=made.created_at))
            if audit is not None:
                record(conn, audit.but(target=made.id, changes=[*audit.changes, f"source: {source_id}"]))

        await self.store.write(w)
        return made, token

    async def list_tokens(self, source_id: str) -> list[RelayToken]:
        def q(conn: sa.Connection) -> list[RelayToken]:
            return [RelayToken(*r) for r in conn.execute(
                sa.select(RT.c.id, RT.c.source_id, RT.c.name, RT.c.created_at)
                .where(RT.c.source_id == source_id).order_by(RT.c.created_at, RT.c.id))]

        return await self.store.read(q)

    async def list_all_tokens(self, client_id: str | None) -> list[SourceRelayToken]:
        """Every relay token of ``client_id``'s sources (every client's for None), in one query:
        sources in :meth:`Store.list_sources` order, each source's tokens oldest first."""
        def q(conn: sa.Connection) -> list[SourceRelayToken]:
            stmt = (sa.select(RT.c.id, RT.c.name, RT.c.created_at, S.c.id, S.c.name, S.c.client_id)
                    .join(S, S.c.id == RT.c.source_id)
                    .order_by(S.c.client_id, S.c.name, S.c.id, RT.c.created_at, RT.c.id))
            if client_id is not None:
                stmt = stmt.where(S.c.client_id == client_id)
            return [SourceRelayToken(*r) for r in conn.execute(stmt)]

        return await self.store.read(q)

    async def revoke_token(self, source_id: str, token_id: str, audit: AuditEntry | None = None) -> None:
        def w(conn: sa.Connection) -> None:
            if not conn.execute(RT.delete().where(RT.c.id == token_id, RT.c.source_id == source_id)).rowcount:
                raise NotFound("relay token not found")
            if audit is not None:
                record(conn, audit.but(target=token_id, changes=[*audit.changes, f"source: {source_id}"]))

        await self.store.write(w)

    async def record_pull(self, token_id: str, at_us: int) -> None:
        """When an agent last pulled with this token (the "relay agent silent" alert reads it)."""
        def w(conn: sa.Connection) -> None:
            conn.execute(RT.update().where(RT.c.id == token_id).values(last_pull_at=at_us))

        await self.store.write(w, durable=False)

    async def authenticate(self, token: str) -> RelayCredential | None:
        """The source a relay token belongs to (None if unknown, revoked, or its source was deleted)."""
        h = hash_secret(token)

        def q(conn: sa.Connection) -> RelayCredential | None:
            row = conn.execute(sa.select(RT.c.id, RT.c.source_id, S.c.client_id)
                               .join(S, S.c.id == RT.c.source_id).where(RT.c.token_hash == h)).first()
            return RelayCredential(row[0], row[1], row[2]) if row else None

        return await self.store.read(q)


def _available(head: Any, now: int, lease_id: str | None) -> bool:
    if head.available_at > now:
        return False
    if head.locked_until is not None and head.locked_until > now:
        return lease_id is not None and head.lease_id == lease_id
    return True


def _message(conn: sa.Connection, source_id: str, message_id: int) -> Any:
    row = conn.execute(sa.select(M.c.state, M.c.lease_id).where(
        M.c.id == message_id, M.c.source_id == source_id)).first()
    if row is None:
        raise NotFound("relay message not found")
    return row


def _stale(row: Any) -> Conflict:
    if row.state == "acked":
        return Conflict("The message was already acknowledged under another lease", detail={"state": "acked"})
    return Conflict("The lease is no longer valid: the message was released or leased again",
                    detail={"state": row.state})
