"""`hookbay serve`, `worker` and `migrate`: running the server and the schema."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

import typer

from hookbay.cli.common import log, run, unknown_setting_text
from hookbay.settings import Settings, get_settings, unknown_settings
from hookbay.store import Store, open_store

commands = typer.Typer()


@commands.command()
def serve(
    host: str = typer.Option(None, help="Bind address (HOOKBAY_HOST)"),
    port: int = typer.Option(None, help="Port (HOOKBAY_PORT)"),
    worker: bool = typer.Option(None, "--worker/--no-worker",
                                help="Run the processing worker (HOOKBAY_RUN_WORKER: process, inline or off)"),
) -> None:
    """Run ingest, admin API and the worker (in a supervised child process unless HOOKBAY_RUN_WORKER=inline)."""
    import uvicorn

    from hookbay.ingest.protocol import uvicorn_config
    from hookbay.logs import setup_logging
    from hookbay.server.app import HookbayApp

    settings = get_settings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    setup_logging(settings.log_level, settings.log_json)
    for name, close in unknown_settings(os.environ):
        log.warning("unknown_setting", name=name, did_you_mean=close, message=unknown_setting_text(name, close))
    application = HookbayApp(settings, run_worker=worker)
    db = settings.effective_database_url
    shown_db = db if db.startswith("sqlite") else db.split("@")[-1]
    typer.echo(f"hookbay {settings.base_url}  (database: {shown_db})")
    typer.echo(f"  console:   {settings.base_url}/ui/   (log in with the admin token or a client token)")
    typer.echo(f"  admin API: {settings.base_url}/api/v1/docs   metrics: {settings.base_url}/metrics")
    typer.echo('  create a source: hookbay source create --name "Web Form" --client acme')
    server = uvicorn.Server(uvicorn_config(application, settings.host, settings.port,
                                           log_level=settings.log_level.lower()))
    application.admin.state.relay_hub.is_closing = lambda: server.should_exit  # end relay long-polls on shutdown
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(3)  # as uvicorn.run: startup failed


@commands.command("worker")
def worker_cmd() -> None:
    """Run only the processing worker, deliveries and alerts (scale out against a shared PostgreSQL)."""
    from hookbay.logs import setup_logging
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
    settings = get_settings()
    open_store(settings).migrate()
    typer.echo("schema is up to date")

