"""Reference model of dedupe by idempotency key: per source, a key names the first request that
carried it until retention forgets keys older than the window; every later request with a live key
is a duplicate of that original."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DedupeModel:
    window_us: int
    live: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)  # key -> (original id, received_at)

    def original(self, source: str, key: str) -> str | None:
        hit = self.live.get((source, key))
        return hit[0] if hit else None

    def accept(self, source: str, key: str, request_id: str, at: int) -> None:
        assert (source, key) not in self.live
        self.live[(source, key)] = (request_id, at)

    def forget(self, now: int) -> int:
        old = [k for k, (_, at) in self.live.items() if at < now - self.window_us]
        for k in old:
            del self.live[k]
        return len(old)
