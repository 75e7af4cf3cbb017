"""The ``orders``, ``order_lines`` and ``profile_purchases`` rows as the store hands them to the
layers above it (amounts in minor units; :mod:`hookbay.orders` has the money rules)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoredOrderLine:
    idx: int
    sku: str | None
    name: str | None
    quantity: int
    unit_price_minor: int | None
    total_minor: int | None


@dataclass(frozen=True, slots=True)
class StoredOrder:
    """An ``orders`` row (amounts in minor units of ``currency``) with its lines in order."""

    id: str
    client_id: str
    source_id: str
    external_id: str
    profile_id: str | None
    status: str | None
    currency: str
    total_minor: int
    subtotal_minor: int | None
    tax_minor: int | None
    shipping_minor: int | None
    discount_minor: int | None
    placed_at: int
    event_at: int
    request_id: str
    created_at: int
    updated_at: int
    lines: tuple[StoredOrderLine, ...] = ()


@dataclass(frozen=True, slots=True)
class CurrencyTotal:
    currency: str
    total_minor: int
    order_count: int


@dataclass(frozen=True, slots=True)
class PurchaseFacts:
    """What a profile bought, kept current as orders arrive (``profile_purchases``): totals per currency."""

    order_count: int
    totals: tuple[CurrencyTotal, ...]
    first_order_at: int | None
    last_order_at: int | None
