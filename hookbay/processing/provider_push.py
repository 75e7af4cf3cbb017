"""Deliveries that a contact's ``ProviderType`` chose rather than a source action (planned by
:func:`hookbay.providers.route` with the action index minus the provider number): which action
such a delivery runs is read from its client's connection when it runs, so a changed key variable
applies at once and a removed connection fails the delivery with a reason."""

from __future__ import annotations

from hookbay.actions.base import ActionConfig
from hookbay.providers import PROVIDER_TYPES, connection_action
from hookbay.store import StoreInterface
from hookbay.store.deliveries import ClaimedDelivery
from hookbay.store.providers import ProviderStore


async def provider_action(store: StoreInterface, client_id: str, action_idx: int) -> ActionConfig | None:
    """The action of the client's connection to provider ``-action_idx``; None without one."""
    name = PROVIDER_TYPES.get(-action_idx)
    conn = await ProviderStore(store).get(client_id, name) if name else None
    return connection_action(conn.type, conn.key_env, conn.pod) if conn is not None else None


def gone(c: ClaimedDelivery) -> str:
    """Why a planned delivery has nothing to run any more."""
    if c.action_idx < 0:
        return f"provider push: client {c.client_id} has no {c.action_type} connection any more"
    return "the source or its action was removed or changed since this delivery was planned"
