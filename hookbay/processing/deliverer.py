"""The loop that runs deliveries: claim due ones with a lease, run each action, log every attempt.

The worker plans deliveries when it stores records (:mod:`hookbay.actions.planner`; same
transaction, so none is lost or doubled); the :class:`Deliverer` claims due ones, hands each to its
action type's ``execute`` (:mod:`hookbay.actions.registry`) and schedules the next attempt from the
action's :class:`~hookbay.actions.retry.DeliveryRetryPolicy`. Per destination at most
``delivery_per_destination`` run at once, and a saturated destination's deliveries are not even
claimed, so one slow receiver cannot take every slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import Counter
from typing import Any

import httpx
import structlog

from hookbay import metrics
from hookbay.actions.base import ActionConfig, ActionResult, ActionRun, Permanent, SourceInfo
from hookbay.actions.retry import DeliveryRetryPolicy
from hookbay.actions.ssrf import DestinationRefused, UnresolvedHost
from hookbay.ids import now_us
from hookbay.processing.provider_push import gone, provider_action
from hookbay.settings import Settings
from hookbay.store import StoreInterface, wait_for_wakeup
from hookbay.store.deliveries import AttemptResult, ClaimedDelivery, DeliveryContext
from hookbay.store.errors import describe
from hookbay.store.sources import ActiveSource, SourceCache

log = structlog.get_logger("hookbay.deliveries")


class Deliverer:
    def __init__(self, store: StoreInterface, cache: SourceCache, settings: Settings, http: httpx.AsyncClient | None = None,
                 worker_id: str | None = None) -> None:
        self.store = store
        self.cache = cache
        self.settings = settings
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(follow_redirects=False, timeout=30.0,
                                              headers={"User-Agent": "hookbay"})
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:d{id(self):x}"
        self.default_policy = DeliveryRetryPolicy(schedule=settings.delivery_schedule_list)
        self.inflight: Counter[str] = Counter()
        self._sems: dict[str, asyncio.Semaphore] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._finishing: list[tuple[ClaimedDelivery, AttemptResult, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.done = 0

    async def aclose(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        if self._own_http:
            await self.http.aclose()

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Claim whenever a quarter of the slots is free (or all are): a claim is a commit, so
        claiming one slot at a time would make the commit, not the destinations, the bottleneck."""
        batch = max(1, self.settings.delivery_concurrency // 4)
        try:
            while True:
                free = self.settings.delivery_concurrency - len(self._tasks)
                n = 0
                if free >= batch or not self._tasks:
                    try:
                        n = await self._claim_and_start()
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:
                        log.warning("delivery_cycle_failed", **describe(e))
                        await asyncio.sleep(self.settings.worker_poll_seconds)
                if n == 0 or n == free:
                    await self._wait()
        finally:
            await self.aclose()

    async def _wait(self) -> None:
        await wait_for_wakeup(self.store.delivery_event, self.settings.worker_poll_seconds)

    def _saturated(self) -> set[str]:
        return {d for d, n in self.inflight.items() if n >= self.settings.delivery_per_destination}

    async def _claim_and_start(self) -> int:
        if self.store.delivery_event is not None:
            self.store.delivery_event.clear()
        free = self.settings.delivery_concurrency - len(self._tasks)
        claimed = await self.store.claim_deliveries(self.worker_id, free, self.settings.delivery_lease_seconds,
                                                    self._saturated())
        if not claimed:
            return 0
        # A lease must only tick while its delivery runs: keep what the destinations' free slots can
        # start now and give the rest back, so nothing waits (and expires) in this process.
        room = {d: self.settings.delivery_per_destination - self.inflight[d] for d in {c.destination for c in claimed}}
        keep: list[ClaimedDelivery] = []
        extra: list[ClaimedDelivery] = []
        for c in claimed:
            (keep if room[c.destination] > 0 else extra).append(c)
            room[c.destination] -= 1
        await self.store.release_deliveries([c.id for c in extra], self.worker_id)
        claimed = keep
        if not claimed:
            return 0
        ctx = await self.store.delivery_context(claimed)
        for c in claimed:
            self.inflight[c.destination] += 1
            t = asyncio.create_task(self._run_one(c, ctx.get(c.id, DeliveryContext(None, None))))
            self._tasks.add(t)
            t.add_done_callback(self._task_done)
        return len(claimed)

    def _task_done(self, t: asyncio.Task[None]) -> None:
        self._tasks.discard(t)
        ev = self.store.delivery_event
        if ev is not None:
            ev.set()  # a slot is free: claim again

    async def run_once(self) -> int:
        """Claim one batch and wait for all of it (tests, benchmarks, ``--once`` style use)."""
        n = await self._claim_and_start()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        return n

    # --- one delivery ---------------------------------------------------------------------

    async def _run_one(self, c: ClaimedDelivery, ctx: DeliveryContext) -> None:
        sem = self._sems.setdefault(c.destination, asyncio.Semaphore(self.settings.delivery_per_destination))
        try:
            async with sem:  # held until the outcome is stored: a crash repeats at most this many sends
                result = await self._attempt(c, ctx)
                recorded = await self._finish(c, result)
            if recorded:
                self.done += 1
                metrics.deliveries_total.labels(c.action_type, result.state).inc()
                (log.debug if result.state == "succeeded" else log.info)(
                    "delivery_attempt", delivery_id=c.id, request_id=c.request_id, source_id=c.source_id,
                    action=c.action_type, attempt=c.attempts,
                    state=result.state, status=result.status, error=result.error,
                    latency_ms=round(result.latency_us / 1000, 1))
            else:
                log.warning("delivery_lease_lost", delivery_id=c.id)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # lease expiry brings it back
            log.error("delivery_crashed", delivery_id=c.id, request_id=c.request_id, **describe(e))
        finally:
            self.inflight[c.destination] -= 1
            if self.inflight[c.destination] <= 0:
                del self.inflight[c.destination]

    async def _finish(self, c: ClaimedDelivery, result: AttemptResult) -> bool:
        """Queue the outcome for the next shared write: finishes that arrive while one write is
        committing go together into the following one."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._finishing.append((c, result, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        while self._finishing:
            batch, self._finishing = self._finishing, []
            try:
                done = await self.store.finish_deliveries([(c, r) for c, r, _ in batch])
            except Exception as e:
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (*_, fut), ok in zip(batch, done, strict=True):
                if not fut.done():
                    fut.set_result(ok)

    async def _attempt(self, c: ClaimedDelivery, ctx: DeliveryContext) -> AttemptResult:
        started = now_us()
        t0 = time.perf_counter()
        src = await self.cache.get_by_id(c.source_id)
        action: ActionConfig | None = None
        if src is not None and c.action_idx < 0:
            action = await provider_action(self.store, c.client_id, c.action_idx)
        elif src is not None and c.action_idx < len(src.config.actions):
            action = src.config.actions[c.action_idx]
        policy = self.default_policy
        if action is not None and action.retry_schedule:
            policy = DeliveryRetryPolicy(schedule=tuple(action.retry_schedule))
        status: int | None = None
        error: BaseException | None = None
        out = ActionResult()
        try:
            if src is None or action is None or action.type != c.action_type:
                raise Permanent(gone(c))
            if ctx.record is None:
                raise Permanent("the record is gone (erased or replaced)")
            out = await action.execute(self._run(action, src, c, ctx.record, ctx.profile))
            status = out.status
        except Permanent as e:
            error = e
        except UnresolvedHost as e:
            error = e
        except DestinationRefused as e:
            error = Permanent(str(e))
        except Exception as e:
            error = e
            status = getattr(e, "status_code", None)
            out = ActionResult(retry_after=getattr(e, "retry_after", None),
                               excerpt=getattr(e, "response_excerpt", None))
        latency = int((time.perf_counter() - t0) * 1e6)
        err_text: str | None = None
        if isinstance(error, Permanent):
            err_text = str(error)[:1000]
        elif error is not None:
            err_text = f"{type(error).__name__}: {error}"[:1000]
        if out.skipped:
            return AttemptResult("skipped", started, latency, "skipped", excerpt=out.excerpt)
        if isinstance(error, Permanent):
            verdict = "fail"
        elif isinstance(error, UnresolvedHost):
            verdict = "retry"
        else:
            verdict = policy.classify(status, error)
        if verdict == "ok":
            return AttemptResult("succeeded", started, latency, "ok", status, out.excerpt)
        if err_text is None:
            err_text = f"HTTP {status}"
        if verdict == "retry":
            delay = policy.next_delay(c.attempts, out.retry_after)
            if delay is not None:
                return AttemptResult("pending", started, latency, "retry", status, out.excerpt, err_text,
                                     run_after=now_us() + int(delay * 1e6))
            err_text = f"retries exhausted after {c.attempts} attempts; last: {err_text}"
        else:
            err_text = f"permanent failure: {err_text}"
        return AttemptResult("dead", started, latency, verdict, status, out.excerpt, err_text[:1000])

    def _run(self, action: ActionConfig, src: ActiveSource, c: ClaimedDelivery, record: dict[str, Any],
             profile: dict[str, Any] | None) -> ActionRun:
        async def raw_request() -> tuple[bytes | None, str | None]:
            req = await self.store.get_request(c.request_id)
            body = req.body
            if body is not None and req.content_encoding:  # forwarded decoded: the forward sets its own headers
                from hookbay.decompress import STORED_LIMIT, decode

                body = decode(body, req.content_encoding, STORED_LIMIT)
            return body, req.content_type

        return ActionRun(
            delivery_id=c.id, request_id=c.request_id, record_idx=c.record_idx,
            action_name=action.display_name(c.action_idx),
            source=SourceInfo(id=src.id, name=src.name, client_id=src.client_id,
                              allow_private_destinations=src.config.allow_private_destinations),
            record=record, profile=profile, http=self.http, settings=self.settings,
            raw_request=raw_request)
