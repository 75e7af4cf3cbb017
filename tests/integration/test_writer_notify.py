"""PostgreSQL group commits: one pipeline per batch, and NOTIFY at most once per
``Writer.NOTIFY_INTERVAL``, with a trailing NOTIFY so an idle worker is still woken after the last
commit of a burst."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import psycopg

from hookbay.ids import new_request_id, now_us
from hookbay.settings import Settings
from hookbay.store import open_store
from hookbay.store.writer import Writer


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


async def test_concurrent_lanes_never_fail_a_batch_over_a_repeated_idempotency_key(
        pg_url: str, tmp_path: Path) -> None:
    """Ingest rows commit on two lanes at once; a retried request (same idempotency key) sent
    while its original is in flight gets the original's id, and no batch fails on the unique
    index: keyed rows keep to one thread."""
    store = open_store(Settings(data_dir=tmp_path, database_url=pg_url))
    await asyncio.to_thread(store.migrate)
    await store.start()
    assert store.writer.ingest_lanes == 2
    try:
        for rnd in range(15):
            keyed = []
            for i in range(6):
                r = _row(rnd * 100 + i)
                r["idempotency_key"] = f"key-{rnd}"
                keyed.append(r)
            plain = [_row(rnd * 100 + 50 + i) for i in range(42)]
            rows: list[dict[str, object]] = []
            tasks = []
            for i, r in enumerate(keyed):  # spread over successive batches, so both lanes take some
                for x in (r, *plain[i * 7:(i + 1) * 7]):
                    rows.append(x)
                    tasks.append(asyncio.create_task(store.writer.ingest(x, 10.0)))
                await asyncio.sleep(0.004)
            answers = await asyncio.gather(*tasks)
            keyed_ids = {a for r, a in zip(rows, answers, strict=True) if r.get("idempotency_key")}
            assert len(keyed_ids) == 1, keyed_ids
        with psycopg.connect(pg_url) as c:
            counts = dict(c.execute("SELECT verdict, count(*) FROM requests GROUP BY verdict").fetchall())
        assert counts == {"accepted": 15 * 43, "duplicate": 15 * 5}, counts
    finally:
        await store.close()


async def test_processes_starting_together_bootstrap_meta_without_a_race(pg_url: str, tmp_path: Path) -> None:
    """`serve --processes N` starts N processes at once; each records the admin token hash (if
    absent) and its public URL. Neither may fail on the other's row."""
    stores = [open_store(Settings(data_dir=tmp_path, database_url=pg_url)) for _ in range(4)]
    await asyncio.to_thread(stores[0].migrate)
    for s in stores:
        await s.start()
    try:
        for rnd in range(5):
            won = await asyncio.gather(*(s.set_meta_if_absent(f"token-{rnd}", f"v{i}") for i, s in enumerate(stores)))
            assert sorted(won) == [False, False, False, True]
            await asyncio.gather(*(s.set_meta(f"url-{rnd}", f"u{i}") for i, s in enumerate(stores)))
            assert await stores[0].get_meta(f"url-{rnd}") in {f"u{i}" for i in range(4)}
    finally:
        for s in stores:
            await s.close()
