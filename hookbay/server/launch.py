"""What ``hookbay serve`` runs once its options are read: one server process, or with
``--processes N`` a supervisor of N (``hookbay.server.multiproc``); HTTPS with ``--tls-cert``."""

from __future__ import annotations

import contextlib
import os

import structlog

from hookbay.server.tls import tls_options
from hookbay.settings import Settings, unknown_settings

log = structlog.get_logger("hookbay.serve")


def banner(settings: Settings) -> list[str]:
    db = settings.effective_database_url
    shown_db = db if db.startswith("sqlite") else db.split("@")[-1]
    url = settings.base_url
    procs = f", {settings.processes} processes" if settings.processes > 1 else ""
    return [f"hookbay {url}  (database: {shown_db}{procs})",
            f"  console:   {url}/ui/   (log in with the admin token or a client token)",
            f"  admin API: {url}/api/v1/docs   metrics: {url}/metrics",
            '  create a source: hookbay source create --name "Web Form" --client acme']


def serve(settings: Settings, run_worker: bool | None) -> int:
    """Run until stopped; the exit code (3 when start-up failed, as ``uvicorn.run``)."""
    import uvicorn

    from hookbay.ingest.protocol import uvicorn_config
    from hookbay.logs import setup_logging
    from hookbay.server.app import HookbayApp

    setup_logging(settings.log_level, settings.log_json)
    for name, close in unknown_settings(os.environ):
        hint = f" (did you mean {close}?)" if close else ""
        log.warning("unknown_setting", name=name, did_you_mean=close,
                    message=f"{name} is not a known setting and is ignored{hint}")
    tls = tls_options(settings)
    if settings.processes > 1:
        from hookbay.server.multiproc import serve_processes

        return serve_processes(settings, run_worker, tls, banner(settings))
    application = HookbayApp(settings, run_worker=run_worker)
    for line in banner(settings):
        print(line, flush=True)
    server = uvicorn.Server(uvicorn_config(application, settings.host, settings.port,
                                           log_level=settings.log_level.lower(), **tls))
    application.admin.state.relay_hub.is_closing = lambda: server.should_exit  # end relay long-polls on shutdown
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0 if server.started else 3
