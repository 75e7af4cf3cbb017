"""The worker: claims processing jobs, parses raw requests into records, stores receipts.

Runs inside ``serve`` or alone as ``hookbay worker``; any number may share a database. A job is
claimed with a lease; if its worker dies the lease expires and another worker takes it. Finishing
is idempotent (records are unique per request and index), so a re-claimed job never duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from hookbay import metrics, providers
from hookbay.actions.planner import plan
from hookbay.errors import HookbayError, StorageUnavailable
from hookbay.ids import now_us
from hookbay.models import SourceConfig
from hookbay.parsers import compile, contact, generic
from hookbay.parsers.formats import load_tree
from hookbay.results import Issue, ParsedBody, ParseReceipt, ProcessResult
from hookbay.settings import Settings
from hookbay.store import ClaimedJob, StoreInterface, health, wait_for_wakeup
from hookbay.store.errors import describe
from hookbay.store.requests import StoredRequest
from hookbay.store.sources import ActiveSource, SourceCache

log = structlog.get_logger("hookbay.worker")


class ProcessingFailed(HookbayError):
    """``?wait=1``: processing this request raised; it is retried in the background (or failed)."""

    status = 500
    code = "internal_error"

    def __init__(self, request_id: str) -> None:
        super().__init__(internal_error_message(request_id), detail={"request_id": request_id})


@dataclass(frozen=True, slots=True)
class JobRetryPolicy:
    """Exponential back-off with full jitter, capped; after ``max_attempts`` the job gives up."""

    base: float = 1.0
    cap: float = 300.0
    max_attempts: int = 5

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.base * (2 ** max(0, attempt - 1))))

    def gives_up(self, attempt: int) -> bool:
        return attempt >= self.max_attempts


def parse_body(body: bytes, content_type: str | None, src: ActiveSource | None) -> ParsedBody:
    """Run a source's parser over a body: what the worker stores, and what ``/V1/Test`` shows."""
    cfg = src.config if src is not None else SourceConfig()
    parser_version = generic.PARSER_VERSION
    try:
        docs = load_tree(body, content_type, cfg.format)
    except HookbayError as e:
        err: Issue = {"path": "$", "code": e.code, "message": e.message}
        if e.detail is not None:
            err["detail"] = e.detail
        return ParsedBody(cfg.parser, parser_version, "failed", [], ParseReceipt([err], []))
    if cfg.parser == "contact":
        parser_version = contact.PARSER_VERSION
        result = contact.parse(docs, default_region=cfg.default_region)
    elif cfg.parser == "mapping" and src is not None and src.mapping is not None:
        m = src.mapping
        parser_version = f"mapping-v{m.version}"
        mapped = compile.parse(docs, m, default_region=cfg.default_region)
        if m.target == "contact":
            result = contact.parse(mapped.records, default_region=cfg.default_region)
            result.errors[:0] = mapped.errors
            result.warnings[:0] = mapped.warnings
        else:
            result = mapped
    else:
        result = generic.parse(docs)
    state = "processed" if result.records else "failed"
    return ParsedBody(cfg.parser, parser_version, state, result.records, ParseReceipt(result.errors, result.warnings))


def process_request(req: StoredRequest, src: ActiveSource | None) -> ProcessResult:
    """Parse one stored request into records and a receipt. Never raises for bad input."""
    if req.open_error is not None:
        raise req.open_error
    body = req.body or b""
    if req.content_encoding:
        from hookbay.decompress import STORED_LIMIT, decode

        try:  # ingest decoded it within the source's limit before acknowledging it; that limit may since be lower
            body = decode(body, req.content_encoding, STORED_LIMIT)
        except HookbayError as e:
            cfg = src.config if src is not None else SourceConfig()
            parsed = ParsedBody(cfg.parser, generic.PARSER_VERSION, "failed", [],
                                ParseReceipt([{"path": "$", "code": e.code, "message": e.message}], []))
        else:
            parsed = parse_body(body, req.content_type, src)
    else:
        parsed = parse_body(body, req.content_type, src)
    return parsed.for_request(req.id, req.source_id, req.client_id, req.received_at)


@dataclass(slots=True)
class _Prepared:
    """A parsed batch waiting to be stored."""

    requests: dict[str, StoredRequest]
    jobs: dict[str, ClaimedJob] = field(default_factory=dict)
    results: list[ProcessResult] = field(default_factory=list)
    failed: list[tuple[ClaimedJob, str, str]] = field(default_factory=list)  # job, code, message


def internal_error_message(request_id: str) -> str:
    """What a receipt says about an unexpected failure: no exception text, which may quote the
    customer's data; the operator finds the details in the log under the request id."""
    return f"processing failed unexpectedly; the server log has the details under request id {request_id}"


class Worker:
    def __init__(self, store: StoreInterface, cache: SourceCache, settings: Settings, worker_id: str | None = None,
                 ingest_load: Callable[[], int] | None = None) -> None:
        self.ingest_load = ingest_load
        self.store = store
        self.cache = cache
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.policy = JobRetryPolicy(max_attempts=settings.job_max_attempts)
        self.processed = 0
        self._full_batches = 0
        self._ingest_busy = False
        self._connections: tuple[float, dict[str, set[str]]] = (-1e9, {})

    async def _provider_connections(self) -> dict[str, set[str]]:
        """Each client's provider connections, read at most every few seconds (a small table)."""
        at, conns = self._connections
        if time.monotonic() - at > self.settings.source_check_seconds:
            from hookbay.store.providers import ProviderStore

            conns = await ProviderStore(self.store).connected()
            self._connections = (time.monotonic(), conns)
        return conns

    async def route_providers(self, res: ProcessResult) -> None:
        """Provider pushes chosen by ProviderType, or receipt warnings (:func:`hookbay.providers.route`)."""
        conns = await self._provider_connections()
        providers.route(res, conns.get(res.client_id or "", set()))

    async def run(self) -> None:
        listener = None
        if self.store.is_postgres:
            listener = asyncio.create_task(self._listen())
        await self.store.heartbeat(self.worker_id)
        beating = asyncio.create_task(self._heartbeat())
        try:
            while True:
                try:
                    n = await self.drain()
                    if n:
                        await health.record_batch(self.store, True)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    metrics.worker_errors_total.inc()
                    log.warning("worker_cycle_failed", **describe(e))
                    await health.record_batch(self.store, False)
                    n = 0
                    await asyncio.sleep(self.settings.worker_poll_seconds)
                if n == 0:
                    await self._wait()
        finally:
            for task in (listener, beating):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.retire_worker(self.worker_id))

    async def _heartbeat(self) -> None:
        """Keep this worker's heartbeat fresh, and the processing-lag gauge with it."""
        while True:
            await asyncio.sleep(self.settings.worker_heartbeat_seconds)
            try:
                await self.store.heartbeat(self.worker_id)
                metrics.processing_lag_seconds.set(await self.store.oldest_due_job_age())
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("heartbeat_failed", **describe(e))

    async def drain(self) -> int:
        """Process batches while they come back full (the worker is behind); returns how many jobs.

        Pipelined: the next batch is claimed before this one's results are queued for the writer,
        and parsed while they are written, so parsing (this thread) and storing (the writer thread
        and the database) overlap instead of taking turns. Results are still stored one batch at a
        time, in claim order. A partial batch means the queue is drained: no claim runs ahead."""
        if self.store.job_event is not None:
            self.store.job_event.clear()
        total = 0
        finishing: asyncio.Task[None] | None = None
        ahead: asyncio.Task[list[ClaimedJob]] | None = None
        try:
            started = time.monotonic()
            asked = self._batch_size()
            jobs = await self._claim(asked)
            while jobs:
                if len(jobs) >= asked:
                    asked = self._batch_size()
                    ahead = asyncio.create_task(self._claim(asked))
                prepared = await self._prepare(jobs)
                if finishing is not None:
                    await finishing
                finishing = asyncio.create_task(self._finish(prepared))
                total += len(jobs)
                if ahead is None:
                    break
                # `took` spans a whole cycle (claim, parse, waiting for the previous batch's store),
                # so the worker's share of the process is what the yield ratio says.
                await self._yield_to_ingest(time.monotonic() - started)
                started = time.monotonic()
                jobs, ahead = await ahead, None
            if finishing is not None:
                await finishing
                finishing = None
        finally:
            for t in (ahead, finishing):
                if t is not None and not t.done():
                    t.cancel()
                    with contextlib.suppress(BaseException):
                        await t
        self._full_batches = 0  # caught up: the last claim came back short
        self._ingest_busy = False
        return total

    async def run_once(self) -> int:
        """Claim and finish one batch; returns how many jobs it took."""
        if self.store.job_event is not None:
            self.store.job_event.clear()
        jobs = await self._claim(self.settings.worker_batch)
        if jobs:
            await self._finish(await self._prepare(jobs))
        return len(jobs)

    # Full batches in a row after which the worker is taken to be in a burst, not a hiccup.
    BURST_BATCHES = 10

    async def _yield_to_ingest(self, took: float) -> None:
        """Sharing a process with ingest. While the worker keeps up (its last batch was not full),
        it never waits: its work is then bounded by what ingest takes in, and waiting would only
        turn into lag. When it is behind (full batches) while ingest is saturated (many requests in
        flight), it gives the event loop back for as long as its last batch took; after
        ``BURST_BATCHES`` full batches in a row (a burst bigger than it can follow) for
        ``worker_yield_ratio`` times as long, so acks stay fast and the backlog drains when the
        burst ends. The milder first step lets a worker that fell behind for a moment (a slow disk,
        a pause) catch up at a steady rate, instead of being held back further and further."""
        if self.ingest_load is None or self.settings.worker_yield_ratio <= 0:
            return
        self._full_batches += 1
        self._ingest_busy = self.ingest_load() >= self.settings.worker_backoff_inflight
        if self._ingest_busy:
            ratio = self.settings.worker_yield_ratio
            if self._full_batches <= self.BURST_BATCHES:
                ratio = min(1.0, ratio)
            await asyncio.sleep(min(2.0, took * ratio))

    async def _wait(self) -> None:
        await wait_for_wakeup(self.store.job_event, self.settings.worker_poll_seconds)

    def _batch_size(self) -> int:
        """Smaller batches while ingest is saturated: each batch is one stretch of parsing on the
        event loop and one transaction that ingest commits queue behind, so its size is added
        to the slowest acknowledgements."""
        if self._ingest_busy:
            return max(1, min(self.settings.worker_batch, self.settings.worker_batch_busy))
        return self.settings.worker_batch

    async def _claim(self, n: int) -> list[ClaimedJob]:
        """Claim due jobs. A job claimed more often than ``job_max_attempts`` (its worker kept dying
        on it, so it never got as far as a retry) fails here instead of being tried again."""
        jobs = await self.store.claim_jobs(self.worker_id, n, self.settings.job_lease_seconds,
                                           self.settings.worker_stale_seconds)
        worn = [j for j in jobs if j.attempts > self.policy.max_attempts]
        for j in worn:
            await self.fail_or_retry(j, "internal_error", f"gave up after {j.attempts - 1} attempts: the worker "
                                      f"stopped while processing it (request id {j.request_id})")
        return [j for j in jobs if j.attempts <= self.policy.max_attempts] if worn else jobs

    async def _prepare(self, jobs: list[ClaimedJob]) -> _Prepared:
        """Load and parse a claimed batch (no writes)."""
        reqs = await self.store.load_requests([j.request_id for j in jobs])
        prepared = _Prepared(reqs, {j.request_id: j for j in jobs})
        conns = await self._provider_connections()
        for n, job in enumerate(jobs, 1):
            if n % 16 == 0:
                await asyncio.sleep(0)
            req = reqs.get(job.request_id)
            if req is None:
                prepared.failed.append((job, "internal_error", "request row missing"))
                continue
            try:
                src = await self.cache.get_by_id(req.source_id) if req.source_id else None
                res = self._with_deliveries(process_request(req, src), src)
                providers.route(res, conns.get(res.client_id or "", set()))
                prepared.results.append(res)
            except Exception as e:
                metrics.worker_errors_total.inc()
                log.error("process_failed", request_id=job.request_id, attempt=job.attempts, **describe(e))
                prepared.failed.append((job, "internal_error", internal_error_message(job.request_id)))
        return prepared

    async def _finish(self, prepared: _Prepared) -> None:
        """Store a batch's results in one transaction. If that raises, the batch is stored again one
        request at a time (each in its own savepoint, still one commit), so one poison request
        fails alone and its batch-mates commit. A failure of the database itself
        (``StorageUnavailable``) is not a request's fault: the leases then expire and the jobs are
        claimed again."""
        results = prepared.results
        done: list[ProcessResult] = []
        if results:
            try:
                await self.store.finish_jobs(results)
                done = results
            except StorageUnavailable:
                raise
            except Exception as e:
                metrics.worker_errors_total.inc()
                log.warning("batch_finish_failed", jobs=len(results), **describe(e))
                outcomes = await asyncio.gather(*(self.store.finish_jobs([res]) for res in results),
                                                return_exceptions=True)
                for res, out in zip(results, outcomes, strict=True):
                    if out is None:
                        done.append(res)
                        continue
                    if isinstance(out, StorageUnavailable):
                        raise out from None
                    assert isinstance(out, BaseException)
                    rid = res.request_id
                    log.error("finish_failed", request_id=rid, **describe(out))
                    prepared.failed.append((prepared.jobs[rid], "internal_error", internal_error_message(rid)))
            now = now_us()
            for res in done:
                metrics.processed_total.labels(res.state).inc()
                req = prepared.requests[res.request_id]
                metrics.processing_delay_seconds.observe((now - req.received_at) / 1e6)
            self.processed += len(done)
        for job, code, err in prepared.failed:
            await self.fail_or_retry(job, code, err)

    async def fail_or_retry(self, job: ClaimedJob, code: str, message: str) -> None:
        """Put a job back with back-off, or after ``job_max_attempts`` fail its request with ``code``."""
        give_up = self.policy.gives_up(job.attempts)
        await self.store.retry_job(job.job_id, message, self.policy.delay(job.attempts), give_up, job.request_id,
                                   code=code)
        if give_up:
            metrics.jobs_failed_total.labels(code).inc()
            log.error("job_failed", request_id=job.request_id, attempts=job.attempts, reason=code)
        else:
            metrics.job_retries_total.inc()

    def _with_deliveries(self, res: ProcessResult, src: ActiveSource | None) -> ProcessResult:
        if res.records:
            res.deliveries = plan(res.records, src.config.actions if src is not None else (), self.settings)
        return res

    async def _listen(self) -> None:
        """PostgreSQL: wake on NOTIFY from any ingest process, not just this one."""
        import psycopg

        from hookbay.store.dialects import PostgresDialect

        assert isinstance(self.store.dialect, PostgresDialect)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.store.dialect.libpq_url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {self.store.dialect.channel}")
                    async for _ in conn.notifies():
                        if self.store.job_event is not None:
                            self.store.job_event.set()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("listen_failed", **describe(e))
                await asyncio.sleep(1)
