"""Customer profiles, the pure rules: identity keys, field-by-field merge, profile merges, consent.

No I/O: :mod:`hookbay.store.profiles` applies these rules inside the transaction that stores a
request's records, and ``tests/models/identity.py`` restates them as a reference model.

A contact's keys are its normalised email and its E.164 phone and mobile (one kind, ``phone``).
A contact matching no profile makes one; matching one updates it and adds its new keys; matching
two or more merges them into the oldest. Each scalar field keeps the value with the latest event
time and remembers which request and source set it; set fields (activities, interests,
newsletters, list ids) are unions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

SET_FIELDS = frozenset({"activities", "interests", "newsletters", "list_ids"})


def identity_keys(contact: dict[str, Any]) -> list[tuple[str, str]]:
    keys: list[tuple[str, str]] = []
    if contact.get("email"):
        keys.append(("email", str(contact["email"]).lower()))
    for f in ("phone", "mobile"):
        v = contact.get(f)
        if v and ("phone", v) not in keys:
            keys.append(("phone", str(v)))
    return keys


def merge_fields(
    fields: dict[str, Any], contact: dict[str, Any], at: int, request_id: str, source_id: str | None
) -> bool:
    """Apply one contact to a profile's fields in place; returns whether anything changed."""
    changed = False
    for name, value in contact.items():
        if value is None or (not value and isinstance(value, str | list | dict)):  # None, "", [], {}
            continue
        cur = fields.get(name)
        if name in SET_FIELDS and isinstance(value, list):
            if cur is None:
                fields[name] = {"value": list(value), "at": at, "request_id": request_id, "source_id": source_id}
                changed = True
                continue
            old = list(cur["value"])
            added = [v for v in value if v not in old]
            if added:
                fields[name] = {"value": old + added, "at": max(at, cur["at"]),
                                "request_id": request_id, "source_id": source_id}
                changed = True
            continue
        if cur is None or (at >= cur["at"] and (cur["value"] != value or cur["request_id"] != request_id)):
            fields[name] = {"value": value, "at": at, "request_id": request_id, "source_id": source_id}
            changed = True
    return changed


def merge_profile_fields(survivor: dict[str, Any], merged: dict[str, Any]) -> bool:
    """Fold a merged-away profile's fields into the survivor's, in place: a scalar keeps the value
    with the later event time (the survivor's on a tie), a set field becomes the union (the
    survivor's values first) credited to the merged profile's setter, as :func:`merge_fields`
    credits the contact that added values. Returns whether the survivor changed."""
    changed = False
    for name, theirs in merged.items():
        ours = survivor.get(name)
        if ours is None:
            survivor[name] = dict(theirs)
            changed = True
        elif name in SET_FIELDS and isinstance(ours["value"], list) and isinstance(theirs["value"], list):
            added = [v for v in theirs["value"] if v not in ours["value"]]
            if added:
                survivor[name] = {"value": list(ours["value"]) + added, "at": max(ours["at"], theirs["at"]),
                                  "request_id": theirs["request_id"], "source_id": theirs.get("source_id")}
                changed = True
        elif theirs["at"] > ours["at"]:
            survivor[name] = dict(theirs)
            changed = True
    return changed


def identity_columns(fields: dict[str, Any]) -> tuple[Any, Any]:
    """The profile row's searchable email and phone, from its merged fields."""
    email = fields.get("email", {}).get("value")
    phone = (fields.get("phone") or fields.get("mobile") or {}).get("value")
    return email, phone


class ConsentEvent(Protocol):
    """A consent ledger entry as :func:`consent_state` reads it (the store's ``StoredConsentEvent``)."""

    @property
    def id(self) -> int: ...
    @property
    def channel(self) -> str: ...
    @property
    def granted(self) -> bool: ...
    @property
    def occurred_at(self) -> int: ...
    @property
    def request_id(self) -> str | None: ...
    @property
    def source_id(self) -> str | None: ...


def consent_state(events: Iterable[ConsentEvent]) -> dict[str, dict[str, Any]]:
    """Current consent per channel: the latest explicit event (ties broken by ledger order)."""
    state: dict[str, dict[str, Any]] = {}
    for e in sorted(events, key=lambda e: (e.occurred_at, e.id)):
        state[e.channel] = {"granted": e.granted, "occurred_at": e.occurred_at,
                            "request_id": e.request_id, "source_id": e.source_id}
    return state


def lookup_email(value: str) -> str:
    return value.strip().lower()


def lookup_phone(value: str, region: str | None = None) -> str:
    """Accept any way a user types a number; fall back to the raw text when it will not parse."""
    import phonenumbers

    try:
        n = phonenumbers.parse(value, region)
        return phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)
    except phonenumbers.NumberParseException:
        return value.strip()
