"""Encryption keys for data at rest: re-encrypting what is stored with the active key."""

from __future__ import annotations

from hookbay.errors import NotFound
from hookbay.ops.access import Principal
from hookbay.store import StoreInterface


async def reencrypt(store: StoreInterface, p: Principal, batch: int) -> dict[str, int]:
    """Re-encrypt stored bodies, headers and secrets with the first key (admin only: it touches every client)."""
    if not p.is_admin:
        raise NotFound("Not Found")
    return await store.reencrypt(batch, audit=p.audit("keys.reencrypt"))
