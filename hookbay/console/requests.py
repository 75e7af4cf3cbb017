"""The Requests page's filters: read from the URL (so a view can be shared), checked, and turned
into the store's :class:`RequestFilter`; plus the query strings for paging and the live tail."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

import anyio

from hookbay.console.bodyview import curl, pretty_body
from hookbay.ops import deliveries as delivery_ops
from hookbay.ops.access import Principal
from hookbay.store import RequestFilter, Store
from hookbay.views import parse_time

PAGE = 50
RANGES = {"15m": "last 15 min", "1h": "last hour", "24h": "last 24 hours", "7d": "last 7 days"}
FIELDS = ("q", "source", "verdict", "state", "rule", "status", "range", "since", "until")
MAX_TEXT = 200


@dataclass
class RequestQuery:
    """What the URL asked for (``chosen``, echoed into the form) and what was wrong with it."""

    chosen: dict[str, str]
    flt: RequestFilter
    errors: list[str] = field(default_factory=list)
    before: str | None = None
    after: str | None = None

    def link(self, **extra: str) -> str:
        """This view's query string (filters only), plus ``extra`` (a cursor)."""
        params = {k: v for k, v in self.chosen.items() if v}
        params.update({k: v for k, v in extra.items() if v})
        return "?" + urlencode(params) if params else "?"

    @property
    def live(self) -> bool:
        """The tail follows new requests only on the first page."""
        return not (self.before or self.after or self.chosen["until"])


def parse(q: Mapping[str, str], client_id: str | None, verdicts: tuple[str, ...], states: tuple[str, ...],
          source_id: str | None) -> RequestQuery:
    """Read the filters; a bad value is dropped from the filter and named in ``errors``, never a 500."""
    chosen = {k: (q.get(k) or "").strip() for k in FIELDS}
    chosen["source"] = source_id or ""
    errors: list[str] = []
    if len(chosen["q"]) > MAX_TEXT:
        chosen["q"] = chosen["q"][:MAX_TEXT]
        errors.append(f"Search text is cut to {MAX_TEXT} characters.")
    if chosen["verdict"] not in verdicts:
        chosen["verdict"] = ""
    if chosen["state"] not in states:
        chosen["state"] = ""
    chosen["rule"] = chosen["rule"][:40]
    status: int | None = None
    if chosen["status"]:
        if chosen["status"].isdigit() and 100 <= int(chosen["status"]) <= 599:
            status = int(chosen["status"])
        else:
            errors.append("Status must be an HTTP status code (100–599).")
            chosen["status"] = ""
    if chosen["range"] not in RANGES:
        chosen["range"] = ""
    since_us = until_us = None
    for name in ("since", "until"):
        if chosen[name]:
            try:
                value = parse_time(chosen[name])
            except ValueError:
                errors.append(f"'{name}' is not a time: use the picker or ISO-8601 (2024-05-01T12:00).")
                chosen[name] = ""
                continue
            if name == "since":
                since_us = value
            else:
                until_us = value
    if chosen["range"]:
        since_us = max(since_us or 0, parse_time(chosen["range"]))
    before = _cursor(q.get("before"))
    after = None if before else _cursor(q.get("after"))
    flt = RequestFilter(source_id=source_id, client_id=client_id, verdict=chosen["verdict"] or None,
                        state=chosen["state"] or None, rule=chosen["rule"] or None, status=status,
                        text=chosen["q"] or None, since_us=since_us, until_us=until_us,
                        before_id=before, after_id=after, limit=PAGE + 1)
    return RequestQuery(chosen=chosen, flt=flt, errors=errors, before=before, after=after)


def _cursor(value: str | None) -> str | None:
    return value if value and len(value) <= 40 and value.isascii() and value.replace("_", "").isalnum() else None


def page_of(query: RequestQuery, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str, str]:
    """Rows newest first (an ``after`` page comes back oldest first), and the older/newer links."""
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    if query.after:
        rows = rows[::-1]
    older = newer = ""
    if rows and (more or query.after):
        older = query.link(before=str(rows[-1]["id"]))
    if rows and (query.before or (query.after and more)):
        newer = query.link(after=str(rows[0]["id"]))
    return rows, older, newer


def tail_filter(query: RequestQuery) -> RequestFilter:
    """The live tail's poll: the same filters, the newest page."""
    return replace(query.flt, before_id=None, after_id=None, limit=PAGE)


async def request_extras(store: Store, d: dict[str, Any], p: Principal, base_url: str) -> dict[str, Any]:
    """What the request page adds to the stored request: the body by its type, the rejection with
    its reason, the profiles its records touched, its deliveries, and the request as curl."""
    text = d["body_text"]
    pretty = (await anyio.to_thread.run_sync(pretty_body, text, d["content_type"])
              if text and not d["body_truncated"] else None)
    errors = (d["receipt"] or {}).get("errors") or []
    rejection = None
    if d["verdict"] == "rejected" and errors:
        first = errors[0]
        detail = first.get("detail") if isinstance(first.get("detail"), dict) else {}
        rejection = {"code": first.get("code"), "message": first.get("message"), "reason": detail.get("reason")}
    profiles = sorted({r["profile_id"] for r in d["records"] if isinstance(r.get("profile_id"), str)})
    deliveries = (await delivery_ops.list_deliveries(store, p, request_id=d["id"], limit=200))["items"]
    return {"pretty": pretty, "rejection": rejection, "profiles": profiles, "deliveries": deliveries,
            "curl": curl(base_url, d["method"], d["path"], d["query"], d["headers"],
                         None if d["body_truncated"] else text, not d["body_missing"] and d["body_size"] > 0)}
