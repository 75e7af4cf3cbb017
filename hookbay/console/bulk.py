"""Bulk actions from the Requests and Deliveries pages: everything the page's filter matches is
replayed, redelivered or retried (:mod:`hookbay.ops.bulk`).

GET shows the count and asks for confirmation; each POST runs one chunk and answers a progress
page whose form carries the filter, the cursor and the running totals to the next chunk (console.js
submits it at once; without JavaScript it is a Continue button); the last chunk answers the result.
The filter is pinned at the confirmation (``at``), so requests arriving during the run are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from hookbay.console import deliveries as delivery_query
from hookbay.console import requests as request_query
from hookbay.console.base import DELIVERY_STATES, STATES, VERDICTS, Console, Ctx
from hookbay.ids import now_us
from hookbay.ops import bulk
from hookbay.ops.bulk import DeliveryFilter
from hookbay.ops.requests import source_id_for
from hookbay.store import RequestFilter
from hookbay.views import parse_time

TOTALS = ("handled", "changed", "skipped", "failed")
TITLES = {"replay": "Replay every matching request", "redeliver": "Re-run the actions of every matching request",
          "retry": "Retry every matching delivery"}


def _at(q: Mapping[str, str]) -> int:
    """When the run was confirmed (from the form), or now for the confirmation page itself."""
    v = q.get("at", "")
    now = now_us()
    return min(int(v), now) if v.isdigit() else now


def _relative_since(chosen: dict[str, str], at: int) -> int | None:
    """A relative range ("last hour") counted back from the confirmation, not from each chunk."""
    return parse_time(chosen["range"]) - (now_us() - at) if chosen.get("range") else None


def _pin_requests(flt: RequestFilter, chosen: dict[str, str], at: int) -> RequestFilter:
    since = _relative_since(chosen, at)
    if since is not None and chosen.get("since"):
        since = max(since, parse_time(chosen["since"]))
    return replace(flt, since_us=since if since is not None else flt.since_us,
                   until_us=min(flt.until_us, at) if flt.until_us is not None else at, before_id=None, after_id=None)


async def _requests(console: Console, q: Mapping[str, str], ctx: Ctx) -> tuple[str, RequestFilter, dict[str, str]]:
    action = q.get("action", "")
    source_id = await source_id_for(console.store, ctx.client, q.get("source"))
    query = request_query.parse(q, ctx.client, VERDICTS, STATES, source_id)
    return action, _pin_requests(query.flt, query.chosen, _at(q)), query.chosen


async def _deliveries(console: Console, q: Mapping[str, str], ctx: Ctx) -> tuple[DeliveryFilter, dict[str, str]]:
    source_id = await source_id_for(console.store, ctx.client, q.get("source"))
    chosen = delivery_query.parse(q, DELIVERY_STATES, source_id)
    at = _at(q)
    flt = DeliveryFilter(source_id=source_id, state=chosen["state"] or None, action_type=chosen["action"] or None,
                         destination=chosen["destination"] or None, error=chosen["error"] or None,
                         since_us=_relative_since(chosen, at), until_us=at)
    return flt, chosen


def _render(console: Console, ctx: Ctx, kind: str, action: str, chosen: dict[str, str], at: int, *,
            total: int, totals: dict[str, int] | None = None, cursor: str | None = None, done: bool = False,
            notes: list[str] | None = None) -> Response:
    filters = {k: v for k, v in chosen.items() if v}
    back = ("/ui/" if kind == "requests" else "/ui/deliveries") + ("?" + urlencode(filters) if filters else "")
    return console.render(ctx, "bulk.html", kind=kind, action=action, title=TITLES.get(action, "Bulk action"),
                          filters=filters, at=str(at), total=total, totals=totals, cursor=cursor or "", done=done,
                          notes=notes or [], back=back, cap=bulk.MAX_ITEMS,
                          result=bulk.summary(action, totals or {}) if done else None,
                          nav="requests" if kind == "requests" else "deliveries")


async def confirm_requests(console: Console, request: Request, ctx: Ctx) -> Response:
    action, flt, chosen = await _requests(console, request.query_params, ctx)
    total = await bulk.count_requests(console.store, ctx.principal, flt, action)
    return _render(console, ctx, "requests", action, chosen, _at(request.query_params), total=total)


async def confirm_deliveries(console: Console, request: Request, ctx: Ctx) -> Response:
    flt, chosen = await _deliveries(console, request.query_params, ctx)
    total = await bulk.count_deliveries(console.store, ctx.principal, flt)
    return _render(console, ctx, "deliveries", "retry", chosen, _at(request.query_params), total=total)


def _totals(form: Mapping[str, str], step: bulk.ChunkResult) -> dict[str, int]:
    before = {k: int(form.get(k, "0")) if form.get(k, "0").isdigit() else 0 for k in TOTALS}
    return {k: before[k] + int(getattr(step, k)) for k in TOTALS}


def _cursor(form: Mapping[str, str]) -> str | None:
    return request_query._cursor(form.get("cursor"))


def _total(form: Mapping[str, str]) -> int:
    v = form.get("total", "")
    return min(int(v), bulk.MAX_ITEMS) if v.isdigit() else bulk.MAX_ITEMS


async def run_requests(console: Console, request: Request, ctx: Ctx) -> Response:
    form = await console.form(request, ctx)
    action, flt, chosen = await _requests(console, form, ctx)
    step = await bulk.request_chunk(console.store, console.cache, ctx.principal, flt, action, _cursor(form),
                                    console.parse_off_loop)
    totals = _totals(form, step)
    total = _total(form)
    done = step.cursor is None or totals["handled"] >= total
    return _render(console, ctx, "requests", action, chosen, _at(form), total=max(total, totals["handled"]),
                   totals=totals, cursor=step.cursor, done=done, notes=step.notes)


async def run_deliveries(console: Console, request: Request, ctx: Ctx) -> Response:
    form = await console.form(request, ctx)
    flt, chosen = await _deliveries(console, form, ctx)
    step = await bulk.delivery_chunk(console.store, ctx.principal, flt, _cursor(form))
    totals = _totals(form, step)
    total = _total(form)
    done = step.cursor is None or totals["handled"] >= total
    return _render(console, ctx, "deliveries", "retry", chosen, _at(form), total=max(total, totals["handled"]),
                   totals=totals, cursor=step.cursor, done=done, notes=step.notes)
