"""The store on both dialects: schema from migrations, job leases, idempotent processing."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from hookbay.ids import new_request_id, now_us
from hookbay.processing.worker import Worker
from hookbay.results import ParseReceipt, ProcessResult
from hookbay.store import Store, partitions, schema
from hookbay.store.sources import SourceCache
from tests.conftest import make_settings


def _url(db_url: str) -> str:
    return db_url.replace("postgresql://", "postgresql+psycopg://", 1)


def _row(source_id: str, body: bytes, key: str | None = None) -> dict:
    return {
        "id": new_request_id(), "source_id": source_id, "client_id": "acme", "received_at": now_us(),
        "method": "POST", "path": "/V1/Data/x", "query": "", "headers": "[]", "peer": "127.0.0.1",
        "content_type": "application/json", "body": body, "body_size": len(body), "verdict": "accepted",
        "rule": None, "status": 200, "state": "pending", "idempotency_key": key, "duplicate_of": None,
        "receipt": None, "processed_at": None,
    }


def test_migrations_produce_exactly_the_schema(db_url: str) -> None:
    store = Store(_url(db_url))
    store.migrate()
    store.migrate()  # idempotent
    with store.read_engine.connect() as conn:
        # a new PostgreSQL database gets the partitioned request log (hookbay.store.partitions)
        assert partitions.is_partitioned(conn) == store.is_postgres
        include = schema.include_object_partitioned if store.is_postgres else schema.include_object
        ctx = MigrationContext.configure(conn, opts={"include_object": include})
        diff = compare_metadata(ctx, schema.metadata)
        tables = set(sa.inspect(conn).get_table_names())
        indexes = {i["name"]: i for i in sa.inspect(conn).get_indexes("requests")}
    assert diff == []
    assert set(indexes) >= {str(ix.name) for ix in schema.requests.indexes}
    if store.is_postgres:  # the free-text index beside the log, filled after the ingest commit
        assert "ix_requests_text_txid" in indexes and "ix_requests_text_trgm" not in indexes
        with store.read_engine.connect() as conn:
            assert "ix_request_text_trgm" in {i["name"] for i in sa.inspect(conn).get_indexes("request_text")}
            assert conn.execute(sa.text("SELECT count(*) FROM request_text_state")).scalar() == 1
    else:
        assert "requests_fts" in tables
    assert {t.name for t in schema.metadata.sorted_tables} <= tables
    store.read_engine.dispose()
    store.write_engine.dispose()


async def _open(db_url: str) -> Store:
    store = Store(_url(db_url))
    await asyncio.to_thread(store.migrate)
    await store.start()
    return store


async def test_expired_lease_is_reclaimed_and_finishing_twice_makes_one_record(db_url: str) -> None:
    store = await _open(db_url)
    try:
        src, _ = await store.create_source(name="s", client_id="acme", config={})
        rid = await store.writer.ingest(_row(src.id, b'{"a": 1}'))
        first = await store.claim_jobs("w1", 10, lease_s=0.3)
        assert [j.request_id for j in first] == [rid]
        assert await store.claim_jobs("w2", 10, lease_s=0.3) == []
        await asyncio.sleep(0.4)
        second = await store.claim_jobs("w2", 10, lease_s=30)
        assert [(j.request_id, j.attempts) for j in second] == [(rid, 2)]
        result = ProcessResult(request_id=rid, source_id=src.id, client_id="acme", received_at=now_us(),
                               parser="generic", parser_version="1", state="processed",
                               records=[{"fields": {"a": 1}}], receipt=ParseReceipt())
        await store.finish_jobs([result])
        await store.finish_jobs([result])  # the first worker wakes up late and finishes too
        recs = await store.records_for([rid])
        assert len(recs[rid]) == 1
        assert (await store.get_request(rid)).state == "processed"
        assert await store.queue_depth() == 0
    finally:
        await store.close()


async def test_idempotency_key_is_durable_across_batches(db_url: str) -> None:
    store = await _open(db_url)
    try:
        src, _ = await store.create_source(name="s", client_id="acme", config={})
        a = await store.writer.ingest(_row(src.id, b"{}", key="k1"))
        b, c = await asyncio.gather(store.writer.ingest(_row(src.id, b"{}", key="k1")),
                                    store.writer.ingest(_row(src.id, b"{}", key="k2")))
        assert b == a and c != a
        assert await store.count_requests(verdict="duplicate") == 1
        assert await store.queue_depth() == 2
    finally:
        await store.close()


async def test_two_workers_on_two_connections_process_each_request_once(db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path, worker_batch=20, job_lease_seconds=30, worker_yield_ratio=0)
    ingest_store = await _open(db_url)
    stores = [await _open(db_url), await _open(db_url)]
    try:
        src, _ = await ingest_store.create_source(name="s", client_id="acme", config={"format": "json"})
        ids = await asyncio.gather(*[
            ingest_store.writer.ingest(_row(src.id, orjson.dumps({"n": i}))) for i in range(300)
        ])
        workers = []
        for i, st in enumerate(stores):
            cache = SourceCache(st, 1 << 20)
            await cache.reload()
            workers.append(Worker(st, cache, settings, worker_id=f"w{i}"))

        async def drain(w: Worker, pipelined: bool) -> None:
            deadline = time.monotonic() + 60
            while await (w.drain() if pipelined else w.run_once()) or await w.store.queue_depth():
                assert time.monotonic() < deadline

        # one pipelined (as in serve), one a batch at a time: they compete for the same jobs
        await asyncio.gather(drain(workers[0], True), drain(workers[1], False))
        assert sum(w.processed for w in workers) == 300
        recs = await ingest_store.records_for(ids)
        assert sorted(orjson.loads(r[0].data)["fields"]["n"] for r in recs.values()) == list(range(300))
        assert all(len(r) == 1 for r in recs.values())
        assert await ingest_store.count_requests(state="processed") == 300
    finally:
        for st in (ingest_store, *stores):
            await st.close()


async def test_drain_claims_the_next_batch_before_storing_this_one(db_url: str, tmp_path: Path) -> None:
    """Pipelining: while a batch's results are written, the next batch is already claimed (and
    parsed); results are still stored one batch at a time, in claim order, each exactly once."""
    settings = make_settings(db_url, tmp_path, worker_batch=10, worker_yield_ratio=0)
    store = await _open(db_url)
    try:
        src, _ = await store.create_source(name="s", client_id="acme", config={"format": "json"})
        ids = [await store.writer.ingest(_row(src.id, orjson.dumps({"n": i}))) for i in range(95)]
        cache = SourceCache(store, 1 << 20)
        await cache.reload()
        w = Worker(store, cache, settings, worker_id="w")
        calls: list[tuple[str, list[str]]] = []
        claim, finish = store.claim_jobs, store.finish_jobs

        async def claim_logged(*a, **kw):  # type: ignore[no-untyped-def]
            jobs = await claim(*a, **kw)
            calls.append(("claim", [j.request_id for j in jobs]))
            return jobs

        async def finish_logged(results, *a, **kw):  # type: ignore[no-untyped-def]
            calls.append(("finish-start", [r.request_id for r in results]))
            out = await finish(results, *a, **kw)
            calls.append(("finish-end", [r.request_id for r in results]))
            return out

        store.claim_jobs, store.finish_jobs = claim_logged, finish_logged  # type: ignore[method-assign]
        assert await w.drain() == 95
        claims = [ids for kind, ids in calls if kind == "claim" and ids]
        finishes = [ids for kind, ids in calls if kind == "finish-start"]
        assert [len(c) for c in claims] == [10] * 9 + [5]
        assert finishes == claims  # stored in claim order, each batch once
        for n in range(len(claims) - 1):  # batch n+1 was claimed (and parsed) while batch n was stored
            assert calls.index(("claim", claims[n + 1])) < calls.index(("finish-end", claims[n]))
        starts_ends = [k for k, _ in calls if k.startswith("finish")]
        assert starts_ends == ["finish-start", "finish-end"] * 10  # one batch stored at a time
        recs = await store.records_for(ids)
        assert sorted(orjson.loads(r[0].data)["fields"]["n"] for r in recs.values()) == list(range(95))
        assert all(len(r) == 1 for r in recs.values())
        assert await store.queue_depth() == 0
    finally:
        await store.close()


async def test_claims_shrink_while_ingest_is_saturated(db_url: str, tmp_path: Path) -> None:
    """Behind, with ingest saturated: once it has seen that (after a full batch, whose successor is
    already claimed) the worker claims
    ``worker_batch_busy`` jobs at a time (shorter stretches on the event loop, shorter transactions
    for acks to queue behind), still processing every request exactly once."""
    settings = make_settings(db_url, tmp_path, worker_batch=20, worker_batch_busy=5, worker_yield_ratio=0.001,
                             worker_backoff_inflight=32)
    store = await _open(db_url)
    try:
        src, _ = await store.create_source(name="s", client_id="acme", config={"format": "json"})
        ids = [await store.writer.ingest(_row(src.id, orjson.dumps({"n": i}))) for i in range(50)]
        cache = SourceCache(store, 1 << 20)
        await cache.reload()
        w = Worker(store, cache, settings, worker_id="w", ingest_load=lambda: 64)
        sizes: list[int] = []
        claim = store.claim_jobs

        async def claim_logged(worker_id, n, *a, **kw):  # type: ignore[no-untyped-def]
            sizes.append(n)
            return await claim(worker_id, n, *a, **kw)

        store.claim_jobs = claim_logged  # type: ignore[method-assign]
        assert await w.drain() == 50
        assert sizes == [20, 20, 5, 5, 5]  # the last claim comes back empty and ends the drain
        recs = await store.records_for(ids)
        assert sorted(orjson.loads(r[0].data)["fields"]["n"] for r in recs.values()) == list(range(50))
        assert all(len(r) == 1 for r in recs.values())
        assert w._batch_size() == 20  # caught up: full-size claims again
    finally:
        await store.close()


async def test_retention_purges_old_processed_bodies_only(db_url: str) -> None:
    from hookbay.ops.retention import purge_expired

    store = await _open(db_url)
    try:
        keep, _ = await store.create_source(name="keep", client_id="acme", config={})
        short, _ = await store.create_source(name="short", client_id="acme", config={"retention_days": 2})
        day = 86_400_000_000
        rows = {}
        for name, src, age, state in [("old_done", short, 3, "processed"), ("old_pending", short, 3, "pending"),
                                      ("new_done", short, 1, "processed"), ("old_other", keep, 30, "processed")]:
            row = _row(src.id, b'{"x": 1}')
            row["received_at"] -= age * day
            row["state"] = state
            rows[name] = await store.writer.ingest(row)
        cache = SourceCache(store, 1 << 20)
        await cache.reload()
        assert await purge_expired(store, cache, dry_run=True) == {short.id: 1}
        assert (await store.get_request(rows["old_done"])).body is not None
        assert await purge_expired(store, cache) == {short.id: 1}
        bodies = {k: (await store.get_request(v)).body for k, v in rows.items()}
        assert bodies["old_done"] is None
        assert all(bytes(bodies[k]) == b'{"x": 1}' for k in ("old_pending", "new_done", "old_other"))
    finally:
        await store.close()


_SYNC_LEVELS = {"0": 0, "OFF": 0, "1": 1, "NORMAL": 1, "2": 2, "FULL": 2, "3": 3, "EXTRA": 3}


async def test_sqlite_writer_commits_every_ingest_with_synchronous_full(tmp_path: Path) -> None:
    """Issue #19 row 4: an acknowledged request must be on disk, so on SQLite (WAL) every transaction
    that writes ingest rows, or durable writes, commits under ``synchronous=FULL``; only bookkeeping
    marked ``durable=False`` may commit under NORMAL. Losing an unsynced commit takes a power cut, which
    a test cannot stage, so this watches the writer's own connection instead: every statement it runs
    is traced, and the synchronous level in force at each COMMIT is checked, on every batch path
    (ingest only, ingest with other writes, relaxed bookkeeping just before or in the batch of an ingest)."""
    store = Store(f"sqlite:///{tmp_path / 'hb.db'}")
    await asyncio.to_thread(store.migrate)
    commits: list[tuple[frozenset[str], int]] = []

    @sa.event.listens_for(store.write_engine, "connect", insert=True)
    def trace(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        if threading.current_thread().name != "hookbay-writer":
            return
        level = [int(dbapi_conn.execute("PRAGMA synchronous").fetchone()[0])]
        held: set[str] = set()

        def statement(sql: str) -> None:
            s = " ".join(sql.split()).upper()
            if m := re.fullmatch(r"PRAGMA SYNCHRONOUS ?= ?(\w+)", s):
                level[0] = _SYNC_LEVELS[m.group(1)]
            elif s.startswith("BEGIN"):
                held.clear()
            elif s in ("COMMIT", "END"):
                if held:
                    commits.append((frozenset(held), level[0]))
            elif s.startswith("INSERT INTO REQUESTS"):
                held.add("ingest")
            elif m := re.fullmatch(r"SELECT '(DURABLE|RELAXED)'", s):
                held.add(m.group(1).lower())

        dbapi_conn.set_trace_callback(statement)

    def durable(conn: sa.Connection) -> None:
        conn.exec_driver_sql("SELECT 'durable'")

    def relaxed(conn: sa.Connection) -> None:
        conn.exec_driver_sql("SELECT 'relaxed'")

    async def one_batch(*ops: Callable[[], Awaitable[object]]) -> None:
        """Queue ``ops`` while the writer thread is stopped, so they all land in its next batch."""
        await asyncio.to_thread(store.writer.stop)
        tasks = [asyncio.create_task(op()) for op in ops]  # type: ignore[arg-type, var-annotated]
        await asyncio.sleep(0.05)
        store.writer.start()
        await asyncio.gather(*tasks)

    await store.start()
    try:
        src, _ = await store.create_source(name="s", client_id="acme", config={})
        ingest = lambda: store.writer.ingest(_row(src.id, b"{}"))  # noqa: E731
        await ingest()
        await one_batch(ingest, lambda: store.writer.run(durable), lambda: store.writer.run(relaxed, durable=False))
        await store.writer.run(relaxed, durable=False)
        await ingest()
        await one_batch(lambda: store.writer.run(relaxed, durable=False), ingest)
        await ingest()
    finally:
        await store.close()
    i, d, r = frozenset({"ingest"}), frozenset({"durable", "relaxed"}), frozenset({"relaxed"})
    assert commits == [(i, 2), (i, 2), (d, 2), (r, 1), (i, 2), (i, 2), (r, 1), (i, 2)]
    with sqlite3.connect(tmp_path / "hb.db") as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
