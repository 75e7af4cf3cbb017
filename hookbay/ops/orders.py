"""Orders as the API, the console and the CLI read them: a client sees only its own."""

from __future__ import annotations

from typing import Any

from hookbay.ops.access import Principal, scope_client
from hookbay.ops.requests import source_id_for, time_window
from hookbay.orders import order_view
from hookbay.store import StoreInterface
from hookbay.store.orders import OrderStore


async def list_orders(store: StoreInterface, p: Principal, *, profile: str | None = None, source: str | None = None,
                      since: str | None = None, client_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Newest placed first, with their lines."""
    client = scope_client(p, client_id)
    source_id = await source_id_for(store, client, source)
    since_us, _ = time_window(since, None)
    rows = await OrderStore(store).list(client, profile_id=profile, source_id=source_id, since_us=since_us,
                                        limit=limit)
    return [order_view(r) for r in rows]
