"""What every command group shares: --json and --client options, opening the server's database,
running a command's async body against it, printing, and audit entries for CLI changes."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
import structlog
import typer

from hookbay.audit import AuditEntry, cli_actor
from hookbay.errors import BadRequest, HookbayError
from hookbay.ops import diagnostics
from hookbay.settings import PUBLIC_URL_META, Settings, get_settings
from hookbay.store import Store, open_store
from hookbay.views import parse_time

T = TypeVar("T")
Lines = str | Iterable[str]  # what a command prints without --json: one line or several

log = structlog.get_logger("hookbay.cli")

JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts")
OPT_SOURCE_CLIENT = typer.Option(None, "--client", help="The source's client (needed when clients share its name)")
OPT_FILTER_CLIENT = typer.Option(None, "--client", help="Only this client (and its source, when clients share the "
                                 "--source name)")


def unknown_setting_text(name: str, close: str | None) -> str:
    return f"{name} is not a known setting and is ignored" + (f" (did you mean {close}?)" if close else "")


def os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def audit_entry(action: str, changes: list[str] | None = None, weakens: list[str] | None = None) -> AuditEntry:
    """An audit entry for a change made here: actor ``cli:<os user>``, from ``cli``."""
    return AuditEntry(action=action, actor=cli_actor(), changes=changes or [], weakens=weakens or [])


def print_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")


def fail(e: HookbayError, as_json: bool) -> None:
    """With --json the error also goes to stdout in the API's shape; the one line on stderr comes from main()."""
    if as_json:
        print_json(e.to_dict())
    raise e


class NoDatabase(HookbayError):
    code = "no_database"
    message = "No hookbay database here"


_POINT_ELSEWHERE = ("point to the server's with HOOKBAY_DATA_DIR or HOOKBAY_DATABASE_URL (or --data-dir / "
                    "--database-url), or create one with `hookbay migrate`")


def _db_where(url: sa.engine.URL) -> str:
    """The database as a user recognises it, without the password."""
    if url.get_backend_name() == "sqlite":
        return str(url.database or ":memory:")
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def _sqlite_path(settings: Settings) -> Path | None:
    url = sa.engine.make_url(settings.effective_database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:" \
            or url.database.startswith("file:"):
        return None
    return Path(url.database)


def open_existing(settings: Settings) -> Store:
    """Open the database the server uses, never a new one: a command run without the server's
    HOOKBAY_DATA_DIR would otherwise create an empty database and work on it unnoticed."""
    path = _sqlite_path(settings)
    if path is not None and not path.is_file():
        raise NoDatabase(f"no hookbay database at {path} (not creating one): {_POINT_ELSEWHERE}")
    store = open_store(settings)
    try:
        with store.read_engine.connect() as conn:
            has_schema = diagnostics.has_schema(conn)
    except BaseException:
        store.read_engine.dispose()
        store.write_engine.dispose()
        raise
    if not has_schema:
        store.read_engine.dispose()
        store.write_engine.dispose()
        where = _db_where(sa.engine.make_url(settings.effective_database_url))
        raise NoDatabase(f"the database {where} has no hookbay schema (not creating one): {_POINT_ELSEWHERE}")
    return store


async def with_public_url(store: Store, settings: Settings) -> Settings:
    """Ingest URLs name the server's public base URL (recorded by `serve`), not this shell's
    HOST/PORT; HOOKBAY_PUBLIC_URL still wins."""
    if settings.public_url:
        return settings
    recorded = await store.get_meta(PUBLIC_URL_META)
    return settings.model_copy(update={"public_url": recorded}) if recorded else settings


def run(fn: Callable[[Store, Settings], Awaitable[T]], as_json: bool = False) -> T:
    """Run ``fn`` against the server's existing database; a HookbayError it raises also goes to
    stdout in the API's shape with --json."""
    settings = get_settings()

    async def main() -> T:
        store = await asyncio.to_thread(open_existing, settings)
        await asyncio.to_thread(store.migrate)
        await store.start()
        try:
            return await fn(store, await with_public_url(store, settings))
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except HookbayError as e:
        fail(e, as_json)
        raise  # unreachable


def run_and_print(fn: Callable[[Store, Settings], Awaitable[T]], as_json: bool, text: Callable[[T], Lines],
                  json: Callable[[T], Any] | None = None, wait_for_servers: bool = False) -> T:
    """What most commands do: run ``fn`` against the database, then print its result (see ``show``).
    ``wait_for_servers`` returns only once running servers have seen the source change it made."""
    out = run(fn, as_json)
    if wait_for_servers:
        propagate()
    show(out, as_json, text, json)
    return out


def show(out: T, as_json: bool, text: Callable[[T], Lines], json: Callable[[T], Any] | None = None) -> None:
    """With --json, ``out`` as JSON (shaped by ``json`` when given), else the lines ``text`` makes of it."""
    if as_json:
        print_json(out if json is None else json(out))
        return
    lines = text(out)
    for line in [lines] if isinstance(lines, str) else lines:
        typer.echo(line)


def propagate() -> None:
    """Return only once running servers have seen a source change (they check every
    HOOKBAY_SOURCE_CHECK_SECONDS), so the next request meets the new settings."""
    time.sleep(2 * get_settings().source_check_seconds)


def time_option(flag: str, value: str | None) -> int | None:
    """A --since/--until value as microseconds, or a BadRequest naming the flag."""
    if not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise BadRequest(f"{flag} {value!r} is not a time: give an ISO-8601 time (2024-05-01T12:00:00Z) "
                         "or a relative one (30s, 15m, 2h, 3d)") from None

