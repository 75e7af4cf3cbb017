"""The single writer's PostgreSQL-only parts on a real PostgreSQL (issue #19: the mutation run of
``store/writer.py`` runs these besides its SQLite tests): writes that may be lost commit without
waiting for the disk, and NOTIFY, sent at most once per ``NOTIFY_INTERVAL``, is owed and sent late
rather than dropped, also when the writer stops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from hookbay.ids import new_request_id, now_us
from hookbay.store import Store
from hookbay.store.writer import Writer
from tests.conftest import drop_pg_database, make_pg_database


@pytest.fixture(scope="module")
def pg_url(pg_ok: None) -> Iterator[str]:
    name, url = make_pg_database()
    store = Store(url)
    store.migrate()
    store.read_engine.dispose()
    store.write_engine.dispose()
    try:
        yield url
    finally:
        drop_pg_database(name)


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[Store]:
    s = Store(pg_url)
    s.writer.start()
    try:
        yield s
    finally:
        await asyncio.to_thread(s.writer.stop)
        s.read_engine.dispose()
        s.write_engine.dispose()


def _row() -> dict[str, object]:
    return {"id": new_request_id(), "source_id": "src_a", "client_id": "acme", "received_at": now_us(),
            "method": "POST", "path": "/in", "query": "", "headers": "[]", "peer": "127.0.0.1",
            "content_type": "application/json", "body": b"{}", "body_size": 2, "verdict": "accepted",
            "rule": None, "status": 200, "state": "pending", "idempotency_key": None, "duplicate_of": None,
            "receipt": None, "processed_at": None}


async def test_a_write_that_may_be_lost_commits_without_waiting_for_the_disk(store: Store) -> None:
    def level(conn: sa.Connection) -> str:
        return str(conn.exec_driver_sql("SHOW synchronous_commit").scalar())

    listener = Listener(store.url)
    try:
        with capture_logs() as logs:
            assert await store.writer.run(level, durable=False) == "off"
            assert await store.writer.run(level) == "on"
        assert [e for e in logs if e["log_level"] == "error"] == []
        assert listener.arrivals(1, 0.2) == []  # no new jobs: no NOTIFY
    finally:
        listener.conn.close()


class Listener:
    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
        self.conn.execute("LISTEN hookbay_jobs")

    def arrivals(self, n: int, within: float) -> list[float]:
        out = []
        for _ in self.conn.notifies(timeout=within, stop_after=n):
            out.append(time.monotonic())
        return out


@pytest.mark.parametrize("stop", [False, True])
async def test_a_second_wake_up_within_the_interval_is_sent_when_the_interval_is_over_or_at_stop(
        store: Store, pg_url: str, stop: bool) -> None:
    writer = Writer(store.write_engine, notify_sql=store.dialect.notify_sql)  # one thread, no lanes
    writer.start()
    listener = Listener(pg_url)
    try:
        interval = writer.NOTIFY_INTERVAL
        await writer.ingest(_row())  # connected, and its NOTIFY sent
        assert len(listener.arrivals(1, 5.0)) == 1
        await asyncio.sleep(interval * 2)
        started = time.monotonic()
        await writer.ingest(_row())
        await writer.ingest(_row())  # committed within the interval: its NOTIFY is owed
        committed = time.monotonic()
        if stop:
            await asyncio.to_thread(writer.stop)
        got = await asyncio.to_thread(listener.arrivals, 2, 5.0)
        assert len(got) == 2
        if not stop:
            assert got[1] - started >= interval  # not before the interval is over
            assert got[1] - committed < 2.0  # but soon after it, with no other commit (bound loose for a busy machine)
            row = _row()
            assert await asyncio.wait_for(writer.ingest(row), 5) == row["id"]  # and the writer goes on
    finally:
        listener.conn.close()
        await asyncio.to_thread(writer.stop)


async def test_keys_resolve_to_the_original_within_and_across_batches(store: Store) -> None:
    first, again = {**_row(), "idempotency_key": "k1"}, {**_row(), "idempotency_key": "k1"}
    other = {**_row(), "idempotency_key": "k2"}
    await asyncio.to_thread(store.writer.stop)  # the three queue up for one batch
    answers = [asyncio.ensure_future(store.writer.ingest(r)) for r in (first, again, other)]
    await asyncio.sleep(0.05)
    store.writer.start()
    assert await asyncio.gather(*answers) == [first["id"], first["id"], other["id"]]
    assert store.writer.stats.last_batch == 3
    later = {**_row(), "idempotency_key": "k1"}
    assert await store.writer.ingest(later) == first["id"]

    def rows(conn: sa.Connection) -> dict[str, tuple[object, ...]]:
        return {r[0]: tuple(r[1:]) for r in conn.exec_driver_sql(
            "SELECT id, verdict, duplicate_of, idempotency_key FROM requests WHERE id = ANY(%s)",
            ([first["id"], again["id"], other["id"], later["id"]],))}

    assert await store.read(rows) == {
        first["id"]: ("accepted", None, "k1"), again["id"]: ("duplicate", first["id"], None),
        other["id"]: ("accepted", None, "k2"), later["id"]: ("duplicate", first["id"], None)}
