"""Fixing one request from the console: its replay shown as a dry-run diff before it is applied,
and its actions run again (redelivered) once the operator has confirmed exactly which."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from hookbay.errors import BadRequest
from hookbay.ops import deliveries as delivery_ops
from hookbay.ops.access import Principal, scope_client
from hookbay.ops.requests import ReplayIn, replay_requests
from hookbay.processing.replay import OffLoop
from hookbay.store import Store
from hookbay.store.deliveries import DeliveryFilter
from hookbay.store.sources import SourceCache

RERUNNABLE = ("dead", "skipped", "succeeded")
MAX_DELIVERIES = 200


def preview_digest(item: dict[str, Any]) -> str:
    """What the operator saw: applying goes ahead only while a fresh dry run still gives this."""
    seen = {k: item.get(k) for k in ("new_state", "diff", "errors", "records", "skipped", "failed")}
    return hashlib.sha256(orjson.dumps(seen, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


async def preview_replay(store: Store, cache: SourceCache, p: Principal, request_id: str,
                         off_loop: OffLoop | None = None) -> dict[str, Any]:
    """The dry run: old and new state, the records' diff and the new errors; nothing changes."""
    out = await replay_requests(store, cache, p, ReplayIn(request_id=request_id, dry_run=True), off_loop)
    item: dict[str, Any] = out["items"][0]
    return {**item, "digest": preview_digest(item)}


@dataclass(frozen=True, slots=True)
class Applied:
    applied: bool
    item: dict[str, Any]  # the replay's outcome, or the fresh preview when it no longer matched


async def apply_replay(store: Store, cache: SourceCache, p: Principal, request_id: str, digest: str,
                       off_loop: OffLoop | None = None) -> Applied:
    """Replay for real only what was previewed: when the source's parser or mapping changed since
    the preview, nothing is applied and the new preview comes back to be reviewed."""
    fresh = await preview_replay(store, cache, p, request_id, off_loop)
    if fresh["digest"] != digest or "skipped" in fresh or "failed" in fresh:
        return Applied(False, fresh)
    out = await replay_requests(store, cache, p, ReplayIn(request_id=request_id), off_loop)
    return Applied(True, out["items"][0])


async def redeliver_plan(store: Store, p: Principal, request_id: str) -> dict[str, Any]:
    """The request's deliveries split into those that would run again (finished ones) and those
    still queued or running, which are left alone."""
    await store.get_request(request_id, scope_client(p, None))
    items = (await delivery_ops.list_deliveries(store, p, request_id=request_id, limit=MAX_DELIVERIES))["items"]
    return {"ready": [d for d in items if d["state"] in RERUNNABLE],
            "busy": [d for d in items if d["state"] not in RERUNNABLE]}


async def redeliver(store: Store, p: Principal, request_id: str, ids: list[str]) -> list[str]:
    """Queue the confirmed deliveries (ids from the confirmation) to run now, each through its
    action's checks again; an id of another request or client, or one still queued, is ignored."""
    client = scope_client(p, None)
    await store.get_request(request_id, client)
    ids = list(dict.fromkeys(i for i in ids if i))[:MAX_DELIVERIES]
    if not ids:
        raise BadRequest("Choose at least one delivery to run again")
    return await store.retry_deliveries(DeliveryFilter(client_id=client, request_id=request_id), ids=ids)
