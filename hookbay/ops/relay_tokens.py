"""Relay tokens (what ``hookbay agent`` pulls a source's queue with) as the console manages them:
listed across the sources a caller sees, created (the secret shown once) and revoked, audited like
the API's ``/api/v1/sources/{id}/relay-tokens``."""

from __future__ import annotations

from typing import Any

import orjson

from hookbay.ops.access import Principal, scope_client
from hookbay.store import Store
from hookbay.store.relay import RelayQueue
from hookbay.views import iso


async def list_relay_tokens(store: Store, p: Principal) -> list[dict[str, Any]]:
    """Every relay token of the sources the caller sees, with its source's name; never the secret."""
    queue = RelayQueue(store)
    out = []
    for src in await store.list_sources(scope_client(p, None)):
        for t in await queue.list_tokens(src["id"]):
            out.append({"id": t["id"], "name": t["name"], "source_id": src["id"], "source_name": src["name"],
                        "client_id": src["client_id"], "created_at": iso(t["created_at"])})
    return out


async def create_relay_token(store: Store, p: Principal, source: str, name: str) -> dict[str, Any]:
    """A token for one source (``source`` within the caller's client); ``token`` is shown once."""
    row = await store.get_source(source, scope_client(p, None))
    tok, secret = await RelayQueue(store).create_token(row["id"], name, audit=p.audit("relay_token.create").but(
        client_id=row["client_id"], changes=[f"name: {orjson.dumps(name).decode()}"]))
    return {"id": tok["id"], "name": name, "source_id": row["id"], "source_name": row["name"], "token": secret}


async def revoke_relay_token(store: Store, p: Principal, source: str, token_id: str) -> None:
    row = await store.get_source(source, scope_client(p, None))
    await RelayQueue(store).revoke_token(row["id"], token_id,
                                         audit=p.audit("relay_token.revoke").but(client_id=row["client_id"]))
