"""`hookbay serve`, `worker` and `migrate`: running the server and the schema."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import typer

from hookbay.cli.common import log, run
from hookbay.settings import Settings, get_settings
from hookbay.store import Store, open_store

commands = typer.Typer()


@commands.command()
def serve(
    host: str = typer.Option(None, help="Bind address (HOOKBAY_HOST)"),
    port: int = typer.Option(None, help="Port (HOOKBAY_PORT)"),
    worker: bool = typer.Option(None, "--worker/--no-worker",
                                help="Run the processing worker (HOOKBAY_RUN_WORKER: process, inline or off)"),
    tls_cert: Path = typer.Option(None, "--tls-cert", help="PEM certificate chain: serve HTTPS (HOOKBAY_TLS_CERT)"),
    tls_key: Path = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert (HOOKBAY_TLS_KEY)"),
    processes: int = typer.Option(None, "--processes", min=1,
                                  help="Ingest/API processes on the port; PostgreSQL only (HOOKBAY_PROCESSES)"),
) -> None:
    """Run ingest, admin API and the worker (in a supervised child process unless HOOKBAY_RUN_WORKER=inline)."""
    from hookbay.server.launch import serve as run_serve

    settings = get_settings()
    for name, value in (("host", host), ("port", port), ("tls_cert", tls_cert and str(tls_cert)),
                        ("tls_key", tls_key and str(tls_key)), ("processes", processes)):
        if value:
            setattr(settings, name, value)
    rc = run_serve(settings, worker)
    if rc:
        sys.exit(rc)


@commands.command("worker")
def worker_cmd() -> None:
    """Run only the processing worker, deliveries and alerts (scale out against a shared PostgreSQL)."""
    from hookbay.logs import setup_logging
    from hookbay.ops import partitions
    from hookbay.ops.alerts import AlertEvaluator
    from hookbay.processing.deliverer import Deliverer
    from hookbay.processing.worker import Worker
    from hookbay.runtime import tune_interpreter
    from hookbay.store.sources import SourceCache

    settings = get_settings()
    setup_logging(settings.log_level, settings.log_json)

    async def main(store: Store, s: Settings) -> None:
        cache = SourceCache(store, s.max_body_bytes, s.source_refresh_seconds)
        await cache.reload()
        tune_interpreter(s.gil_switch_interval)
        await partitions.ensure_logged(store, s)
        ahead = asyncio.create_task(partitions.keep_ahead(store, s))
        refresher = asyncio.create_task(cache.run())
        deliverer = asyncio.create_task(Deliverer(store, cache, s).run())
        alerts = asyncio.create_task(AlertEvaluator(store, s).run())  # one evaluator acts at a time (a lease)
        me = asyncio.current_task()
        assert me is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):  # systemd and Kubernetes stop with SIGTERM
            loop.add_signal_handler(sig, me.cancel)
        try:
            await Worker(store, cache, s).run()  # on cancel it hands its jobs back and retires
        except asyncio.CancelledError:
            log.info("worker_stopped")
        finally:
            ahead.cancel()
            refresher.cancel()
            deliverer.cancel()
            alerts.cancel()

    try:
        run(main)
    except KeyboardInterrupt:
        pass


@commands.command()
def migrate() -> None:
    """Create or upgrade the schema (serve does this on start too)."""
    from hookbay.ops import partitions

    settings = get_settings()
    store = open_store(settings)
    store.migrate()

    async def ahead() -> None:
        try:
            await partitions.ensure(store, settings)  # PostgreSQL: today's partition and the next ones
        finally:
            store.read_engine.dispose()
            store.write_engine.dispose()

    asyncio.run(ahead())
    typer.echo("schema is up to date")

