"""Readiness: can this process store a webhook now, and is processing keeping up?

``/readyz`` must say "not ready" whenever ingest would answer ``503``, so a load balancer stops
sending before senders see errors. It looks at, in order:

- the writer: the outcome of its last transaction, and when that is older than a second (or
  failed) a tiny write through the writer itself (an upsert of one ``meta`` row), so a full
  disk, an I/O error, a locked database or a frozen filesystem all show;
- processing lag: how long the oldest job that is due has waited for a worker;
- the worker: whether every batch it ran has failed for a minute.

Worker state lives in the ``meta`` table (key ``worker_health``), not in memory, because the
worker may run in another process (or another host on PostgreSQL) than the ``serve`` answering
``/readyz``; the worker calls :func:`record_batch` after each batch, which writes at most once per
``OK_WRITE_EVERY_S`` while healthy and once per ``FAIL_WRITE_EVERY_S`` while failing.

Each check is evaluated at most once per ``CACHE_S`` per process; concurrent probes share one
evaluation, so a flood of ``/readyz`` calls costs the database nothing extra.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from hookbay.errors import StorageUnavailable
from hookbay.ids import now_us
from hookbay.store import Store, schema

CACHE_S = 1.0
PROBE_TIMEOUT_S = 2.0
WORKER_FAILING_S = 60.0
OK_WRITE_EVERY_S = 5.0
FAIL_WRITE_EVERY_S = 1.0
WORKER_KEY = "worker_health"
PROBE_KEY = "ready_probe"


@dataclass
class NotReady:
    reason: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": "not_ready", "message": self.message, "detail": {"reason": self.reason,
                                                                                    **self.detail}}}


# --- the worker's side ---------------------------------------------------------------------------


@dataclass
class _BatchState:
    last_write: float = 0.0
    failing: bool = False


_state: dict[int, _BatchState] = {}


async def record_batch(store: Store, ok: bool, *, at_us: int | None = None) -> None:
    """Call after each worker batch. A healthy worker writes a heartbeat every few seconds; a failing
    one writes when it starts failing and then about once a second. Never raises: health
    bookkeeping must not break the worker (a failing database shows in the writer checks)."""
    st = _state.setdefault(id(store), _BatchState())
    mono = time.monotonic()
    changed = st.failing == ok
    st.failing = not ok
    every = OK_WRITE_EVERY_S if ok else FAIL_WRITE_EVERY_S
    if not changed and mono - st.last_write < every and at_us is None:
        return
    st.last_write = mono
    now = now_us() if at_us is None else at_us

    def w(conn: sa.Connection) -> None:
        m = schema.meta
        raw = conn.execute(sa.select(m.c.value).where(m.c.key == WORKER_KEY)).scalar()
        cur = orjson.loads(raw) if raw else {}
        if ok:
            new = {"ok": now, "fail": cur.get("fail", 0), "since": 0}
        else:
            new = {"ok": cur.get("ok", 0), "fail": now, "since": cur.get("since") or now}
        val = orjson.dumps(new).decode()
        if raw is None:
            conn.execute(m.insert().values(key=WORKER_KEY, value=val))
        else:
            conn.execute(m.update().where(m.c.key == WORKER_KEY).values(value=val))

    try:
        await store.write(w, durable=False)
    except Exception:
        st.last_write = 0.0


# --- the readiness check ---------------------------------------------------------------------------


class Readiness:
    def __init__(self, store: Store, max_lag_s: float) -> None:
        self.store = store
        self.max_lag_s = max_lag_s
        self._at = -1e9
        self._result: NotReady | None = None
        self._running: asyncio.Task[NotReady | None] | None = None

    async def check(self) -> NotReady | None:
        """None when ready, else why not (cached for ``CACHE_S``)."""
        if time.monotonic() - self._at < CACHE_S:
            return self._result
        if self._running is None:
            self._running = asyncio.create_task(self._evaluate())
            self._running.add_done_callback(self._done)
        return await asyncio.shield(self._running)

    def _done(self, task: asyncio.Task[NotReady | None]) -> None:
        self._running = None
        self._at = time.monotonic()
        self._result = NotReady("check_failed", "Readiness check failed") if (
            task.cancelled() or task.exception() is not None) else task.result()

    async def _evaluate(self) -> NotReady | None:
        return await self._writer() or await self._queue()

    async def _writer(self) -> NotReady | None:
        """The last ingest commit's outcome when it is fresh and good; otherwise (idle, or it
        failed) a probe write, whose success is a later good commit: a failure clears once
        storage is back, even with no traffic (a load balancer sends none while not ready)."""
        stats = self.store.writer.stats
        if stats.last_ok and time.monotonic() - stats.last_at < CACHE_S:
            return None
        try:
            await asyncio.wait_for(self.store.write(_probe), PROBE_TIMEOUT_S)
        except TimeoutError:
            return NotReady("write_timeout", "Storage did not commit a write in time",
                            {"timeout_s": PROBE_TIMEOUT_S})
        except Exception as e:
            cause = e.detail.get("reason") if isinstance(e, StorageUnavailable) and isinstance(e.detail, dict) else None
            return NotReady("write_failed", "Storage is not accepting writes", {"error": cause or type(e).__name__})
        return None

    async def _queue(self) -> NotReady | None:
        now = now_us()
        try:
            oldest, worker = await asyncio.wait_for(self.store.read(_queue_state(now)), PROBE_TIMEOUT_S)
        except Exception as e:
            return NotReady("read_failed", "Storage is not answering reads", {"error": type(e).__name__})
        if self.max_lag_s > 0 and oldest is not None:
            lag = (now - oldest) / 1e6
            if lag > self.max_lag_s:
                return NotReady("processing_lag", "Processing is behind",
                                {"lag_seconds": round(lag, 1), "max_lag_seconds": self.max_lag_s})
        since = worker.get("since") or 0
        if since and (now - since) / 1e6 >= WORKER_FAILING_S and (now - worker.get("fail", 0)) / 1e6 < WORKER_FAILING_S:
            return NotReady("worker_failing", "Every worker batch has failed for a minute",
                            {"failing_seconds": round((now - since) / 1e6, 1)})
        return None


def _probe(conn: sa.Connection) -> None:
    """Rewrite one ``meta`` row (through the writer, so it waits behind and fails like ingest). On
    PostgreSQL first take the lock an INSERT into ``requests`` and ``jobs`` takes: another
    session's lock on those tables blocks ingest while other tables still take writes."""
    m = schema.meta
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE requests, jobs IN ROW EXCLUSIVE MODE")
    val = str(now_us())
    if conn.execute(m.update().where(m.c.key == PROBE_KEY).values(value=val)).rowcount == 0:
        conn.execute(m.insert().values(key=PROBE_KEY, value=val))


def _queue_state(now: int) -> Any:
    def q(conn: sa.Connection) -> tuple[int | None, dict[str, Any]]:
        """The oldest due pending job (an index range scan on ``ix_jobs_claim``: a job waiting out
        a retry back-off is not lag until it is due), and the worker's health row."""
        j = schema.jobs
        oldest = conn.execute(sa.select(sa.func.min(j.c.run_after))
                              .where(j.c.state == "pending", j.c.run_after <= now)).scalar()
        raw = conn.execute(sa.select(schema.meta.c.value).where(schema.meta.c.key == WORKER_KEY)).scalar()
        return (int(oldest) if oldest is not None else None), (orjson.loads(raw) if raw else {})

    return q
