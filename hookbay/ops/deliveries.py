"""Action deliveries and dead letters as the API, the console and the CLI read and retry them."""

from __future__ import annotations

from typing import Any

from hookbay.errors import BadRequest, Conflict
from hookbay.ops.access import Principal, scope_client
from hookbay.ops.requests import record_view, source_id_for, time_window
from hookbay.store import StoreInterface
from hookbay.store.deliveries import Delivery, DeliveryFilter
from hookbay.views import iso


def delivery_out(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id, "request_id": d.request_id, "record_index": d.record_idx,
        "action_index": d.action_idx, "action_type": d.action_type, "action_name": d.action_name,
        "source_id": d.source_id, "client_id": d.client_id, "destination": d.destination,
        "state": d.state, "attempts": d.attempts,
        "next_attempt_at": iso(d.run_after) if d.state == "pending" else None,
        "last_status": d.last_status, "last_error": d.last_error,
        "created_at": iso(d.created_at), "updated_at": iso(d.updated_at),
    }


def delivery_detail(d: Delivery) -> dict[str, Any]:
    return {**delivery_out(d), "attempt_log": [
        {"attempt": a.attempt, "started_at": iso(a.started_at), "latency_ms": round(a.latency_us / 1000, 3),
         "status": a.status, "outcome": a.outcome, "response_excerpt": a.response_excerpt,
         "error": a.error} for a in d.attempt_log]}


async def list_deliveries(store: StoreInterface, p: Principal, *, source: str | None = None, state: str | None = None,
                          action_type: str | None = None, request_id: str | None = None, error: str | None = None,
                          destination: str | None = None, since: str | None = None, until: str | None = None,
                          before: str | None = None, limit: int = 50, client_id: str | None = None) -> dict[str, Any]:
    """Newest first, a page at a time: ``next_cursor`` is the ``before`` of the next page."""
    client = scope_client(p, client_id)
    source_id = await source_id_for(store, client, source)
    since_us, until_us = time_window(since, until)
    rows = await store.list_deliveries(DeliveryFilter(
        client_id=client, source_id=source_id, state=state, action_type=action_type, request_id=request_id,
        error=error, destination=destination, since_us=since_us, until_us=until_us, before_id=before, limit=limit))
    return {"items": [delivery_out(r) for r in rows], "next_cursor": rows[-1].id if len(rows) == limit else None}


async def get_delivery(store: StoreInterface, p: Principal, delivery_id: str) -> dict[str, Any]:
    return delivery_detail(await store.get_delivery(delivery_id, scope_client(p, None)))


async def delivery_input(store: StoreInterface, p: Principal, d: dict[str, Any]) -> dict[str, Any] | None:
    """What the delivery's action is given, every attempt alike: its record as stored now (a replay
    since the attempts may have changed it), or None once erased or purged."""
    await store.get_request(d["request_id"], scope_client(p, None))
    recs = (await store.records_for([d["request_id"]]))[d["request_id"]]
    return next((record_view(r) for r in recs if r.idx == d["record_index"]), None)


async def retry_delivery(store: StoreInterface, p: Principal, delivery_id: str) -> dict[str, Any]:
    """Queue one finished delivery (dead letter, skipped or even succeeded) to run again now."""
    client = scope_client(p, None)
    row = await store.get_delivery(delivery_id, client)
    if not await store.retry_deliveries(DeliveryFilter(client_id=client), ids=[row.id]):
        raise Conflict("The delivery is still queued or running", detail={"state": row.state})
    return delivery_out(await store.get_delivery(delivery_id, client))


async def retry_deliveries(store: StoreInterface, p: Principal, delivery_ids: list[str]) -> list[str]:
    """Queue these deliveries again (those still queued or running are left as they are); an unknown
    id is an error, not "queued 0"."""
    client = scope_client(p, None)
    for d in delivery_ids:
        await store.get_delivery(d, client)
    return await store.retry_deliveries(DeliveryFilter(client_id=client), ids=list(delivery_ids))


async def retry_dead_letters(store: StoreInterface, p: Principal, *, source: str | None = None,
                             action_type: str | None = None, error: str | None = None,
                             destination: str | None = None, since: str | None = None,
                             until: str | None = None, all: bool = False,
                             client_id: str | None = None) -> dict[str, Any]:
    """Queue every dead letter matching the filter again, with a fresh retry schedule; an empty
    filter needs ``all`` so that it never means everything by accident."""
    client = scope_client(p, client_id)
    if not all and not any((source, action_type, error, destination, since, until, client_id)):
        raise BadRequest('Give a filter (source, action_type, error, since, until) or "all": true')
    source_id = await source_id_for(store, client, source)
    since_us, until_us = time_window(since, until)
    ids = await store.retry_deliveries(DeliveryFilter(
        client_id=client, source_id=source_id, action_type=action_type, error=error, destination=destination,
        since_us=since_us, until_us=until_us))
    return {"count": len(ids), "ids": ids}
