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
``/readyz``; the worker calls :func:`hookbay.store.health.record_batch` after each batch, which writes at most once per
``OK_WRITE_EVERY_S`` while healthy and once per ``FAIL_WRITE_EVERY_S`` while failing.

Each check is evaluated at most once per ``CACHE_S`` per process; concurrent probes share one
evaluation, so a flood of ``/readyz`` calls costs the database nothing extra.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from hookbay.errors import StorageUnavailable
from hookbay.ids import now_us
from hookbay.store import StoreInterface
from hookbay.store.health import probe_write, queue_state

CACHE_S = 1.0
PROBE_TIMEOUT_S = 2.0
WORKER_FAILING_S = 60.0


@dataclass
class NotReady:
    reason: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": "not_ready", "message": self.message, "detail": {"reason": self.reason,
                                                                                    **self.detail}}}


class Readiness:
    def __init__(self, store: StoreInterface, max_lag_s: float) -> None:
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
            await asyncio.wait_for(self.store.write(probe_write), PROBE_TIMEOUT_S)
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
            oldest, worker = await asyncio.wait_for(self.store.read(queue_state(now)), PROBE_TIMEOUT_S)
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
