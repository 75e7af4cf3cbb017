"""The ``hookbay`` command line. Every command that prints data takes ``--json`` for scripts.

Management commands talk to the database directly (same ``HOOKBAY_*`` settings as the server), so
they work with the server stopped; a running server sees source changes before a command returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
import structlog
import typer
import yaml
from pydantic import ValidationError

from hookbay.audit import AuditEntry, cli_actor, source_summary
from hookbay.cli.errors import KNOWN_ERRORS, describe_error
from hookbay.errors import BadRequest, HookbayError
from hookbay.ids import request_id_floor
from hookbay.models import SourceConfig, SourceCreate
from hookbay.settings import PUBLIC_URL_META, Settings, get_settings, unknown_settings
from hookbay.store import RequestFilter, Store, open_store
from hookbay.store.deliveries import DeliveryFilter
from hookbay.views import parse_time, request_detail, request_summary, source_out

T = TypeVar("T")

app = typer.Typer(help="hookbay: a self-hosted webhook data collector.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
source_app = typer.Typer(help="Create, inspect and change sources (ingest URLs).", no_args_is_help=True)
token_app = typer.Typer(help="Admin API tokens.", no_args_is_help=True)
app.add_typer(source_app, name="source")
app.add_typer(token_app, name="token")

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
            typer.echo(f"warning: {_unknown_setting_text(name, close)}", err=True)


def _unknown_setting_text(name: str, close: str | None) -> str:
    return f"{name} is not a known setting and is ignored" + (f" (did you mean {close}?)" if close else "")


log = structlog.get_logger("hookbay.cli")


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts")


def _audit(action: str, changes: list[str] | None = None, weakens: list[str] | None = None) -> AuditEntry:
    """An audit entry for a change made here: actor ``cli:<os user>``, from ``cli``."""
    return AuditEntry(action=action, actor=cli_actor(), changes=changes or [], weakens=weakens or [])

# Security options shared by `source create` and `source update`.
OPT_SIGNATURE = typer.Option(None, "--signature",
                                  help="standard|github|stripe|shopify|woocommerce|slack|hmac (none to remove)")
OPT_SIGNATURE_HEADER = typer.Option(None, "--signature-header", help="hmac: header with the signature")
OPT_ALGORITHM = typer.Option(None, "--algorithm", help="hmac: sha1|sha256|sha512")
OPT_ENCODING = typer.Option(None, "--encoding", help="hmac: hex|base64")
OPT_PREFIX = typer.Option(None, "--prefix", help="hmac: text before the digest, e.g. sha256=")
OPT_TOLERANCE = typer.Option(None, "--tolerance", help="Signature timestamp tolerance, seconds (300)")
OPT_ALLOW_IP = typer.Option(None, "--allow-ip", help="Allowed CIDR (repeatable; 'none' clears)")
OPT_REQUIRE_HEADER = typer.Option(None, "--require-header", help="'Name: value' (repeatable)")
OPT_RATE = typer.Option(None, "--rate", help="Rate limit, requests per second (0 removes)")
OPT_BURST = typer.Option(None, "--burst", help="Rate limit burst")
OPT_RETENTION = typer.Option(None, "--retention-days", help="Purge raw bodies after N days (0 keeps forever)")
OPT_ACTIONS = typer.Option(None, "--actions", help="YAML/JSON file with the list of actions ([] removes them)")
OPT_ALLOW_PRIVATE = typer.Option(None, "--allow-private-destinations/--no-allow-private-destinations",
                                 help="Let actions reach loopback/private addresses")
OPT_RELAY = typer.Option(None, "--relay/--no-relay", help="Relay mode: queue accepted requests for `hookbay agent`")
OPT_SOURCE_CLIENT = typer.Option(None, "--client", help="The source's client (needed when clients share its name)")
OPT_FILTER_CLIENT = typer.Option(None, "--client", help="Only this client (and its source, when clients share the "
                                 "--source name)")


def _print_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")


def _fail(e: HookbayError, as_json: bool) -> None:
    """With --json the error also goes to stdout in the API's shape; the one line on stderr comes from main()."""
    if as_json:
        _print_json(e.to_dict())
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


def _open_existing(settings: Settings) -> Store:
    """Open the database the server uses, never a new one: a command run without the server's
    HOOKBAY_DATA_DIR would otherwise create an empty database and work on it unnoticed."""
    path = _sqlite_path(settings)
    if path is not None and not path.is_file():
        raise NoDatabase(f"no hookbay database at {path} (not creating one): {_POINT_ELSEWHERE}")
    store = open_store(settings)
    try:
        with store.read_engine.connect() as conn:
            has_schema = sa.inspect(conn).has_table("alembic_version")
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


async def _with_public_url(store: Store, settings: Settings) -> Settings:
    """Ingest URLs name the server's public base URL (recorded by `serve`), not this shell's
    HOST/PORT; HOOKBAY_PUBLIC_URL still wins."""
    if settings.public_url:
        return settings
    recorded = await store.get_meta(PUBLIC_URL_META)
    return settings.model_copy(update={"public_url": recorded}) if recorded else settings


def _run(fn: Callable[[Store, Settings], Awaitable[T]], as_json: bool = False) -> T:
    settings = get_settings()

    async def main() -> T:
        store = await asyncio.to_thread(_open_existing, settings)
        await asyncio.to_thread(store.migrate)
        await store.start()
        try:
            return await fn(store, await _with_public_url(store, settings))
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except HookbayError as e:
        _fail(e, as_json)
        raise  # unreachable


def _propagate() -> None:
    """Return only once running servers have seen a source change (they check every
    HOOKBAY_SOURCE_CHECK_SECONDS), so the next request meets the new settings."""
    time.sleep(2 * get_settings().source_check_seconds)


def _time(flag: str, value: str | None) -> int | None:
    if not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise BadRequest(f"{flag} {value!r} is not a time: give an ISO-8601 time (2024-05-01T12:00:00Z) "
                         "or a relative one (30s, 15m, 2h, 3d)") from None


def _config(base: dict[str, Any], fmt: str | None, methods: list[str] | None, max_body: int | None,
            idem: str | None, parser: str | None = None, mapping_file: Path | None = None,
            region: str | None = None, sync: bool | None = None, sec: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = dict(base)
    sec = sec or {}
    if sec.get("signature") is not None:
        scheme = sec["signature"]
        if scheme in ("", "none"):
            cfg["signature"] = None
        else:
            sig = dict(cfg.get("signature") or {}) if (cfg.get("signature") or {}).get("scheme") == scheme else {}
            sig["scheme"] = scheme
            cfg["signature"] = sig
    if cfg.get("signature"):
        for flag, key in (("signature_header", "header"), ("algorithm", "algorithm"), ("encoding", "encoding"),
                          ("prefix", "prefix"), ("tolerance", "tolerance_s")):
            if sec.get(flag) is not None:
                cfg["signature"][key] = sec[flag]
    if sec.get("allow_ip"):
        cfg["allow_ips"] = [] if sec["allow_ip"] == ["none"] else list(sec["allow_ip"])
    if sec.get("require_header"):
        hdrs: dict[str, str] = {}
        for item in sec["require_header"]:
            if item == "none":
                continue
            name, sep, value = item.partition(":")
            if not sep:
                typer.echo(f"error: --require-header wants 'Name: value', got {item!r}", err=True)
                raise typer.Exit(2)
            hdrs[name.strip()] = value.strip()
        cfg["required_headers"] = hdrs
    if sec.get("rate") is not None:
        cfg["rate"] = sec["rate"] or None
    if sec.get("burst") is not None:
        cfg["burst"] = sec["burst"] or None
    if sec.get("retention_days") is not None:
        cfg["retention_days"] = sec["retention_days"] or None
    if sec.get("actions") is not None:
        cfg["actions"] = _load_actions(sec["actions"])
    if sec.get("allow_private") is not None:
        cfg["allow_private_destinations"] = sec["allow_private"]
    if sec.get("relay") is not None:
        cfg["relay"] = sec["relay"]
    if parser is not None:
        cfg["parser"] = parser
    if mapping_file is not None:
        from hookbay.parsers.mapping import Mapping, MappingError

        try:
            cfg["mapping"] = Mapping.parse_text(mapping_file.read_text()).to_dict()
        except (OSError, MappingError) as e:
            typer.echo(f"error: {mapping_file}: {e}", err=True)
            raise typer.Exit(2) from None
        cfg.setdefault("parser", "mapping")
    if region is not None:
        cfg["default_region"] = region.upper() or None
    if sync is not None:
        cfg["sync"] = sync
    if fmt is not None:
        cfg["format"] = fmt
    if methods:
        cfg["methods"] = [m.upper() for m in methods]
    if max_body is not None:
        cfg["max_body_bytes"] = max_body
    if idem is not None:
        cfg["idempotency_header"] = idem or None
    model = SourceConfig.model_validate(cfg)
    _check_config(model, "config")
    return model.model_dump()


def _check_config(cfg: SourceConfig, where: str) -> None:
    """The CLI acts as the admin, so only the rules that bind admins too apply (secret names)."""
    from hookbay.containment import check_config

    try:
        check_config(cfg, get_settings(), admin=True, prefix=where)
    except HookbayError as e:
        typer.echo(f"error: {e.message}: " + "; ".join(f"{d['path']}: {d['message']}" for d in e.detail), err=True)
        raise typer.Exit(2) from None


def _load_actions(path: Path) -> list[Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        typer.echo(f"error: {path}: {e}", err=True)
        raise typer.Exit(2) from None
    if isinstance(data, dict) and "actions" in data:
        data = data["actions"]
    if not isinstance(data, list):
        typer.echo(f"error: {path}: expected a list of actions", err=True)
        raise typer.Exit(2)
    return data


def _show_source(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(out)
        return
    typer.echo(f"id:         {out['id']}\nclient:     {out['client_id']}\nname:       {out['name']}")
    typer.echo(f"ingest URL: {out['ingest_url']}\nenabled:    {out['enabled']}")
    typer.echo(f"api key:    {'required' if out['api_key_required'] else 'not required'}")
    typer.echo(f"config:     {orjson.dumps(out['config']).decode()}")
    typer.echo(f"secrets:    {out.get('signing_secrets', 0)} active signing secret(s)")
    if out.get("api_key"):
        typer.echo(f"API key (shown once, store it now): {out['api_key']}")
    if out.get("secret"):
        typer.echo(f"signing secret (shown once, give it to the sender): {out['secret']}")


@app.command()
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
        log.warning("unknown_setting", name=name, did_you_mean=close, message=_unknown_setting_text(name, close))
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


@app.command("worker")
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
        _run(main)
    except KeyboardInterrupt:
        pass


@app.command()
def migrate() -> None:
    """Create or upgrade the schema (serve does this on start too)."""
    settings = get_settings()
    open_store(settings).migrate()
    typer.echo("schema is up to date")


@app.command()
def doctor(as_json: bool = JsonOpt) -> None:
    """Check the database, migrations, settings, SMTP, clock and free disk: one line per check
    (ok/warn/fail) with the fix; exits 1 when a check fails. Creates nothing."""
    from hookbay.cli.doctor import run_checks

    checks = run_checks(os.environ)
    if as_json:
        _print_json([{"status": c.status, "check": c.name, "message": c.message} for c in checks])
    else:
        for c in checks:
            typer.echo(c.line())
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        typer.echo(f"error: {len(failed)} check(s) failed: {', '.join(dict.fromkeys(c.name for c in failed))}",
                   err=True)
        raise typer.Exit(1)


@source_app.command("create")
def source_create(
    name: str = typer.Option(..., help="Display name, unique per client"),
    client: str = typer.Option(..., help="Client (tenant) id"),
    api_key: bool = typer.Option(False, "--api-key", help="Require an API key; it is printed once"),
    fmt: str = typer.Option(None, "--format", help="auto|json|ndjson|xml|csv|form"),
    method: list[str] = typer.Option(None, "--allow-method", help="Allowed method (repeatable), default POST"),
    max_body: int = typer.Option(None, help="Body size limit in bytes (default 1 MiB)"),
    idempotency_header: str = typer.Option(None, help="Extra header naming a delivery id"),
    parser: str = typer.Option(None, "--parser", help="generic|contact|mapping"),
    mapping_file: Path = typer.Option(None, "--mapping", help="Mapping file (YAML or JSON); implies --parser mapping"),
    region: str = typer.Option(None, "--default-region", help="Region for phone numbers without +code, e.g. GB"),
    sync: bool = typer.Option(None, "--sync/--async", help="Parse before answering (as ?wait=1)"),
    signature: str = OPT_SIGNATURE,
    secret: str = typer.Option(None, "--secret", help="The provider's signing secret (generated if absent)"),
    signature_header: str = OPT_SIGNATURE_HEADER,
    algorithm: str = OPT_ALGORITHM,
    encoding: str = OPT_ENCODING,
    prefix: str = OPT_PREFIX,
    tolerance: int = OPT_TOLERANCE,
    allow_ip: list[str] = OPT_ALLOW_IP,
    require_header: list[str] = OPT_REQUIRE_HEADER,
    rate: float = OPT_RATE,
    burst: int = OPT_BURST,
    retention_days: int = OPT_RETENTION,
    actions: Path = OPT_ACTIONS,
    allow_private: bool = OPT_ALLOW_PRIVATE,
    relay: bool = OPT_RELAY,
    disabled: bool = typer.Option(False, "--disabled", help="Create it disabled"),
    as_json: bool = JsonOpt,
) -> None:
    """Create a source and print its secret ingest URL."""
    from hookbay.api.admin import initial_secret

    cfg = _config({}, fmt, method, max_body, idempotency_header, parser, mapping_file, region, sync,
                  dict(signature=signature, signature_header=signature_header, algorithm=algorithm, encoding=encoding,
             prefix=prefix, tolerance=tolerance, allow_ip=allow_ip, require_header=require_header, rate=rate,
             burst=burst, retention_days=retention_days, actions=actions, allow_private=allow_private,
             relay=relay))
    spec = SourceCreate(name=name, client_id=client, config=SourceConfig.model_validate(cfg), secret=secret)
    try:
        first_secret, generated = initial_secret(spec.config, secret)
    except HookbayError as e:
        _fail(e, as_json)

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        summary, _ = source_summary(None, cfg, name=name, enabled=not disabled, api_key="new" if api_key else None)
        row, key = await store.create_source(name=name, client_id=client, config=cfg, enabled=not disabled,
                                             api_key=api_key, secret=first_secret,
                                             audit=_audit("source.create", summary + ["secret: [set]"] * bool(first_secret)))
        return source_out(row, s.base_url, key, secrets=1 if first_secret else 0,
                          secret=first_secret if generated else None).model_dump()

    _show_source(_run(go, as_json), as_json)


@source_app.command("list")
def source_list(client: str = typer.Option(None, help="Only this client"), as_json: bool = JsonOpt) -> None:
    """List sources."""

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        counts = await store.secret_counts()
        return [source_out(r, s.base_url, secrets=counts.get(r["id"], 0)).model_dump()
                for r in await store.list_sources(client)]

    rows = _run(go, as_json)
    if as_json:
        _print_json(rows)
        return
    for r in rows:
        flag = "" if r["enabled"] else "  (disabled)"
        typer.echo(f"{r['id']}  {r['client_id']}/{r['name']}  {r['ingest_url']}  "
                   f"secrets={r['signing_secrets']}{flag}")


@source_app.command("show")
def source_show(ref: str = typer.Argument(..., help="Source id, token or name"), client: str = OPT_SOURCE_CLIENT,
                as_json: bool = JsonOpt) -> None:
    """Show one source."""

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        row = await store.get_source(ref, client)
        return source_out(row, s.base_url, secrets=await store.secret_count(row["id"])).model_dump()

    _show_source(_run(go, as_json), as_json)


@source_app.command("update")
def source_update(
    ref: str = typer.Argument(..., help="Source id, token or name"),
    name: str = typer.Option(None),
    enable: bool = typer.Option(None, "--enable/--disable"),
    fmt: str = typer.Option(None, "--format", help="auto|json|ndjson|xml|csv|form"),
    method: list[str] = typer.Option(None, "--allow-method"),
    max_body: int = typer.Option(None),
    idempotency_header: str = typer.Option(None),
    parser: str = typer.Option(None, "--parser", help="generic|contact|mapping"),
    mapping_file: Path = typer.Option(None, "--mapping", help="New mapping version (YAML or JSON)"),
    region: str = typer.Option(None, "--default-region"),
    sync: bool = typer.Option(None, "--sync/--async"),
    signature: str = OPT_SIGNATURE,
    signature_header: str = OPT_SIGNATURE_HEADER,
    algorithm: str = OPT_ALGORITHM,
    encoding: str = OPT_ENCODING,
    prefix: str = OPT_PREFIX,
    tolerance: int = OPT_TOLERANCE,
    allow_ip: list[str] = OPT_ALLOW_IP,
    require_header: list[str] = OPT_REQUIRE_HEADER,
    rate: float = OPT_RATE,
    burst: int = OPT_BURST,
    retention_days: int = OPT_RETENTION,
    actions: Path = OPT_ACTIONS,
    allow_private: bool = OPT_ALLOW_PRIVATE,
    relay: bool = OPT_RELAY,
    api_key: bool = typer.Option(False, "--api-key", help="Require an API key / issue a new one (printed once)"),
    remove_api_key: bool = typer.Option(False, "--remove-api-key"),
    client: str = OPT_SOURCE_CLIENT,
    as_json: bool = JsonOpt,
) -> None:
    """Change a source; only the options given change."""

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        row = await store.get_source(ref, client)
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = name
        if enable is not None:
            changes["enabled"] = enable
        sec = dict(signature=signature, signature_header=signature_header, algorithm=algorithm, encoding=encoding,
             prefix=prefix, tolerance=tolerance, allow_ip=allow_ip, require_header=require_header, rate=rate,
             burst=burst, retention_days=retention_days, actions=actions, allow_private=allow_private,
             relay=relay)
        if (any(v is not None for v in (fmt, max_body, idempotency_header, parser, mapping_file, region, sync, relay))
                or method or any(v for v in sec.values() if v is not None)):
            changes["config"] = _config(orjson.loads(row["config"]), fmt, method, max_body, idempotency_header,
                                        parser, mapping_file, region, sync, sec)
        summary, weak = source_summary(
            row, changes.get("config"), name=changes.get("name"), enabled=changes.get("enabled"),
            api_key=("rotated" if row["api_key_hash"] else "new") if api_key
            else "removed" if remove_api_key and row["api_key_hash"] else None)
        new, key = await store.update_source(row["id"], changes, rotate_api_key=api_key,
                                             remove_api_key=remove_api_key, audit=_audit("source.update", summary, weak))
        return source_out(new, s.base_url, key, secrets=await store.secret_count(row["id"])).model_dump()

    out = _run(go, as_json)
    _propagate()
    _show_source(out, as_json)


@source_app.command("rotate")
def source_rotate(
    ref: str = typer.Argument(..., help="Source id, token or name"),
    secret: str = typer.Option(None, "--secret", help="The new signing secret (generated if absent)"),
    grace: str = typer.Option("24h", "--grace", help="How long old secrets stay valid: 0, 30m, 24h, 7d"),
    api_key: bool = typer.Option(False, "--api-key", help="Rotate the API key instead (immediately)"),
    client: str = OPT_SOURCE_CLIENT,
    as_json: bool = JsonOpt,
) -> None:
    """Rotate a source's signing secret (old ones valid for --grace) or its API key."""
    from hookbay.signatures import generate_secret

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    g = grace.strip().lower()
    try:
        grace_s = float(g) if g[-1].isdigit() else float(g[:-1]) * units[g[-1]]
    except (KeyError, ValueError, IndexError):
        typer.echo(f"error: bad --grace {grace!r}", err=True)
        raise typer.Exit(2) from None

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        row = await store.get_source(ref, client)
        if api_key:
            if row["api_key_hash"] is None:
                raise BadRequest("This source does not require an API key, so there is none to rotate; "
                                 "to start requiring one, use `hookbay source update SOURCE --api-key`")
            new, key = await store.update_source(row["id"], {}, rotate_api_key=True,
                                                 audit=_audit("api_key.rotate", ["api_key: [changed]"]))
            return source_out(new, s.base_url, key, secrets=await store.secret_count(row["id"])).model_dump()
        cfg = SourceConfig.model_validate(orjson.loads(row["config"]))
        if cfg.signature is None:
            raise BadRequest("This source has no signature scheme; set one with --signature first")
        if secret:
            from hookbay.api.admin import initial_secret

            initial_secret(cfg, secret)
        new_secret = secret or generate_secret(cfg.signature.scheme)
        await store.add_secret(row["id"], new_secret, retire_others_after_s=grace_s,
                               audit=_audit("secret.rotate", ["secret: [changed]", f"old secrets valid for {grace_s:g}s"]))
        return source_out(row, s.base_url, secrets=await store.secret_count(row["id"]),
                          secret=None if secret else new_secret).model_dump()

    out = _run(go, as_json)
    _propagate()
    _show_source(out, as_json)


@source_app.command("delete")
def source_delete(ref: str = typer.Argument(..., help="Source id, token or name"), client: str = OPT_SOURCE_CLIENT,
                  as_json: bool = JsonOpt) -> None:
    """Delete a source (its stored requests stay in the log)."""

    async def go(store: Store, s: Settings) -> str:
        row = await store.get_source(ref, client)
        await store.delete_source(row["id"], audit=_audit("source.delete", [f"name: {orjson.dumps(row['name']).decode()}"]))
        return str(row["id"])

    sid = _run(go, as_json)
    _propagate()
    if as_json:
        _print_json({"deleted": sid})
    else:
        typer.echo(f"deleted {sid}")


@source_app.command("apply")
def source_apply(
    file: Path = typer.Argument(..., exists=True, readable=True),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and change nothing"),
    prune: bool = typer.Option(False, "--prune", help="Delete sources of the file's clients that it does not list"),
    as_json: bool = JsonOpt,
) -> None:
    """Declare sources in YAML. Prints a plan (created / changed with a field diff / unchanged),
    then applies it; idempotent. A change that weakens a source's checks (signature, IP allowlist,
    required header, methods, API key, outbound guard) is applied only when the file names the
    field explicitly (``signature: null``); otherwise nothing is applied. Sources not in the file
    stay unless ``--prune``. A ``secret`` in the file becomes the source's only signing secret
    when it differs."""
    from hookbay.api.admin import initial_secret
    from hookbay.changes import config_diff, weakenings

    try:
        doc = yaml.safe_load(file.read_text()) or {}
        items = doc.get("sources", []) if isinstance(doc, dict) else []
        specs = [SourceCreate.model_validate(i) for i in items]
    except (OSError, yaml.YAMLError, ValidationError) as e:
        lines = describe_error(e) if isinstance(e, (OSError, ValidationError)) else [" ".join(str(e).split())]
        typer.echo(f"error: {file}: " + "; ".join(lines), err=True)
        raise typer.Exit(2) from None
    for i, spec in enumerate(specs):
        _check_config(spec.config, f"sources.{i}.config")

    async def plan(store: Store) -> list[dict[str, Any]]:
        existing = {(r["client_id"], r["name"]): r for r in await store.list_sources()}
        secrets = await store.source_secrets()
        steps: list[dict[str, Any]] = []
        for spec in specs:
            cur = existing.pop((spec.client_id, spec.name), None)
            step: dict[str, Any] = {"client_id": spec.client_id, "name": spec.name, "spec": spec, "cur": cur,
                                    "changes": [], "weakens": [], "refused": []}
            if cur is None:
                step["action"] = "create"
                steps.append(step)
                continue
            old_cfg = orjson.loads(cur["config"])
            new_cfg = spec.config.model_dump()
            step["changes"] = config_diff(old_cfg, new_cfg)
            if bool(cur["enabled"]) != spec.enabled:
                step["changes"].append(f"enabled: {bool(cur['enabled'])} -> {spec.enabled}")
            want_key = spec.api_key and cur["api_key_hash"] is None
            drop_key = not spec.api_key and cur["api_key_hash"] is not None
            if want_key:
                step["changes"].append("api_key: [new key]")
            weak = weakenings(SourceConfig.model_validate(old_cfg), spec.config)
            if drop_key:
                step["changes"].append("api_key: required -> not required")
                weak["api_key"] = "API key requirement removed"
            explicit = set(spec.config.model_fields_set) | ({"api_key"} & set(spec.model_fields_set))
            step["weakens"] = [f"{f}: {why}" for f, why in sorted(weak.items()) if f in explicit]
            step["refused"] = [f"{f}: {why} (name `{f}` explicitly in the file to do this on purpose)"
                               for f, why in sorted(weak.items()) if f not in explicit]
            if spec.secret and spec.config.signature is not None and \
                    spec.secret not in {sec for sec, _ in secrets.get(cur["id"], [])}:
                step["changes"].append("secret: [changed]")
            step["action"] = "change" if step["changes"] else "unchanged"
            steps.append(step)
        if prune:
            clients = {spec.client_id for spec in specs}
            for (client, name), row in sorted(existing.items()):
                if client in clients:
                    steps.append({"client_id": client, "name": name, "action": "delete", "cur": row,
                                  "changes": [], "weakens": [], "refused": []})
        return steps

    async def apply(store: Store, s: Settings, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for step in steps:
            spec, cur = step.get("spec"), step["cur"]
            key = shown_secret = None
            if step["action"] == "delete":
                await store.delete_source(cur["id"], audit=_audit(
                    "source.apply.delete", [f"name: {orjson.dumps(cur['name']).decode()}", "pruned: not in the file"]))
                out.append({"action": "deleted", "client_id": step["client_id"], "name": step["name"],
                            "id": cur["id"]})
                continue
            assert spec is not None
            if cur is None:
                first, generated = initial_secret(spec.config, spec.secret)
                summary, _ = source_summary(None, spec.config.model_dump(), name=spec.name, enabled=spec.enabled,
                                            api_key="new" if spec.api_key else None)
                row, key = await store.create_source(name=spec.name, client_id=spec.client_id,
                                                     config=spec.config.model_dump(), enabled=spec.enabled,
                                                     api_key=spec.api_key, secret=first, audit=_audit(
                                                         "source.apply.create", summary + ["secret: [set]"] * bool(first)))
                shown_secret = first if generated else None
                action = "created"
            elif step["action"] == "change":
                changes: dict[str, Any] = {"config": spec.config.model_dump(), "enabled": spec.enabled}
                row, key = await store.update_source(
                    cur["id"], changes, rotate_api_key=spec.api_key and cur["api_key_hash"] is None,
                    remove_api_key=not spec.api_key and cur["api_key_hash"] is not None,
                    audit=_audit("source.apply.update", step["changes"], step["weakens"]))
                if spec.secret and any(c.startswith("secret:") for c in step["changes"]):
                    initial_secret(spec.config, spec.secret)
                    await store.add_secret(cur["id"], spec.secret, retire_others_after_s=0)
                if step["weakens"]:
                    log.warning("source_checks_weakened", source_id=cur["id"], client_id=cur["client_id"],
                                actor=f"cli:{_os_user()}", changes=step["weakens"])
                action = "updated"
            else:
                row, action = cur, "unchanged"
            o = source_out(row, s.base_url, key, secret=shown_secret,
                           secrets=await store.secret_count(row["id"])).model_dump()
            o["action"] = action
            o["changes"], o["weakens"] = step["changes"], step["weakens"]
            out.append(o)
        return out

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        steps = await plan(store)
        refused = [st for st in steps if st["refused"]]
        result: dict[str, Any] = {"plan": [
            {k: st[k] for k in ("action", "client_id", "name", "changes", "weakens", "refused")} for st in steps]}
        if dry_run or refused:
            result["applied"] = False
            return result
        result["applied"] = True
        result["results"] = await apply(store, s, steps)
        return result

    result = _run(go, as_json)
    if result["applied"]:
        _propagate()
    if as_json:
        _print_json(result)
    else:
        for st in result["plan"]:
            typer.echo(f"{st['action']:9}  {st['client_id']}/{st['name']}")
            for line in st["changes"]:
                typer.echo(f"           {line}")
            for line in st["weakens"]:
                typer.echo(f"           weakens: {line}")
            for line in st["refused"]:
                typer.echo(f"           REFUSED: {line}")
        for r in result.get("results", []):
            if r.get("ingest_url") and r["action"] != "unchanged":
                typer.echo(f"{r['action']:9}  {r['client_id']}/{r['name']}  {r['ingest_url']}")
            if r.get("api_key"):
                typer.echo(f"           API key (shown once): {r['api_key']}")
            if r.get("secret"):
                typer.echo(f"           signing secret (shown once): {r['secret']}")
    if any(st["refused"] for st in result["plan"]):
        typer.echo("error: nothing applied: the file would silently weaken a source's checks (see REFUSED above)",
                   err=True)
        raise typer.Exit(1)
    if dry_run and not as_json:
        typer.echo("dry run: nothing applied")


requests_app = typer.Typer(help="Search and follow the request log.", invoke_without_command=True)
app.add_typer(requests_app, name="requests")


def _fmt_row(r: dict[str, Any]) -> str:
    return (f"{r['received_at']}  {r['id']}  {r['method']:5} {r['status']}  {r['verdict']:9} {r['state']:9} "
            f"{r['rule'] or '-':10} {r['body_size']}B  {r['source_id']}")


@requests_app.callback()
def requests_cmd(
    ctx: typer.Context,
    source: str = typer.Option(None, help="Source id, token or name"),
    since: str = typer.Option(None, help="ISO time or relative (15m, 2h, 3d)"),
    until: str = typer.Option(None),
    verdict: str = typer.Option(None, help="accepted|rejected|duplicate"),
    state: str = typer.Option(None, help="pending|processed|failed|rejected|duplicate"),
    q: str = typer.Option(None, help="Text in headers or body"),
    limit: int = typer.Option(50),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new requests"),
    client: str = OPT_FILTER_CLIENT,
    as_json: bool = JsonOpt,
) -> None:
    """List requests, newest first; with --follow, print new ones as they arrive (oldest first)."""
    if ctx.invoked_subcommand is not None:
        return

    def emit(rows: list[dict[str, Any]]) -> None:
        for r in rows:
            d = request_summary(r).model_dump()
            sys.stdout.write((orjson.dumps(d).decode() if as_json else _fmt_row(d)) + "\n")
        sys.stdout.flush()

    async def go(store: Store, s: Settings) -> None:
        source_id = (await store.get_source(source, client))["id"] if source else None
        f = RequestFilter(source_id=source_id, client_id=client, since_us=_time("--since", since),
                          until_us=_time("--until", until), verdict=verdict, state=state,
                          text=q, limit=limit)
        rows = await store.search_requests(f)
        if not follow:
            if as_json:
                _print_json([request_summary(r).model_dump() for r in rows])
            else:
                emit(rows)
            return
        rows.reverse()
        emit(rows)
        last = rows[-1]["id"] if rows else request_id_floor(int(time.time() * 1000))
        while True:
            f.after_id, f.limit = last, 500
            new = await store.search_requests(f)
            if new:
                emit(new)
                last = new[-1]["id"]
            else:
                await asyncio.sleep(0.5)

    try:
        _run(go, as_json)
    except KeyboardInterrupt:
        pass


@requests_app.command("export")
def requests_export(
    source: str = typer.Option(None, help="Source id, token or name"),
    since: str = typer.Option(None, help="ISO time or relative (15m, 2h, 3d)"),
    until: str = typer.Option(None),
    verdict: str = typer.Option(None), state: str = typer.Option(None),
    out: Path = typer.Option(None, "--out", help="Write to this file instead of stdout"),
    client: str = OPT_FILTER_CLIENT,
) -> None:
    """Export matching requests as NDJSON, oldest first: one line per request with headers, the
    exact body (base64, and as text when it is UTF-8), receipt and records."""

    async def go(store: Store, s: Settings) -> int:
        source_id = (await store.get_source(source, client))["id"] if source else None
        f = RequestFilter(source_id=source_id, client_id=client, since_us=_time("--since", since),
                          until_us=_time("--until", until), verdict=verdict, state=state,
                          after_id="req_", limit=500)
        sink = out.open("wb") if out else sys.stdout.buffer
        n = 0
        try:
            while True:
                page = await store.search_requests(f)
                if not page:
                    return n
                ids = [r["id"] for r in page]
                full = await store.load_requests(ids)
                recs = await store.records_for(ids)
                for rid in ids:
                    sink.write(orjson.dumps(request_detail(full[rid], recs[rid]).model_dump()) + b"\n")
                    n += 1
                f.after_id = ids[-1]
        finally:
            if out:
                sink.close()
            else:
                sink.flush()

    n = _run(go)
    if out:
        typer.echo(f"exported {n} request(s) to {out}", err=True)


@requests_app.command("show")
def requests_show(request_id: str, as_json: bool = JsonOpt) -> None:
    """Show one request with headers, body, receipt and records."""

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        row = await store.get_request(request_id)
        recs = await store.records_for([request_id])
        return request_detail(row, recs[request_id]).model_dump()

    d = _run(go, as_json)
    if as_json:
        _print_json(d)
        return
    typer.echo(_fmt_row(d))
    typer.echo(f"{d['method']} {d['path']}{'?' + d['query'] if d['query'] else ''}  from {d['peer']}")
    for k, v in d["headers"]:
        typer.echo(f"  {k}: {v}")
    typer.echo("")
    typer.echo(d["body"] if d["body"] is not None else f"<{d['body_size']} bytes, not UTF-8; see --json>")
    typer.echo("")
    typer.echo("receipt: " + orjson.dumps(d["receipt"]).decode())
    for rec in d["records"]:
        typer.echo("record:  " + orjson.dumps(rec).decode())


@token_app.command("list")
def token_list(as_json: bool = JsonOpt) -> None:
    """List API tokens (never their values)."""

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        return await store.list_tokens()

    rows = _run(go, as_json)
    if as_json:
        _print_json(rows)
        return
    for t in rows:
        typer.echo(f"{t['id']}  {t['name']}  client={t['client_id'] or '(admin)'}")


@token_app.command("revoke")
def token_revoke(token_id: str, as_json: bool = JsonOpt) -> None:
    """Revoke an API token at once."""

    async def go(store: Store, s: Settings) -> None:
        await store.revoke_token(token_id, audit=_audit("token.revoke"))

    _run(go, as_json)
    if as_json:
        _print_json({"revoked": token_id})
    else:
        typer.echo(f"revoked {token_id}")


@token_app.command("rotate-admin")
def token_rotate_admin(as_json: bool = JsonOpt) -> None:
    """Replace the generated admin token (printed once); a running server switches within seconds."""
    import secrets as _secrets

    from hookbay.store import hash_secret

    if get_settings().admin_token:
        typer.echo("error: the admin token comes from HOOKBAY_ADMIN_TOKEN; change it there", err=True)
        raise typer.Exit(2)
    tok = "hba_" + _secrets.token_urlsafe(32)

    async def go(store: Store, s: Settings) -> None:
        await store.set_meta("admin_token_hash", hash_secret(tok))
        await store.record_audit(_audit("token.rotate_admin", ["admin token: [changed]"]))

    _run(go, as_json)
    if as_json:
        _print_json({"admin_token": tok})
    else:
        typer.echo(f"new admin token (shown once, store it now): {tok}")


@token_app.command("create")
def token_create(
    name: str = typer.Option(...), client: str = typer.Option(None, help="Scope the token to one client"),
    as_json: bool = JsonOpt,
) -> None:
    """Create an API token (printed once)."""
    from hookbay.api.admin import create_token_row

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        return (await create_token_row(store, name, client, audit=_audit("token.create"))).model_dump()

    out = _run(go, as_json)
    if as_json:
        _print_json(out)
    else:
        typer.echo(f"{out['id']}  token (shown once): {out['token']}")


profiles_app = typer.Typer(help="Customer profiles: find, show, export, erase.", no_args_is_help=True)
app.add_typer(profiles_app, name="profiles")


@profiles_app.command("find")
def profiles_find(
    email: str = typer.Option(None), phone: str = typer.Option(None), client: str = typer.Option(None),
    as_json: bool = JsonOpt,
) -> None:
    """Find profiles by email or phone (normalised the same way as incoming contacts)."""
    from hookbay.profiles import lookup_email, lookup_phone, profile_view

    if not email and not phone:
        typer.echo("error: give --email or --phone", err=True)
        raise typer.Exit(2)

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        rows = await store.find_profiles(client, email=lookup_email(email) if email else None,
                                         phone=lookup_phone(phone) if phone else None)
        return [profile_view(await store.get_profile(r["id"])) for r in rows]

    found = _run(go, as_json)
    if as_json:
        _print_json(found)
        return
    for p in found:
        typer.echo(f"{p['id']}  {p['client_id']}  {p['email'] or '-'}  {p['phone'] or '-'}")


@profiles_app.command("show")
def profiles_show(profile_id: str, as_json: bool = JsonOpt) -> None:
    """Show a profile: each field with the request that set it, current consent and the ledger."""
    from hookbay.profiles import profile_view

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        return profile_view(await store.get_profile(profile_id))

    p = _run(go, as_json)
    if as_json:
        _print_json(p)
        return
    typer.echo(f"{p['id']}  client {p['client_id']}  updated {p['updated_at']}")
    for name, f in p["fields"].items():
        typer.echo(f"  {name:14} {orjson.dumps(f['value']).decode():40} {f['set_at']}  {f['request_id']}")
    for ch, c in p["consent"].items():
        typer.echo(f"  consent {ch:6} {'opt-in' if c['granted'] else 'opt-out'}  {c['occurred_at']}  {c['request_id']}")
    typer.echo(f"  ledger: {len(p['ledger'])} events; requests: {len(p['request_ids'])}")


@profiles_app.command("export")
def profiles_export(profile_id: str, out: Path = typer.Option(None, "--out", help="Write to this file")) -> None:
    """Export everything held about one profile as JSON."""
    from hookbay.api.admin import export_profile_data

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        return await export_profile_data(store, profile_id, None)

    data = orjson.dumps(_run(go), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    if out:
        out.write_bytes(data)
        typer.echo(f"wrote {out}")
    else:
        sys.stdout.write(data.decode() + "\n")


@profiles_app.command("erase")
def profiles_erase(
    profile_id: str, yes: bool = typer.Option(False, "--yes", help="Do not ask"), as_json: bool = JsonOpt,
) -> None:
    """Erase a profile, its consent ledger, its records and its requests' raw bodies (logged)."""
    if not yes and not typer.confirm(f"Erase {profile_id} and the raw bodies of its requests?"):
        raise typer.Exit(1)

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        return await store.erase_profile(profile_id, None, actor="cli", audit=_audit("profile.erase"))

    res = _run(go, as_json)
    if as_json:
        _print_json(res)
    else:
        typer.echo(" ".join(f"{k}={v}" for k, v in res.items()))


@app.command("replay")
def replay_cmd(
    request_id: str = typer.Argument(None, help="One request; or filter with the options"),
    source: str = typer.Option(None), failed: bool = typer.Option(False, "--failed", help="Only failed requests"),
    since: str = typer.Option(None), until: str = typer.Option(None), limit: int = typer.Option(1000),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print a diff of old and new records; change nothing"),
    client: str = OPT_FILTER_CLIENT,
    as_json: bool = JsonOpt,
) -> None:
    """Re-parse stored requests with the source's current parser and mapping version."""
    from hookbay.processing.replay import replay
    from hookbay.store.sources import SourceCache

    if not request_id and not source and not failed:
        typer.echo("error: give a request id, --source or --failed", err=True)
        raise typer.Exit(2)

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        cache = SourceCache(store, s.max_body_bytes)
        await cache.reload()
        if request_id:
            await store.get_request(request_id)
            return await replay(store, cache, request_ids=[request_id], dry_run=dry_run)
        source_id = (await store.get_source(source, client))["id"] if source else None
        flt = RequestFilter(source_id=source_id, client_id=client, state="failed" if failed else None, limit=limit,
                            since_us=_time("--since", since),
                            until_us=_time("--until", until))
        return await replay(store, cache, flt=flt, dry_run=dry_run)

    items = _run(go, as_json)
    if as_json:
        _print_json({"dry_run": dry_run, "count": len(items), "items": items})
        return
    for it in items:
        if "skipped" in it:
            typer.echo(f"{it['request_id']}: skipped ({it['skipped']})")
            continue
        typer.echo(f"{it['request_id']}: {it['old_state']} -> {it['new_state']}"
                   f"{'' if it['changed'] else ' (unchanged)'}")
        if dry_run and it["diff"]:
            typer.echo(it["diff"])
    typer.echo(f"{len(items)} request(s) {'would be ' if dry_run else ''}replayed")


@app.command("purge")
def purge_cmd(dry_run: bool = typer.Option(False, "--dry-run", help="Count only"), as_json: bool = JsonOpt) -> None:
    """Purge raw bodies older than each source's retention_days, and relay messages acked longer
    ago than HOOKBAY_RELAY_ACKED_RETENTION_SECONDS, now (serve also does both hourly)."""
    from hookbay.server.app import prune_relay, purge_expired
    from hookbay.store.sources import SourceCache

    async def go(store: Store, s: Settings) -> tuple[dict[str, int], int]:
        cache = SourceCache(store, s.max_body_bytes)
        await cache.reload()
        return await purge_expired(store, cache, dry_run=dry_run), await prune_relay(store, s, dry_run=dry_run)

    counts, relay = _run(go, as_json)
    if as_json:
        _print_json({"dry_run": dry_run, "bodies": counts, "relay_acked": relay})
    else:
        verb = "would purge" if dry_run else "purged"
        typer.echo(f"{verb} {sum(counts.values())} raw bodies across {len(counts)} source(s) with retention, "
                   f"and {relay} acked relay message(s)")


keys_app = typer.Typer(help="Encryption keys for data at rest.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("generate")
def keys_generate(kid: str = typer.Option("k1", help="Key id")) -> None:
    """Print a new key entry for HOOKBAY_ENCRYPTION_KEY (put it first; keep old ones after it)."""
    from hookbay.crypto import generate_key

    typer.echo(f"{kid}:{generate_key()}")


@keys_app.command("rotate")
def keys_rotate(batch: int = typer.Option(500, help="Rows per transaction"), as_json: bool = JsonOpt) -> None:
    """Re-encrypt stored bodies, headers and secrets with the first (active) key, batch by batch,
    while the server runs. Afterwards older keys can be removed from HOOKBAY_ENCRYPTION_KEY."""

    async def go(store: Store, s: Settings) -> dict[str, int]:
        return await store.reencrypt(batch, audit=_audit("keys.reencrypt"))

    res = _run(go, as_json)
    if as_json:
        _print_json(res)
    else:
        typer.echo(f"re-encrypted {res['requests']} request(s) and {res['secrets']} secret(s)")


@app.command("audit")
def audit_cmd(
    since: str = typer.Option(None, "--since", help="ISO-8601 time or relative (15m, 2h, 3d)"),
    client: str = typer.Option(None, "--client", help="Only this client's entries"),
    limit: int = typer.Option(100, "--limit", min=1, help="Most entries, newest first"),
    as_json: bool = JsonOpt,
) -> None:
    """Show the audit log: who changed which source, secret, key or token, what and from where."""
    from hookbay.audit import entry_view

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        rows = await store.list_audit(client, since_us=_time("--since", since), limit=limit)
        return [entry_view(r) for r in rows]

    rows = _run(go, as_json)
    if as_json:
        _print_json(rows)
        return
    for e in rows:
        who = e["actor"] + (f" ({e['token_id']})" if e["token_id"] else "")
        typer.echo(f"{e['at']}  {e['action']:20} {e['target'] or '-'}  client={e['client_id'] or '-'}  "
                   f"by {who} from {e['peer'] or '-'}")
        for line in e["changes"]:
            typer.echo(f"    {line}")
        for line in e["weakens"]:
            typer.echo(f"    WEAKENS: {line}")


import hookbay.cli.alerts  # noqa: E402, F401  (registers `alerts`)
import hookbay.cli.orders  # noqa: E402, F401  (registers `orders`)
import hookbay.cli.providers  # noqa: E402, F401  (registers `providers`)
import hookbay.cli.relay  # noqa: E402, F401  (registers `agent`, `source relay-token`, `source relay-status`)


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



deliveries_app = typer.Typer(help="Action deliveries and dead letters.", no_args_is_help=True)
app.add_typer(deliveries_app, name="deliveries")


def _delivery_filter(store: Store, source: str | None, since: str | None, until: str | None,
                     client: str | None = None, **eq: Any) -> Awaitable[DeliveryFilter]:
    async def build() -> DeliveryFilter:
        source_id = (await store.get_source(source, client))["id"] if source else None
        return DeliveryFilter(source_id=source_id, client_id=client, since_us=_time("--since", since), until_us=_time("--until", until),
                              **eq)

    return build()


@deliveries_app.command("list")
def deliveries_list(
    source: str = typer.Option(None, help="Source id, token or name"),
    state: str = typer.Option(None, help="pending|running|succeeded|dead|skipped (dead = dead letters)"),
    action: str = typer.Option(None, help="email|mailchimp|forward"),
    request: str = typer.Option(None, help="Only this request's deliveries"),
    error: str = typer.Option(None, help="Text in the last error"),
    since: str = typer.Option(None, help="ISO time or relative (15m, 2h, 3d)"),
    until: str = typer.Option(None),
    limit: int = typer.Option(50),
    client: str = OPT_FILTER_CLIENT,
    as_json: bool = JsonOpt,
) -> None:
    """List deliveries, newest first."""
    from hookbay.api.deliveries import delivery_out

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        f = await _delivery_filter(store, source, since, until, client, state=state, action_type=action,
                                   request_id=request, error=error, limit=limit)
        return [delivery_out(r) for r in await store.list_deliveries(f)]

    rows = _run(go, as_json)
    if as_json:
        _print_json(rows)
        return
    for d in rows:
        typer.echo(f"{d['created_at']}  {d['id']}  {d['action_type']:9} {d['state']:9} tries={d['attempts']} "
                   f"{d['last_status'] or '-'}  {d['destination']}  {d['last_error'] or ''}")


@deliveries_app.command("show")
def deliveries_show(delivery_id: str, as_json: bool = JsonOpt) -> None:
    """Show one delivery with every attempt."""
    from hookbay.api.deliveries import delivery_detail

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        return delivery_detail(await store.get_delivery(delivery_id))

    d = _run(go, as_json)
    if as_json:
        _print_json(d)
        return
    typer.echo(f"{d['id']}  {d['action_type']} {d['action_name']!r} -> {d['destination']}  state={d['state']}")
    typer.echo(f"request {d['request_id']} record {d['record_index']}  next attempt: {d['next_attempt_at'] or '-'}")
    for a in d["attempt_log"]:
        typer.echo(f"  #{a['attempt']} {a['started_at']}  {a['outcome']:7} {a['status'] or '-'}  "
                   f"{a['latency_ms']} ms  {a['error'] or ''}  {(a['response_excerpt'] or '')[:120]}")


@deliveries_app.command("retry")
def deliveries_retry(
    delivery_ids: list[str] = typer.Argument(None, help="Deliveries to run again (any finished state)"),
    source: str = typer.Option(None, help="Dead letters of this source"),
    action: str = typer.Option(None, help="Dead letters of this action type"),
    error: str = typer.Option(None, help="Dead letters whose last error contains this text"),
    since: str = typer.Option(None), until: str = typer.Option(None),
    all_dead: bool = typer.Option(False, "--all", help="Every dead letter (when no other filter is given)"),
    client: str = OPT_FILTER_CLIENT,
    as_json: bool = JsonOpt,
) -> None:
    """Queue dead letters again, one by one (ids) or in bulk by filter, with a fresh retry schedule."""
    if not delivery_ids and not any((source, action, error, since, until, client, all_dead)):
        typer.echo("error: give delivery ids, a filter (--source/--action/--error/--since/--until/--client) or --all",
                   err=True)
        raise typer.Exit(2)

    async def go(store: Store, s: Settings) -> list[str]:
        if delivery_ids:
            for d in delivery_ids:
                await store.get_delivery(d)  # an unknown id is an error, not "queued 0"
            return await store.retry_deliveries(DeliveryFilter(), ids=list(delivery_ids))
        f = await _delivery_filter(store, source, since, until, client, action_type=action, error=error)
        return await store.retry_deliveries(f)

    ids = _run(go, as_json)
    if as_json:
        _print_json({"count": len(ids), "ids": ids})
    else:
        typer.echo(f"queued {len(ids)} deliver{'y' if len(ids) == 1 else 'ies'} again")
