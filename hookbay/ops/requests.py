"""The request log as the API, the console and the CLI read it: search, one request, its exact
body, its receipt, and replay (re-parse with the source's current parser and mapping). The views
here turn the store's typed rows into the shapes the API answers with."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
from pydantic import BaseModel, Field

from hookbay.errors import BadRequest
from hookbay.models import RequestDetail, RequestPage, RequestSummary
from hookbay.ops.access import Principal, scope_client
from hookbay.processing.replay import OffLoop, replay
from hookbay.store import RequestFilter, StoreInterface
from hookbay.store.requests import StoredRecord, StoredRequest, StoredRequestSummary
from hookbay.store.sources import SourceCache
from hookbay.views import Receipt, iso, parse_time


def request_summary(row: StoredRequestSummary) -> RequestSummary:
    return RequestSummary(
        id=row.id, source_id=row.source_id, client_id=row.client_id,
        received_at=iso(row.received_at) or "", method=row.method, path=row.path,
        peer=row.peer, content_type=row.content_type, body_size=row.body_size,
        verdict=row.verdict, rule=row.rule, status=row.status, state=row.state,
        duplicate_of=row.duplicate_of, content_encoding=row.content_encoding,
    )


def record_view(rec: StoredRecord) -> dict[str, Any]:
    """A record as the API shows it: its parsed fields after its index and parser."""
    data = orjson.loads(rec.data)
    return {"index": rec.idx, "parser": rec.parser, "parser_version": rec.parser_version, **data}


def request_detail(row: StoredRequest, records: list[StoredRecord]) -> RequestDetail:
    body = row.body
    text: str | None = None
    if body is not None:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    return RequestDetail(
        **request_summary(row).model_dump(),
        query=row.query,
        headers=orjson.loads(row.headers),
        body=text,
        body_base64=base64.b64encode(body).decode() if body is not None else None,
        receipt=orjson.loads(row.receipt) if row.receipt else None,
        records=[record_view(r) for r in records],
    )


def receipt(row: StoredRequest, records: list[StoredRecord]) -> Receipt:
    rc = orjson.loads(row.receipt) if row.receipt else {}
    return Receipt(
        request_id=row.id,
        state=row.state,
        verdict=row.verdict,
        received_at=iso(row.received_at),
        processed_at=iso(row.processed_at),
        duplicate_of=row.duplicate_of,
        records=[record_view(r) for r in records],
        errors=rc.get("errors", []),
        warnings=rc.get("warnings", []),
    )


def time_window(since: str | None, until: str | None) -> tuple[int | None, int | None]:
    """``since``/``until`` (ISO-8601 or relative 15m/2h/3d) as epoch µs; a bad one is a 400."""
    try:
        return (parse_time(since) if since else None, parse_time(until) if until else None)
    except ValueError as e:
        raise BadRequest("Invalid time", detail=str(e)) from None


async def source_id_for(store: StoreInterface, client: str | None, source: str | None) -> str | None:
    """A source filter (id, ingest token or name) as the source's id, within what ``client`` sees."""
    return str((await store.get_source(source, client)).id) if source else None


async def _filter(store: StoreInterface, p: Principal, client_id: str | None, source: str | None, since: str | None,
                  until: str | None, **eq: Any) -> RequestFilter:
    """The caller's filter words as a store filter, within the clients the caller may see."""
    client = scope_client(p, client_id)
    source_id = await source_id_for(store, client, source)
    since_us, until_us = time_window(since, until)
    return RequestFilter(source_id=source_id, client_id=client, since_us=since_us, until_us=until_us, **eq)


async def search_requests(store: StoreInterface, p: Principal, *, source: str | None = None, since: str | None = None,
                          until: str | None = None, verdict: str | None = None, state: str | None = None,
                          q: str | None = None, limit: int = 50, before: str | None = None,
                          client_id: str | None = None) -> RequestPage:
    """Newest first, a page at a time: ``next_cursor`` is the ``before`` of the next page."""
    rows = await store.search_requests(await _filter(store, p, client_id, source, since, until, verdict=verdict,
                                                     state=state, text=q, before_id=before, limit=limit))
    nxt = rows[-1].id if len(rows) == limit else None
    return RequestPage(items=[request_summary(r) for r in rows], next_cursor=nxt)


async def requests_after(store: StoreInterface, p: Principal, after: str, *, source: str | None = None,
                         since: str | None = None, until: str | None = None, verdict: str | None = None,
                         state: str | None = None, q: str | None = None, limit: int = 500,
                         client_id: str | None = None) -> list[RequestSummary]:
    """Oldest first, the requests after the request id ``after``: what following the log pages through."""
    rows = await store.search_requests(await _filter(store, p, client_id, source, since, until, verdict=verdict,
                                                     state=state, text=q, after_id=after, limit=limit))
    return [request_summary(r) for r in rows]


async def export_requests(store: StoreInterface, p: Principal, *, source: str | None = None, since: str | None = None,
                          until: str | None = None, verdict: str | None = None, state: str | None = None,
                          client_id: str | None = None, page: int = 500) -> AsyncIterator[RequestDetail]:
    """Every matching request in full (headers, body, receipt, records), oldest first, ``page`` at a time."""
    f = await _filter(store, p, client_id, source, since, until, verdict=verdict, state=state, after_id="req_",
                      limit=page)
    while True:
        rows = await store.search_requests(f)
        if not rows:
            return
        ids = [r.id for r in rows]
        full = await store.load_requests(ids)
        recs = await store.records_for(ids)
        for rid in ids:
            yield request_detail(full[rid], recs[rid])
        f.after_id = ids[-1]


async def list_requests(store: StoreInterface, p: Principal, flt: RequestFilter) -> list[RequestSummary]:
    """A page of the log for a filter built by the caller (the console's), within what ``p`` may see."""
    rows = await store.search_requests(replace(flt, client_id=scope_client(p, flt.client_id)))
    return [request_summary(r) for r in rows]


async def get_request(store: StoreInterface, p: Principal, request_id: str) -> RequestDetail:
    return (await get_request_with_body(store, p, request_id))[0]


async def get_request_with_body(store: StoreInterface, p: Principal, request_id: str) -> tuple[RequestDetail, bytes | None]:
    """:func:`get_request` and the exact stored bytes (None once purged or erased), which the
    console shows as a hex dump when they are not text."""
    row = await store.get_request(request_id, scope_client(p, None))
    recs = await store.records_for([request_id])
    return request_detail(row, recs[request_id]), row.body


async def request_body(store: StoreInterface, p: Principal, request_id: str) -> tuple[bytes, str | None]:
    """The exact stored bytes and the sender's content type."""
    row = await store.get_request(request_id, scope_client(p, None))
    return row.body or b"", row.content_type


class ReplayIn(BaseModel):
    request_id: str | None = None
    source: str | None = None
    state: str | None = Field(default=None, pattern="^(pending|processed|failed)$")
    since: str | None = None
    until: str | None = None
    limit: int = Field(default=1000, ge=1, le=100_000)
    dry_run: bool = False
    all: bool = Field(default=False, description="Every request (up to limit): required when no request_id or "
                                                 "filter is given, so that an empty body never means everything")


async def replay_requests(store: StoreInterface, cache: SourceCache, p: Principal, body: ReplayIn,
                          off_loop: OffLoop | None = None) -> dict[str, Any]:
    """Replay as API, console and CLI do it. ``off_loop`` (the server's parse pool) keeps a tenant's
    replay of a pathological stored body off the event loop and under the parse budget."""
    client = scope_client(p, None)
    if not body.all and not any((body.request_id, body.source, body.state, body.since, body.until)):
        raise BadRequest('Give request_id, a filter (source, state, since, until) or "all": true')
    if body.request_id:
        await store.get_request(body.request_id, client)
        items = await replay(store, cache, request_ids=[body.request_id], dry_run=body.dry_run, off_loop=off_loop)
    else:
        source_id = await source_id_for(store, client, body.source)
        since_us, until_us = time_window(body.since, body.until)
        flt = RequestFilter(source_id=source_id, client_id=client, state=body.state, limit=body.limit,
                            since_us=since_us, until_us=until_us)
        items = await replay(store, cache, flt=flt, dry_run=body.dry_run, off_loop=off_loop)
    return {"dry_run": body.dry_run, "count": len(items), "items": items}
