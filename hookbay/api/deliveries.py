"""Admin API routes for deliveries and dead letters (``/api/v1/deliveries``)."""

# No "from __future__ import annotations": FastAPI resolves these annotations at runtime.

from typing import Any

from fastapi import FastAPI, Query
from pydantic import BaseModel, Field

from hookbay.actions.registry import ACTION_TYPES
from hookbay.ops import deliveries as delivery_ops
from hookbay.store import Store

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


def add_delivery_routes(app: FastAPI, store: Store, auth: Any,
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
        return await delivery_ops.list_deliveries(
            store, p, source=source, state=state, action_type=action_type, request_id=request_id, error=error,
            since=since, until=until, before=before, limit=limit)

    @app.get("/api/v1/deliveries/{delivery_id}", response_model=DeliveryDetail, responses=errors,
             tags=["deliveries"])
    async def get_delivery(p: Auth, delivery_id: str) -> dict[str, Any]:  # type: ignore[valid-type]
        return await delivery_ops.get_delivery(store, p, delivery_id)

    @app.post("/api/v1/deliveries/{delivery_id}/retry", response_model=DeliveryOut, responses=errors,
              tags=["deliveries"])
    async def retry_delivery(p: Auth, delivery_id: str) -> dict[str, Any]:  # type: ignore[valid-type]
        """Queue one finished delivery (dead letter, skipped or even succeeded) to run again now."""
        return await delivery_ops.retry_delivery(store, p, delivery_id)

    @app.post("/api/v1/deliveries/retry", response_model=RetryOut, responses=errors, tags=["deliveries"])
    async def retry_dead_letters(p: Auth, body: RetryFilter) -> dict[str, Any]:  # type: ignore[valid-type]
        """Queue every dead letter matching the filter to run again now, with a fresh retry schedule."""
        return await delivery_ops.retry_dead_letters(
            store, p, source=body.source, action_type=body.action_type, error=body.error, since=body.since,
            until=body.until, all=body.all)
