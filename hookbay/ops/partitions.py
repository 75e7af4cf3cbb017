"""The partitioned request log on PostgreSQL: partitions made ahead, listed, dropped by retention,
and an unpartitioned database migrated in batches while the server runs. On SQLite (and on an
unpartitioned PostgreSQL database, until it is migrated) there is nothing to do here and
retention purges bodies row by row as before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
import structlog

from hookbay.errors import BadRequest
from hookbay.ids import now_us
from hookbay.settings import Settings
from hookbay.store import StoreInterface
from hookbay.store import partitions as P
from hookbay.store.errors import describe
from hookbay.store.sources import SourceCache

log = structlog.get_logger("hookbay.ops")
DAY_US = 86_400 * P.US


class NotPartitioned(BadRequest):
    code = "not_partitioned"
    message = "The request log is not partitioned"


async def is_partitioned(store: StoreInterface) -> bool:
    return store.is_postgres and await store.read(P.is_partitioned)


async def ensure(store: StoreInterface, settings: Settings, *, now: int | None = None) -> list[str]:
    """Create the default partition and the current and next ``partition_ahead`` intervals'
    partitions that are missing; returns the names made."""
    if not await is_partitioned(store):
        return []
    at = now if now is not None else now_us()
    made = await store.maintain(lambda c: P.ensure(c, settings.partition_interval, settings.partition_ahead, at,
                                                   lock_timeout_ms=settings.busy_timeout_ms))
    if made:
        log.info("partitions_created", partitions=made)
    return made


async def ensure_logged(store: StoreInterface, settings: Settings) -> None:
    """``ensure`` that logs a failure (a lock not granted in time) instead of raising: the next
    check retries, and the default partition takes the rows meanwhile."""
    try:
        await ensure(store, settings)
    except Exception as e:
        log.warning("partitions_ensure_failed", **describe(e))


async def keep_ahead(store: StoreInterface, settings: Settings) -> None:
    """What ``serve`` and ``worker`` run after their first ``ensure`` at start: one every
    ``partition_check_seconds``."""
    while True:
        await asyncio.sleep(settings.partition_check_seconds)
        await ensure_logged(store, settings)


async def list_partitions(store: StoreInterface) -> list[dict[str, Any]]:
    if not await is_partitioned(store):
        raise NotPartitioned("The request log is not partitioned (SQLite, or a PostgreSQL database made before "
                             "0012: run `hookbay partitions migrate`)")
    return await store.read(P.partition_stats)


def _cutoff_for(cache: SourceCache, now: int) -> Callable[[str | None], int | None]:
    """A row's retention cutoff (µs) by its source: its ``retention_days``; for a request with
    no source (unknown URL) or a deleted source, the longest retention any source has. None =
    kept for ever (a source without retention, or no source with one)."""
    days = {s.id: s.config.retention_days for s in cache.by_id.values()}
    longest = max((d for d in days.values() if d), default=None)

    def cutoff(source_id: str | None) -> int | None:
        d = days[source_id] if source_id in days else longest
        return now - d * DAY_US if d else None

    return cutoff


async def drop_expired(store: StoreInterface, cache: SourceCache, *, now: int | None = None,
                       dry_run: bool = False, lock_timeout_ms: int = 5000) -> list[dict[str, Any]]:
    """Drop each dated partition whose every request is past its source's retention and none is
    still to be processed (pending, with a job, or queued for a relay agent): one DROP instead of
    purging its bodies row by row. Records and profiles stay (they outlive raw requests); the
    dropped requests' receipts are gone. Returns what was (or would be) dropped, and why a past
    partition was kept."""
    if not await is_partitioned(store):
        return []
    await cache.maybe_reload()
    at = now if now is not None else now_us()
    cutoff = _cutoff_for(cache, at)
    out: list[dict[str, Any]] = []
    for p in await store.read(P.partitions):
        if p.hi is None or p.hi > at:
            continue

        def check(conn: sa.Connection, name: str = p.name) -> tuple[str | None, int]:
            by_source = P.newest_by_source(conn, name)
            rows = sum(n for _, n in by_source.values())
            for source_id, (newest, _n) in by_source.items():
                c = cutoff(source_id)
                if c is None or newest >= c:
                    return "within retention", rows
            return ("pending work" if P.busy(conn, name) else None), rows

        why, rows = await store.read(check)
        if why is None and dry_run:
            out.append({"partition": p.name, "action": "would drop", "rows": rows, "reason": None})
            continue
        if why is None:
            def go(conn: sa.Connection, name: str = p.name) -> bool | None:
                return P.drop_if_idle(conn, name, lock_timeout_ms)

            dropped = await store.maintain(go)
            if dropped is None:  # another server process dropped it first
                continue
            if dropped:
                log.info("partition_dropped", partition=p.name, rows=rows)
                out.append({"partition": p.name, "action": "dropped", "rows": rows, "reason": None})
                continue
            why = "pending work"
        out.append({"partition": p.name, "action": "kept", "rows": rows, "reason": why})
    return out


async def migrate(store: StoreInterface, settings: Settings, *, batch: int = 5000, pause_s: float = 0.0,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """`hookbay partitions migrate`: copy an unpartitioned request log into the partitioned
    layout in batches while servers keep ingesting, then swap the tables in one short
    transaction. Each step commits on its own, so it can be killed and run again at any point."""
    if not store.is_postgres:
        raise BadRequest("Partitions are for PostgreSQL; SQLite keeps one request table")
    now = now_us()
    started = await store.maintain(lambda c: P.migrate_prepare(c, settings.partition_interval,
                                                               settings.partition_ahead, now))
    if not started:
        return {"migrated": False, "rows": await store.count_requests(), "copied": 0}
    copied = read = 0
    while True:
        n, ins = await store.maintain(lambda c: P.migrate_copy_batch(c, batch))
        read += n
        copied += ins
        if progress is not None and n:
            progress(read, copied)
        if n < batch:
            break
        if pause_s:
            await asyncio.sleep(pause_s)
    for _attempt in range(2):
        try:
            # no statement timeout: the swap counts both tables (seconds for tens of millions of rows)
            rows = await store.maintain(lambda c: P.migrate_swap(c, settings.busy_timeout_ms * 2),
                                        statement_timeout_ms=0)
            break
        except P.MigrateMismatch as e:  # cannot happen with the mirror trigger; walk again to be sure
            log.warning("partitions_migrate_recount", old=e.old, new=e.new)
            await store.maintain(P.migrate_rewind)
            while (await store.maintain(lambda c: P.migrate_copy_batch(c, batch)))[0]:
                pass
    else:
        raise BadRequest("The partitioned copy does not match the old table; nothing was swapped")
    await ensure(store, settings)
    log.info("partitions_migrated", rows=rows)
    return {"migrated": True, "rows": rows, "copied": copied}
