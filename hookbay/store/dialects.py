"""What differs between SQLite and PostgreSQL: engine set-up, durability pragmas and job wake-ups."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy import event

log = structlog.get_logger("hookbay.store")



# PostgreSQL: ingest group commits that may be in flight at once per process (``Writer``).
INGEST_LANES = 2

class Dialect:
    name = "base"
    notify_sql: str | None = None

    def __init__(self, url: str, busy_timeout_ms: int) -> None:
        self.url = url
        self.busy_timeout_ms = busy_timeout_ms

    def start_background(self) -> None:
        """Start the dialect's housekeeping thread, if it has one (the store is running)."""

    def stop_background(self) -> None:
        pass

    def create_engine(self, *, writer: bool) -> sa.Engine:
        raise NotImplementedError

    @staticmethod
    def insert(table: sa.Table) -> Any:
        """An INSERT that supports ``on_conflict_do_nothing`` in this dialect."""
        raise NotImplementedError


class SQLiteDialect(Dialect):
    """WAL with synchronous=FULL: a commit is on disk when it returns; readers never block the writer.

    Copying the WAL back into the database file (a PASSIVE checkpoint, with an fsync of the file)
    runs on a background thread while the store is running, so it is not paid inside a commit that
    ingest acknowledgements or the worker wait for.

    A PASSIVE checkpoint never lets the WAL start over while commits keep coming: SQLite rewinds
    the WAL only when a checkpoint has copied all of it and no reader still uses it, and under load
    a new commit is always there first. So the WAL only grew (after a disk-full episode, the 14 MB
    an operator freed went into the WAL again within ~700 requests). Rewinding is therefore the
    writer's job, between two commits: once the WAL passes ``WAL_RESTART_BYTES`` it runs a RESTART
    checkpoint (the background thread has copied most frames already, so this copies the rest and
    waits for old readers, at most ``RESTART_BUSY_MS``), and its next commit writes the WAL from
    the start again (``journal_size_limit`` trims the file). After a failed commit (disk full) it is
    a TRUNCATE, which gives the WAL's space back to the filesystem, so the space an operator frees
    goes to the checkpoint rather than to more WAL.

    The rewind used to run on the background thread too. Under a steady stream of commits it could
    not get the write lock: SQLite's busy handler polls, and the writer took the lock back first
    every time, while the thread's waiting checkpoint made the writer's own attempt fail at once;
    the WAL grew to 13-20 MiB past a 12 MiB bound. Only one connection now ever rewinds."""

    name = "sqlite"
    WRITER_AUTOCHECKPOINT = 10000  # pages (SQLite's default is 1000)
    CHECKPOINT_EVERY_S = 0.5
    WAL_CHECK_S = 0.05
    WAL_RESTART_BYTES = 4 * 1024 * 1024
    RESTART_BUSY_MS = 250
    JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024  # a rewound WAL longer than this is cut back to it

    def __init__(self, url: str, busy_timeout_ms: int) -> None:
        super().__init__(url, busy_timeout_ms)
        self._checkpointer: threading.Thread | None = None
        self._stop = threading.Event()
        db = sa.engine.make_url(url).database
        self._wal = f"{db}-wal" if db and db != ":memory:" else None

    def _wal_size(self) -> int:
        try:
            return os.stat(self._wal).st_size if self._wal is not None else 0
        except OSError:
            return 0

    def wal_over_limit(self) -> bool:
        """Whether the WAL is past the size at which the writer rewinds it."""
        return self._wal_size() > self.WAL_RESTART_BYTES

    def start_background(self) -> None:
        path = sa.engine.make_url(self.url).database
        if self._checkpointer is None and path and path != ":memory:":
            self._stop.clear()
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, args=(path,),
                                                  name="hookbay-checkpoint", daemon=True)
            self._checkpointer.start()

    def stop_background(self) -> None:
        if self._checkpointer is not None:
            self._stop.set()
            self._checkpointer.join(timeout=30)
            self._checkpointer = None

    def _checkpoint_loop(self, path: str) -> None:
        """PASSIVE checkpoints: twice a second, and as soon as the WAL is half-way to a rewind, so
        the writer's RESTART finds little left to copy. PASSIVE neither waits for nor blocks anyone."""
        con = None
        last_error = None
        next_passive = 0.0
        while not self._stop.wait(self.WAL_CHECK_S):
            if time.monotonic() < next_passive and self._wal_size() <= self.WAL_RESTART_BYTES // 2:
                continue
            next_passive = time.monotonic() + self.CHECKPOINT_EVERY_S
            try:
                if con is None:
                    con = sqlite3.connect(path, timeout=0, check_same_thread=False)
                con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                last_error = None
            except Exception as e:
                if str(e) != last_error:  # once per kind of failure, not twice a second
                    log.warning("checkpoint_failed", error=str(e))
                    last_error = str(e)
                if con is not None:
                    with contextlib.suppress(Exception):
                        con.close()
                con = None
        if con is not None:
            con.close()

    def cap_wal(self, conn: sa.Connection, after_failure: bool) -> None:
        """The writer's check before a commit: a stat, and a rewind when the WAL is past
        ``WAL_RESTART_BYTES`` or the last commit failed.

        A busy answer (the background PASSIVE holds the checkpoint lock for a moment, or a reader
        still uses an old snapshot) is retried until ``RESTART_BUSY_MS`` have passed; then the
        commit goes ahead and the next one tries again."""
        size = self._wal_size()
        if not size or (size <= self.WAL_RESTART_BYTES and not after_failure):
            return
        mode = "TRUNCATE" if after_failure else "RESTART"
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        deadline = time.monotonic() + self.RESTART_BUSY_MS / 1000
        old_timeout = dbapi.execute("PRAGMA busy_timeout").fetchone()[0]
        dbapi.execute(f"PRAGMA busy_timeout={self.RESTART_BUSY_MS}")
        try:
            while True:
                try:
                    busy = dbapi.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()[0]
                except sqlite3.Error as e:  # disk still full: the commit fails and says so
                    log.warning("checkpoint_failed", error=str(e), by="writer")
                    return
                if not busy:
                    return
                if time.monotonic() >= deadline:
                    log.info("checkpoint_busy", mode=mode, by="writer")
                    return
                time.sleep(0.002)
        finally:
            dbapi.execute(f"PRAGMA busy_timeout={int(old_timeout)}")

    @staticmethod
    def insert(table: sa.Table) -> Any:
        from sqlalchemy.dialects.sqlite import insert

        return insert(table)

    def create_engine(self, *, writer: bool) -> sa.Engine:
        db_path = sa.engine.make_url(self.url).database
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            self.url,
            connect_args={"check_same_thread": False, "timeout": self.busy_timeout_ms / 1000},
            poolclass=sa.pool.QueuePool if not writer else sa.pool.SingletonThreadPool,
            pool_size=1 if writer else 4,
            hide_parameters=True,  # an error's text must never carry customer data into a log
        )
        busy = self.busy_timeout_ms

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves so SAVEPOINT works
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute(f"PRAGMA busy_timeout={int(busy)}")
            cur.execute("PRAGMA foreign_keys=ON")
            if writer:
                cur.execute(f"PRAGMA wal_autocheckpoint={self.WRITER_AUTOCHECKPOINT}")
                cur.execute(f"PRAGMA journal_size_limit={self.JOURNAL_SIZE_LIMIT}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

        return engine


class PostgresDialect(Dialect):
    """Jobs are claimed with FOR UPDATE SKIP LOCKED; new jobs NOTIFY listening workers."""

    name = "postgresql"
    notify_sql = "NOTIFY hookbay_jobs"
    ingest_lanes = INGEST_LANES
    channel = "hookbay_jobs"

    @staticmethod
    def insert(table: sa.Table) -> Any:
        from sqlalchemy.dialects.postgresql import insert

        return insert(table)

    def create_engine(self, *, writer: bool) -> sa.Engine:
        opts = f"-c lock_timeout={int(self.busy_timeout_ms)} -c statement_timeout={int(self.busy_timeout_ms) * 6}"
        return sa.create_engine(
            self.url,
            pool_size=1 + INGEST_LANES if writer else 5,  # the writer's thread and its ingest lanes
            max_overflow=0 if writer else 10,
            pool_pre_ping=True,
            connect_args={"options": opts, "connect_timeout": 5},
            hide_parameters=True,
        )

    @property
    def libpq_url(self) -> str:
        u = sa.engine.make_url(self.url).set(drivername="postgresql")
        return u.render_as_string(hide_password=False)


def dialect_for(url: str, busy_timeout_ms: int) -> Dialect:
    if url.startswith("sqlite"):
        return SQLiteDialect(url, busy_timeout_ms)
    if url.startswith("postgresql"):
        return PostgresDialect(url, busy_timeout_ms)
    raise ValueError(f"unsupported database URL: {url.split(':', 1)[0]}")
