"""Token bucket per source, in process memory (each process enforces its own share)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


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
