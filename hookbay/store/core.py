"""The core of the store: the engines, the single writer, the reader pool and the sealing of values
at rest, which every table group's mixin builds on; :class:`~hookbay.store.base.Store` composes them.

Writes go through the single :class:`Writer` (group commit); reads run on a small pool of
connections in worker threads, so the event loop never blocks on the database.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
import orjson
import sqlalchemy as sa

from hookbay import metrics
from hookbay.crypto import DecryptError, Keyring, MissingKeyError, open_value, seal_value
from hookbay.errors import EncryptionKeyMissing
from hookbay.store import ratelimit as rate_store
from hookbay.store import search
from hookbay.store.dialects import Dialect, PostgresDialect, SQLiteDialect, dialect_for
from hookbay.store.errors import is_retryable
from hookbay.store.requests import RequestRow, StoredRequest
from hookbay.store.writer import Writer

T = TypeVar("T")


def hash_secret(value: str) -> str:
    """API keys and tokens are 32 random bytes, so one SHA-256 is enough (no password stretching needed)."""
    return hashlib.sha256(value.encode()).hexdigest()


async def wait_for_wakeup(ev: asyncio.Event | None, poll_s: float) -> None:
    """Sleep until ``ev`` is set (a commit of new work) or ``poll_s`` passes, then clear it.
    Without an event (store not started in this loop) just sleep: polling is the fallback."""
    if ev is None:
        await asyncio.sleep(poll_s)
        return
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(ev.wait(), poll_s)
    ev.clear()


class StoreCore:
    """What several table groups need. Each group's mixin subclasses it (cooperative mixins), so
    ``read`` and ``write`` keep their exact generic signatures in every group."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 5000, batch_max: int = 512,
                 keyring: Keyring | None = None, sensitive_headers: frozenset[str] = frozenset()) -> None:
        self.url = url
        self.keyring = keyring
        self.sensitive_headers = sensitive_headers
        self.dialect: Dialect = dialect_for(url, busy_timeout_ms)
        self.read_engine = self.dialect.create_engine(writer=False)
        self.write_engine = self.dialect.create_engine(writer=True)
        self.text_indexer = search.TextIndexer(
            self.dialect.create_engine(writer=True), getattr(self.dialect, "wal_over_limit", lambda: False))
        self.job_event: asyncio.Event | None = None
        self.delivery_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.writer = Writer(
            self.write_engine,
            batch_max=batch_max,
            notify_sql=self.dialect.notify_sql,
            on_commit=self._jobs_committed,
            ingest_lanes=getattr(self.dialect, "ingest_lanes", 0),
        )
        if isinstance(self.dialect, SQLiteDialect):
            self.writer.before_commit = self.dialect.cap_wal
        self._limiter = anyio.CapacityLimiter(8)

    @property
    def is_postgres(self) -> bool:
        return isinstance(self.dialect, PostgresDialect)

    # --- lifecycle ----------------------------------------------------------------

    def migrate(self) -> None:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).resolve().parent.parent / "migrations"))
        with self.write_engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.job_event = asyncio.Event()
        self.delivery_event = asyncio.Event()
        self.writer.start()
        self.dialect.start_background()
        if self.text_indexer is not None:
            self.text_indexer.start()

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self.writer.stop)
        await anyio.to_thread.run_sync(self.dialect.stop_background)
        if self.text_indexer is not None:
            await anyio.to_thread.run_sync(self.text_indexer.stop)
        self.read_engine.dispose()
        self.write_engine.dispose()

    def _jobs_committed(self, _new: bool) -> None:
        loop, ev = self._loop, self.job_event
        if loop is not None and ev is not None and not loop.is_closed():
            loop.call_soon_threadsafe(ev.set)

    # --- plumbing -----------------------------------------------------------------

    async def read(self, fn: Callable[[sa.Connection], T]) -> T:
        def run() -> T:
            with self.read_engine.connect() as conn:
                return fn(conn)

        return await anyio.to_thread.run_sync(run, limiter=self._limiter)

    async def lease_rate_tokens(self, source_id: str, rate: float, burst: float, want: int) -> rate_store.Lease:
        """Up to ``want`` tokens from the source's bucket shared by all processes (PostgreSQL only),
        on a reader connection: a lease must not wait behind the writer's group commit."""
        def run() -> rate_store.Lease:
            with self.read_engine.connect() as conn:
                return rate_store.lease_tokens(conn, source_id, rate, burst, want)

        return await anyio.to_thread.run_sync(run, limiter=self._limiter)

    async def write(self, fn: Callable[[sa.Connection], T], *, durable: bool = True) -> T:
        result: T = await self.writer.run(fn, durable=durable)
        return result

    async def maintain(self, fn: Callable[[sa.Connection], T], *, statement_timeout_ms: int | None = None) -> T:
        """Run ``fn`` in a transaction of its own connection, off the writer: partition DDL and
        batch copies wait for locks that ingest commits must not queue behind. PostgreSQL:
        ``statement_timeout_ms`` replaces the default (0 = none) for work known to be long."""
        def run() -> T:
            with self.read_engine.connect() as conn, conn.begin():
                if statement_timeout_ms is not None and self.is_postgres:
                    conn.execute(sa.text(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}"))
                return fn(conn)

        return await anyio.to_thread.run_sync(run, limiter=self._limiter)

    async def write_retrying(self, fn: Callable[[sa.Connection], T], attempts: int = 6) -> T:
        """:meth:`write`, run again when it lost a race with another worker: a deadlock, a
        serialization failure or a lock timeout (PostgreSQL), or a :class:`ConcurrentChange` seen by
        the profile rules. Each run is a fresh transaction (savepoint) that sees the winner's work."""
        for attempt in range(1, attempts + 1):
            try:
                return await self.write(fn)
            except Exception as e:
                if attempt == attempts or not is_retryable(e):
                    raise
                metrics.write_retries_total.inc()
                await asyncio.sleep(random.uniform(0, 0.01 * 2 ** attempt))
        raise AssertionError("unreachable")

    async def ping(self) -> bool:
        def q(conn: sa.Connection) -> bool:
            return conn.execute(sa.text("SELECT 1")).scalar() == 1

        return await self.read(q)

    # --- encryption at rest -------------------------------------------------------

    def seal(self, plaintext: bytes, aad: str) -> tuple[bytes, str | None]:
        if self.keyring is None:
            return plaintext, None
        return seal_value(self.keyring, plaintext, aad.encode()), self.keyring.active_kid

    def unseal(self, blob: bytes, aad: str) -> bytes:
        try:
            return open_value(self.keyring, bytes(blob), aad.encode())
        except MissingKeyError as e:
            raise EncryptionKeyMissing(detail={"key_id": getattr(e, "kid", None)}) from None
        except DecryptError:
            raise EncryptionKeyMissing("Stored data failed authentication with the configured key") from None

    def seal_request_row(self, row: RequestRow | dict[str, Any]) -> None:
        """Encrypt the body and sensitive header values of a request row in place (AAD = its id)."""
        if self.keyring is None:
            return
        rid = row["id"]
        body = row["body"]
        if body is not None:
            row["body"] = seal_value(self.keyring, body, rid.encode())
        row["key_id"] = self.keyring.active_kid
        if self.sensitive_headers:
            hs = orjson.loads(row["headers"])
            changed = False
            for pair in hs:
                if pair[0].lower() in self.sensitive_headers:
                    pair[1] = "enc:" + base64.b64encode(seal_value(self.keyring, pair[1].encode("latin-1"),
                                                                   rid.encode())).decode()
                    changed = True
            if changed:
                row["headers"] = orjson.dumps(hs).decode()

    def open_request_row(self, row: Mapping[str, Any]) -> StoredRequest:
        """A whole ``requests`` row as read, decrypted."""
        if row["key_id"] is None:
            return StoredRequest.of(row)
        opened = dict(row)
        self.unseal_request_row(opened)
        return StoredRequest.of(opened)

    def unseal_request_row(self, row: dict[str, Any]) -> None:
        """Decrypt the body and sealed header values of a (possibly partial) request row in place."""
        if row.get("key_id") is None:
            return
        rid = row["id"]
        if row.get("body") is not None:
            row["body"] = self.unseal(row["body"], rid)
        hs = orjson.loads(row["headers"])
        for pair in hs:
            if isinstance(pair[1], str) and pair[1].startswith("enc:"):
                pair[1] = self.unseal(base64.b64decode(pair[1][4:]), rid).decode("latin-1")
        row["headers"] = orjson.dumps(hs).decode()
