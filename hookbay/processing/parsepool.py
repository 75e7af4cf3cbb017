"""Parsing on behalf of a waiting sender (``/V1/Test``, ``?wait=1``) in separate processes.

A parse is CPU-bound Python: on the event loop it stalls every other request, and in a thread it
still holds the GIL. So it runs in a small pool of processes, each parse under a CPU-time budget:
``ITIMER_PROF`` interrupts the parse in its child; a parse stuck inside one C call past a generous
wall-clock backstop gets its child killed and the pool rebuilt. Either way the sender gets ``422
parse_budget_exceeded`` and the server keeps answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import structlog

from hookbay.errors import HookbayError, ParseBudgetExceeded
from hookbay.results import ProcessResult
from hookbay.settings import Settings
from hookbay.store.errors import describe
from hookbay.store.requests import StoredRequest
from hookbay.store.sources import ActiveSource

log = structlog.get_logger("hookbay.parsepool")

_OVER = "over_budget"


class _OverBudget(BaseException):
    """A BaseException so the parsers' per-document ``except Exception`` cannot swallow it."""


def _on_prof(signum: int, frame: Any) -> None:
    raise _OverBudget()


def _init_child() -> None:
    signal.signal(signal.SIGPROF, _on_prof)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the server stops us


def _budgeted(budget_s: float, fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    try:
        signal.setitimer(signal.ITIMER_PROF, budget_s)
        try:
            return "ok", fn(*args)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
    except _OverBudget:
        return _OVER, None


def process_for_store(req: StoredRequest, src: ActiveSource | None, settings: Settings) -> ProcessResult:
    """What the worker stores for one request: its parse and the deliveries it plans."""
    from hookbay.actions.planner import plan
    from hookbay.processing.worker import process_request

    res = process_request(req, src)
    if res.records:
        res.deliveries = plan(res.records, src.config.actions if src is not None else (), settings)
    return res


class ParsePool:
    def __init__(self, settings: Settings) -> None:
        self.budget_s = settings.parse_budget_ms / 1000
        self.size = settings.parse_workers
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.size, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_child)
        return self._pool

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a child process; ``ParseBudgetExceeded`` past the CPU budget."""
        pool = self._executor()
        fut = asyncio.get_running_loop().run_in_executor(pool, _budgeted, self.budget_s, fn, *args)
        try:
            status, value = await asyncio.wait_for(fut, self.budget_s * 5 + 10)
        except TimeoutError:
            log.warning("parse_killed", budget_ms=int(self.budget_s * 1000))
            self._discard(pool)
            raise ParseBudgetExceeded(detail={"budget_ms": int(self.budget_s * 1000)}) from None
        except BrokenProcessPool:
            self._discard(pool)
            raise HookbayError("The parser process died; retry") from None
        except Exception as e:  # a parser bug: its text may quote the body, so only its class is kept
            log.error("parse_failed", **describe(e))
            raise HookbayError("The parser failed unexpectedly; the server log has the details") from None
        if status == _OVER:
            raise ParseBudgetExceeded(detail={"budget_ms": int(self.budget_s * 1000)})
        return value

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Kill a pool whose child is stuck (a running task cannot be cancelled) and start afresh."""
        if self._pool is pool:
            self._pool = None
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            with contextlib.suppress(Exception):
                p.kill()

    def close(self) -> None:
        if self._pool is not None:
            self._discard(self._pool)
