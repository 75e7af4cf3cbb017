"""The relay queue's finer rules on both dialects (issue #19: what the mutation run of
``store/relay.py`` found untested): which messages a nack releases and which it leaves alone,
exact times on a clock the test sets, chunked pruning, and relay tokens (listing, revoking one
token of one source, the audit trail, the last pull)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from hookbay.audit import Actor, AuditEntry
from hookbay.errors import Conflict, NotFound
from hookbay.ops import relay as relay_ops
from hookbay.ops.access import Principal
from hookbay.store import Store
from hookbay.store import relay as relay_module
from hookbay.store.relay import RelayCredential, RelayQueue, RelayToken
from hookbay.views import iso
from tests.integration.test_relay_store import _open, _send

T0 = 1_800_000_000_000_000


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The relay store's clock, set by the test (µs)."""
    now = [T0]
    monkeypatch.setattr(relay_module, "now_us", lambda: now[0])
    return now


async def _queue(db_url: str, n: int) -> tuple[Store, RelayQueue, str, list[int]]:
    store = await _open(db_url)
    src, _ = await store.create_source(name="r", client_id="acme", config={"relay": True})
    await _send(store, src.id, n)

    def ids(conn: sa.Connection) -> list[int]:
        return [r[0] for r in conn.exec_driver_sql("SELECT id FROM relay_messages ORDER BY id")]

    return store, RelayQueue(store), src.id, await store.read(ids)


async def test_a_nack_releases_only_the_later_messages_of_its_own_lease(db_url: str, clock: list[int]) -> None:
    store, q, sid, (m1, m2, m3, m4) = await _queue(db_url, 4)
    try:
        old, msgs = await q.pull(sid, 3, visibility_s=1)
        assert old and [m.id for m in msgs] == [m1, m2, m3]
        clock[0] += 2_000_000  # the old lease expired; a new agent takes the head alone
        new, msgs = await q.pull(sid, 1, visibility_s=30)
        assert [m.id for m in msgs] == [m1]
        assert await q.nack(sid, m1, new, 2.5, "boom") == clock[0] + 2_500_000
        # m2 and m3 still belong to the old lease (expired, never re-leased): its acks still count
        assert await q.ack_many(sid, [(m2, old), (m3, old)]) == {m2: "acked", m3: "acked"}
        assert await q.ack_many(sid, [(m4, old)]) == {m4: "conflict"}
    finally:
        await store.close()


async def test_a_nack_leaves_earlier_and_acked_messages_of_its_lease_alone(db_url: str, clock: list[int]) -> None:
    store, q, sid, (m1, m2, m3, m4) = await _queue(db_url, 4)
    try:
        lid, _ = await q.pull(sid, 4, visibility_s=30)
        assert lid is not None
        assert await q.ack(sid, m4, lid) is True  # acked out of order
        await q.nack(sid, m2, lid, 0, None)
        assert await q.ack(sid, m1, lid) is True  # before the nacked one: still leased
        assert await q.ack(sid, m4, lid) is False  # acked already, with this lease: idempotent
        with pytest.raises(Conflict):
            await q.ack(sid, m3, lid)  # after it: released
        with pytest.raises(Conflict) as e:
            await q.nack(sid, m1, lid, 0, None)  # acked: a nack cannot take it back
        assert e.value.detail == {"state": "acked"}
        assert await q.ack_many(sid, [(m1, lid)]) == {m1: "already_acked"}
        status = await q.status(sid)
        assert status.depth == 2 and status.head.id == m2 and status.head.lease_id is None
    finally:
        await store.close()


async def test_status_counts_a_lease_until_its_last_microsecond(db_url: str, clock: list[int]) -> None:
    store, q, sid, (m1, m2) = await _queue(db_url, 2)
    try:
        lid, _ = await q.pull(sid, 1, visibility_s=3)
        clock[0] += 2_999_999
        st = await q.status(sid)
        assert (st.now, st.depth, st.leased) == (clock[0], 2, 1)
        assert st.head.id == m1 and st.head.lease_id == lid and st.head.locked_until == T0 + 3_000_000
        clock[0] += 1  # the lease ends at locked_until
        st = await q.status(sid)
        assert (st.now, st.leased) == (T0 + 3_000_000, 0)
        assert await q.head_available(sid)  # free for a new lease from that microsecond on
        await q.ack(sid, m1, lid)
        st = await q.status(sid)
        assert st.depth == 1 and st.head.id == m2
        assert await q.head_available(sid)  # the acked head is skipped
    finally:
        await store.close()


async def test_pruning_deletes_a_chunk_per_transaction(db_url: str, clock: list[int]) -> None:
    store, q, sid, ids = await _queue(db_url, 5)
    try:
        lid, _ = await q.pull(sid, 5, visibility_s=30)
        assert lid is not None
        assert set((await q.ack_many(sid, [(m, lid) for m in ids])).values()) == {"acked"}
        q.PRUNE_CHUNK = 2
        deleted: list[int] = []
        write = store.write

        async def counted(fn: Any, **kw: Any) -> Any:
            n = await write(fn, **kw)
            deleted.append(n)
            return n

        store.write = counted  # type: ignore[method-assign]
        assert await q.prune_acked(T0 + 1) == 5
        assert deleted == [2, 2, 1]
    finally:
        await store.close()


async def test_relay_tokens_are_listed_revoked_one_at_a_time_and_audited(db_url: str, clock: list[int]) -> None:
    store = await _open(db_url)
    q = RelayQueue(store)
    try:
        src, _ = await store.create_source(name="r", client_id="acme", config={"relay": True})
        sid = src.id
        audit = AuditEntry(action="relay_token.create", actor=Actor(name="admin", peer="127.0.0.1"),
                           client_id="acme", changes=["name: edge"])
        clock[0] = T0 + 10
        a, tok_a = await q.create_token(sid, "edge-a", audit)
        clock[0] = T0  # created earlier, though its id is later
        b, tok_b = await q.create_token(sid, "edge-b")
        clock[0] = T0 + 10
        c, _ = await q.create_token(sid, "edge-c")
        assert tok_a.startswith("hbr_") and len(tok_a) == 4 + 43  # 32 random bytes, base64url
        assert a.id.startswith("rtk_")
        # by creation time, then id (two tokens made in one millisecond have ids in random order)
        assert await q.list_tokens(sid) == [
            RelayToken(b.id, sid, "edge-b", T0),
            *sorted((RelayToken(x.id, sid, n, T0 + 10) for x, n in ((a, "edge-a"), (c, "edge-c"))),
                    key=lambda t: t.id)]
        assert await q.authenticate(tok_a) == RelayCredential(a.id, sid, "acme")

        with pytest.raises(NotFound) as e:
            await q.revoke_token("src_other", a.id)
        assert str(e.value) == "relay token not found"
        await q.revoke_token(sid, a.id, audit.but(action="relay_token.revoke"))
        assert await q.authenticate(tok_a) is None
        assert await q.authenticate(tok_b) == RelayCredential(b.id, sid, "acme")  # the others stay
        assert [t.id for t in await q.list_tokens(sid)] == [b.id, c.id]

        await q.record_pull(b.id, T0 + 77)

        def read(conn: sa.Connection) -> tuple[list[Any], list[Any]]:
            log = conn.exec_driver_sql("SELECT action, target, actor, client_id, changes FROM audit_log "
                                       "WHERE action IN ('relay_token.create', 'relay_token.revoke') ORDER BY action").all()
            pulls = conn.exec_driver_sql("SELECT id, last_pull_at FROM relay_tokens ORDER BY id").all()
            return log, pulls

        log, pulls = await store.read(read)
        assert [(r[0], r[1], r[2], r[3], orjson.loads(r[4])) for r in log] == [
            ("relay_token.create", a.id, "admin", "acme", ["name: edge", f"source: {sid}"]),
            ("relay_token.revoke", a.id, "admin", "acme", ["name: edge", f"source: {sid}"])]
        assert dict((p[0], p[1]) for p in pulls) == {b.id: T0 + 77, c.id: None}
    finally:
        await store.close()


async def test_every_relay_token_is_listed_with_its_source_in_one_query(db_url: str, clock: list[int]) -> None:
    store = await _open(db_url)
    q = RelayQueue(store)
    try:
        b, _ = await store.create_source(name="b", client_id="acme", config={"relay": True})
        a, _ = await store.create_source(name="a", client_id="acme", config={"relay": True})
        g, _ = await store.create_source(name="g", client_id="globex", config={"relay": True})
        gone, _ = await store.create_source(name="gone", client_id="acme", config={"relay": True})
        clock[0] = T0 + 10
        b1, _ = await q.create_token(b.id, "b1")
        clock[0] = T0
        b2, _ = await q.create_token(b.id, "b2")  # older, so listed before b1
        a1, _ = await q.create_token(a.id, "a1")
        g1, _ = await q.create_token(g.id, "g1")
        await q.create_token(gone.id, "orphan")
        await store.delete_source(gone.id)
        reads = 0
        read = store.read

        async def counted(fn: Any) -> Any:
            nonlocal reads
            reads += 1
            return await read(fn)

        store.read = counted  # type: ignore[method-assign]
        listed = await relay_ops.list_all_relay_tokens(store, Principal(None))
        assert reads == 1
        assert [(t.name, t.source_name, t.client_id) for t in listed] == [
            ("a1", "a", "acme"), ("b2", "b", "acme"), ("b1", "b", "acme"), ("g1", "g", "globex")]
        assert listed[0] == relay_ops.RelayTokenListed(id=a1.id, name="a1", source_id=a.id, source_name="a",
                                                       client_id="acme", created_at=iso(T0))
        assert [t.id for t in await relay_ops.list_all_relay_tokens(store, Principal("acme"))] == [
            a1.id, b2.id, b1.id]
        assert [t.id for t in await relay_ops.list_all_relay_tokens(store, Principal("globex"))] == [g1.id]
    finally:
        await store.close()


async def test_a_nack_delay_is_exact_to_the_microsecond(db_url: str, clock: list[int]) -> None:
    store, q, sid, (m1,) = await _queue(db_url, 1)
    try:
        lid, _ = await q.pull(sid, 1, visibility_s=30)
        assert lid is not None
        at = await q.nack(sid, m1, lid, 1000.0, "x" * 3000)
        assert at == T0 + 1_000_000_000
        st = await q.status(sid)
        assert st.head.available_at == at and st.head.last_error == "x" * 2000
        clock[0] = at - 1
        assert not await q.head_available(sid) and await q.pull(sid, 1, 30) == (None, [])
        clock[0] = at
        assert await q.head_available(sid)
    finally:
        await store.close()



async def test_the_head_is_the_oldest_ready_message_and_a_batch_takes_every_message_due_by_now(
        db_url: str, clock: list[int]) -> None:
    store, q, sid, (m1, m2, m3) = await _queue(db_url, 3)
    try:
        def rows(conn: sa.Connection) -> dict[int, tuple[str, int]]:
            return {r[0]: (r[1], r[2]) for r in conn.exec_driver_sql(
                "SELECT id, request_id, created_at FROM relay_messages")}

        made = await store.read(rows)

        def purge(conn: sa.Connection) -> None:
            conn.execute(sa.text("UPDATE requests SET body = NULL WHERE id = :id"), {"id": made[m3][0]})

        await store.write(purge)
        lid, msgs = await q.pull(sid, 3, visibility_s=30)
        assert lid is not None and [m.id for m in msgs] == [m1, m2, m3]
        first = msgs[0].request
        assert first is not None and first.body == b'{"n": 0}' and orjson.loads(first.headers) == [
            ["content-type", "application/json"], ["x-api-key", "[redacted]"], ["x-trace", "t1"]]
        assert msgs[2].request is not None and msgs[2].request.body is None  # purged
        assert await q.ack(sid, m1, lid) is True
        await q.nack(sid, m3, lid, 2.0, None)
        await q.nack(sid, m2, lid, 2.0, None)  # both due at T0 + 2 s
        clock[0] = T0 + 2_000_000 - 1
        assert not await q.head_available(sid)  # the acked message before it is no head
        head = (await q.status(sid)).head
        assert head is not None and (head.id, head.request_id, head.created_at) == (m2, *made[m2])
        clock[0] = T0 + 2_000_000
        assert [m.id for m in (await q.pull(sid, 5, visibility_s=30))[1]] == [m2, m3]
    finally:
        await store.close()
