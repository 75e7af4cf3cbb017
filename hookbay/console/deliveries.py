"""The Deliveries page's filters, from the URL (or the bulk-retry form, which repeats them), as the
store's :class:`DeliveryFilter`; the same names and checks as the Requests page."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

from hookbay.console.requests import RANGES
from hookbay.store.deliveries import DeliveryFilter
from hookbay.views import parse_time

ACTION_TYPES = ("forward", "email", "mailchimp")
FIELDS = ("source", "action", "state", "destination", "error", "range")
PAGE = 100


def parse(q: Mapping[str, str], client_id: str | None, states: tuple[str, ...],
          source_id: str | None) -> tuple[DeliveryFilter, dict[str, str]]:
    chosen = {k: (q.get(k) or "").strip()[:200] for k in FIELDS}
    chosen["source"] = source_id or ""
    for name, allowed in (("action", ACTION_TYPES), ("state", states), ("range", tuple(RANGES))):
        if chosen[name] not in allowed:
            chosen[name] = ""
    before = q.get("before") or None
    flt = DeliveryFilter(client_id=client_id, source_id=source_id, state=chosen["state"] or None,
                         action_type=chosen["action"] or None, destination=chosen["destination"] or None,
                         error=chosen["error"] or None,
                         since_us=parse_time(chosen["range"]) if chosen["range"] else None,
                         before_id=before[:40] if before else None, limit=PAGE)
    return flt, chosen


def link(chosen: dict[str, str], **extra: str) -> str:
    params = {k: v for k, v in {**chosen, **extra}.items() if v}
    return "?" + urlencode(params) if params else ""
