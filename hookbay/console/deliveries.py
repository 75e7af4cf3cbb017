"""The Deliveries page's filters, from the URL (or the bulk-retry form, which repeats them), checked
and turned into the arguments of :mod:`hookbay.ops.deliveries`; the same names as the Requests page."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from hookbay.actions.registry import ACTION_TYPES
from hookbay.console.requests import RANGES

FIELDS = ("source", "action", "state", "destination", "error", "range")
PAGE = 100


def parse(q: Mapping[str, str], states: tuple[str, ...], source_id: str | None) -> dict[str, str]:
    """The filters as chosen (echoed into the form); an unknown choice is dropped, never a 500."""
    chosen = {k: (q.get(k) or "").strip()[:200] for k in FIELDS}
    chosen["source"] = source_id or ""
    for name, allowed in (("action", ACTION_TYPES), ("state", states), ("range", tuple(RANGES))):
        if chosen[name] not in allowed:
            chosen[name] = ""
    return chosen


def op_args(chosen: dict[str, str]) -> dict[str, Any]:
    return {"source": chosen["source"] or None, "state": chosen["state"] or None,
            "action_type": chosen["action"] or None, "destination": chosen["destination"] or None,
            "error": chosen["error"] or None, "since": chosen["range"] or None}


def cursor(q: Mapping[str, str]) -> str | None:
    before = q.get("before")
    return before[:40] if before else None


def link(chosen: dict[str, str], **extra: str) -> str:
    params = {k: v for k, v in {**chosen, **extra}.items() if v}
    return "?" + urlencode(params) if params else ""
