"""``serve``'s worker in a supervised child process (``HOOKBAY_RUN_WORKER=process``, the default).

Parsing is CPU-bound Python; sharing the event loop (or the GIL) with ingest, one slow body held
every webhook and ``/healthz``. The child runs what ``hookbay worker`` runs (jobs and deliveries)
against its own store connection; the server restarts it if it dies and, on shutdown, sends it
SIGTERM: it finishes the batch in hand (within ``worker_stop_timeout``; leases make anything cut
short safe to redo) and exits. The server's writer wakes it through a pipe after each commit with
new jobs, so SQLite needs no polling; the pipe closing (the server died) stops it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import structlog

from hookbay.processing.worker import Worker
from hookbay.settings import Settings

log = structlog.get_logger("hookbay.workerproc")


class _ChildWorker(Worker):
    """Knows whether it is in the middle of a batch, so a stop can let that batch finish."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle = asyncio.Event()
        self.idle.set()

    async def drain(self) -> int:
        self.idle.clear()
        try:
            return await super().drain()
        finally:
            self.idle.set()


def child_main(settings: Settings, wakeup: Connection, ingest_peak: Any) -> None:
    """Entry point of the worker process (spawned: nothing of the server's threads is inherited)."""
    from hookbay.logs import setup_logging

    setup_logging(settings.log_level, settings.log_json)
    # Ctrl-C reaches the whole process group; the server stops this process with SIGTERM once its
    # own shutdown begins, so a restart cannot race it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_child(settings, wakeup, ingest_peak))


async def _child(settings: Settings, wakeup: Connection, ingest_peak: Any) -> None:
    from hookbay.ops.alerts import AlertEvaluator
    from hookbay.processing.deliverer import Deliverer
    from hookbay.runtime import tune_interpreter
    from hookbay.store import open_store
    from hookbay.store.sources import SourceCache

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    store = open_store(settings)
    await store.start()
    fd = wakeup.fileno()
    os.set_blocking(fd, False)

    def woken() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if not data:  # the server is gone
            loop.remove_reader(fd)
            stop.set()
        elif store.job_event is not None:
            store.job_event.set()

    loop.add_reader(fd, woken)
    cache = SourceCache(store, settings.max_body_bytes, settings.source_refresh_seconds)
    def ingest_load() -> int:
        """The server's peak of requests in flight since the last call: as for the inline worker,
        a worker that is behind while ingest is saturated yields (its claims and results are
        transactions that the server's commits wait for on SQLite)."""
        peak, ingest_peak.value = ingest_peak.value, 0
        return int(peak)

    worker = _ChildWorker(store, cache, settings, ingest_load=ingest_load)
    tasks: list[asyncio.Task[Any]] = []
    try:
        await cache.reload()
        tune_interpreter(settings.gil_switch_interval)
        tasks = [asyncio.create_task(cache.run()), asyncio.create_task(Deliverer(store, cache, settings).run()),
                 asyncio.create_task(AlertEvaluator(store, settings).run())]
        work = asyncio.create_task(worker.run())
        tasks.append(work)
        log.info("worker_process_started", pid=os.getpid())
        await stop.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker.idle.wait(), settings.worker_stop_timeout)
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(fd)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        await store.close()
        log.info("worker_process_stopped", pid=os.getpid())


class WorkerSupervisor:
    """Runs ``child_main`` in a child process and keeps it running while the server runs."""

    def __init__(self, settings: Settings, job_event: asyncio.Event | None,
                 ingest_load: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self.job_event = job_event
        self.ingest_load = ingest_load
        self.process: BaseProcess | None = None
        self.restarts = 0
        self._ctx = multiprocessing.get_context("spawn")
        self._read, self._write = self._ctx.Pipe(duplex=False)
        # A plain shared int: a lost update only skews a load hint, and a lock's semaphore would be
        # reported "leaked" on stderr (in plain text) by multiprocessing's tracker when serve is stopped.
        self._ingest_peak = self._ctx.Value("i", 0, lock=False)
        os.set_blocking(self._write.fileno(), False)

    async def run(self) -> None:
        forward = asyncio.create_task(self._forward_wakeups())
        load = asyncio.create_task(self._share_load())
        backoff = 0.5
        try:
            while True:
                proc = self._ctx.Process(target=child_main, args=(self.settings, self._read, self._ingest_peak),
                                         name="hookbay-worker", daemon=True)
                proc.start()
                self.process = proc
                started = time.monotonic()
                await process_exited(proc)
                if time.monotonic() - started > 30:
                    backoff = 0.5
                log.error("worker_process_died", pid=proc.pid, exitcode=proc.exitcode, restart_in=backoff)
                self.restarts += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        finally:
            for t in (forward, load):
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t

    async def _share_load(self) -> None:
        if self.ingest_load is None:
            return
        while True:
            await asyncio.sleep(0.02)
            peak = self.ingest_load()
            self._ingest_peak.value = max(self._ingest_peak.value, peak)

    async def _forward_wakeups(self) -> None:
        ev = self.job_event
        if ev is None:
            return
        while True:
            await ev.wait()
            ev.clear()
            with contextlib.suppress(BlockingIOError, InterruptedError):
                os.write(self._write.fileno(), b"\0")  # a full pipe already holds a wake-up

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if the child has not exited in ``worker_stop_timeout`` (+ margin)."""
        proc = self.process
        if proc is None or proc.exitcode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(process_exited(proc), self.settings.worker_stop_timeout + 5)
        except TimeoutError:
            log.error("worker_process_killed", pid=proc.pid)
            proc.kill()
            await asyncio.to_thread(proc.join, 5)


async def process_exited(proc: BaseProcess) -> None:
    """Wait for a child process to end without a thread: the loop watches its sentinel."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(proc.sentinel, ready)
    try:
        await done
    finally:
        loop.remove_reader(proc.sentinel)
    proc.join(0)
