"""Admin API route for orders (``GET /api/v1/orders``), scoped to the token's client like every list."""

# No "from __future__ import annotations": FastAPI resolves these annotations at runtime.

from typing import Any

from fastapi import FastAPI, Query
from pydantic import BaseModel, Field

from hookbay.ops import orders as order_ops
from hookbay.store import Store


class OrderLineOut(BaseModel):
    sku: str | None
    name: str | None
    quantity: int
    unit_price_minor: int | None
    total_minor: int | None
    unit_price: str | None = Field(description="unit_price_minor as decimal text in the currency's major unit")
    total: str | None


class OrderOut(BaseModel):
    id: str
    client_id: str
    source_id: str
    external_id: str = Field(description="The order id in the sending system; unique per source")
    profile_id: str | None = Field(description="The buyer's profile")
    status: str | None
    currency: str = Field(description="ISO 4217 code; every *_minor amount is in its minor unit")
    total_minor: int
    total: str
    subtotal_minor: int | None
    subtotal: str | None
    tax_minor: int | None
    tax: str | None
    shipping_minor: int | None
    shipping: str | None
    discount_minor: int | None
    discount: str | None
    placed_at: str | None
    event_at: str | None = Field(description="The time of the event the order is stored as (latest wins)")
    request_id: str = Field(description="The request that carried that event")
    lines: list[OrderLineOut]


def add_order_routes(app: FastAPI, store: Store, auth: Any, errors: dict[int | str, dict[str, Any]]) -> None:
    Auth = auth

    @app.get("/api/v1/orders", response_model=list[OrderOut], responses=errors, tags=["orders"])
    async def list_orders(
        p: Auth,  # type: ignore[valid-type]
        profile: str | None = Query(default=None, max_length=40, description="Profile id (a merged-away id works)"),
        source: str | None = Query(default=None, description="Source id, token or name"),
        since: str | None = Query(default=None, description="Placed at or after: ISO-8601 or relative (3d)"),
        client_id: str | None = Query(default=None, description="Admin only: one client's orders"),
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        """Newest placed first."""
        return await order_ops.list_orders(store, p, profile=profile, source=source, since=since,
                                           client_id=client_id, limit=limit)
