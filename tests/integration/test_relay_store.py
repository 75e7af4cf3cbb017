"""The relay queue on both dialects: enqueue in the ingest commit, FIFO leases with head-of-line
blocking, ack/nack, lease expiry, retried pulls, bodies kept for the agent."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from hookbay.crypto import Keyring, generate_key
from hookbay.errors import Conflict, NotFound
from hookbay.ids import new_request_id, now_us
from hookbay.store import Store, schema
from hookbay.store.relay import LeasedMessage, RelayQueue


def _url(db_url: str) -> str:
    return db_url.replace("postgresql://", "postgresql+psycopg://", 1)


def _row(store: Store, source_id: str, body: bytes, *, key: str | None = None,
         verdict: str = "accepted", state: str = "pending") -> dict:
    row = {
        "id": new_request_id(), "source_id": source_id, "client_id": "acme", "received_at": now_us(),
        "method": "PUT", "path": "/V1/Data/x", "query": "a=1&api-key=[redacted]",
        "headers": '[["content-type","application/json"],["x-api-key","[redacted]"],["x-trace","t1"]]',
        "peer": "127.0.0.1", "content_type": "application/json", "body": body, "body_size": len(body),
        "verdict": verdict, "rule": None, "status": 200, "state": state, "idempotency_key": key,
        "duplicate_of": None, "receipt": None, "processed_at": None, "key_id": None,
    }
    store.seal_request_row(row)
    return row


_TEMPLATE: list[Path] = []


def _migrated_sqlite(db_url: str) -> None:
    """Copy a database migrated once per test process (the mutation run repeats these tests for
    every mutant; the migrations are the same each time)."""
    if not _TEMPLATE:
        path = Path(tempfile.mkdtemp(prefix="hookbay-relay-")) / "template.db"
        store = Store(f"sqlite:///{path}")
        store.migrate()
        store.read_engine.dispose()
        store.write_engine.dispose()
        _TEMPLATE.append(path)
    shutil.copyfile(_TEMPLATE[0], db_url.removeprefix("sqlite:///"))


async def _open(db_url: str, keyring: Keyring | None = None) -> Store:
    store = Store(_url(db_url), keyring=keyring)
    if db_url.startswith("sqlite:///"):
        await asyncio.to_thread(_migrated_sqlite, db_url)
    else:
        await asyncio.to_thread(store.migrate)
    await store.start()
    return store


async def _send(store: Store, source_id: str, n: int, start: int = 0) -> list[str]:
    """Concurrent ingests land in shared group commits; returns request ids in commit order."""
    ids = await asyncio.gather(*(store.writer.ingest(_row(store, source_id, b'{"n": %d}' % i), relay=True)
                                 for i in range(start, start + n)))
    return list(ids)


def _bodies(msgs: list[LeasedMessage]) -> list[bytes]:
    return [m.request.body for m in msgs if m.request is not None and m.request.body is not None]


async def test_enqueued_in_the_ingest_commit_only_for_relay_sources(db_url: str) -> None:
    store = await _open(db_url)
    try:
        src, _ = await store.create_source(name="r", client_id="acme", config={"relay": True})
        other, _ = await store.create_source(name="o", client_id="acme", config={})
        await store.writer.ingest(_row(store, other.id, b"{}"))
        a = await store.writer.ingest(_row(store, src.id, b'{"n": 0}', key="k1"), relay=True)
        dup = await store.writer.ingest(_row(store, src.id, b'{"n": 0}', key="k1"), relay=True)  # a retried delivery
        assert dup == a
        await store.writer.ingest(_row(store, src.id, b"x", verdict="rejected", state="rejected"), relay=True)
        await store.writer.ingest(_row(store, src.id, b"ping", state="ping"), relay=True)
        await _send(store, src.id, 50, start=1)

        def q(conn: sa.Connection) -> list[tuple]:
            M, R = schema.relay_messages, schema.requests
            return [tuple(r) for r in conn.execute(
                sa.select(M.c.source_id, R.c.body, M.c.state).join(R, R.c.id == M.c.request_id).order_by(M.c.id))]

        rows = await store.read(q)
        assert {r[0] for r in rows} == {src.id}
        assert [bytes(r[1]) for r in rows] == [b'{"n": %d}' % i for i in range(51)]
        assert {r[2] for r in rows} == {"ready"}
        # the request is still processed by the worker as usual
        assert await store.queue_depth() == 52
    finally:
        await store.close()


async def test_fifo_lease_ack_and_head_of_line_blocking(db_url: str) -> None:
    store = await _open(db_url)
    q = RelayQueue(store)
    try:
        src, _ = await store.create_source(name="r", client_id="acme", config={"relay": True})
        sid = src.id
        assert await q.pull(sid, 10, 30) == (None, [])
        await _send(store, sid, 7)
        assert await q.head_available(sid)
        lease, msgs = await q.pull(sid, 3, 30)
        assert lease and [m.lease_id for m in msgs] == [lease] * 3
        assert _bodies(msgs) == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
        ids = [m.id for m in msgs]
        assert ids == sorted(ids)
        # the head is leased: nobody gets anything, not even the unleased messages behind it
        assert not await q.head_available(sid)
        assert await q.pull(sid, 10, 30) == (None, [])
        assert await q.ack(sid, ids[0], lease) is True
        assert await q.ack(sid, ids[0], lease) is False  # a retried ack is fine
        assert await q.pull(sid, 10, 30) == (None, [])  # ids[1] (same lease) is the head now
        for mid in ids[1:]:
            await q.ack(sid, mid, lease)
        lease2, msgs2 = await q.pull(sid, 10, 30)
        assert lease2 != lease
        assert _bodies(msgs2) == [b'{"n": %d}' % i for i in range(3, 7)]
        with pytest.raises(Conflict):
            await q.ack(sid, msgs2[0].id, lease)  # a stale lease id
        with pytest.raises(Conflict):
            await q.ack(sid, ids[0], "lse_other")  # acked under another lease
        with pytest.raises(NotFound):
            await q.ack("src_other", msgs2[0].id, lease2)  # another source's message
        with pytest.raises(NotFound):
            await q.ack(sid, 10**12, lease2)
        st = await q.status(sid)
        assert st.depth == 4 and st.leased == 4 and st.head.id == msgs2[0].id
        r = msgs2[0].request
        assert r is not None and r.method == "PUT" and r.path == "/V1/Data/x"
    finally:
        await store.close()


async def test_expired_lease_is_released_and_ack_survives_expiry_unless_released(db_url: str) -> None:
    store = await _open(db_url)
    q = RelayQueue(store)
    try:
        src, _ = await store.create_source(name="r", client_id="acme", config={"relay": True})
        sid = src.id
        await _send(store, sid, 3)
        lease, msgs = await q.pull(sid, 3, 0.3)
        await asyncio.sleep(0.4)
        # the lease expired but nobody pulled since: the agent's late ack still counts
        assert await q.ack(sid, msgs[0].id, lease) is True
        await asyncio.sleep(0.05)
        # the rest of the expired lease is leased again by the next pull, under a new lease
        lease2, msgs2 = await q.pull(sid, 10, 30)
        assert [m.id for m in msgs2] == [m.id for m in msgs[1:]]
        assert msgs2[0].deliveries == 0
        with pytest.raises(Conflict):
            await q.ack(sid, msgs[1].id, lease)  # re-leased: the old lease id is stale
        assert await q.ack(sid, msgs[1].id, lease2) is True
    finally:
        await store.close()


async def test_nack_delays_the_head_and_releases_the_rest_of_its_lease(db_url: str) -> None:
    store = await _open(db_url)
    q = RelayQueue(store)
    try:
        src, _ = await store.create_source(name="r", client_id="acme", config={"relay": True})
        sid = src.id
        await _send(store, sid, 4)
        lease, msgs = await q.pull(sid, 4, 30)
        await q.ack(sid, msgs[0].id, lease)
        await q.nack(sid, msgs[1].id, lease, 0.4, "HTTP 503")
        with pytest.raises(Conflict):
            await q.nack(sid, msgs[1].id, lease, 0, None)  # already given back
        st = await q.status(sid)
        assert st.depth == 3 and st.leased == 0
        assert st.head.last_error == "HTTP 503" and st.head.deliveries == 1
        # the delayed head blocks the queue; later messages do not overtake it
        assert await q.pull(sid, 10, 30) == (None, [])
        await asyncio.sleep(0.5)
        lease2, msgs2 = await q.pull(sid, 10, 30)
        assert [m.id for m in msgs2] == [m.id for m in msgs[1:]]
        assert msgs2[0].deliveries == 1
        for m in msgs2:
            assert await q.ack(sid, m.id, lease2) is True
        assert (await q.status(sid)).depth == 0
    finally:
        await store.close()


async def test_a_delayed_message_behind_the_head_ends_the_batch(db_url: str) -> None:
    """Issue #19 row 11: a nacked message that is not the head (an older message is still leased)
    keeps its place. A pull takes the available prefix only: the head, then stops at the delayed
    message instead of skipping it and leasing the later ones past it."""
    store = await _open(db_url)
    q = RelayQueue(store)
    try:
        src, _ = await store.create_source(name="r", client_id="acme", config={"relay": True})
        sid = src.id
        await _send(store, sid, 4)
        lease, msgs = await q.pull(sid, 4, 30)
        ids = [m.id for m in msgs]
        await q.nack(sid, ids[1], lease, 30, "HTTP 503")  # ids[2:] go back, ids[0] stays leased
        again, msgs2 = await q.pull(sid, 10, 30, lease_id=lease)  # the head's own lease re-leases it
        assert again == lease and [m.id for m in msgs2] == [ids[0]]
        assert await q.pull(sid, 10, 30) == (None, [])
        assert await q.ack(sid, ids[0], lease) is True
        assert await q.pull(sid, 10, 30) == (None, [])  # the delayed message is the head now
        st = await q.status(sid)
        assert st.head.id == ids[1] and st.depth == 3 and st.leased == 0
    finally:
        await store.close()


async def test_a_retried_pull_with_its_lease_id_gets_the_same_messages(db_url: str) -> None:
    store = await _open(db_url)
    q = RelayQueue(store)
    try:
        src, _ = await store.create_source(name="r", client_id="acme", config={"relay": True})
        sid = src.id
        await _send(store, sid, 2)
        lease, msgs = await q.pull(sid, 10, 30, lease_id="agent-pull-0001")
        assert lease == "agent-pull-0001"
        # the answer was lost; the agent retries with the same id and gets them again at once
        assert await q.head_available(sid, "agent-pull-0001")
        again, msgs2 = await q.pull(sid, 10, 30, lease_id="agent-pull-0001")
        assert again == lease and [m.id for m in msgs2] == [m.id for m in msgs]
        # a different lease id is still blocked
        assert await q.pull(sid, 10, 30, lease_id="agent-pull-0002") == (None, [])
    finally:
        await store.close()


async def test_bodies_are_decrypted_and_kept_from_retention_until_acked(db_url: str, tmp_path: Path) -> None:
    store = await _open(db_url, keyring=Keyring.parse(f"k1:{generate_key()}"))
    q = RelayQueue(store)
    try:
        src, _ = await store.create_source(name="r", client_id="acme", config={"relay": True, "retention_days": 1})
        sid = src.id
        await _send(store, sid, 2)

        def processed(conn: sa.Connection) -> None:
            conn.execute(schema.requests.update().values(state="processed"))

        await store.write(processed)
        lease, msgs = await q.pull(sid, 1, 30)
        assert _bodies(msgs) == [b'{"n": 0}']
        await q.ack(sid, msgs[0].id, lease)
        later = now_us() + 2 * 86_400_000_000
        # the acked request's body goes; the one still queued for the agent stays
        assert await store.purge_bodies({sid: 1}, now_us_=later) == {sid: 1}
        lease, msgs = await q.pull(sid, 10, 30)
        assert _bodies(msgs) == [b'{"n": 1}']
        await q.ack(sid, msgs[0].id, lease)
        assert await store.purge_bodies({sid: 1}, now_us_=later) == {sid: 1}
    finally:
        await store.close()


async def test_relay_tokens(db_url: str) -> None:
    store = await _open(db_url)
    q = RelayQueue(store)
    try:
        src, _ = await store.create_source(name="r", client_id="acme", config={"relay": True})
        row, tok = await q.create_token(src.id, "edge-1")
        assert tok.startswith("hbr_")
        cred = await q.authenticate(tok)
        assert cred is not None and cred.source_id == src.id and cred.client_id == "acme"
        assert await q.authenticate(tok + "x") is None
        assert [t.name for t in await q.list_tokens(src.id)] == ["edge-1"]
        with pytest.raises(NotFound):
            await q.revoke_token("src_other", row.id)
        await q.revoke_token(src.id, row.id)
        assert await q.authenticate(tok) is None
        _, tok2 = await q.create_token(src.id, "edge-2")
        await store.delete_source(src.id)
        assert await q.authenticate(tok2) is None  # a deleted source's tokens are void
    finally:
        await store.close()


async def test_acked_messages_are_pruned_after_their_retention_only(db_url: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from hookbay.ops.retention import prune_relay
    from tests.conftest import make_settings

    store = await _open(db_url)
    q = RelayQueue(store)
    monkeypatch.setattr(RelayQueue, "PRUNE_CHUNK", 2)  # several delete transactions
    try:
        src, _ = await store.create_source(name="r", client_id="acme", config={"relay": True})
        other, _ = await store.create_source(name="o", client_id="acme", config={"relay": True})
        sid = src.id
        ids = await _send(store, sid, 7)
        await _send(store, other.id, 2)
        lease, msgs = await q.pull(sid, 5, 30)
        assert len(msgs) == 5
        acked = await q.ack_many(sid, [(m.id, lease) for m in msgs])
        assert set(acked.values()) == {"acked"}
        assert await q.ready_by_source() == {sid: 2, other.id: 2}

        def age(conn: sa.Connection) -> None:  # three of the five were acked two days ago
            M = schema.relay_messages
            conn.execute(M.update().where(M.c.id.in_([m.id for m in msgs[:3]]))
                         .values(acked_at=now_us() - 2 * 86_400_000_000))

        await store.write(age)
        day = make_settings(db_url, tmp_path, relay_acked_retention_seconds=86400)
        assert await prune_relay(store, day, dry_run=True) == 3
        assert await prune_relay(store, day) == 3
        assert await prune_relay(store, day) == 0
        # a retried ack: still answered for the recent ones, not_found for the pruned
        again = await q.ack_many(sid, [(m.id, lease) for m in msgs])
        assert [again[m.id] for m in msgs] == ["not_found"] * 3 + ["already_acked"] * 2
        # nothing waiting for an agent was touched, and the requests stay in the log
        lease2, rest = await q.pull(sid, 10, 30)
        assert [m.request_id for m in rest if m.request is not None] == ids[5:]
        assert await store.count_requests(source_id=sid) == 7
        assert await prune_relay(store, make_settings(db_url, tmp_path, relay_acked_retention_seconds=0)) == 2
        assert await q.ready_by_source() == {sid: 2, other.id: 2}
    finally:
        await store.close()


# --- issue #19: what the mutation run found untested ----------------------------------------------

LEASE = "agt_0123456789abcdef0123"


async def _messages(store: Store) -> dict[int, dict]:
    def q(conn: sa.Connection) -> dict[int, dict]:
        M = schema.relay_messages
        return {r["id"]: dict(r) for r in conn.execute(sa.select(M)).mappings()}

    return await store.read(q)


async def test_every_queue_operation_stays_in_its_own_source(db_url: str) -> None:
    """Two sources whose messages share one lease id (an agent may reuse its lease): acking,
    nacking, releasing, counting and the head check of source A never touch B's messages."""
    store = await _open(db_url)
    q = RelayQueue(store)
    try:
        a = (await store.create_source(name="a", client_id="acme", config={"relay": True}))[0].id
        b = (await store.create_source(name="b", client_id="acme", config={"relay": True}))[0].id
        await _send(store, a, 1)
        await _send(store, b, 2)
        assert not await q.head_available("src_nothing_here")
        _, [a1] = await q.pull(a, 10, 30, lease_id=LEASE)
        _, [b1, b2] = await q.pull(b, 10, 30, lease_id=LEASE)
        assert b1.id > a1.id
        assert not await q.head_available(a)  # a's only message is leased; b's do not count
        with pytest.raises(NotFound):
            await q.ack(a, b1.id, LEASE)
        assert await q.ack_many(a, [(b1.id, LEASE)]) == {b1.id: "not_found"}
        with pytest.raises(NotFound):
            await q.nack(a, b1.id, LEASE, 0, "x")
        sa_, sb = await q.status(a), await q.status(b)
        assert (sa_.depth, sa_.leased, sa_.head.id) == (1, 1, a1.id)
        assert (sb.depth, sb.leased, sb.head.id) == (2, 2, b1.id)
        # a's nack releases the rest of a's lease only: b's later messages under the same lease stay leased
        await q.nack(a, a1.id, LEASE, 0, None)
        assert (await q.status(b)).leased == 2
        rows = await _messages(store)
        assert rows[a1.id]["last_error"] is None and rows[a1.id]["deliveries"] == 1
        assert rows[b2.id]["lease_id"] == LEASE and rows[b2.id]["locked_until"] is not None
    finally:
        await store.close()


async def test_ack_records_when_and_counts_one_delivery(db_url: str) -> None:
    store = await _open(db_url)
    q = RelayQueue(store)
    try:
        sid = (await store.create_source(name="r", client_id="acme", config={"relay": True}))[0].id
        await _send(store, sid, 3)
        lease, msgs = await q.pull(sid, 10, 30)
        assert lease is not None and lease.startswith("lse_")
        req = msgs[0].request
        assert req is not None and req.body == b'{"n": 0}' and req.method == "PUT"
        assert req.query == "a=1&api-key=[redacted]" and req.content_type == "application/json"
        assert isinstance(req.received_at, int)
        before = now_us()
        assert await q.ack(sid, msgs[0].id, lease) is True
        assert await q.ack_many(sid, [(msgs[1].id, lease)]) == {msgs[1].id: "acked"}
        rows = await _messages(store)
        for m in msgs[:2]:
            r = rows[m.id]
            assert r["state"] == "acked" and r["locked_until"] is None and r["deliveries"] == 1
            assert before <= r["acked_at"] <= now_us()
        # a second ack: the same lease is idempotent, another lease a conflict; a leased message under
        # another lease is a conflict too
        assert await q.ack(sid, msgs[0].id, lease) is False
        assert await q.ack_many(sid, [(msgs[0].id, lease), (msgs[1].id, "lse_other"),
                                      (msgs[2].id, "lse_other")]) == {
            msgs[0].id: "already_acked", msgs[1].id: "conflict", msgs[2].id: "conflict"}
        # pruning: strictly before the cutoff, and dry_run only counts
        acked_at = rows[msgs[0].id]["acked_at"]
        cutoff = min(acked_at, rows[msgs[1].id]["acked_at"])
        assert await q.prune_acked(cutoff, dry_run=True) == 0
        assert await q.prune_acked(now_us() + 1, dry_run=True) == 2
        assert len(await _messages(store)) == 3
        assert await q.prune_acked(cutoff) == 0
        assert await q.prune_acked(now_us() + 1) == 2
        assert list(await _messages(store)) == [msgs[2].id]
    finally:
        await store.close()


async def test_a_stale_ack_or_nack_says_why(db_url: str) -> None:
    """The agent logs these answers: a released or re-leased message and one acked under another
    lease are told apart, and a message of another source is simply not found."""
    store = await _open(db_url)
    q = RelayQueue(store)
    try:
        sid = (await store.create_source(name="r", client_id="acme", config={"relay": True}))[0].id
        await _send(store, sid, 2)
        lease, [m1, m2] = await q.pull(sid, 10, 30)
        assert lease is not None
        for call in (q.ack(sid, m1.id, "lse_other"), q.nack(sid, m1.id, "lse_other", 0, None)):
            with pytest.raises(Conflict) as e:
                await call
            assert e.value.message == "The lease is no longer valid: the message was released or leased again"
            assert e.value.detail == {"state": "ready"}
        await q.ack(sid, m1.id, lease)
        with pytest.raises(Conflict) as e:
            await q.ack(sid, m1.id, "lse_other")
        assert e.value.message == "The message was already acknowledged under another lease"
        assert e.value.detail == {"state": "acked"}
        with pytest.raises(NotFound) as nf:
            await q.ack("src_other", m2.id, lease)
        assert nf.value.message == "relay message not found"
    finally:
        await store.close()
