"""What differs between SQLite and PostgreSQL: engine set-up, durability pragmas and job wake-ups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event


class Dialect:
    name = "base"
    notify_sql: str | None = None

    def __init__(self, url: str, busy_timeout_ms: int) -> None:
        self.url = url
        self.busy_timeout_ms = busy_timeout_ms

    def create_engine(self, *, writer: bool) -> sa.Engine:
        raise NotImplementedError

    @staticmethod
    def insert(table: sa.Table) -> Any:
        """An INSERT that supports ``on_conflict_do_nothing`` in this dialect."""
        raise NotImplementedError


class SQLiteDialect(Dialect):
    """WAL with synchronous=FULL: a commit is on disk when it returns; readers never block the writer."""

    name = "sqlite"

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
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

        return engine


class PostgresDialect(Dialect):
    """Jobs are claimed with FOR UPDATE SKIP LOCKED; new jobs NOTIFY listening workers."""

    name = "postgresql"
    notify_sql = "NOTIFY hookbay_jobs"
    channel = "hookbay_jobs"

    @staticmethod
    def insert(table: sa.Table) -> Any:
        from sqlalchemy.dialects.postgresql import insert

        return insert(table)

    def create_engine(self, *, writer: bool) -> sa.Engine:
        opts = f"-c lock_timeout={int(self.busy_timeout_ms)} -c statement_timeout={int(self.busy_timeout_ms) * 6}"
        return sa.create_engine(
            self.url,
            pool_size=1 if writer else 5,
            max_overflow=0 if writer else 10,
            pool_pre_ping=True,
            connect_args={"options": opts, "connect_timeout": 5},
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
