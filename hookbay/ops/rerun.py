"""Fixing one request from the console: its replay shown as a dry-run diff before it is applied,
its actions run again (redelivered) once the operator has confirmed exactly which, and the request
itself resent to a URL the operator types."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from hookbay.actions.ssrf import DestinationRefused, check_destination, check_peer
from hookbay.errors import BadRequest, Forbidden
from hookbay.ops import deliveries as delivery_ops
from hookbay.ops.access import Principal, scope_client
from hookbay.ops.requests import ReplayIn, replay_requests
from hookbay.processing.replay import OffLoop
from hookbay.store import StoreInterface
from hookbay.store.deliveries import DeliveryFilter
from hookbay.store.sources import SourceCache

RERUNNABLE = ("dead", "skipped", "succeeded")
MAX_DELIVERIES = 200


def preview_digest(item: dict[str, Any]) -> str:
    """What the operator saw: applying goes ahead only while a fresh dry run still gives this."""
    seen = {k: item.get(k) for k in ("new_state", "diff", "errors", "records", "skipped", "failed")}
    return hashlib.sha256(orjson.dumps(seen, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


async def preview_replay(store: StoreInterface, cache: SourceCache, p: Principal, request_id: str,
                         off_loop: OffLoop | None = None) -> dict[str, Any]:
    """The dry run: old and new state, the records' diff and the new errors; nothing changes."""
    out = await replay_requests(store, cache, p, ReplayIn(request_id=request_id, dry_run=True), off_loop)
    item: dict[str, Any] = out["items"][0]
    return {**item, "digest": preview_digest(item)}


@dataclass(frozen=True, slots=True)
class Applied:
    applied: bool
    item: dict[str, Any]  # the replay's outcome, or the fresh preview when it no longer matched


async def apply_replay(store: StoreInterface, cache: SourceCache, p: Principal, request_id: str, digest: str,
                       off_loop: OffLoop | None = None) -> Applied:
    """Replay for real only what was previewed: when the source's parser or mapping changed since
    the preview, nothing is applied and the new preview comes back to be reviewed."""
    fresh = await preview_replay(store, cache, p, request_id, off_loop)
    if fresh["digest"] != digest or "skipped" in fresh or "failed" in fresh:
        return Applied(False, fresh)
    out = await replay_requests(store, cache, p, ReplayIn(request_id=request_id), off_loop)
    return Applied(True, out["items"][0])


async def redeliver_plan(store: StoreInterface, p: Principal, request_id: str) -> dict[str, Any]:
    """The request's deliveries split into those that would run again (finished ones) and those
    still queued or running, which are left alone."""
    await store.get_request(request_id, scope_client(p, None))
    items = (await delivery_ops.list_deliveries(store, p, request_id=request_id, limit=MAX_DELIVERIES))["items"]
    return {"ready": [d for d in items if d["state"] in RERUNNABLE],
            "busy": [d for d in items if d["state"] not in RERUNNABLE]}


async def redeliver(store: StoreInterface, p: Principal, request_id: str, ids: list[str]) -> list[str]:
    """Queue the confirmed deliveries (ids from the confirmation) to run now, each through its
    action's checks again; an id of another request or client, or one still queued, is ignored."""
    client = scope_client(p, None)
    await store.get_request(request_id, client)
    ids = list(dict.fromkeys(i for i in ids if i))[:MAX_DELIVERIES]
    if not ids:
        raise BadRequest("Choose at least one delivery to run again")
    return await store.retry_deliveries(DeliveryFilter(client_id=client, request_id=request_id), ids=ids)


RESEND_TIMEOUT = 10.0
RESEND_EXCERPT = 2000
NOT_RESENT = frozenset({  # hop-by-hop, set by the client itself, or credentials meant for hookbay
    "host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
    "accept-encoding", "proxy-authorization", "proxy-connection", "authorization", "cookie", "x-api-key"})


async def resend(store: StoreInterface, p: Principal, request_id: str, url: str, *, allow_private: bool = False) -> dict[str, Any]:
    """Send the stored request (its method, its headers but hop-by-hop ones and credentials, its
    exact body) to a URL the operator typed, through the outbound-address guard: the private network
    only when the admin asks for it. No redirect is followed; the answer comes back as status and an
    excerpt, or as the reason it could not be sent."""
    if allow_private and not p.is_admin:
        raise Forbidden("Only the admin may send to a private address")
    row = await store.get_request(request_id, scope_client(p, None))
    if row.body is None and row.body_size:
        raise BadRequest("The body is no longer stored (retention or erasure): nothing to resend")
    try:
        await check_destination(url, allow_private=allow_private)
    except DestinationRefused as e:
        return {"url": url, "error": f"Destination refused: {e}"}
    headers = [(k, v) for k, v in orjson.loads(row.headers) if k.lower() not in NOT_RESENT]
    try:
        async with httpx.AsyncClient(timeout=RESEND_TIMEOUT, follow_redirects=False) as c:
            async with c.stream(row.method, url, headers=headers, content=row.body or b"") as r:
                check_peer(r, url, allow_private)
                excerpt = b""
                async for chunk in r.aiter_raw():
                    excerpt += chunk
                    if len(excerpt) >= RESEND_EXCERPT:
                        break
    except DestinationRefused as e:
        return {"url": url, "error": f"Destination refused: {e}"}
    except httpx.HTTPError as e:
        return {"url": url, "error": f"Not sent: {type(e).__name__}: {e}"[:300]}
    return {"url": url, "status": r.status_code, "reason": r.reason_phrase,
            "excerpt": excerpt[:RESEND_EXCERPT].decode("utf-8", "replace")}
