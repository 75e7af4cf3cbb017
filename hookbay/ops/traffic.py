"""Request counts over time, as the console's charts draw them."""

from __future__ import annotations

from hookbay.ops.access import Principal, scope_client
from hookbay.store import StoreInterface, TrafficBucket


async def traffic(store: StoreInterface, p: Principal, since_us: int, bucket_us: int) -> list[TrafficBucket]:
    """Requests the caller sees per time bucket since ``since_us``, by verdict, state and rejecting
    rule (:meth:`hookbay.store.Store.traffic`)."""
    return await store.traffic(scope_client(p, None), since_us, bucket_us)
