"""Admin API routes for provider connections (``/api/v1/providers``): admin only, since a
connection names a server environment variable holding a key."""

# No "from __future__ import annotations": FastAPI resolves these annotations at runtime.

from typing import Any

from fastapi import FastAPI, Response
from pydantic import BaseModel

from hookbay.containment import ConfigRefused, secret_env_allowed
from hookbay.errors import Forbidden
from hookbay.providers import ConnectionIn
from hookbay.settings import Settings
from hookbay.store import Store
from hookbay.store.providers import ProviderStore
from hookbay.views import iso


class ConnectionOut(BaseModel):
    client_id: str
    type: str
    key_env: str
    pod: str | None
    key_present: bool
    created_at: str | None
    updated_at: str | None


def connection_out(row: dict[str, Any]) -> dict[str, Any]:
    import os

    return {"client_id": row["client_id"], "type": row["type"], "key_env": row["key_env"], "pod": row["pod"],
            "key_present": bool(os.environ.get(row["key_env"])), "created_at": iso(row["created_at"]),
            "updated_at": iso(row["updated_at"])}


def check_connection(body: ConnectionIn, settings: Settings) -> None:
    if not secret_env_allowed(body.key_env, settings) or not body.key_env.startswith(settings.secret_env_prefix):
        raise ConfigRefused(detail=[{"path": "key_env", "message": (
            f"{body.key_env} is not a provider key variable: names must start with {settings.secret_env_prefix} "
            "(HOOKBAY_SECRET_ENV_PREFIX)")}])


def add_provider_routes(app: FastAPI, store: Store, auth: Any, errors: dict[int | str, dict[str, Any]],
                        settings: Settings) -> None:
    Auth = auth
    providers = ProviderStore(store)

    def admin_only(p: Any) -> None:
        if not p.is_admin:
            raise Forbidden("Only the admin token can see or set provider connections")

    @app.get("/api/v1/providers", response_model=list[ConnectionOut], responses=errors, tags=["providers"])
    async def list_providers(p: Auth, client_id: str | None = None) -> list[dict[str, Any]]:  # type: ignore[valid-type]
        admin_only(p)
        return [connection_out(r) for r in await providers.list(client_id)]

    @app.put("/api/v1/providers", response_model=ConnectionOut, responses=errors, tags=["providers"])
    async def put_provider(p: Auth, body: ConnectionIn) -> dict[str, Any]:  # type: ignore[valid-type]
        """Create or replace a client's connection to a provider."""
        admin_only(p)
        check_connection(body, settings)
        return connection_out(await providers.put(body.client_id, body.type, body.key_env, body.pod,
                                                  audit=p.audit("provider.put")))  # type: ignore[attr-defined]

    @app.delete("/api/v1/providers/{client_id}/{provider}", status_code=204, responses=errors, tags=["providers"])
    async def delete_provider(p: Auth, client_id: str, provider: str) -> Response:  # type: ignore[valid-type]
        admin_only(p)
        await providers.delete(client_id, provider, audit=p.audit("provider.delete"))  # type: ignore[attr-defined]
        return Response(status_code=204)
