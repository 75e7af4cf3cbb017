"""The in-memory source table: the ingest path looks tokens up here, never in the database.

Any process that edits a source bumps the ``sources_rev`` marker in the same transaction (and on
PostgreSQL sends NOTIFY on ``hookbay_sources``). Running servers pick the change up within
``check_seconds``: on PostgreSQL a dedicated connection LISTENs; on SQLite a dedicated connection
polls ``PRAGMA data_version`` (free unless something committed). An unknown token triggers the same
check before its 404, shared by concurrent misses and at most one per ``check_seconds``, so a source
created a moment ago is found and a flood of bad tokens costs the database at most that. Known tokens
never cost a query. The admin API reloads at once after its own edits.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.engine import make_url

from hookbay.models import SourceConfig
from hookbay.netaddr import Network, parse_networks
from hookbay.senders import BASE_ALLOW_HEADERS, Answer, HandshakeConfig, KeySpec, compile_answer, compile_key
from hookbay.store.dialects import PostgresDialect
from hookbay.store.errors import describe
from hookbay.store.interface import StoreInterface
from hookbay.store.source_rows import StoredSource

if TYPE_CHECKING:  # imported when first needed: most sources use neither
    from hookbay.parsers.mapping import Mapping
    from hookbay.signatures import SignatureSpec

CHANNEL = "hookbay_sources"

log = structlog.get_logger("hookbay.sources")


@dataclass(slots=True, frozen=True)
class Edge:
    """What a source's browser, dedupe, answer and handshake settings compile to."""

    key: KeySpec | None = None
    origins: frozenset[str] = frozenset()
    any_origin: bool = False
    allow_headers: tuple[str, ...] = ()
    redirect_url: str | None = None
    rate_per_ip: float | None = None
    burst_per_ip: float = 1.0
    honeypot: str | None = None
    answer: Answer | None = None
    handshake: HandshakeConfig | None = None

    @property
    def needs_doc(self) -> bool:
        """Whether ingest parses the body (bounded, off the loop when large) before the commit."""
        return (self.honeypot is not None or (self.key is not None and self.key.expression is not None)
                or (self.handshake is not None and self.handshake.type in ("slack", "zoom")))


def build_edge(cfg: SourceConfig) -> Edge | None:
    if not (cfg.idempotency_key or cfg.allowed_origins or cfg.redirect_url or cfg.rate_per_ip
            or cfg.honeypot_field or cfg.response or cfg.handshake):
        return None
    extra = [h.lower() for h in cfg.required_headers]
    key = compile_key(cfg.idempotency_key)
    if key is not None and key.header is not None:
        extra.append(key.header.decode("latin-1"))
    if cfg.idempotency_header:
        extra.append(cfg.idempotency_header.lower())
    return Edge(
        key=key,
        origins=frozenset(o for o in cfg.allowed_origins if o != "*"),
        any_origin="*" in cfg.allowed_origins,
        allow_headers=tuple(dict.fromkeys([*BASE_ALLOW_HEADERS, *extra])),
        redirect_url=cfg.redirect_url,
        rate_per_ip=cfg.rate_per_ip,
        burst_per_ip=float(cfg.burst_per_ip or max(1.0, cfg.rate_per_ip or 1.0)),
        honeypot=cfg.honeypot_field,
        answer=compile_answer(cfg.response),
        handshake=cfg.handshake,
    )


@dataclass(slots=True, frozen=True)
class ActiveSource:
    id: str
    client_id: str
    name: str
    token: str
    enabled: bool
    api_key_hash: str | None
    config: SourceConfig
    methods: frozenset[str]
    allow_header: str
    max_body: int
    idempotency_headers: tuple[bytes, ...]
    mapping: Mapping | None = None
    networks: tuple[Network, ...] = ()
    required_headers: tuple[tuple[bytes, bytes], ...] = ()
    rate: float | None = None
    burst: float = 1.0
    signature: SignatureSpec | None = None
    secrets: tuple[tuple[str, int | None], ...] = ()
    # the ingest edge (hookbay.senders); all empty for a source that uses none of it
    edge: Edge | None = None

    def active_secrets(self, now_us: int) -> list[str]:
        return [s for s, exp in self.secrets if exp is None or exp > now_us]


DEFAULT_IDEMPOTENCY_HEADERS = (b"webhook-id", b"x-github-delivery", b"x-wc-webhook-delivery-id", b"idempotency-key")


def build_source(row: StoredSource, default_max_body: int,
                 secrets: list[tuple[str, int | None]] | None = None) -> ActiveSource:
    cfg = SourceConfig.model_validate(row.config)
    idem: tuple[bytes, ...] = DEFAULT_IDEMPOTENCY_HEADERS
    if cfg.idempotency_key:  # the configured key is the event's identity: no other header stands in for it
        idem = ()
    elif cfg.idempotency_header:
        idem = (cfg.idempotency_header.lower().encode("latin-1"), *idem)
    return ActiveSource(
        id=row.id,
        client_id=row.client_id,
        name=row.name,
        token=row.token,
        enabled=row.enabled,
        api_key_hash=row.api_key_hash,
        config=cfg,
        methods=frozenset(cfg.methods),
        allow_header=", ".join(cfg.methods),
        max_body=cfg.max_body_bytes or default_max_body,
        idempotency_headers=idem,
        mapping=_compile_mapping(cfg),
        networks=parse_networks(cfg.allow_ips),
        required_headers=tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in cfg.required_headers.items()),
        rate=cfg.rate,
        burst=float(cfg.burst or max(1.0, cfg.rate or 1.0)),
        signature=_signature_spec(cfg),
        secrets=tuple(secrets or ()),
        edge=build_edge(cfg),
    )


def _signature_spec(cfg: SourceConfig) -> SignatureSpec | None:
    if cfg.signature is None:
        return None
    from hookbay.signatures import SignatureSpec

    sig = cfg.signature
    return SignatureSpec(scheme=sig.scheme, header=sig.header, algorithm=sig.algorithm, encoding=sig.encoding,
                         prefix=sig.prefix, tolerance_s=sig.tolerance_s)


def _compile_mapping(cfg: SourceConfig) -> Mapping | None:
    if cfg.parser != "mapping" or cfg.mapping is None:
        return None
    from hookbay.parsers import compile

    return compile.from_dict(cfg.mapping)


class SourceCache:
    def __init__(self, store: StoreInterface, default_max_body: int, refresh_seconds: float = 0.5,
                 check_seconds: float = 0.05) -> None:
        self.store = store
        self.default_max_body = default_max_body
        self.refresh_seconds = refresh_seconds
        self.check_seconds = check_seconds
        self.by_token: dict[str, ActiveSource] = {}
        self.by_id: dict[str, ActiveSource] = {}
        self.rev: str | None = None
        self._lock = asyncio.Lock()
        self._check_lock = asyncio.Lock()
        self._pending: asyncio.Future[None] | None = None
        self._last_check = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._dv_conn: sqlite3.Connection | None = None
        self._dv_lock = threading.Lock()  # a worker thread may still be polling when run() is cancelled
        self._data_version: int | None = None
        db = make_url(store.url).database if store.url.startswith("sqlite") else None
        self._sqlite_path = db if db and db != ":memory:" else None

    async def reload(self) -> None:
        async with self._lock:
            rev = await self.store.sources_revision()
            rows = await self.store.list_sources()
            secrets = await self.store.source_secrets()
            by_id: dict[str, ActiveSource] = {}
            for row in rows:
                try:
                    by_id[row.id] = build_source(row, self.default_max_body, secrets.get(row.id))
                except Exception as e:  # one bad row must not take every source offline
                    log.error("source_invalid", source_id=row.id, **describe(e))
            self.by_id = by_id
            self.by_token = {s.token.lower(): s for s in by_id.values() if s.enabled}
            self.rev = rev

    async def maybe_reload(self) -> None:
        if await self.store.sources_revision() != self.rev:
            await self.reload()

    def _data_changed(self) -> bool:
        """SQLite: has any connection committed since the last call? (Read from shared memory, no I/O.)"""
        with self._dv_lock:
            if self._dv_conn is None:
                assert self._sqlite_path is not None
                self._dv_conn = sqlite3.connect(self._sqlite_path, check_same_thread=False, isolation_level=None)
            version = int(self._dv_conn.execute("PRAGMA data_version").fetchone()[0])
            changed, self._data_version = version != self._data_version, version
            return changed

    async def check(self) -> None:
        """Reload if another process changed any source since the last look."""
        async with self._check_lock:
            if self._sqlite_path is not None and not await asyncio.to_thread(self._data_changed):
                return
            await self.maybe_reload()

    async def lookup_unknown(self, token: str) -> ActiveSource | None:
        """A token not in the table: look again after a check that starts after this call."""
        fut = self._pending
        if fut is None:
            fut = self._pending = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._shared_check(fut))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.shield(fut)
        return self.by_token.get(token.lower())

    async def _shared_check(self, fut: asyncio.Future[None]) -> None:
        try:
            delay = self._last_check + self.check_seconds - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._pending = None  # misses from now on may follow a change this check started too early to see
            self._last_check = time.monotonic()
            await self.check()
        except Exception as e:
            log.warning("source_check_failed", **describe(e))
        finally:
            self._pending = None
            if not fut.done():
                fut.set_result(None)

    async def run(self) -> None:
        """Keep the table current: LISTEN on PostgreSQL (polling as a fallback), data_version on SQLite."""
        listener = None
        if isinstance(self.store.dialect, PostgresDialect):
            listener = asyncio.create_task(self._listen())
        poll = self.check_seconds if self._sqlite_path is not None else self.refresh_seconds
        try:
            while True:
                await asyncio.sleep(poll)
                try:
                    await self.check()
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("source_refresh_failed", **describe(e))
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(BaseException):
                    await listener
            with self._dv_lock:  # held for one PRAGMA at most
                if self._dv_conn is not None:
                    with contextlib.suppress(Exception):
                        self._dv_conn.close()
                    self._dv_conn = None

    async def _listen(self) -> None:
        import psycopg

        assert isinstance(self.store.dialect, PostgresDialect)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.store.dialect.libpq_url,
                                                                 autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await self.maybe_reload()  # whatever changed while nobody was listening
                    async for _ in conn.notifies():
                        await self.maybe_reload()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("source_listen_failed", **describe(e))
                await asyncio.sleep(1)

    async def get_by_id(self, source_id: str) -> ActiveSource | None:
        src = self.by_id.get(source_id)
        if src is None:
            await self.maybe_reload()
            src = self.by_id.get(source_id)
        return src
