"""Admin API routes for provider connections (``/api/v1/providers``): admin only, since a
connection names a server environment variable holding a key."""

# No "from __future__ import annotations": FastAPI resolves these annotations at runtime.

from typing import Any

from fastapi import FastAPI, Response
from pydantic import BaseModel

from hookbay.ops import providers as provider_ops
from hookbay.providers import ConnectionIn
from hookbay.settings import Settings
from hookbay.store import Store


class ConnectionOut(BaseModel):
    client_id: str
    type: str
    key_env: str
    pod: str | None
    key_present: bool
    created_at: str | None
    updated_at: str | None


def add_provider_routes(app: FastAPI, store: Store, auth: Any, errors: dict[int | str, dict[str, Any]],
                        settings: Settings) -> None:
    Auth = auth

    @app.get("/api/v1/providers", response_model=list[ConnectionOut], responses=errors, tags=["providers"])
    async def list_providers(p: Auth, client_id: str | None = None) -> list[dict[str, Any]]:  # type: ignore[valid-type]
        return await provider_ops.list_connections(store, p, client_id)

    @app.put("/api/v1/providers", response_model=ConnectionOut, responses=errors, tags=["providers"])
    async def put_provider(p: Auth, body: ConnectionIn) -> dict[str, Any]:  # type: ignore[valid-type]
        """Create or replace a client's connection to a provider."""
        [row] = await provider_ops.put_connections(store, p, settings, [body])
        return row

    @app.delete("/api/v1/providers/{client_id}/{provider}", status_code=204, responses=errors, tags=["providers"])
    async def delete_provider(p: Auth, client_id: str, provider: str) -> Response:  # type: ignore[valid-type]
        await provider_ops.delete_connection(store, p, client_id, provider)
        return Response(status_code=204)
