"""Reference model of orders: one per (source, external id), the newest event (event time, then
request id) wins, the buyer is the winning event's profile (an event without one keeps the buyer it
had), merges carry orders to the survivor, erasure removes them. Profiles are the identity model's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hookbay.orders import NOT_PURCHASED
from tests.models.identity import IdentityModel


@dataclass
class Order:
    version: tuple[int, str]
    status: str
    currency: str
    total: int
    placed_at: int
    lines: list[tuple[str, int, int]]
    profile: int | None


class OrdersModel:
    def __init__(self) -> None:
        self.identity = IdentityModel()
        self.orders: dict[tuple[str, str], Order] = {}

    def apply(self, source: str, ext: str, event_at: int, request_id: str, status: str, currency: str,
              total: int, placed_at: int, lines: list[tuple[str, int, int]], profile: int | None) -> None:
        cur = self.orders.get((source, ext))
        version = (event_at, request_id)
        if cur is not None and version < cur.version:
            return
        buyer = profile if profile is not None else (cur.profile if cur is not None else None)
        self.orders[(source, ext)] = Order(version, status, currency, total,
                                           placed_at if cur is None else placed_at, lines, buyer)

    def buyer(self, o: Order) -> int | None:
        return None if o.profile is None else self.identity.survivor_of(o.profile)

    def erase(self, pid: int) -> None:
        self.orders = {k: o for k, o in self.orders.items() if self.buyer(o) != pid}
        self.identity.erase(pid)

    def snapshot(self) -> dict[tuple[str, str], tuple[Any, ...]]:
        """Each order as (status, currency, total, lines, the buyer's key set or None)."""
        out = {}
        for k, o in self.orders.items():
            pid = self.buyer(o)
            keys = None if pid is None else frozenset(kk for kk, p in self.identity.keys.items() if p == pid)
            out[k] = (o.status, o.currency, o.total, o.lines, keys)
        return out

    def facts(self) -> dict[frozenset[tuple[str, str]], dict[str, tuple[int, int, int, int]]]:
        """Per buyer key set, per currency: (order count, total, first placed, last placed)."""
        acc: dict[int, dict[str, list[int]]] = {}
        for o in self.orders.values():
            pid = self.buyer(o)
            if pid is None or o.status in NOT_PURCHASED:
                continue
            f = acc.setdefault(pid, {}).setdefault(o.currency, [0, 0, o.placed_at, o.placed_at])
            f[0] += 1
            f[1] += o.total
            f[2] = min(f[2], o.placed_at)
            f[3] = max(f[3], o.placed_at)
        return {frozenset(k for k, p in self.identity.keys.items() if p == pid): {c: tuple(v) for c, v in per.items()}
                for pid, per in acc.items()}  # type: ignore[misc]
