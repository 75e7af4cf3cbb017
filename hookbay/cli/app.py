"""The ``hookbay`` command line: the root command, the groups it is made of, and ``main()``.

Every command that prints data takes ``--json`` for scripts. Management commands talk to the
database directly (same ``HOOKBAY_*`` settings as the server), so they work with the server
stopped; a running server sees source changes before a command returns. Each command group lives
in its own module and shares only ``common`` (and ``source_options``); this module composes them:
a module's ``app`` becomes a named group, its ``commands`` join the root. So the groups never
import each other or this module.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import structlog
import typer
from pydantic import ValidationError

from hookbay.cli import (
    alerts,
    audit,
    deliveries,
    doctor,
    keys,
    orders,
    partitions,
    profiles,
    providers,
    relay,
    requests,
    serve,
    sources,
    tokens,
)
from hookbay.cli.common import unknown_setting_text
from hookbay.cli.errors import KNOWN_ERRORS, describe_error
from hookbay.settings import get_settings, unknown_settings

app = typer.Typer(help="hookbay: a self-hosted webhook data collector.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
# In --help order: the root commands, then the groups.
app.add_typer(serve.commands)  # serve, worker, migrate
app.add_typer(doctor.commands)  # doctor
app.add_typer(requests.commands)  # replay, purge
app.add_typer(audit.commands)  # audit
app.add_typer(relay.commands)  # agent
app.add_typer(orders.commands)  # orders
sources.app.add_typer(relay.source_commands)  # source relay-status, source relay-token …
app.add_typer(sources.app, name="source")
app.add_typer(tokens.app, name="token")
app.add_typer(requests.app, name="requests")
app.add_typer(profiles.app, name="profiles")
app.add_typer(keys.app, name="keys")
app.add_typer(alerts.app, name="alerts")
app.add_typer(deliveries.app, name="deliveries")
app.add_typer(providers.app, name="providers")
app.add_typer(partitions.app, name="partitions")

_DEBUG = [False]


def _print_version(value: bool) -> None:
    if value:
        from hookbay import __version__

        typer.echo(f"hookbay {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an unexpected error"),
    data_dir: Path = typer.Option(None, "--data-dir", help="Data directory with the SQLite database "
                                  "(as HOOKBAY_DATA_DIR; use the server's)"),
    database_url: str = typer.Option(None, "--database-url", help="Database URL (as HOOKBAY_DATABASE_URL)"),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit"),
) -> None:
    _DEBUG[0] = debug
    # The options win over the environment; set there, every later settings read agrees.
    if data_dir is not None:
        os.environ["HOOKBAY_DATA_DIR"] = str(data_dir)
    if database_url is not None:
        os.environ["HOOKBAY_DATABASE_URL"] = database_url
    get_settings.cache_clear()
    if ctx.invoked_subcommand not in ("serve", "doctor"):  # serve logs them (JSON when configured), doctor lists them
        for name, close in unknown_settings(os.environ):
            typer.echo(f"warning: {unknown_setting_text(name, close)}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. Every failure ends as one line per problem on stderr and a non-zero exit, never a
    traceback: users act on the message; ``--debug`` or HOOKBAY_DEBUG=1 re-raises unexpected errors."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))  # stdout is for results
    try:
        rc = app(args=argv, standalone_mode=False)
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        rc = 1
    except KeyboardInterrupt:
        rc = 130
    except Exception as e:
        if _is_usage_error(e):
            rc = _usage_error(e)
        else:
            if not isinstance(e, KNOWN_ERRORS) and _debug():
                raise
            for line in describe_error(e):
                typer.echo(f"error: {line}", err=True)
            rc = 2 if isinstance(e, ValidationError) else 1
    sys.exit(rc if isinstance(rc, int) else 0)


def _is_usage_error(e: Exception) -> bool:
    """Click's errors (Typer vendors its own click, so matched by shape rather than class)."""
    return hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int)


def _usage_error(e: Any) -> int:
    ctx = getattr(e, "ctx", None)
    if type(e).__name__ == "NoArgsIsHelpError":
        typer.echo(e.format_message(), err=True)
    else:
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        typer.echo("error: " + " ".join(e.format_message().split()) + hint, err=True)
    return int(e.exit_code)


def _debug() -> bool:
    if _DEBUG[0]:
        return True
    try:
        return get_settings().debug
    except Exception:  # settings that do not parse are reported as such, not as a debugging request
        return False

