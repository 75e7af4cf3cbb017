"""Orders as the API, the console and the CLI read them: a client sees only its own."""

from __future__ import annotations

from typing import Any

from hookbay.ops.access import Principal, scope_client
from hookbay.ops.requests import source_id_for, time_window
from hookbay.orders import MONEY_FIELDS, format_minor
from hookbay.store import StoreInterface
from hookbay.store.order_rows import PurchaseFacts, StoredOrder
from hookbay.store.orders import OrderStore
from hookbay.views import iso


def order_view(o: StoredOrder) -> dict[str, Any]:
    """An order as the API, the CLI and the console show it: minor units and their decimal text."""
    cur = o.currency
    out: dict[str, Any] = {
        "id": o.id, "client_id": o.client_id, "source_id": o.source_id, "external_id": o.external_id,
        "profile_id": o.profile_id, "status": o.status, "currency": cur,
    }
    for name in MONEY_FIELDS:
        minor = getattr(o, f"{name}_minor")
        out[f"{name}_minor"] = minor
        out[name] = format_minor(minor, cur)
    out.update(placed_at=iso(o.placed_at), event_at=iso(o.event_at), request_id=o.request_id,
               lines=[{"sku": ln.sku, "name": ln.name, "quantity": ln.quantity,
                       "unit_price_minor": ln.unit_price_minor, "total_minor": ln.total_minor,
                       "unit_price": format_minor(ln.unit_price_minor, cur),
                       "total": format_minor(ln.total_minor, cur)} for ln in o.lines])
    return out


def facts_view(f: PurchaseFacts) -> dict[str, Any]:
    """A profile's purchases as shown: totals per currency, also as decimal text."""
    return {"order_count": f.order_count,
            "totals": [{"currency": t.currency, "total_minor": t.total_minor, "order_count": t.order_count,
                        "total": format_minor(t.total_minor, t.currency)} for t in f.totals],
            "first_order_at": iso(f.first_order_at), "last_order_at": iso(f.last_order_at)}


async def list_orders(store: StoreInterface, p: Principal, *, profile: str | None = None, source: str | None = None,
                      since: str | None = None, client_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Newest placed first, with their lines."""
    client = scope_client(p, client_id)
    source_id = await source_id_for(store, client, source)
    since_us, _ = time_window(since, None)
    rows = await OrderStore(store).list(client, profile_id=profile, source_id=source_id, since_us=since_us,
                                        limit=limit)
    return [order_view(r) for r in rows]
