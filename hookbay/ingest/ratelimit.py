"""Rate limits: a token bucket per source in process memory (SQLite: one process), or leased from
a bucket shared through PostgreSQL (several processes or machines)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from hookbay.store.ratelimit import Lease

log = structlog.get_logger("hookbay.ingest")


@dataclass(slots=True)
class TokenBucket:
    rate: float
    burst: float
    tokens: float = field(default=-1.0)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, now: float | None = None) -> float:
        """Take one token; returns 0 when allowed, else the seconds until one is available."""
        t = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (t - self.updated) * self.rate)
        self.updated = t
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, key: str, rate: float, burst: float) -> float:
        b = self._buckets.get(key)
        if b is None or b.rate != rate or b.burst != burst:
            b = self._buckets[key] = TokenBucket(rate, burst)
        return b.take()


LeaseFn = Callable[[str, float, float, int], Awaitable[Lease]]


@dataclass(slots=True)
class _Leased:
    rate: float
    burst: float
    tokens: int = 0
    leased_at: float = 0.0
    refill: asyncio.Task[float] | None = None
    fallback: TokenBucket | None = None


class SharedRateLimiter:
    """A source's rate limit held across processes and machines on one PostgreSQL database.

    The bucket lives in the database (``store/ratelimit.py``); each process leases tokens from it
    in chunks of about ``LEASE_S`` of the rate (at most a quarter of the burst) and spends them
    locally, asking for the next chunk in the background when half is spent, so a request waits
    for the database only when its process has run dry. No token is granted twice, so together
    the processes admit at most ``burst + rate × t``; tokens a process leased but did not spend
    within ``LEASE_TTL_S`` are dropped (a little under-admission, never over). If the database
    cannot be reached, each process falls back to its own bucket (the per-process bound, N ×)."""

    LEASE_S = 0.1
    LEASE_TTL_S = 1.0

    def __init__(self, lease: LeaseFn) -> None:
        self._lease = lease
        self._buckets: dict[str, _Leased] = {}

    @classmethod
    def chunk(cls, rate: float, burst: float) -> int:
        return max(1, min(math.ceil(rate * cls.LEASE_S), math.floor(burst / 4)))

    async def check(self, key: str, rate: float, burst: float) -> float:
        b = self._buckets.get(key)
        if b is None or b.rate != rate or b.burst != burst:
            b = self._buckets[key] = _Leased(rate, burst)
        if b.tokens and time.monotonic() - b.leased_at > self.LEASE_TTL_S:
            b.tokens = 0
        wait = 0.0
        for _ in range(2):  # a chunk other requests emptied first: ask once more
            if b.tokens >= 1:
                b.tokens -= 1
                if b.tokens * 2 < self.chunk(rate, burst) and b.refill is None:
                    b.refill = asyncio.create_task(self._refill(key, b))
                return 0.0
            wait = await self._refilled(key, b)
            if wait < 0:  # the database did not answer: this process's own bucket decides
                if b.fallback is None:
                    b.fallback = TokenBucket(rate, burst)
                return b.fallback.take()
            if wait > 0 and b.tokens < 1:
                return wait
        return max(wait, 1.0 / rate)

    async def _refilled(self, key: str, b: _Leased) -> float:
        if b.refill is None:
            b.refill = asyncio.create_task(self._refill(key, b))
        return await asyncio.shield(b.refill)

    async def _refill(self, key: str, b: _Leased) -> float:
        """Lease a chunk; returns the wait when none was granted, -1 when the database failed."""
        try:
            got = await self._lease(key, b.rate, b.burst, self.chunk(b.rate, b.burst))
        except Exception as e:  # noqa: BLE001  (ingest keeps answering; the fallback bucket limits)
            log.warning("rate_lease_failed", source_id=key, error=type(e).__name__)
            return -1.0
        finally:
            b.refill = None
        if got.granted:
            b.tokens += got.granted
            b.leased_at = time.monotonic()
        return got.wait_s
