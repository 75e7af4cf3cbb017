"""The in-memory source table: the ingest path looks tokens up here, never in the database.

A background task reloads it when the ``sources_rev`` marker changes (any process that edits a
source bumps it), and the admin API reloads it at once after its own edits.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from .models import SourceConfig
from .netaddr import Network, parse_networks
from .store import Store

log = structlog.get_logger("hookbay.sources")


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
    mapping: Any = None
    networks: tuple[Network, ...] = ()
    required_headers: tuple[tuple[bytes, bytes], ...] = ()
    rate: float | None = None
    burst: float = 1.0
    signature: Any = None
    secrets: tuple[tuple[str, int | None], ...] = ()

    def active_secrets(self, now_us: int) -> list[str]:
        return [s for s, exp in self.secrets if exp is None or exp > now_us]


DEFAULT_IDEMPOTENCY_HEADERS = (b"webhook-id", b"x-github-delivery", b"x-wc-webhook-delivery-id", b"idempotency-key")


def build_source(row: dict[str, Any], default_max_body: int,
                 secrets: list[tuple[str, int | None]] | None = None) -> ActiveSource:
    cfg = SourceConfig.model_validate(orjson.loads(row["config"] or "{}"))
    idem: tuple[bytes, ...] = DEFAULT_IDEMPOTENCY_HEADERS
    if cfg.idempotency_header:
        idem = (cfg.idempotency_header.lower().encode("latin-1"), *idem)
    return ActiveSource(
        id=row["id"],
        client_id=row["client_id"],
        name=row["name"],
        token=row["token"],
        enabled=bool(row["enabled"]),
        api_key_hash=row["api_key_hash"],
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
    )


def _signature_spec(cfg: SourceConfig) -> Any:
    if cfg.signature is None:
        return None
    from .signatures import SignatureSpec

    sig = cfg.signature
    return SignatureSpec(scheme=sig.scheme, header=sig.header, algorithm=sig.algorithm, encoding=sig.encoding,
                         prefix=sig.prefix, tolerance_s=sig.tolerance_s)


def _compile_mapping(cfg: SourceConfig) -> Any:
    if cfg.parser != "mapping" or cfg.mapping is None:
        return None
    from .parsers.mapping import Mapping

    return Mapping.from_dict(cfg.mapping)


class SourceCache:
    def __init__(self, store: Store, default_max_body: int, refresh_seconds: float = 0.5) -> None:
        self.store = store
        self.default_max_body = default_max_body
        self.refresh_seconds = refresh_seconds
        self.by_token: dict[str, ActiveSource] = {}
        self.by_id: dict[str, ActiveSource] = {}
        self.rev: str | None = None
        self._lock = asyncio.Lock()

    async def reload(self) -> None:
        async with self._lock:
            rev = await self.store.sources_revision()
            rows = await self.store.list_sources()
            secrets = await self.store.source_secrets()
            by_id: dict[str, ActiveSource] = {}
            for row in rows:
                try:
                    by_id[row["id"]] = build_source(row, self.default_max_body, secrets.get(row["id"]))
                except Exception as e:  # one bad row must not take every source offline
                    log.error("source_invalid", source_id=row["id"], error=str(e))
            self.by_id = by_id
            self.by_token = {s.token.lower(): s for s in by_id.values() if s.enabled}
            self.rev = rev

    async def maybe_reload(self) -> None:
        if await self.store.sources_revision() != self.rev:
            await self.reload()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.maybe_reload()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("source_refresh_failed", error=str(e))

    async def get_by_id(self, source_id: str) -> ActiveSource | None:
        src = self.by_id.get(source_id)
        if src is None:
            await self.maybe_reload()
            src = self.by_id.get(source_id)
        return src
