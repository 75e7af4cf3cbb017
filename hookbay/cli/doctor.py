"""``hookbay doctor``: what is wrong with this installation, and how to fix it.

Each check gives one line: ``ok``, ``warn`` or ``fail``, what it found and, when not ok, the fix.
It only reads: no database, schema or directory is created.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
import typer
from pydantic import ValidationError

from hookbay.cli.common import JsonOpt, show
from hookbay.cli.errors import describe_error
from hookbay.ops import diagnostics
from hookbay.settings import Settings, unknown_settings

FAIL_FREE_BYTES = 100 * 1024 * 1024  # SQLite and its WAL stop taking writes long before the disk is full
WARN_FREE_BYTES = 1024 * 1024 * 1024
WARN_SKEW_S = 2.0  # leases, heartbeats and "since" filters compare this machine's clock with stored times
FAIL_SKEW_S = 60.0
SMTP_CONNECT_TIMEOUT_S = 3.0

commands = typer.Typer()


@dataclass
class Check:
    status: str  # ok, warn or fail
    name: str
    message: str

    def line(self) -> str:
        return f"{self.status:4}  {self.name}: {self.message}"


def run_checks(environ: Mapping[str, str]) -> list[Check]:
    out: list[Check] = []
    try:
        settings = Settings()
    except ValidationError as e:
        out += [Check("fail", "settings", f"{line} (fix the environment variable)") for line in describe_error(e)]
        return out
    out += list(_settings(settings, environ))
    out += list(_database(settings))
    out.append(_smtp(settings))
    out.append(_disk(settings))
    return out


@commands.command()
def doctor(as_json: bool = JsonOpt) -> None:
    """Check the database, migrations, settings, SMTP, clock and free disk: one line per check
    (ok/warn/fail) with the fix; exits 1 when a check fails. Creates nothing."""
    checks = run_checks(os.environ)
    show(checks, as_json, lambda cs: (c.line() for c in cs),
         json=lambda cs: [{"status": c.status, "check": c.name, "message": c.message} for c in cs])
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        typer.echo(f"error: {len(failed)} check(s) failed: {', '.join(dict.fromkeys(c.name for c in failed))}",
                   err=True)
        raise typer.Exit(1)


def _settings(settings: Settings, environ: Mapping[str, str]) -> Iterator[Check]:
    from hookbay.crypto import Keyring

    unknown = unknown_settings(environ)
    for name, close in unknown:
        fix = f"rename it to {close}" if close else "remove it"
        yield Check("warn", "settings", f"{name} is not a known setting and is ignored: {fix}")
    try:
        Keyring.parse(settings.encryption_key or None)
    except ValueError as e:
        yield Check("fail", "settings", f"HOOKBAY_ENCRYPTION_KEY is malformed: {e} "
                                        "(`hookbay keys generate` prints a valid entry)")
        return
    if not unknown:
        yield Check("ok", "settings", "every HOOKBAY_* variable is a known setting and valid")


def _where(url: sa.engine.URL) -> str:
    if url.get_backend_name() == "sqlite":
        return str(url.database)
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def _database(settings: Settings) -> Iterator[Check]:
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    raw = settings.effective_database_url
    url = sa.engine.make_url(raw)
    where = _where(url)
    sqlite = url.get_backend_name() == "sqlite"
    if sqlite and url.database and url.database != ":memory:" and not Path(url.database).is_file():
        yield Check("fail", "database", f"no database at {where}: set HOOKBAY_DATA_DIR or HOOKBAY_DATABASE_URL to "
                                        "the server's, or create it with `hookbay migrate`")
        return
    args = {} if sqlite else {"connect_timeout": 5}
    engine = sa.create_engine(raw, poolclass=sa.pool.NullPool, connect_args=args)
    try:
        with engine.connect() as conn:
            diagnostics.ping(conn)
            yield Check("ok", "database", f"{where} is reachable")
            current = MigrationContext.configure(conn).get_current_revision()
            cfg = Config()
            cfg.set_main_option("script_location", str(Path(__file__).resolve().parent.parent / "migrations"))
            scripts = ScriptDirectory.from_config(cfg)
            heads = set(scripts.get_heads())
            if current is None:
                yield Check("fail", "migrations", f"{where} has no hookbay schema: run `hookbay migrate` "
                                                  "(or point HOOKBAY_DATABASE_URL at the server's database)")
                return
            if current in heads:
                yield Check("ok", "migrations", f"at head ({current})")
            else:
                try:
                    known = scripts.get_revision(current) is not None
                except Exception:
                    known = False
                if known:
                    yield Check("fail", "migrations", f"at {current}, head is {', '.join(sorted(heads))}: "
                                                      "run `hookbay migrate` (serve also does on start)")
                else:
                    yield Check("fail", "migrations", f"at {current}, which this hookbay does not know: a newer "
                                                      "version migrated it; upgrade hookbay")
            yield _clock(conn, sqlite)
            if not sqlite and current in heads:
                yield _partitions(conn)
    except sa.exc.OperationalError as e:
        yield Check("fail", "database", f"{where} is unreachable: {describe_error(e)[0].split(': ', 1)[-1]} "
                                        "(check HOOKBAY_DATABASE_URL and that the database server runs)")
    finally:
        engine.dispose()


def _partitions(conn: sa.Connection) -> Check:
    state = diagnostics.partition_state(conn)
    if not state.partitioned:
        return Check("warn", "partitions", "the request log is not partitioned (a database made before 0011): "
                                           "run `hookbay partitions migrate` (see docs/production.md)")
    if not state.current:
        return Check("warn", "partitions", "no partition for today: new requests go to requests_default; run "
                                           "`hookbay partitions ensure` (serve and worker do it hourly)")
    return Check("ok", "partitions", "the request log is partitioned, today's partition is in place")


def _clock(conn: sa.Connection, sqlite: bool) -> Check:
    if sqlite:  # one machine, one clock: check it did not go back behind what it already stored
        ahead = diagnostics.stored_ahead_s(conn)
        if ahead > FAIL_SKEW_S:
            return Check("warn", "clock", f"this machine's clock is {ahead:.0f} s behind the newest stored request: "
                                          "set the clock right (NTP)")
        return Check("ok", "clock", "SQLite uses this machine's clock")
    skew = diagnostics.clock_skew_s(conn)
    text = f"this machine's clock differs from the database server's by {skew:+.1f} s"
    if abs(skew) > FAIL_SKEW_S:
        return Check("fail", "clock", f"{text}: synchronise both with NTP")
    if abs(skew) > WARN_SKEW_S:
        return Check("warn", "clock", f"{text}: synchronise both with NTP")
    return Check("ok", "clock", f"agrees with the database server's ({skew:+.1f} s)")


def _smtp(settings: Settings) -> Check:
    if not settings.smtp_host:
        return Check("ok", "smtp", "not configured (email actions are off; set HOOKBAY_SMTP_HOST to use them)")
    target = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        with socket.create_connection((settings.smtp_host, settings.smtp_port),
                                      timeout=min(SMTP_CONNECT_TIMEOUT_S, settings.smtp_timeout)):
            pass
    except OSError as e:
        why = e.strerror or type(e).__name__
        return Check("fail", "smtp", f"cannot connect to {target}: {why} (check HOOKBAY_SMTP_HOST and "
                                     "HOOKBAY_SMTP_PORT, and that the mail server accepts this machine)")
    return Check("ok", "smtp", f"{target} accepts connections")


def _disk(settings: Settings) -> Check:
    url = sa.engine.make_url(settings.effective_database_url)
    target = Path(url.database).parent if url.get_backend_name() == "sqlite" and url.database \
        and url.database != ":memory:" else settings.data_dir
    probe = target.resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    text = f"{free / 2**30:.1f} GiB free at {target}"
    if free < FAIL_FREE_BYTES:
        return Check("fail", "disk", f"{text}: free space there or move HOOKBAY_DATA_DIR to a larger disk")
    if free < WARN_FREE_BYTES:
        return Check("warn", "disk", f"{text}: free space soon (writes fail when it runs out)")
    return Check("ok", "disk", text)
