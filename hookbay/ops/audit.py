"""Reading the audit log (entries are written by the store, in the change's own transaction)."""

from __future__ import annotations

from typing import Any

import orjson

from hookbay.ops.access import Principal, scope_client
from hookbay.ops.requests import time_window
from hookbay.store import StoreInterface
from hookbay.store.audit import StoredAuditEntry
from hookbay.views import iso


def entry_view(e: StoredAuditEntry) -> dict[str, Any]:
    """An entry as the API, the console and ``hookbay audit`` show it."""
    weakens = orjson.loads(e.weakens or "[]")
    return {"id": e.id, "at": iso(e.at), "actor": e.actor, "token_id": e.token_id, "client_id": e.client_id,
            "action": e.action, "target": e.target, "peer": e.peer, "changes": orjson.loads(e.changes or "[]"),
            "weakens": weakens, "weakening": bool(weakens)}


async def list_audit(store: StoreInterface, p: Principal, *, since: str | None = None, until: str | None = None,
                     before: str | None = None, limit: int = 50, client_id: str | None = None,
                     action: str | None = None, actor: str | None = None,
                     target: str | None = None) -> dict[str, Any]:
    """Newest first, a page at a time; a client sees only its own client's entries. ``action`` is
    a prefix (``source.`` for every source change), ``actor`` and ``target`` are exact."""
    since_us, until_us = time_window(since, until)
    rows = await store.list_audit(scope_client(p, client_id), since_us=since_us, until_us=until_us,
                                  before_id=before, limit=limit, action=action, actor=actor, target=target)
    return {"items": [entry_view(r) for r in rows], "next_cursor": rows[-1].id if len(rows) == limit else None}
