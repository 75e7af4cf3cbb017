"""Bulk fixes over everything a filter matches: replay (re-parse) or redeliver (re-run actions) the
matching requests, retry the matching deliveries.

A run is a chunked loop the caller drives: :func:`count_requests` / :func:`count_deliveries` give
the number shown before the operator confirms, then each ``*_chunk`` call handles the next
:data:`CHUNK` items below a cursor and returns the cursor to continue from. No state is kept
between calls (any server process can take the next chunk), the filter is pinned to what existed
when it was confirmed (``until_us``), and the caller's client is applied to every chunk from the
principal, never from the form: a forged filter reaches only the caller's own client's objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from hookbay.errors import BadRequest
from hookbay.ops.access import Principal, scope_client
from hookbay.processing.replay import OffLoop, replay
from hookbay.store import RequestFilter, StoreInterface
from hookbay.store.deliveries import DeliveryFilter as DeliveryFilter  # what a delivery run's filter is
from hookbay.store.sources import SourceCache

CHUNK = 50
MAX_ITEMS = 10_000  # one run's ceiling: past it, narrow the filter and run again
RERUNNABLE = ("dead", "skipped", "succeeded")
REQUEST_ACTIONS = ("replay", "redeliver")


@dataclass
class ChunkResult:
    """One chunk's outcome; ``cursor`` is None when nothing matching is left."""

    handled: int = 0
    changed: int = 0  # replay: records or state changed; redeliver/retry: deliveries queued
    skipped: int = 0
    failed: int = 0
    cursor: str | None = None
    notes: list[str] = field(default_factory=list)


def request_filter(p: Principal, flt: RequestFilter, action: str) -> RequestFilter:
    """The filter as a bulk run applies it: the caller's client, and for replay only accepted
    requests (the only ones that can be re-parsed)."""
    if action not in REQUEST_ACTIONS:
        raise BadRequest("Unknown bulk action", detail={"allowed": list(REQUEST_ACTIONS)})
    flt = replace(flt, client_id=scope_client(p, None), after_id=None)
    if action == "replay":
        flt = replace(flt, verdict="accepted") if flt.verdict in (None, "accepted") else replace(flt, limit=0)
    return flt


async def count_requests(store: StoreInterface, p: Principal, flt: RequestFilter, action: str) -> int:
    """How many requests a run would handle (at most :data:`MAX_ITEMS`)."""
    flt = request_filter(p, flt, action)
    if flt.limit == 0:
        return 0
    return len(await store.search_requests(replace(flt, before_id=None, limit=MAX_ITEMS)))


async def request_chunk(store: StoreInterface, cache: SourceCache, p: Principal, flt: RequestFilter, action: str,
                        cursor: str | None, off_loop: OffLoop | None = None) -> ChunkResult:
    """Replay or redeliver the next :data:`CHUNK` matching requests older than ``cursor``."""
    flt = request_filter(p, flt, action)
    if flt.limit == 0:
        return ChunkResult()
    rows = await store.search_requests(replace(flt, before_id=cursor, limit=CHUNK))
    ids = [r.id for r in rows]
    out = ChunkResult(handled=len(ids), cursor=ids[-1] if len(ids) == CHUNK else None)
    if not ids:
        return out
    if action == "replay":
        for item in await replay(store, cache, request_ids=ids, off_loop=off_loop):
            if "skipped" in item:
                out.skipped += 1
            elif "failed" in item:
                out.failed += 1
                out.notes.append(f"{item['request_id']}: {item['failed']}")
            elif item.get("changed"):
                out.changed += 1
        return out
    client = flt.client_id
    for rid in ids:
        deliveries = await store.list_deliveries(DeliveryFilter(client_id=client, request_id=rid, limit=1000))
        ready = [d.id for d in deliveries if d.state in RERUNNABLE]
        if not ready:
            out.skipped += 1
            continue
        out.changed += len(await store.retry_deliveries(DeliveryFilter(client_id=client, request_id=rid), ids=ready))
    return out


def delivery_filter(p: Principal, flt: DeliveryFilter) -> DeliveryFilter:
    """The caller's client; the state filter picks which finished deliveries run again (dead
    letters when none is chosen), and one still queued or running is never touched."""
    state = flt.state or "dead"
    return replace(flt, client_id=scope_client(p, None), state=state if state in RERUNNABLE else "none")


async def count_deliveries(store: StoreInterface, p: Principal, flt: DeliveryFilter) -> int:
    flt = delivery_filter(p, flt)
    return len(await store.list_deliveries(replace(flt, before_id=None, limit=MAX_ITEMS)))


async def delivery_chunk(store: StoreInterface, p: Principal, flt: DeliveryFilter, cursor: str | None) -> ChunkResult:
    """Queue the next :data:`CHUNK` matching finished deliveries older than ``cursor`` to run now."""
    flt = delivery_filter(p, flt)
    rows = await store.list_deliveries(replace(flt, before_id=cursor, limit=CHUNK))
    ids = [r.id for r in rows]
    out = ChunkResult(handled=len(ids), cursor=ids[-1] if len(ids) == CHUNK else None)
    if ids:
        queued = await store.retry_deliveries(replace(flt, before_id=None), ids=ids)
        out.changed, out.skipped = len(queued), len(ids) - len(queued)
    return out


def summary(action: str, totals: dict[str, Any]) -> str:
    """The result line shown when a run ends."""
    n, changed, skipped, failed = (int(totals.get(k, 0)) for k in ("handled", "changed", "skipped", "failed"))
    if action == "replay":
        return (f"Replayed {n - skipped - failed} of {n} request(s): {changed} changed, {skipped} skipped "
                f"(nothing to re-parse), {failed} failed.")
    if action == "redeliver":
        return f"{changed} delivery(ies) of {n} request(s) queued to run again; {skipped} request(s) had none finished."
    return f"{changed} of {n} delivery(ies) queued to run again; {skipped} were already queued or running."
