"""``hookbay serve --processes N``: N ingest/API processes on one port, the worker in one more.

One interpreter runs ingest on one core. Here the supervisor binds the port once and starts N
children (spawned, as uvicorn's ``--workers``) that accept on that same listening socket, so the
kernel spreads connections and no port is ever unbound while a child restarts. Each child is a
whole ``serve`` without a worker (``run_worker=off``): its own store, group-commit writer and
source cache. Processing runs in one supervised worker process (``workerproc``) that PostgreSQL's
``LISTEN/NOTIFY`` wakes, so nothing here forwards wake-ups.

Only PostgreSQL takes several writers: on SQLite the processes would queue for its one write
lock and each commit would wait for the others, so N > 1 is refused there.

A child that dies is started again (with back-off if it keeps dying); what it had acknowledged is
committed, and what it had not is the sender's to retry. SIGTERM or SIGINT stops the children
with SIGTERM (each drains: stops accepting, answers what it holds, commits its last batch), then
the worker, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import structlog

from hookbay.errors import HookbayError
from hookbay.server.workerproc import process_exited
from hookbay.settings import Settings

log = structlog.get_logger("hookbay.multiproc")

_START_FAILED = 3  # uvicorn's exit code when start-up fails


class ProcessesNeedPostgres(HookbayError):
    code = "processes_need_postgresql"
    message = ("--processes above 1 needs PostgreSQL: SQLite allows one writer at a time, so more "
               "processes would only wait for each other. Use one process on SQLite (it commits in "
               "groups and takes about 10,000 requests/s on two cores), or set HOOKBAY_DATABASE_URL "
               "to a PostgreSQL database (see docs/deployment.md)")


def check_processes(settings: Settings) -> None:
    if settings.processes > 1 and settings.effective_database_url.startswith("sqlite"):
        raise ProcessesNeedPostgres()


def ingest_child(settings: Settings, sock: socket.socket, tls: dict[str, Any], slot: int,
                 lifeline: Connection, load: Any) -> None:
    """One ingest/API process, serving on the supervisor's listening socket. ``lifeline`` reads
    end-of-file when the supervisor is gone (even killed with SIGKILL): the child then drains and
    exits as on SIGTERM, so no orphan keeps the port. ``load`` is a shared int where it reports
    its peak of requests in flight, so the worker process yields while ingest is saturated (as
    it does beside a single ``serve``)."""
    import uvicorn

    from hookbay.ingest.protocol import uvicorn_config
    from hookbay.logs import setup_logging
    from hookbay.server.app import HookbayApp

    setup_logging(settings.log_level, settings.log_json)
    # Ctrl-C reaches the whole process group; the supervisor stops children with SIGTERM, so a
    # child never races a restart. uvicorn's own handlers replace this once it runs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    app = HookbayApp(settings, run_worker=False)
    config = uvicorn_config(app, settings.host, settings.port, log_level=settings.log_level.lower(), **tls)
    server = uvicorn.Server(config)
    app.admin.state.relay_hub.is_closing = lambda: server.should_exit
    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            lifeline.recv_bytes()
        server.should_exit = True

    def report() -> None:
        while not server.should_exit:
            time.sleep(0.02)
            peak = app.ingest.take_inflight_peak()
            if peak > load.value:
                load.value = peak  # a lost update only skews a hint

    threading.Thread(target=watch, name="lifeline", daemon=True).start()
    threading.Thread(target=report, name="ingest-load", daemon=True).start()
    log.info("ingest_process_started", pid=os.getpid(), slot=slot)
    server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(_START_FAILED)


class ProcessSupervisor:
    """Keeps ``settings.processes`` ingest children and one worker child running until ``stop``."""

    def __init__(self, settings: Settings, sock: socket.socket, tls: dict[str, Any],
                 run_worker: bool | None) -> None:
        self.settings = settings
        self.sock = sock
        self.tls = tls
        self.children: dict[int, BaseProcess] = {}
        self.restarts = 0
        self.stopping = asyncio.Event()
        self._ctx = multiprocessing.get_context("spawn")
        mode = settings.run_worker if run_worker is None else ("process" if run_worker else "off")
        self.run_worker = mode != "off"
        self.worker: Any = None
        self._lifeline, self._keep_alive = self._ctx.Pipe(duplex=False)  # never written: only its closing counts
        self._load = self._ctx.Value("i", 0, lock=False)  # the children's peak of requests in flight

    def _ingest_load(self) -> int:
        peak, self._load.value = self._load.value, 0
        return int(peak)

    def _start(self, slot: int) -> BaseProcess:
        child_settings = self.settings.model_copy(update={"run_worker": "off"})
        proc = self._ctx.Process(target=ingest_child, args=(child_settings, self.sock, self.tls, slot, self._lifeline, self._load),
                                 name=f"hookbay-ingest-{slot}", daemon=False)
        proc.start()
        self.children[slot] = proc
        return proc

    async def run(self) -> int:
        from hookbay.server.workerproc import WorkerSupervisor

        worker_task: asyncio.Task[None] | None = None
        if self.run_worker:
            self.worker = WorkerSupervisor(self.settings, None, self._ingest_load)
            worker_task = asyncio.create_task(self.worker.run(), name="worker-supervisor")
        slots = [asyncio.create_task(self._keep(slot)) for slot in range(self.settings.processes)]
        stop = asyncio.create_task(self.stopping.wait())
        try:
            done, _ = await asyncio.wait([stop, *slots], return_when=asyncio.FIRST_COMPLETED)
            failed = any(t in done and t.result() == _START_FAILED for t in slots)
        finally:
            self.stopping.set()
            await self._stop_children()
            for t in slots:
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t
            if worker_task is not None:
                worker_task.cancel()
                with contextlib.suppress(BaseException):
                    await worker_task
                await self.worker.stop()
        return _START_FAILED if failed else 0

    async def _keep(self, slot: int) -> int:
        """Run slot ``slot``'s child, restarting it when it dies; the exit code if it never started."""
        backoff = 0.5
        first = True
        while not self.stopping.is_set():
            proc = self._start(slot)
            started = time.monotonic()
            await process_exited(proc)
            if self.stopping.is_set():
                break
            lived = time.monotonic() - started
            if first and proc.exitcode == _START_FAILED:
                return _START_FAILED  # the database or the port is wrong: restarting would not help
            first = False
            if lived > 30:
                backoff = 0.5
            log.error("ingest_process_died", pid=proc.pid, slot=slot, exitcode=proc.exitcode, restart_in=backoff)
            self.restarts += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), backoff)
            backoff = min(backoff * 2, 10.0)
        return 0

    async def _stop_children(self) -> None:
        procs = [p for p in self.children.values() if p.exitcode is None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
        # uvicorn waits for open requests to finish and then runs the app's shutdown (the writer's last commit)
        deadline = self.settings.write_timeout + self.settings.worker_stop_timeout + 10
        for p in procs:
            try:
                await asyncio.wait_for(process_exited(p), max(0.1, deadline))
            except TimeoutError:
                log.error("ingest_process_killed", pid=p.pid)
                p.kill()
                await asyncio.to_thread(p.join, 5)


def bind(settings: Settings) -> socket.socket:
    """The listening socket every child accepts on (bound here, once, before any child starts)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve_processes(settings: Settings, run_worker: bool | None, tls: dict[str, Any], banner: list[str]) -> int:
    from hookbay.store import open_store

    check_processes(settings)
    open_store(settings).migrate()  # once, before N children would each try
    sock = bind(settings)
    for line in banner:
        print(line, flush=True)
    sup = ProcessSupervisor(settings, sock, tls, run_worker)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, sup.stopping.set)
        return await sup.run()

    try:
        return asyncio.run(main())
    finally:
        sock.close()
