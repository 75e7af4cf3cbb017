"""The single writer: one thread, one connection, many requests per transaction (group commit).

Ingest calls ``await writer.ingest(row)``; the thread takes everything that queued up while the
previous transaction was committing, writes it in one transaction, commits once (fsync), and only
then resolves every waiting future. Other writes (worker results, source changes) ride in the same
batches inside savepoints, so on SQLite there is exactly one writer, as SQLite wants.

On PostgreSQL, ingest rows instead go to ``ingest_lanes`` threads of their own, each with its own
connection, taking turns at one queue: while one lane's commit waits for the disk, the next lane
is already writing what arrived meanwhile, and PostgreSQL flushes their commits together. With one
lane, a batch could only start once the previous commit was on disk, so the disk's latency, not its
bandwidth, set the rate. Other writes, and rows with an idempotency key, keep the one thread
and their order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog

from hookbay.errors import StorageUnavailable, WriteTimeout
from hookbay.store import schema
from hookbay.store.errors import describe
from hookbay.store.requests import RequestRow

log = structlog.get_logger("hookbay.writer")

_STOP = object()
RELAY_LOCK_KEY = 0x68627279  # "hbry": serialises relay enqueues across processes on PostgreSQL
KEY_LOCK_CLASS = 0x6862696B  # "hbik": advisory locks on idempotency keys (two-key form: its own space)


@dataclass(slots=True)
class _Op:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    row: RequestRow | None = None
    fn: Callable[[sa.Connection], Any] | None = None
    result: Any = None
    exc: BaseException | None = None
    durable: bool = True
    relay: bool = False  # an ingest row also queued for `hookbay agent` when it is accepted and pending


@dataclass
class WriterStats:
    batches: int = 0
    rows: int = 0
    last_batch: int = 0
    failures: int = 0
    # For /readyz: the outcome of the last transaction that wrote ingest rows, and its time.monotonic().
    last_ok: bool | None = None
    last_at: float = 0.0


def _settle_all(ops: list[_Op]) -> None:
    for op in ops:
        _settle(op)


def _settle(op: _Op) -> None:
    if op.future.done():
        return
    if op.exc is not None:
        op.future.set_exception(op.exc)
    else:
        op.future.set_result(op.result)


class _Deadlines:
    """Write timeouts for one event loop, without a timer per request (``asyncio.timeout`` costs
    a timer handle and a heap push per call, a measurable share of the ingest path). Every
    request gets the same timeout, so deadlines come in order: one sweep, a few times per
    timeout, fails what has expired and forgets what has been answered."""

    SWEEPS_PER_TIMEOUT = 10

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.q: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque()
        self.armed = False

    def watch(self, fut: asyncio.Future[Any], timeout: float) -> None:
        self.q.append((self.loop.time() + timeout, fut))
        if not self.armed:
            self.armed = True
            self.loop.call_later(max(0.01, timeout / self.SWEEPS_PER_TIMEOUT), self.sweep, timeout)

    def sweep(self, timeout: float) -> None:
        now = self.loop.time()
        q = self.q
        while q and (q[0][1].done() or q[0][0] <= now):
            _, fut = q.popleft()
            if not fut.done():
                fut.set_exception(WriteTimeout(detail={"reason": "timeout"}))
        if q:
            self.loop.call_later(max(0.01, timeout / self.SWEEPS_PER_TIMEOUT), self.sweep, timeout)
        else:
            self.armed = False


class Writer:
    # Most one NOTIFY per this many seconds per writer (PostgreSQL). A committing transaction that
    # has sent NOTIFY holds one lock for the whole database until its commit is on disk, so with a
    # NOTIFY in every group commit the commits of all processes took turns, fsync and all. A
    # worker busy with a backlog needs no wake-up (it claims until a claim comes back short); an
    # idle one is woken at most this much later, by a NOTIFY of its own sent once the gap is over.
    NOTIFY_INTERVAL = 0.05

    def __init__(
        self,
        engine: sa.Engine,
        *,
        batch_max: int = 512,
        notify_sql: str | None = None,
        on_commit: Callable[[bool], None] | None = None,
        ingest_lanes: int = 0,
    ) -> None:
        self.engine = engine
        self.batch_max = batch_max
        self.notify_sql = notify_sql
        self.on_commit = on_commit
        self.stats = WriterStats()
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.ingest_lanes = ingest_lanes
        self._iq: queue.SimpleQueue[Any] = queue.SimpleQueue() if ingest_lanes else self._q
        self._thread: threading.Thread | None = None
        self._lanes: list[threading.Thread] = []
        self._tl = threading.local()  # each thread's connection and commit state
        # Relay: called (from this thread) after a commit that enqueued relay messages, with their sources.
        self.on_relay: Callable[[set[str]], None] | None = None
        # Called (from this thread, outside a transaction) before each commit, with whether the
        # last one failed: SQLite's WAL cap.
        self.before_commit: Callable[[sa.Connection, bool], None] | None = None
        self._notified_at = 0.0
        self._notify_owed = False
        self._notify_lock = threading.Lock()  # the lanes share the NOTIFY budget
        self._watch: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines] = weakref.WeakKeyDictionary()

    _conn = property(lambda self: getattr(self._tl, "conn", None),
                     lambda self, v: setattr(self._tl, "conn", v))
    _relayed = property(lambda self: getattr(self._tl, "relayed", set()),
                        lambda self, v: setattr(self._tl, "relayed", v))
    _failed = property(lambda self: getattr(self._tl, "failed", False),
                       lambda self, v: setattr(self._tl, "failed", v))

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="hookbay-writer", daemon=True)
            self._thread.start()
            self._lanes = [threading.Thread(target=self._loop, args=(self._iq,), name=f"hookbay-writer-{i}",
                                            daemon=True) for i in range(self.ingest_lanes)]
            for t in self._lanes:
                t.start()

    def stop(self) -> None:
        for _ in self._lanes:
            self._iq.put(_STOP)
        for t in self._lanes:
            t.join(timeout=30)
        self._lanes = []
        if self._thread is not None:
            self._q.put(_STOP)
            self._thread.join(timeout=30)
            self._thread = None

    async def ingest(self, row: RequestRow, give_up_after: float | None = None, *, relay: bool = False) -> str:
        """Write one request row (and its job when accepted); returns the id that answers the sender.
        ``relay`` also queues an accepted, pending row for ``hookbay agent`` in the same commit.

        After ``give_up_after`` seconds without a commit it raises ``WriteTimeout`` (the row may
        still be written later, so the sender is told to retry with the same idempotency key)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str] = loop.create_future()
        # A row with an idempotency key takes the one writer thread: two lanes could each miss the
        # other's uncommitted original, and the unique index would then fail a whole batch.
        (self._q if row.get("idempotency_key") else self._iq).put(_Op(loop, fut, row=row, relay=relay))
        if give_up_after is not None:
            self._deadlines(loop).watch(fut, give_up_after)
        return await fut

    def _deadlines(self, loop: asyncio.AbstractEventLoop) -> _Deadlines:
        d = self._watch.get(loop)
        if d is None:
            d = self._watch[loop] = _Deadlines(loop)
        return d

    async def run(self, fn: Callable[[sa.Connection], Any], *, durable: bool = True) -> Any:
        """Run ``fn`` in a write transaction. ``durable=False`` is for bookkeeping that may be lost
        in a power failure or OS crash (never in a process crash): a transaction holding only such
        writes commits without waiting for the disk (SQLite WAL ``synchronous=NORMAL``, PostgreSQL
        ``synchronous_commit=off``). Either way it is atomic, and the next durable commit makes it
        durable too."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._q.put(_Op(loop, fut, fn=fn, durable=durable))
        return await fut

    # --- the thread ---------------------------------------------------------------------

    def _loop(self, q: queue.SimpleQueue[Any] | None = None) -> None:
        q = self._q if q is None else q
        while True:
            if self._notify_owed:
                try:
                    item = q.get(timeout=max(0.0, self._notified_at + self.NOTIFY_INTERVAL - time.monotonic()))
                except queue.Empty:
                    self._send_owed_notify()
                    continue
            else:
                item = q.get()
            if item is _STOP:
                break
            batch = [item]
            stop = False
            while len(batch) < self.batch_max:
                try:
                    nxt = q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._run_batch(batch)
            if stop:
                break
        if self._notify_owed:
            self._send_owed_notify()
        if self._conn is not None:
            self._conn.close()

    def _notify_now(self) -> bool:
        """Whether this commit, which created jobs, sends NOTIFY; else one is owed (``_loop``)."""
        if not self.notify_sql:
            return False
        with self._notify_lock:
            now = time.monotonic()
            if now - self._notified_at >= self.NOTIFY_INTERVAL:
                self._notified_at = now
                self._notify_owed = False
                return True
            self._notify_owed = True
            return False

    def _send_owed_notify(self) -> None:
        with self._notify_lock:
            if not self._notify_owed:
                return  # another thread sent it
            self._notify_owed = False
            self._notified_at = time.monotonic()
        try:
            conn = self._connection()
            with conn.begin():
                conn.exec_driver_sql(self.notify_sql or "")
        except Exception as e:  # the worker's poll picks the jobs up instead
            log.warning("notify_failed", **describe(e))
            with contextlib.suppress(Exception):
                if self._conn is not None:
                    self._conn.invalidate()
            self._conn = None

    def _connection(self) -> sa.Connection:
        conn: sa.Connection | None = self._conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._conn = self.engine.connect()
        return conn

    def _run_batch(self, batch: list[_Op]) -> None:
        """Ingest rows commit in their own transaction, before any other queued write runs: an
        acknowledgement never waits for a worker's batch (records, profiles) that happened to be
        queued alongside it. The other writes then share one transaction (savepoint each)."""
        ingests = [op for op in batch if op.row is not None]
        fns = [op for op in batch if op.fn is not None]
        if ingests and fns:
            self._commit_group(ingests, [])
            self._commit_group([], fns)
        else:
            self._commit_group(ingests, fns)

    def _commit_group(self, ingests: list[_Op], fns: list[_Op]) -> None:
        """One transaction: ingest rows on the dialect's own path, or the other writes through
        SQLAlchemy, never both (:meth:`_run_batch` splits a batch that has both)."""
        batch = ingests + fns
        new_jobs = False
        self._relayed = set()
        relaxed = not ingests and not any(op.durable for op in fns)
        try:
            conn = self._connection()
            if self.before_commit is not None:
                self.before_commit(conn, self._failed)
            if relaxed and conn.dialect.name == "sqlite":
                self._sqlite_synchronous(conn, "NORMAL")
            if not ingests:
                self._commit_sa(conn, fns, relaxed)
            elif conn.dialect.name == "sqlite":
                new_jobs = self._commit_ingests_sqlite(conn, ingests)
            else:
                new_jobs = self._commit_ingests_pg(conn, ingests)
            if relaxed and conn.dialect.name == "sqlite":
                try:
                    self._sqlite_synchronous(conn, "FULL")
                except Exception as e:  # committed already; a new connection starts with FULL
                    log.error("pragma_failed", **describe(e))
                    with contextlib.suppress(Exception):
                        conn.invalidate()
                    self._conn = None
            self.stats.batches += 1
            self.stats.rows += len(ingests)
            self.stats.last_batch = len(batch)
            if ingests:
                self.stats.last_ok, self.stats.last_at = True, time.monotonic()
            self._failed = False
        except Exception as e:
            self.stats.failures += 1
            self._failed = True
            if ingests:
                self.stats.last_ok, self.stats.last_at = False, time.monotonic()
            log.error("write_failed", batch=len(batch), **describe(e))
            try:
                if self._conn is not None:
                    self._conn.invalidate()
                    self._conn.close()
            except Exception:
                pass
            self._conn = None
            for op in batch:
                op.exc = StorageUnavailable(detail={"reason": type(e).__name__})
            new_jobs = False
            self._relayed = set()
        by_loop: dict[asyncio.AbstractEventLoop, list[_Op]] = {}
        for op in batch:
            by_loop.setdefault(op.loop, []).append(op)
        for loop, ops in by_loop.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle_all, ops)
        if self.on_commit is not None and new_jobs:
            self.on_commit(new_jobs)
        if self._relayed and self.on_relay is not None:
            self.on_relay(self._relayed)

    def _commit_sa(self, conn: sa.Connection, fns: list[_Op], relaxed: bool) -> None:
        """Writes other than ingest rows, in one SQLAlchemy transaction, a savepoint each."""
        with conn.begin():
            if relaxed and conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            for op in fns:
                sp = conn.begin_nested()
                try:
                    assert op.fn is not None
                    op.result = op.fn(conn)
                    sp.commit()
                except Exception as e:  # one op's failure must not sink the batch
                    if sp.is_active:
                        sp.rollback()
                    op.exc = e

    def _write_ingests_with_cursor(self, conn: sa.Connection, ingests: list[_Op]) -> bool:
        """Ingest rows are written with plain SQL on the DB-API cursor, inside whatever transaction
        ``conn`` is in: SQLAlchemy's per-statement bookkeeping holds the GIL, time the event loop
        cannot answer requests in."""
        cur = conn.connection.cursor()
        try:
            return self._write_ingests(cur, ingests)
        finally:
            cur.close()

    def _commit_ingests_sqlite(self, conn: sa.Connection, ingests: list[_Op]) -> bool:
        """Ingest-only batches on SQLite also begin and commit on the DB-API connection: with
        SQLAlchemy's begin and commit around them, the writer held the GIL for about as long as
        SQLite took to store the rows."""
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        dbapi.execute("BEGIN IMMEDIATE")
        try:
            new_jobs = self._write_ingests_with_cursor(conn, ingests)
            dbapi.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                dbapi.execute("ROLLBACK")
            raise
        return new_jobs

    def _commit_ingests_pg(self, conn: sa.Connection, ingests: list[_Op]) -> bool:
        """Ingest-only batches on PostgreSQL go out in one pipeline: BEGIN, the request and job
        rows, NOTIFY and COMMIT reach the server together and the writer waits once, for the
        commit. One statement after another, the writer waited a round trip for each (five per
        batch), and the acknowledgements behind them waited too."""
        pg: Any = conn.connection.dbapi_connection
        assert pg is not None
        try:
            with pg.pipeline():
                with pg.cursor() as cur:
                    new_jobs = self._write_ingests(cur, ingests)
                    if new_jobs and self._notify_now():
                        cur.execute(self.notify_sql)
                    # In the pipeline: leaving it sends one Sync and waits once. ``pg.commit()``
                    # would sync for the COMMIT and the pipeline's exit a second time.
                    cur.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                pg.rollback()
            raise
        return new_jobs

    @staticmethod
    def _sqlite_synchronous(conn: sa.Connection, level: str) -> None:
        """Outside any transaction, on the DB-API connection (SQLAlchemy would begin one)."""
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        dbapi.execute(f"PRAGMA synchronous={level}")

    def _write_ingests(self, cur: Any, ops: list[_Op]) -> bool:
        """Insert request rows and their jobs; resolve idempotency keys to the original request.

        Keys are unique per source in the database: a keyed row is inserted with ``ON CONFLICT DO
        NOTHING``, so a key another process committed after the lookup (PostgreSQL, ``serve
        --processes N``) makes this row a duplicate instead of failing the whole batch."""
        keyed: dict[tuple[str, str], str] = {}
        lookups = [(row["source_id"], key) for op in ops
                   if (row := op.row) is not None and (key := row.get("idempotency_key"))]
        if lookups and self._placeholder == "%s":
            self._lock_keys(cur, lookups)
        if lookups:
            self._find_originals(cur, lookups, keyed)
        rows: list[RequestRow] = []
        fresh_keyed: list[RequestRow] = []
        key_of: dict[str, tuple[str, str]] = {}
        relay_of: dict[str, bool] = {}
        for op in ops:
            row = op.row
            assert row is not None
            relay_of[row["id"]] = op.relay
            key = row.get("idempotency_key")
            if key:
                k = (row["source_id"], key)
                orig = keyed.get(k)
                if orig is not None:
                    self._mark_duplicate(row, orig)
                    op.result = orig
                    rows.append(row)
                    continue
                keyed[k] = row["id"]
                key_of[row["id"]] = k
                fresh_keyed.append(row)
            op.result = row["id"]
            rows.append(row)
        if fresh_keyed:
            fresh = {id(r) for r in fresh_keyed}
            plain = [r for r in rows if id(r) not in fresh]
            inserted = self._insert_keyed(cur, fresh_keyed)
            lost = [r for r in fresh_keyed if r["id"] not in inserted]
            if lost:  # another process committed the same key between the lookup and the insert
                found: dict[tuple[str, str], str] = {}
                self._find_originals(cur, [key_of[r["id"]] for r in lost], found)
                by_id = {op.row["id"]: op for op in ops if op.row is not None}
                moved: dict[str, str] = {}
                for r in lost:
                    orig = found[key_of[r["id"]]]
                    moved[r["id"]] = orig
                    self._mark_duplicate(r, orig)
                    by_id[r["id"]].result = orig
                    plain.append(r)
                for r in plain:  # this batch's own duplicates of a row that lost follow it to the original
                    dup = r.get("duplicate_of")
                    if dup is not None and dup in moved:
                        r["duplicate_of"] = by_id[r["id"]].result = moved[dup]
            if plain:
                self._insert_many(cur, schema.requests, plain)
        else:
            self._insert_many(cur, schema.requests, rows)
        jobs: list[dict[str, Any]] = []
        relay: list[dict[str, Any]] = []
        for row in rows:
            if row["verdict"] == "accepted" and row["state"] == "pending":
                jobs.append({"request_id": row["id"], "run_after": row["received_at"]})
                if relay_of.get(row["id"]):
                    relay.append({"source_id": row["source_id"], "request_id": row["id"],
                                  "available_at": row["received_at"], "created_at": row["received_at"]})
        if jobs:
            self._insert_many(cur, schema.jobs, jobs)
        if relay:
            self._enqueue_relay(cur, relay)
        return bool(jobs)

    @staticmethod
    def _mark_duplicate(row: RequestRow, orig: str) -> None:
        row["verdict"] = "duplicate"
        row["state"] = "duplicate"
        row["duplicate_of"] = orig
        row["idempotency_key"] = None

    def _find_originals(self, cur: Any, keys: list[tuple[str, str]], into: dict[tuple[str, str], str]) -> None:
        ph = self._placeholder
        sql = f"SELECT id FROM requests WHERE source_id = {ph} AND idempotency_key = {ph}"
        for k in dict.fromkeys(keys):
            if k in into:
                continue
            cur.execute(sql, k)
            found = cur.fetchone()
            if found:
                into[k] = found[0]

    @staticmethod
    def _lock_keys(cur: Any, keys: list[tuple[str, str]]) -> None:
        """PostgreSQL: hold a transaction-scoped advisory lock per (source, key), taken in sorted
        order (no deadlock between processes), before looking the keys up. A process committing
        the same key holds its lock until its commit, so the lookup that follows sees its row:
        keys stay unique per source on the partitioned request log too, where PostgreSQL cannot
        keep a unique index without the partition key in it."""
        names = sorted({f"{src}\x1f{key}" for src, key in keys})
        cur.execute(f"SELECT pg_advisory_xact_lock({KEY_LOCK_CLASS}, hashtext(k)) FROM unnest(%s::text[]) AS k "
                    "ORDER BY k", (names,))
        cur.fetchall()

    def _insert_keyed(self, cur: Any, rows: list[RequestRow]) -> set[str]:
        """Insert rows that carry an idempotency key; returns the ids actually inserted. On
        PostgreSQL the keys are locked and were looked up (``_lock_keys``): a plain insert."""
        if self._placeholder == "%s":
            self._insert_many(cur, schema.requests, rows)
            return {r["id"] for r in rows}
        cols = list(dict.fromkeys(k for r in rows for k in r))
        ph = self._placeholder
        per_row = "(" + ",".join([ph] * len(cols)) + ")"
        out: set[str] = set()
        max_rows = max(1, 30000 // len(cols))
        for i in range(0, len(rows), max_rows):
            chunk = rows[i : i + max_rows]
            sql = (f"INSERT INTO requests ({','.join(cols)}) VALUES " + ",".join([per_row] * len(chunk))
                   + " ON CONFLICT (source_id, idempotency_key) DO NOTHING RETURNING id")
            cur.execute(sql, tuple(r.get(c) for r in chunk for c in cols))
            out.update(r[0] for r in cur.fetchall())
        return out

    def _enqueue_relay(self, cur: Any, rows: list[dict[str, Any]]) -> None:
        """Relay messages ride in the request's own transaction; their identity ids, assigned here in
        commit order, are each source's arrival order. On PostgreSQL several processes may ingest at
        once, so a transaction-scoped advisory lock makes id order equal commit order there too (a
        reader must never see id N+1 committed before N)."""
        if self.engine.dialect.name == "postgresql":
            cur.execute(f"SELECT pg_advisory_xact_lock({RELAY_LOCK_KEY})")
        self._insert_many(cur, schema.relay_messages, rows)
        self._relayed.update(r["source_id"] for r in rows)

    @property
    def _placeholder(self) -> str:
        return "?" if self.engine.dialect.paramstyle == "qmark" else "%s"

    def _insert_many(self, cur: Any, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """One multi-row INSERT per table: a single statement step per batch, instead of one
        per row, keeps the writer thread from trading the GIL with the event loop row by row."""
        first = rows[0].keys()
        cols = list(first)
        if any(r.keys() != first for r in rows):  # the same number of keys is not the same keys
            cols = list(dict.fromkeys(k for r in rows for k in r))
        ph = self._placeholder
        if ph == "%s":
            # psycopg: one short statement, parsed once and prepared, its rows pipelined. A long
            # multi-row statement was parsed again in Python for every batch (psycopg caches only
            # short ones), holding the GIL the event loop needs.
            one = f"INSERT INTO {table.name} ({','.join(cols)}) VALUES ({','.join([ph] * len(cols))})"
            cur.executemany(one, [tuple(r.get(c) for c in cols) for r in rows])
            return
        per_row = "(" + ",".join([ph] * len(cols)) + ")"
        max_rows = max(1, 30000 // len(cols))
        for i in range(0, len(rows), max_rows):
            chunk = rows[i : i + max_rows]
            sql = f"INSERT INTO {table.name} ({','.join(cols)}) VALUES " + ",".join([per_row] * len(chunk))
            params = tuple(r.get(c) for r in chunk for c in cols)
            cur.execute(sql, params)
