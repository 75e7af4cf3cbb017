"""Admin API routes for deliveries and dead letters (``/api/v1/deliveries``)."""

# No "from __future__ import annotations": FastAPI resolves these annotations at runtime.

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Query
from pydantic import BaseModel, Field

from hookbay.actions.registry import ACTION_TYPES
from hookbay.errors import BadRequest, Conflict
from hookbay.store import Store
from hookbay.store.deliveries import DeliveryFilter
from hookbay.views import iso, parse_time

STATES = "^(pending|running|succeeded|dead|skipped)$"
ACTIONS = f"^({'|'.join(ACTION_TYPES)})$"


class AttemptOut(BaseModel):
    attempt: int
    started_at: str | None
    latency_ms: float
    status: int | None
    outcome: str = Field(description="ok, retry, fail or skipped")
    response_excerpt: str | None
    error: str | None


class DeliveryOut(BaseModel):
    id: str
    request_id: str
    record_index: int
    action_index: int
    action_type: str
    action_name: str
    source_id: str
    client_id: str
    destination: str
    state: str = Field(description="pending, running, succeeded, dead (dead letter) or skipped")
    attempts: int
    next_attempt_at: str | None
    last_status: int | None
    last_error: str | None
    created_at: str | None
    updated_at: str | None


class DeliveryDetail(DeliveryOut):
    attempt_log: list[AttemptOut]


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


class RetryFilter(BaseModel):
    """Which dead letters to queue again; every given field must match."""

    source: str | None = Field(default=None, description="Source id, token or name")
    action_type: str | None = Field(default=None, pattern=ACTIONS)
    error: str | None = Field(default=None, max_length=200, description="Text in the last error")
    since: str | None = Field(default=None, description="Created at or after (ISO-8601 or 15m/2h/3d)")
    until: str | None = None
    all: bool = Field(default=False, description="Every dead letter: required when no filter is given, so that an "
                                                 "empty body never means everything by accident")


class RetryOut(BaseModel):
    count: int
    ids: list[str]


def delivery_out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "request_id": row["request_id"], "record_index": row["record_idx"],
        "action_index": row["action_idx"], "action_type": row["action_type"], "action_name": row["action_name"],
        "source_id": row["source_id"], "client_id": row["client_id"], "destination": row["destination"],
        "state": row["state"], "attempts": row["attempts"],
        "next_attempt_at": iso(row["run_after"]) if row["state"] == "pending" else None,
        "last_status": row["last_status"], "last_error": row["last_error"],
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
    }


def delivery_detail(row: dict[str, Any]) -> dict[str, Any]:
    return {**delivery_out(row), "attempt_log": [
        {"attempt": a["attempt"], "started_at": iso(a["started_at"]), "latency_ms": round(a["latency_us"] / 1000, 3),
         "status": a["status"], "outcome": a["outcome"], "response_excerpt": a["response_excerpt"],
         "error": a["error"]} for a in row["attempts_log"]]}


def _times(since: str | None, until: str | None) -> tuple[int | None, int | None]:
    try:
        return (parse_time(since) if since else None, parse_time(until) if until else None)
    except ValueError as e:
        raise BadRequest("Invalid time", detail=str(e)) from None


async def retry_delivery_for(store: Store, client: str | None, delivery_id: str) -> dict[str, Any]:
    """Queue one finished delivery again now (the API's and the console's Retry)."""
    row = await store.get_delivery(delivery_id, client)
    if not await store.retry_deliveries(DeliveryFilter(client_id=client), ids=[row["id"]]):
        raise Conflict("The delivery is still queued or running", detail={"state": row["state"]})
    return delivery_out(await store.get_delivery(delivery_id, client))


def add_delivery_routes(app: FastAPI, store: Store, auth: Any, scope_client: Callable[[Any, str | None], str | None],
                        errors: dict[int | str, dict[str, Any]]) -> None:
    Auth = auth

    @app.get("/api/v1/deliveries", response_model=DeliveryPage, responses=errors, tags=["deliveries"])
    async def list_deliveries(
        p: Auth,  # type: ignore[valid-type]
        source: str | None = Query(default=None, description="Source id, token or name"),
        state: str | None = Query(default=None, pattern=STATES, description="dead = the dead letters"),
        action_type: str | None = Query(default=None, pattern=ACTIONS),
        request_id: str | None = Query(default=None, max_length=40),
        error: str | None = Query(default=None, max_length=200, description="Text in the last error"),
        since: str | None = Query(default=None, description="ISO-8601 time or relative (15m, 2h, 3d)"),
        until: str | None = None,
        limit: int = Query(default=50, ge=1, le=1000),
        before: str | None = Query(default=None, description="Cursor: the next_cursor of the previous page"),
    ) -> dict[str, Any]:
        client = scope_client(p, None)
        source_id = (await store.get_source(source, client))["id"] if source else None
        since_us, until_us = _times(since, until)
        rows = await store.list_deliveries(DeliveryFilter(
            client_id=client, source_id=source_id, state=state, action_type=action_type, request_id=request_id,
            error=error, since_us=since_us, until_us=until_us, before_id=before, limit=limit))
        return {"items": [delivery_out(r) for r in rows], "next_cursor": rows[-1]["id"] if len(rows) == limit else None}

    @app.get("/api/v1/deliveries/{delivery_id}", response_model=DeliveryDetail, responses=errors,
             tags=["deliveries"])
    async def get_delivery(p: Auth, delivery_id: str) -> dict[str, Any]:  # type: ignore[valid-type]
        return delivery_detail(await store.get_delivery(delivery_id, scope_client(p, None)))

    @app.post("/api/v1/deliveries/{delivery_id}/retry", response_model=DeliveryOut, responses=errors,
              tags=["deliveries"])
    async def retry_delivery(p: Auth, delivery_id: str) -> dict[str, Any]:  # type: ignore[valid-type]
        """Queue one finished delivery (dead letter, skipped or even succeeded) to run again now."""
        return await retry_delivery_for(store, scope_client(p, None), delivery_id)

    @app.post("/api/v1/deliveries/retry", response_model=RetryOut, responses=errors, tags=["deliveries"])
    async def retry_dead_letters(p: Auth, body: RetryFilter) -> dict[str, Any]:  # type: ignore[valid-type]
        """Queue every dead letter matching the filter to run again now, with a fresh retry schedule."""
        client = scope_client(p, None)
        if not body.all and not any((body.source, body.action_type, body.error, body.since, body.until)):
            raise BadRequest('Give a filter (source, action_type, error, since, until) or "all": true')
        source_id = (await store.get_source(body.source, client))["id"] if body.source else None
        since_us, until_us = _times(body.since, body.until)
        ids = await store.retry_deliveries(DeliveryFilter(
            client_id=client, source_id=source_id, action_type=body.action_type, error=body.error,
            since_us=since_us, until_us=until_us))
        return {"count": len(ids), "ids": ids}
