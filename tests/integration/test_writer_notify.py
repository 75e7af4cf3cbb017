"""PostgreSQL group commits: one pipeline per batch, and NOTIFY at most once per
``Writer.NOTIFY_INTERVAL``, with a trailing NOTIFY so an idle worker is still woken after the last
commit of a burst."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest

from hookbay.ids import new_request_id, now_us
from hookbay.settings import Settings
from hookbay.store import open_store
from hookbay.store.writer import Writer
from tests.conftest import drop_pg_database, make_pg_database


@pytest.fixture
def pg_url(pg_ok: None) -> Iterator[str]:
    name, url = make_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(name)


def _row(n: int) -> dict[str, object]:
    body = orjson.dumps({"n": n})
    return {"id": new_request_id(), "source_id": "src_x", "client_id": "acme", "received_at": now_us(),
            "method": "POST", "path": "/V1/Data/x", "query": "", "headers": "[]", "peer": "127.0.0.1",
            "content_type": "application/json", "body": body, "body_size": len(body), "verdict": "accepted",
            "rule": None, "status": 200, "state": "pending", "idempotency_key": None, "duplicate_of": None,
            "receipt": None, "processed_at": None, "key_id": None}


async def test_notify_is_throttled_and_the_last_batch_still_wakes_a_listener(pg_url: str, tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=tmp_path, database_url=pg_url))
    await asyncio.to_thread(store.migrate)
    listener = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    await listener.execute("LISTEN hookbay_jobs")
    await store.start()
    notes: list[float] = []

    async def listen() -> None:
        async for _ in listener.notifies():
            notes.append(time.monotonic())

    task = asyncio.create_task(listen())
    try:
        started = time.monotonic()
        batches = 0
        ids: list[str] = []
        while time.monotonic() - started < 0.6:  # many small group commits, back to back
            ids += await asyncio.gather(*(store.writer.ingest(_row(batches * 4 + i), 10.0) for i in range(4)))
            batches += 1
        last_commit = time.monotonic()
        elapsed = last_commit - started
        await asyncio.sleep(Writer.NOTIFY_INTERVAL * 4)
        assert batches > 20, batches
        allowed = elapsed / Writer.NOTIFY_INTERVAL + 2
        assert 2 <= len(notes) <= allowed, (len(notes), batches, allowed)
        assert notes[-1] >= last_commit - Writer.NOTIFY_INTERVAL, "no NOTIFY after the burst's last commit"
        with psycopg.connect(pg_url) as c:
            row = c.execute("SELECT count(*) FROM jobs").fetchone()
            assert row is not None and row[0] == len(ids) == len(set(ids))
    finally:
        task.cancel()
        await listener.close()
        await store.close()


async def test_a_failed_pipeline_answers_every_request_in_it_and_the_next_batch_is_stored(
        pg_url: str, tmp_path: Path) -> None:
    """A batch that fails on the server (here: a duplicate id) answers its requests 503, and the
    writer's next batch is stored (the pipeline's failed transaction is not left open)."""
    from hookbay.errors import StorageUnavailable

    store = open_store(Settings(data_dir=tmp_path, database_url=pg_url))
    await asyncio.to_thread(store.migrate)
    await store.start()
    try:
        first = _row(1)
        await store.writer.ingest(dict(first), 10.0)
        clash = [dict(first), _row(2)]
        results = await asyncio.gather(*(store.writer.ingest(r, 10.0) for r in clash), return_exceptions=True)
        assert isinstance(results[0], StorageUnavailable), results
        ok = _row(3)
        assert await store.writer.ingest(ok, 10.0) == ok["id"]
        with psycopg.connect(pg_url) as c:
            stored = {r[0] for r in c.execute("SELECT id FROM requests")}
        acked = {first["id"], ok["id"]} | {r for r in results if isinstance(r, str)}
        assert stored == acked  # answered with an id: stored; answered 503: not
    finally:
        await store.close()
