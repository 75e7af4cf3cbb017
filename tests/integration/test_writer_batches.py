"""The single writer on a real SQLite database, one batch at a time (issue #19: the mutation run of
``store/writer.py`` needs fast tests that reach every batch path).

What a sender and the database see is checked: the id each caller is answered with, the rows, jobs
and relay messages a batch leaves, idempotency keys resolved within a batch, across batches and
when another process wins the race, a failed batch failing every caller (and nothing half-written),
a failing write that sinks only itself, and the batch boundaries."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from hookbay.errors import StorageUnavailable, WriteTimeout
from hookbay.ids import new_request_id, now_us
from hookbay.store import Store
from hookbay.store.writer import Writer


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("writer") / "template.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    store.read_engine.dispose()
    store.write_engine.dispose()
    return path


class Fixture:
    def __init__(self, store: Store, path: Path) -> None:
        self.store, self.path, self.writer = store, path, store.writer
        self.commits: list[bool] = []
        self.relayed: list[set[str]] = []
        self.writer.on_commit = self.commits.append
        self.writer.on_relay = self.relayed.append

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as c:
            return c.execute(sql, args).fetchall()

    async def one_batch(self, *ops: Callable[[], Awaitable[Any]]) -> list[Any]:
        """Queue ``ops`` while the writer thread is stopped, so they land in its next batch; each
        op's result or exception."""
        await asyncio.to_thread(self.writer.stop)
        tasks = [asyncio.ensure_future(op()) for op in ops]
        await asyncio.sleep(0.05)
        self.writer.start()
        return list(await asyncio.gather(*tasks, return_exceptions=True))


@pytest.fixture
async def w(template: Path, tmp_path: Path) -> AsyncIterator[Fixture]:
    path = tmp_path / "hb.db"
    shutil.copyfile(template, path)
    store = Store(f"sqlite:///{path}")
    await store.start()
    try:
        yield Fixture(store, path)
    finally:
        await store.close()


def _row(source: str = "src_a", key: str | None = None, **over: Any) -> dict[str, Any]:
    body = f'{{"n": "{new_request_id()}"}}'.encode()
    row = {"id": new_request_id(), "source_id": source, "client_id": "acme", "received_at": now_us(),
           "method": "POST", "path": "/in", "query": "", "headers": "[]", "peer": "127.0.0.1",
           "content_type": "application/json", "body": body, "body_size": len(body), "verdict": "accepted",
           "rule": None, "status": 200, "state": "pending", "idempotency_key": key, "duplicate_of": None,
           "receipt": None, "processed_at": None}
    row.update(over)
    return row


async def test_a_batch_stores_every_row_answers_each_sender_and_queues_jobs_only_for_accepted_pending(
        w: Fixture) -> None:
    rows = [_row(), _row(), _row("src_b"), _row(verdict="rejected", state="rejected", status=401),
            _row(state="processed")]
    ids = [r["id"] for r in rows]
    received = {r["id"]: r["received_at"] for r in rows}
    stats = (w.writer.stats.batches, w.writer.stats.rows)
    answers = await w.one_batch(*[lambda r=r, i=i: w.writer.ingest(r, relay=i == 1) for i, r in enumerate(rows)])
    assert answers == ids
    assert (w.writer.stats.batches, w.writer.stats.rows) == (stats[0] + 1, stats[1] + 5)
    assert w.writer.stats.last_batch == 5 and w.writer.stats.last_ok is True
    stored = {r[0]: r[1:] for r in w.rows("SELECT id, verdict, state, body FROM requests")}
    assert set(stored) == set(ids)
    assert all(bytes(stored[r["id"]][2]) == r["body"] for r in rows)
    jobs = w.rows("SELECT request_id, run_after, state FROM jobs ORDER BY id")
    assert sorted(jobs) == sorted((i, received[i], "pending") for i in ids[:3])
    relay = w.rows("SELECT source_id, request_id, available_at, created_at, state FROM relay_messages")
    assert relay == [("src_a", ids[1], received[ids[1]], received[ids[1]], "ready")]
    for _ in range(200):  # the callbacks run on the writer thread just after the senders are answered
        if w.relayed and w.commits:
            break
        await asyncio.sleep(0.01)
    assert w.relayed == [{"src_a"}] and w.commits == [True]

    await w.writer.ingest(_row(verdict="rejected", state="rejected"))  # no job: no wake-up, no relay
    assert w.commits == [True] and w.relayed == [{"src_a"}]
    await w.writer.ingest(_row())  # relay is asked for, never assumed
    assert w.rows("SELECT count(*) FROM relay_messages") == [(1,)] and w.relayed == [{"src_a"}]
    assert w.writer.stats.rows == stats[1] + 7


async def test_idempotency_keys_resolve_per_source_within_and_across_batches(w: Fixture) -> None:
    first, again, other_source, other_key, plain = (_row(key="k1"), _row(key="k1"), _row("src_b", key="k1"),
                                                   _row(key="k2"), _row())
    answers = await w.one_batch(*[lambda r=r: w.writer.ingest(r) for r in (first, again, other_source, other_key,
                                                                            plain)])
    assert answers == [first["id"], first["id"], other_source["id"], other_key["id"], plain["id"]]
    later = _row(key="k1")
    assert await w.writer.ingest(later) == first["id"]
    dupes = w.rows("SELECT id, verdict, state, duplicate_of, idempotency_key FROM requests "
                   "WHERE duplicate_of IS NOT NULL ORDER BY id")
    assert sorted(dupes) == sorted([(again["id"], "duplicate", "duplicate", first["id"], None),
                                    (later["id"], "duplicate", "duplicate", first["id"], None)])
    jobs = {r[0] for r in w.rows("SELECT request_id FROM jobs")}
    assert jobs == {first["id"], other_source["id"], other_key["id"], plain["id"]}


async def test_a_key_another_process_committed_after_the_lookup_makes_the_row_and_its_batch_twins_duplicates(
        w: Fixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve --processes N`` on PostgreSQL: the original commits between this batch's lookup and
    its insert. Staged by hiding the original from the batch's first lookup."""
    original = _row(key="k1")
    await w.writer.ingest(original)
    real = w.writer._find_originals
    blind = [True]

    def find(cur: Any, keys: list[tuple[str, str]], into: dict[tuple[str, str], str]) -> None:
        if blind[0]:
            blind[0] = False
            return
        real(cur, keys, into)

    monkeypatch.setattr(w.writer, "_find_originals", find)
    racer, twin, fresh = _row(key="k1"), _row(key="k1"), _row(key="k3")
    answers = await w.one_batch(*[lambda r=r: w.writer.ingest(r) for r in (racer, twin, fresh)])
    assert answers == [original["id"], original["id"], fresh["id"]]
    got = dict((r[0], r[1:]) for r in w.rows("SELECT id, verdict, duplicate_of, idempotency_key FROM requests"))
    assert got[racer["id"]] == ("duplicate", original["id"], None)
    assert got[twin["id"]] == ("duplicate", original["id"], None)
    assert got[fresh["id"]] == ("accepted", None, "k3")
    assert {r[0] for r in w.rows("SELECT request_id FROM jobs")} == {original["id"], fresh["id"]}


async def test_rows_with_different_columns_share_a_batch(w: Fixture) -> None:
    full, short = _row(receipt='{"ok": true}'), _row()
    for col in ("rule", "receipt", "processed_at", "duplicate_of"):
        del short[col]
    assert await w.one_batch(lambda: w.writer.ingest(full), lambda: w.writer.ingest(short)) == [full["id"],
                                                                                                short["id"]]
    got = dict((r[0], r[1]) for r in w.rows("SELECT id, receipt FROM requests"))
    assert got == {full["id"]: '{"ok": true}', short["id"]: None}


async def test_a_batch_larger_than_one_statement_holds_is_stored_whole(w: Fixture) -> None:
    w.writer.batch_max = 4000
    plain = [_row() for _ in range(1500)]
    keyed = [_row(key=f"k{i}") for i in range(1500)]
    answers = await w.one_batch(*[lambda r=r: w.writer.ingest(r) for r in plain + keyed])
    assert answers == [r["id"] for r in plain + keyed]
    assert w.writer.stats.last_batch == 3000
    assert w.rows("SELECT count(*), count(idempotency_key) FROM requests") == [(3000, 1500)]
    assert w.rows("SELECT count(*) FROM jobs") == [(3000,)]


async def test_batches_hold_at_most_batch_max_and_stop_writes_what_was_queued(w: Fixture) -> None:
    w.writer.batch_max = 3
    before = w.writer.stats.batches
    rows = [_row() for _ in range(7)]
    await asyncio.to_thread(w.writer.stop)
    tasks = [asyncio.ensure_future(w.writer.ingest(r)) for r in rows]
    await asyncio.sleep(0.05)
    w.writer.start()
    await asyncio.to_thread(w.writer.stop)  # queued behind the rows: they are written first
    assert await asyncio.gather(*tasks) == [r["id"] for r in rows]
    assert w.writer.stats.batches - before == 3 and w.writer.stats.last_batch == 1
    w.writer.start()


async def test_a_failed_batch_fails_every_caller_writes_nothing_and_the_next_batch_works(w: Fixture) -> None:
    good, bad = _row(), _row(method=None)  # NOT NULL: the batch's one INSERT fails
    failures = w.writer.stats.failures
    hook = w.writer.before_commit
    seen: list[tuple[bool, bool]] = []

    def before_commit(conn: sa.Connection, failed: bool) -> None:  # SQLite's WAL cap reads both
        seen.append((isinstance(conn, sa.Connection) and not conn.closed, failed))
        if hook is not None:
            hook(conn, failed)

    w.writer.before_commit = before_commit
    with capture_logs() as logs:
        answers = await w.one_batch(lambda: w.writer.ingest(good), lambda: w.writer.ingest(bad))
        with pytest.raises(StorageUnavailable):
            await w.writer.ingest(_row(method=None))  # a second failed batch
    assert all(isinstance(a, StorageUnavailable) for a in answers)
    assert [a.detail for a in answers] == [{"reason": "IntegrityError"}] * 2
    assert w.writer.stats.failures == failures + 2 and w.writer.stats.last_ok is False
    failed = [e for e in logs if e["event"] == "write_failed"]
    assert [(e["log_level"], e["batch"], e["error"]) for e in failed] == [("error", 2, "IntegrityError"),
                                                                         ("error", 1, "IntegrityError")]
    assert w.rows("SELECT count(*) FROM requests") == [(0,)] and w.commits == []
    again = _row()
    assert await w.writer.ingest(again) == again["id"]
    assert w.writer.stats.last_ok is True
    assert w.rows("SELECT id FROM requests") == [(again["id"],)]
    await w.writer.ingest(_row())
    # each commit is told whether the one before it failed
    assert seen == [(True, False), (True, True), (True, True), (True, False)]


async def test_a_failing_write_sinks_only_itself_and_ingest_rows_of_its_batch_commit_apart(w: Fixture) -> None:
    def write(name: str) -> Callable[[sa.Connection], str]:
        def fn(conn: sa.Connection) -> str:
            conn.exec_driver_sql("INSERT INTO settings_kv (key, value) VALUES (?, ?)", (name, "1"))
            if name == "bad":
                raise ValueError("refused")
            return name
        return fn

    w.store.write_engine.dispose()
    with sqlite3.connect(w.path) as c:
        c.execute("CREATE TABLE settings_kv (key TEXT PRIMARY KEY, value TEXT)")
    row = _row()
    before = w.writer.stats.batches
    answers = await w.one_batch(lambda: w.writer.run(write("a")), lambda: w.writer.ingest(row),
                                lambda: w.writer.run(write("bad")), lambda: w.writer.run(write("c"), durable=False))
    assert answers[:2] == ["a", row["id"]] and answers[3] == "c"
    assert isinstance(answers[2], ValueError) and str(answers[2]) == "refused"
    assert sorted(r[0] for r in w.rows("SELECT key FROM settings_kv")) == ["a", "c"]
    assert w.rows("SELECT id FROM requests") == [(row["id"],)]
    assert w.writer.stats.batches - before == 2  # the ingest row's own commit, then the writes'
    assert w.writer.stats.last_batch == 3


async def test_a_write_past_its_deadline_is_told_so_and_may_still_land(w: Fixture) -> None:
    await asyncio.to_thread(w.writer.stop)
    row = _row()
    with pytest.raises(WriteTimeout):
        await w.writer.ingest(row, give_up_after=0.05)
    w.writer.start()
    await w.writer.ingest(_row())  # behind it in the queue: the late row is written by now
    assert (row["id"],) in w.rows("SELECT id FROM requests")


async def test_writes_that_are_not_ingest_rows_never_announce_new_jobs(w: Fixture) -> None:
    with capture_logs() as logs:
        assert await w.writer.run(lambda conn: 1) == 1
        assert await w.writer.run(lambda conn: 2, durable=False) == 2  # back to FULL after it, quietly
        assert await w.writer.run(lambda conn: conn.exec_driver_sql("PRAGMA synchronous").scalar()) == 2
    assert w.commits == [] and [e for e in logs if e["log_level"] == "error"] == []


async def test_with_ingest_lanes_keyed_rows_keep_the_writer_thread_and_plain_rows_pass_it(template: Path,
                                                                                         tmp_path: Path) -> None:
    """PostgreSQL's ingest lanes, here on SQLite: a plain row commits on a lane while the writer
    thread is busy; a row with an idempotency key waits for that thread, behind the write before it."""
    path = tmp_path / "hb.db"
    shutil.copyfile(template, path)
    engine = sa.create_engine(f"sqlite:///{path}")
    writer = Writer(engine, ingest_lanes=1)
    writer.start()
    gate = threading.Event()
    try:
        busy = asyncio.ensure_future(writer.run(lambda conn: gate.wait(10)))
        await asyncio.sleep(0.05)
        keyed, plain = _row(key="k1"), _row()
        keyed_done = asyncio.ensure_future(writer.ingest(keyed))
        assert await asyncio.wait_for(writer.ingest(plain), 5) == plain["id"]
        await asyncio.sleep(0.05)
        assert not keyed_done.done()
        gate.set()
        assert await asyncio.wait_for(keyed_done, 5) == keyed["id"] and await busy is True
    finally:
        gate.set()
        await asyncio.to_thread(writer.stop)
        engine.dispose()
