"""Relay tokens (what ``hookbay agent`` pulls a source's queue with) and queue status: one set of use
cases for the admin API, the console and the CLI, audited alike."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from hookbay.ops.access import Principal, scope_client
from hookbay.relay.hub import RelayStatus, RelayTokenOut, relay_status, token_out
from hookbay.store import StoreInterface
from hookbay.store.relay import RelayQueue
from hookbay.views import iso


async def create_relay_token(store: StoreInterface, p: Principal, source: str, name: str,
                             client_id: str | None = None) -> RelayTokenOut:
    """A token for `hookbay agent` on ``source`` (id, token or name); its value is returned once."""
    row = await store.get_source(source, scope_client(p, client_id))
    tok_row, token = await RelayQueue(store).create_token(row.id, name, audit=p.audit("relay_token.create").but(
        client_id=row.client_id, changes=[f"name: {orjson.dumps(name).decode()}"]))
    return token_out(tok_row, token)


async def list_relay_tokens(store: StoreInterface, p: Principal, source: str,
                            client_id: str | None = None) -> list[RelayTokenOut]:
    row = await store.get_source(source, scope_client(p, client_id))
    return [token_out(t) for t in await RelayQueue(store).list_tokens(row.id)]


async def revoke_relay_token(store: StoreInterface, p: Principal, source: str, token_id: str,
                             client_id: str | None = None) -> None:
    row = await store.get_source(source, scope_client(p, client_id))
    await RelayQueue(store).revoke_token(row.id, token_id,
                                         audit=p.audit("relay_token.revoke").but(client_id=row.client_id))


async def queue_status(store: StoreInterface, p: Principal, source: str, client_id: str | None = None) -> RelayStatus:
    row = await store.get_source(source, scope_client(p, client_id))
    return await relay_status(store, RelayQueue(store), row)


@dataclass(frozen=True, slots=True)
class RelayTokenListed:
    """A relay token as the Tokens page lists it: with its source's name, never the secret."""

    id: str
    name: str
    source_id: str
    source_name: str
    client_id: str
    created_at: str | None


async def list_all_relay_tokens(store: StoreInterface, p: Principal) -> list[RelayTokenListed]:
    """Every relay token of the sources the caller sees, by source (as sources are listed), each
    source's oldest first."""
    return [RelayTokenListed(id=t.id, name=t.name, source_id=t.source_id, source_name=t.source_name,
                             client_id=t.client_id, created_at=iso(t.created_at))
            for t in await RelayQueue(store).list_all_tokens(scope_client(p, None))]
