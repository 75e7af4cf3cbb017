"""Provider connections (:mod:`hookbay.providers`) as the API and the CLI set and read them: admin
only, since a connection names a server environment variable holding a key."""

from __future__ import annotations

import os
from typing import Any

from hookbay.actions.mailchimp import secret_env_allowed
from hookbay.containment import ConfigRefused
from hookbay.errors import Forbidden
from hookbay.ops.access import Principal
from hookbay.providers import ConnectionIn
from hookbay.settings import Settings
from hookbay.store import StoreInterface
from hookbay.store.providers import ProviderConnection, ProviderStore
from hookbay.views import iso


def connection_out(c: ProviderConnection) -> dict[str, Any]:
    """A connection as shown: the key's variable name and whether it is set here, never the key."""
    return {"client_id": c.client_id, "type": c.type, "key_env": c.key_env, "pod": c.pod,
            "key_present": bool(os.environ.get(c.key_env)), "created_at": iso(c.created_at),
            "updated_at": iso(c.updated_at)}


def check_connection(body: ConnectionIn, settings: Settings) -> None:
    """Refuse a key variable outside HOOKBAY_SECRET_ENV_PREFIX: never a server setting."""
    if not secret_env_allowed(body.key_env, settings) or not body.key_env.startswith(settings.secret_env_prefix):
        raise ConfigRefused(detail=[{"path": "key_env", "message": (
            f"{body.key_env} is not a provider key variable: names must start with {settings.secret_env_prefix} "
            "(HOOKBAY_SECRET_ENV_PREFIX)")}])


def _admin_only(p: Principal) -> None:
    if not p.is_admin:
        raise Forbidden("Only the admin token can see or set provider connections")


async def list_connections(store: StoreInterface, p: Principal, client_id: str | None = None) -> list[dict[str, Any]]:
    _admin_only(p)
    return [connection_out(r) for r in await ProviderStore(store).list(client_id)]


async def put_connections(store: StoreInterface, p: Principal, settings: Settings,
                          conns: list[ConnectionIn]) -> list[dict[str, Any]]:
    """Create or replace each client's connection to a provider; every one is checked first."""
    _admin_only(p)
    for c in conns:
        check_connection(c, settings)
    return [connection_out(await ProviderStore(store).put(c.client_id, c.type, c.key_env, c.pod,
                                                          audit=p.audit("provider.put"))) for c in conns]


async def delete_connection(store: StoreInterface, p: Principal, client_id: str, provider: str) -> None:
    _admin_only(p)
    await ProviderStore(store).delete(client_id, provider, audit=p.audit("provider.delete"))
