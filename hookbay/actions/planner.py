"""Which deliveries a request's records make: every action whose condition holds, in order.

The worker plans them when it stores the records (same transaction, so none is lost or doubled).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from hookbay.actions.base import ActionConfig
from hookbay.actions.conditions import Condition, compile_condition
from hookbay.results import PlannedDelivery
from hookbay.settings import Settings


@functools.lru_cache(maxsize=1024)
def _condition(text: str) -> Condition:
    return compile_condition(text)


def condition_view(record: dict[str, Any]) -> dict[str, Any]:
    """What a condition sees: a contact record's fields plus its permission flags
    (``EmailPermission`` -> ``email_permission``), or a generic/mapped record's fields."""
    contact = record.get("contact")
    if not isinstance(contact, dict):
        fields = record.get("fields")
        return fields if isinstance(fields, dict) else record
    view = dict(contact)
    for c in record.get("consents") or ():
        if isinstance(c, dict) and isinstance(c.get("field"), str):
            view.setdefault(c["field"], c.get("granted"))
    return view


def plan(records: list[dict[str, Any]], actions: Sequence[ActionConfig], settings: Settings) -> list[PlannedDelivery]:
    """The deliveries ``records`` make under a source's ``actions``."""
    if not actions:
        return []
    out = []
    for ri, rec in enumerate(records):
        view = condition_view(rec)
        kind = record_kind(rec)
        for ai, action in enumerate(actions):
            if not action.runs_on(kind):
                continue
            if action.when is not None and not _condition(action.when).evaluate(view):
                continue
            name = action.display_name(ai)
            destination = action.destination(settings)[:300]
            # an order's: one delivery per order and action, however many events the order has
            once_key = f"order:{rec['order']['id']}|{name}"[:300] if kind == "order" else None
            out.append(PlannedDelivery(record_idx=ri, action_idx=ai, action_type=action.type, action_name=name,
                                       destination=destination, once_key=once_key))
    return out


def record_kind(rec: dict[str, Any]) -> str:
    """``order``, ``contact`` or ``record`` (a free record), as an action's ``on`` names them."""
    return "order" if "order" in rec else "contact" if "contact" in rec else "record"
