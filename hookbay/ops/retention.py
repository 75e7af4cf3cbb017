"""Retention: raw bodies past their source's ``retention_days`` and relay messages acked longer
ago than ``relay_acked_retention_seconds`` are removed, hourly by ``serve`` and on demand by
``hookbay purge``."""

from __future__ import annotations

import structlog

from hookbay import metrics
from hookbay.ids import now_us
from hookbay.settings import Settings
from hookbay.store import StoreInterface
from hookbay.store.relay import RelayQueue
from hookbay.store.sources import SourceCache

log = structlog.get_logger("hookbay.ops")


async def purge_expired(store: StoreInterface, cache: SourceCache, *, dry_run: bool = False) -> dict[str, int]:
    """Apply every source's ``retention_days`` to stored raw bodies."""
    await cache.maybe_reload()
    retention = {s.id: s.config.retention_days for s in cache.by_id.values() if s.config.retention_days}
    counts = await store.purge_bodies(retention, dry_run=dry_run)
    if not dry_run and any(counts.values()):
        log.info("retention_purged", bodies=sum(counts.values()), sources=len(counts))
    if not dry_run:
        forgot = await store.forget_idempotency_keys({s.id: s.config.idempotency_days for s in cache.by_id.values()})
        if forgot:
            log.info("idempotency_keys_expired", keys=forgot)
    return counts


async def prune_relay(store: StoreInterface, settings: Settings, *, dry_run: bool = False) -> int:
    """Delete relay messages acked longer ago than ``relay_acked_retention_seconds``."""
    cutoff = now_us() - int(settings.relay_acked_retention_seconds * 1_000_000)
    n = await RelayQueue(store).prune_acked(cutoff, dry_run=dry_run)
    if n and not dry_run:
        metrics.relay_pruned_total.inc(n)
        log.info("relay_acked_pruned", messages=n)
    return n
