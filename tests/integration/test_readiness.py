"""/readyz follows the writer, processing lag and worker health (issue #11 finding 8, #12), and a
503 after a write timeout is safe to retry with the same Idempotency-Key (#11 finding 11)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from hookbay.ids import now_us
from hookbay.store import health, open_store


@contextlib.contextmanager
def writes_blocked(live: Any) -> Iterator[None]:
    """Another connection holds the database's write lock (SQLite: ``BEGIN EXCLUSIVE``;
    PostgreSQL: an exclusive lock on the tables ingest and the probe write)."""
    url = live.settings.effective_database_url
    if url.startswith("sqlite"):
        con = sqlite3.connect(sa.engine.make_url(url).database, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            con.execute("ROLLBACK")
            con.close()
    else:
        import psycopg

        with psycopg.connect(sa.engine.make_url(url).set(drivername="postgresql")
                             .render_as_string(hide_password=False)) as con:
            con.execute("LOCK TABLE requests, meta IN ACCESS EXCLUSIVE MODE")
            try:
                yield
            finally:
                con.rollback()


def _ready(live: Any) -> tuple[int, dict[str, Any]]:
    r = live.client.get("/readyz")
    return r.status_code, r.json()


def _wait_ready(live: Any, status: int, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = _ready(live)
        if code == status:
            return body
        assert time.monotonic() < deadline, (code, body)
        time.sleep(0.2)


def test_readyz_says_not_ready_while_the_writer_fails_and_recovers(db_url: str, live_server_factory: Any) -> None:
    live = live_server_factory(db_url, busy_timeout_ms=800)
    src = live.create_source()
    assert _ready(live) == (200, {"status": "ready"})
    assert live.client.get("/healthz").status_code == 200
    with writes_blocked(live):
        r = live.client.post(f"/V1/Data/{src['token']}", json={"a": 1})
        assert r.status_code == 503, r.text
        body = _wait_ready(live, 503)
        assert body["error"]["code"] == "not_ready"
        assert body["error"]["detail"]["reason"] in ("write_failed", "write_timeout"), body
        assert live.client.get("/readyz").headers["retry-after"]
        assert live.client.get("/healthz").status_code == 200  # liveness only
    _wait_ready(live, 200)
    assert live.client.post(f"/V1/Data/{src['token']}", json={"a": 1}).status_code == 200


def test_readyz_reports_processing_lag(db_url: str, live_server_factory: Any) -> None:
    live = live_server_factory(db_url, run_worker=False)
    src = live.create_source()
    rid = live.client.post(f"/V1/Data/{src['token']}", json={"a": 1}).json()["request_id"]
    assert _ready(live)[0] == 200
    engine = sa.create_engine(live.settings.effective_database_url)
    jobs = sa.table("jobs", sa.column("request_id"), sa.column("run_after"))
    try:
        with engine.begin() as conn:  # received 400 s ago, never picked up
            conn.execute(jobs.update().where(jobs.c.request_id == rid).values(run_after=now_us() - 400_000_000))
        body = _wait_ready(live, 503)
        detail = body["error"]["detail"]
        assert detail["reason"] == "processing_lag" and detail["lag_seconds"] >= 400, body
        assert detail["max_lag_seconds"] == 300
        with engine.begin() as conn:  # a job waiting out a retry back-off is not lag
            conn.execute(jobs.update().where(jobs.c.request_id == rid).values(run_after=now_us() + 60_000_000))
        _wait_ready(live, 200)
    finally:
        engine.dispose()


def test_readyz_reports_a_worker_failing_every_batch_for_a_minute(db_url: str, live_server_factory: Any) -> None:
    """The worker's record goes through the database: here from another store, as from a worker
    running in a child process."""
    live = live_server_factory(db_url)
    store = open_store(live.settings)

    async def record(*calls: tuple[bool, int | None]) -> None:
        await store.start()
        try:
            for ok, at in calls:
                await health.record_batch(store, ok, at_us=at)
        finally:
            await store.close()

    now = now_us()
    asyncio.run(record((False, now - 10_000_000), (False, now)))
    time.sleep(1.1)
    assert _ready(live)[0] == 200  # failing for 10 s only
    asyncio.run(record((False, now - 70_000_000), (True, now - 65_000_000),
                       (False, now - 64_000_000), (False, now)))
    body = _wait_ready(live, 503)
    assert body["error"]["detail"]["reason"] == "worker_failing" and body["error"]["detail"]["failing_seconds"] >= 60
    asyncio.run(record((True, None)))
    _wait_ready(live, 200)


def test_write_timeout_503_is_safe_to_retry_with_the_same_key(db_url: str, live_server_factory: Any) -> None:
    live = live_server_factory(db_url, write_timeout=0.5, busy_timeout_ms=20000)
    src = live.create_source()
    url = f"/V1/Data/{src['token']}"
    headers = {"Idempotency-Key": "order-42"}
    with writes_blocked(live):
        r = live.client.post(url, json={"order": 42}, headers=headers)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"]
        err = r.json()["error"]
        assert err["code"] == "storage_unavailable"
        assert "may have been stored" in err["message"] and "Idempotency-Key" in err["message"]
        first_id = err["detail"]["request_id"]
    # the held commit lands once the lock is gone
    live.wait_state(first_id, ("pending", "processed", "failed"), timeout=30)
    r = live.client.post(url, json={"order": 42}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["request_id"] == first_id
    with live.admin() as c:
        items = c.get("/api/v1/requests", params={"source": src["id"], "limit": 10}).json()["items"]
    accepted = [i for i in items if i.get("verdict") == "accepted"]
    assert [i["id"] for i in accepted] == [first_id], items
    assert [i["duplicate_of"] for i in items if i["verdict"] == "duplicate"] == [first_id]
