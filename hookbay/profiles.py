"""Customer profiles: identity matching, field-by-field merge, and the consent ledger.

Runs inside the transaction that stores a request's records, so a profile change and the records
that caused it commit together. Matching: normalised email first, else E.164 phone or mobile.
Each scalar field keeps the value with the latest event time and remembers which request set it;
set fields (activities, interests, newsletters, list ids) are unions.
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa

from . import schema
from .ids import ulid

P, PK, CE = schema.profiles, schema.profile_keys, schema.consent_events

SET_FIELDS = frozenset({"activities", "interests", "newsletters", "list_ids"})
IDENTITY_FIELDS = ("email", "phone", "mobile")


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
        if value is None or value == "" or value == [] or value == {}:
            continue
        cur = fields.get(name)
        if name in SET_FIELDS and isinstance(value, list):
            old = list(cur["value"]) if cur else []
            merged = old + [v for v in value if v not in old]
            if cur is None or merged != old:
                fields[name] = {"value": merged, "at": max(at, cur["at"]) if cur else at,
                                "request_id": request_id, "source_id": source_id}
                changed = True
            continue
        if cur is None or at >= cur["at"]:
            if cur is None or cur["value"] != value or cur["request_id"] != request_id:
                fields[name] = {"value": value, "at": at, "request_id": request_id, "source_id": source_id}
                changed = True
    return changed


def _ensure_profile(conn: sa.Connection, insert: Any, client_id: str, keys: list[tuple[str, str]], now: int) -> str:
    for kind, value in keys:
        pid = conn.execute(sa.select(PK.c.profile_id).where(
            PK.c.client_id == client_id, PK.c.kind == kind, PK.c.value == value)).scalar()
        if pid:
            break
    else:
        new = "prf_" + ulid()
        kind, value = keys[0]
        conn.execute(insert(PK).values(client_id=client_id, kind=kind, value=value, profile_id=new)
                     .on_conflict_do_nothing())
        pid = conn.execute(sa.select(PK.c.profile_id).where(
            PK.c.client_id == client_id, PK.c.kind == kind, PK.c.value == value)).scalar()
        if pid == new:
            conn.execute(P.insert().values(id=new, client_id=client_id, fields="{}", created_at=now, updated_at=now))
    for kind, value in keys:
        conn.execute(insert(PK).values(client_id=client_id, kind=kind, value=value, profile_id=pid)
                     .on_conflict_do_nothing())
    return str(pid)


def apply_contact(
    conn: sa.Connection, insert: Any, *, client_id: str, contact: dict[str, Any], consents: list[dict[str, Any]],
    at: int, request_id: str, source_id: str | None, now: int,
) -> str | None:
    """Merge one parsed contact into its profile (creating it); returns the profile id, or None
    when the contact has no identity to match on."""
    keys = identity_keys(contact)
    if not keys:
        return None
    pid = _ensure_profile(conn, insert, client_id, keys, now)
    row = conn.execute(sa.select(P.c.fields).where(P.c.id == pid).with_for_update()).one()
    fields = orjson.loads(row.fields)
    if merge_fields(fields, contact, at, request_id, source_id):
        email = fields.get("email", {}).get("value")
        phone = (fields.get("phone") or fields.get("mobile") or {}).get("value")
        conn.execute(P.update().where(P.c.id == pid).values(
            fields=orjson.dumps(fields).decode(), email=email, phone=phone, updated_at=now))
    for c in consents:
        conn.execute(insert(CE).values(
            profile_id=pid, client_id=client_id, channel=c["channel"], granted=bool(c["granted"]),
            occurred_at=at, source_id=source_id, request_id=request_id, field=c.get("field"),
        ).on_conflict_do_nothing())
    return pid


def consent_state(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Current consent per channel: the latest explicit event (ties broken by ledger order)."""
    state: dict[str, dict[str, Any]] = {}
    for e in sorted(events, key=lambda e: (e["occurred_at"], e["id"])):
        state[e["channel"]] = {"granted": bool(e["granted"]), "occurred_at": e["occurred_at"],
                               "request_id": e["request_id"], "source_id": e["source_id"]}
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


def profile_view(row: dict[str, Any]) -> dict[str, Any]:
    from .views import iso

    fields = orjson.loads(row["fields"])
    ledger = [
        {"channel": e["channel"], "granted": bool(e["granted"]), "occurred_at": iso(e["occurred_at"]),
         "source_id": e["source_id"], "request_id": e["request_id"], "field": e["field"]}
        for e in row.get("ledger", [])
    ]
    consent = {
        ch: {**st, "occurred_at": iso(st["occurred_at"])} for ch, st in consent_state(row.get("ledger", [])).items()
    }
    return {
        "id": row["id"],
        "client_id": row["client_id"],
        "email": row["email"],
        "phone": row["phone"],
        "fields": {k: {"value": v["value"], "set_at": iso(v["at"]), "request_id": v["request_id"],
                       "source_id": v.get("source_id")} for k, v in sorted(fields.items())},
        "consent": consent,
        "ledger": ledger,
        "keys": row.get("keys", []),
        "request_ids": row.get("request_ids", []),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }
