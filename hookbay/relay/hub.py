"""Relay (indirect mode) over HTTP: the agent's endpoints and the operators' relay-token routes.

An agent behind a firewall authenticates with a relay token (``hbr_…``, one source each; kept in
their own table, so an API token is never a relay token and the other way round) and long-polls
``GET /api/v1/relay/messages``. A long-poll wakes as soon as this process commits a message for
its source (the writer calls :meth:`RelayHub.notify_threadsafe`), and otherwise re-checks every
``RECHECK_S`` seconds, which covers messages written by other processes on PostgreSQL, nack delays
and expired leases. See ``store/relay.py`` for the queue semantics.
"""

# No "from __future__ import annotations": FastAPI must resolve the local Annotated aliases at runtime.

import asyncio
import base64
import contextlib
import time
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Path, Query, Request
from pydantic import BaseModel, Field

from hookbay.errors import Unauthorized
from hookbay.ids import now_us
from hookbay.models import SourceConfig
from hookbay.store import Store, StoredSource, StoreInterface
from hookbay.store.relay import LeasedMessage, RelayCredential, RelayQueue, RelayToken
from hookbay.views import iso

RECHECK_S = 0.5
PULL_RECORD_EVERY_S = 10.0
MAX_WAIT_S = 60.0
MESSAGE_ID = Path(ge=1, le=2**63 - 1, description="The relay message id")
LEASE_ID_PATTERN = r"^[A-Za-z0-9_-]{8,40}$"


class RelayRequest(BaseModel):
    id: int = Field(description="Message id: the source's arrival order")
    request_id: str
    lease_id: str
    received_at: str | None
    method: str
    path: str
    query: str = Field(description="The original query string (an API key in it removed)")
    headers: list[list[str]] = Field(description="[name, value] pairs as received (an X-API-Key removed)")
    content_type: str | None
    body_b64: str | None = Field(description="The exact body, base64; null when it was purged (erasure)")
    deliveries: int = Field(description="Attempts agents reported for this message so far (acks and nacks)")


class RelayPull(BaseModel):
    source_id: str
    lease_id: str | None = Field(description="The lease the messages are held under (null when none)")
    visibility_s: float
    messages: list[RelayRequest]


class AckIn(BaseModel):
    lease_id: str = Field(min_length=1, max_length=40)


class AckItem(BaseModel):
    id: int = Field(ge=1, le=2**63 - 1)
    lease_id: str = Field(min_length=1, max_length=40)


class AckManyIn(BaseModel):
    messages: list[AckItem] = Field(min_length=1, max_length=1000)


class AckResult(BaseModel):
    id: int
    state: str = Field(description="acked | already_acked | conflict (stale lease) | not_found")


class AckManyOut(BaseModel):
    results: list[AckResult]


class NackIn(BaseModel):
    lease_id: str = Field(min_length=1, max_length=40)
    delay_s: float = Field(default=0, ge=0, le=86400, description="Keep the message back this long")
    error: str | None = Field(default=None, max_length=2000, description="Why delivery failed (kept for operators)")


class AckOut(BaseModel):
    id: int
    state: str = Field(description="acked")
    already_acked: bool = Field(description="True when this lease had acked it before (a retried ack)")


class NackOut(BaseModel):
    id: int
    state: str = Field(description="ready")
    available_at: str | None


class RelayTokenCreate(BaseModel):
    name: str = Field(default="agent", min_length=1, max_length=200)


class RelayTokenOut(BaseModel):
    id: str
    source_id: str
    name: str
    created_at: str | None
    token: str | None = Field(default=None, description="Shown once, at creation")


class RelayHead(BaseModel):
    id: int
    request_id: str
    received_at: str | None
    deliveries: int
    last_error: str | None
    available_at: str | None
    leased_until: str | None


class RelayStatus(BaseModel):
    source_id: str
    relay: bool = Field(description="Whether the source is in relay mode (new requests are queued)")
    depth: int = Field(description="Messages not acked yet")
    leased: int = Field(description="Of those, held by an agent right now")
    oldest_age_s: float | None = Field(description="Age of the oldest unacked message, seconds")
    head: RelayHead | None


class RelayHub:
    """Long-poll wake-ups: one event per waiting pull, set when a message for its source commits."""

    def __init__(self, store: Store) -> None:
        self.queue = RelayQueue(store)
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._pull_recorded: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # Set by `serve` to the HTTP server's "shutting down" flag: pending long-polls then answer
        # at once (empty) instead of holding the shutdown for up to MAX_WAIT_S.
        self.is_closing: Callable[[], bool] = lambda: False
        store.writer.on_relay = self.notify_threadsafe

    async def saw_agent(self, token_id: str) -> None:
        """Record a pull for the "relay agent silent" alert: at most once per PULL_RECORD_EVERY_S
        per token and process, so long-polls do not turn into a write each."""
        mono = time.monotonic()
        if mono - self._pull_recorded.get(token_id, -1e9) < PULL_RECORD_EVERY_S:
            return
        self._pull_recorded[token_id] = mono
        try:
            await self.queue.record_pull(token_id, now_us())
        except Exception:
            self._pull_recorded.pop(token_id, None)

    def notify_threadsafe(self, source_ids: set[str]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed() and self._waiters:
            loop.call_soon_threadsafe(self._notify, set(source_ids))

    def _notify(self, source_ids: set[str]) -> None:
        for sid in source_ids:
            for ev in self._waiters.get(sid, ()):
                ev.set()

    async def pull(self, source_id: str, *, wait_s: float, max_messages: int, visibility_s: float,
                   lease_id: str | None) -> tuple[str | None, list[LeasedMessage]]:
        self._loop = asyncio.get_running_loop()
        deadline = time.monotonic() + wait_s
        ev = asyncio.Event()
        self._waiters.setdefault(source_id, set()).add(ev)
        try:
            while True:
                ev.clear()
                if await self.queue.head_available(source_id, lease_id):
                    lid, msgs = await self.queue.pull(source_id, max_messages, visibility_s, lease_id)
                    if msgs:
                        return lid, msgs
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.is_closing():
                    return None, []
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), min(remaining, RECHECK_S))
        finally:
            waiters = self._waiters.get(source_id)
            if waiters is not None:
                waiters.discard(ev)
                if not waiters:
                    del self._waiters[source_id]


def _clean_headers(raw: str) -> list[list[str]]:
    return [[k, v] for k, v in orjson.loads(raw) if not (k.lower() == "x-api-key" and v == "[redacted]")]


def _clean_query(q: str) -> str:
    if "api-key" not in q:
        return q
    return "&".join(p for p in q.split("&") if p.partition("=")[0] != "api-key")


def message_view(m: LeasedMessage) -> RelayRequest:
    req = m.request
    if req is None:  # the request row is gone: the agent still acks the message
        return RelayRequest(id=m.id, request_id=m.request_id, lease_id=m.lease_id, received_at=iso(None),
                            method="POST", path="", query="", headers=[], content_type=None, body_b64=None,
                            deliveries=m.deliveries)
    return RelayRequest(
        id=m.id, request_id=m.request_id, lease_id=m.lease_id, received_at=iso(req.received_at),
        method=req.method, path=req.path, query=_clean_query(req.query or ""),
        headers=_clean_headers(req.headers or "[]"), content_type=req.content_type,
        body_b64=base64.b64encode(req.body).decode() if req.body is not None else None,
        deliveries=m.deliveries,
    )


async def relay_status(store: StoreInterface, queue: RelayQueue, row: StoredSource) -> RelayStatus:
    st = await queue.status(row.id)
    head = st.head
    cfg = SourceConfig.model_validate(row.config)
    return RelayStatus(
        source_id=row.id, relay=cfg.relay, depth=st.depth, leased=st.leased,
        oldest_age_s=round((st.now - head.created_at) / 1e6, 3) if head else None,
        head=RelayHead(
            id=head.id, request_id=head.request_id, received_at=iso(head.created_at),
            deliveries=head.deliveries, last_error=head.last_error, available_at=iso(head.available_at),
            leased_until=iso(head.locked_until) if head.locked_until and head.locked_until > st.now
            else None,
        ) if head else None,
    )


def register_relay_routes(app: FastAPI, store: Store, errors: dict[int | str, dict[str, Any]]) -> RelayHub:
    """Add the agent's routes (relay tokens only) to the admin app; relay tokens and queue status
    for people are admin API routes (``api/admin.py``, ``ops/relay.py``)."""
    hub = RelayHub(store)
    app.state.relay_hub = hub
    queue = hub.queue

    async def agent(request: Request) -> RelayCredential:
        scheme, _, tok = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not tok.strip():
            raise Unauthorized("Relay token required", headers={"WWW-Authenticate": "Bearer"})
        cred = await queue.authenticate(tok.strip())
        if cred is None:
            raise Unauthorized("Invalid relay token", headers={"WWW-Authenticate": "Bearer"})
        return cred

    Agent = Annotated[RelayCredential, Depends(agent)]

    @app.get("/api/v1/relay/messages", response_model=RelayPull, responses=errors, tags=["relay"])
    async def pull_messages(
        a: Agent,
        wait: float = Query(default=30, ge=0, description=f"Long-poll: seconds to wait for a message (at most {MAX_WAIT_S:g})"),
        max: int = Query(default=10, ge=1, le=100, description="Most messages to lease"),
        visibility: float = Query(default=60, ge=1, le=43200, description="Lease length, seconds"),
        lease_id: str | None = Query(default=None, pattern=LEASE_ID_PATTERN, description=(
            "Optional id for the new lease, chosen by the agent. Retrying a pull whose answer was lost "
            "with the same id returns the same messages at once instead of waiting for the lease to expire.")),
    ) -> RelayPull:
        """Lease the oldest unacked messages of the token's source, in arrival order. Nothing is
        returned while the oldest one is leased or delayed (order is kept)."""
        await hub.saw_agent(a.token_id)
        lid, msgs = await hub.pull(a.source_id, wait_s=min(wait, MAX_WAIT_S), max_messages=max,
                                   visibility_s=visibility, lease_id=lease_id)
        return RelayPull(source_id=a.source_id, lease_id=lid, visibility_s=visibility,
                         messages=[message_view(m) for m in msgs])

    @app.post("/api/v1/relay/messages/{message_id}/ack", response_model=AckOut, responses=errors, tags=["relay"])
    async def ack_message(a: Agent, body: AckIn, message_id: int = MESSAGE_ID) -> AckOut:
        """Done: the message will not be delivered again. Valid with the lease id that delivered it,
        even after the lease expired, unless the message was leased again since."""
        first = await queue.ack(a.source_id, message_id, body.lease_id)
        return AckOut(id=message_id, state="acked", already_acked=not first)

    @app.post("/api/v1/relay/messages/ack", response_model=AckManyOut, responses=errors, tags=["relay"])
    async def ack_messages(a: Agent, body: AckManyIn) -> AckManyOut:
        """Ack several messages at once (one transaction), each with the same rules as a single ack;
        the answer gives each message's outcome. ``hookbay agent`` sends its acks this way."""
        res = await queue.ack_many(a.source_id, [(m.id, m.lease_id) for m in body.messages])
        return AckManyOut(results=[AckResult(id=m.id, state=res[m.id]) for m in body.messages])

    @app.post("/api/v1/relay/messages/{message_id}/nack", response_model=NackOut, responses=errors, tags=["relay"])
    async def nack_message(a: Agent, body: NackIn, message_id: int = MESSAGE_ID) -> NackOut:
        """Delivery failed: the message (and the rest of its lease) is given back; it is delivered
        again, first, after ``delay_s``."""
        at = await queue.nack(a.source_id, message_id, body.lease_id, body.delay_s, body.error)
        return NackOut(id=message_id, state="ready", available_at=iso(at))

    return hub


def token_out(t: RelayToken, token: str | None = None) -> RelayTokenOut:
    return RelayTokenOut(id=t.id, source_id=t.source_id, name=t.name, created_at=iso(t.created_at), token=token)
