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


_PG_KEY_LOOKUP = sa.text(
    "SELECT v.value, pk.profile_id FROM unnest(CAST(:vals AS text[])) AS v(value) "
    "JOIN LATERAL (SELECT profile_id FROM profile_keys "
    "WHERE client_id = :c AND kind = :k AND value = v.value) pk ON true"
)


def _key_lookup(conn: sa.Connection, client_id: str, kind: str, values: list[str]) -> tuple[Any, ...]:
    """On PostgreSQL, one index probe per value (a plain IN list can be planned as a scan of the
    client's whole key range when the table has no statistics yet, which gets slower as it grows)."""
    if conn.dialect.name == "postgresql":
        return (_PG_KEY_LOOKUP, {"vals": values, "c": client_id, "k": kind})
    return (sa.select(PK.c.value, PK.c.profile_id).where(
        PK.c.client_id == client_id, PK.c.kind == kind, PK.c.value.in_(values)),)


def apply_contacts(conn: sa.Connection, insert: Any, items: list[dict[str, Any]], now: int) -> list[str | None]:
    """Merge a batch of contacts into profiles with a handful of statements per batch, not per
    contact: one key lookup, one key insert, one locked profile read, bulk writes. ``items`` hold
    client_id, contact, consents, at, request_id, source_id; returns each one's profile id.

    Concurrency: new identity keys are inserted with ON CONFLICT DO NOTHING and read back, so when
    two workers race to create the same customer both end up on the key's winner; profile rows are
    then read FOR UPDATE (PostgreSQL) in id order, so merges to one profile serialise."""
    keys_of = [identity_keys(it["contact"]) for it in items]
    wanted = {(it["client_id"], k, v) for it, ks in zip(items, keys_of, strict=True) for k, v in ks}
    if not wanted:
        return [None] * len(items)

    def lookup(triples: set[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
        found: dict[tuple[str, str, str], str] = {}
        groups: dict[tuple[str, str], set[str]] = {}
        for c, k, v in triples:
            groups.setdefault((c, k), set()).add(v)
        for (c, k), values in groups.items():
            vals = sorted(values)
            for i in range(0, len(vals), 500):
                for value, pid in conn.execute(*_key_lookup(conn, c, k, vals[i:i + 500])):
                    found[(c, k, value)] = pid
        return found

    known = lookup(wanted)
    assigned: list[str | None] = []
    new_keys: dict[tuple[str, str, str], str] = {}
    for it, ks in zip(items, keys_of, strict=True):
        if not ks:
            assigned.append(None)
            continue
        c = it["client_id"]
        pid = next((known.get((c, k, v)) or new_keys.get((c, k, v)) for k, v in ks
                    if known.get((c, k, v)) or new_keys.get((c, k, v))), None)
        if pid is None:
            pid = "prf_" + ulid()
        for k, v in ks:
            if (c, k, v) not in known and (c, k, v) not in new_keys:
                new_keys[(c, k, v)] = pid
        assigned.append(pid)

    created: set[str] = set()
    if new_keys:
        conn.execute(insert(PK).on_conflict_do_nothing(), [
            {"client_id": c, "kind": k, "value": v, "profile_id": p} for (c, k, v), p in sorted(new_keys.items())])
        winners = lookup(set(new_keys))
        remap = {p: winners[t] for t, p in new_keys.items() if winners.get(t) and winners[t] != p}
        assigned = [remap.get(p, p) if p else p for p in assigned]
        created = {p for p in new_keys.values() if p not in remap}
        if created:
            clients = {p: c for (c, _k, _v), p in new_keys.items()}
            conn.execute(insert(P).on_conflict_do_nothing(), [
                {"id": p, "client_id": clients[p], "fields": "{}", "created_at": now, "updated_at": now}
                for p in sorted(created)])

    pids = sorted({p for p in assigned if p})
    profiles: dict[str, dict[str, Any]] = {}
    for i in range(0, len(pids), 500):
        rows = conn.execute(sa.select(P.c.id, P.c.fields).where(P.c.id.in_(pids[i:i + 500]))
                            .order_by(P.c.id).with_for_update())
        for pid, fields in rows:
            profiles[pid] = orjson.loads(fields)
    changed: set[str] = set()
    events: list[dict[str, Any]] = []
    for it, pid in zip(items, assigned, strict=True):
        if pid is None or pid not in profiles:
            continue
        if merge_fields(profiles[pid], it["contact"], it["at"], it["request_id"], it["source_id"]):
            changed.add(pid)
        for c in it.get("consents", []):
            events.append({"profile_id": pid, "client_id": it["client_id"], "channel": c["channel"],
                           "granted": bool(c["granted"]), "occurred_at": it["at"], "source_id": it["source_id"],
                           "request_id": it["request_id"], "field": c.get("field")})
    if changed:
        updates: list[dict[str, Any]] = []
        for pid in sorted(changed):
            f = profiles[pid]
            updates.append({"pid": pid, "f": orjson.dumps(f).decode(), "e": f.get("email", {}).get("value"),
                         "ph": (f.get("phone") or f.get("mobile") or {}).get("value"), "u": now})
        conn.execute(P.update().where(P.c.id == sa.bindparam("pid")).values(
            fields=sa.bindparam("f"), email=sa.bindparam("e"), phone=sa.bindparam("ph"),
            updated_at=sa.bindparam("u")), updates)
    if events:
        conn.execute(insert(CE).on_conflict_do_nothing(), events)
    return [p if p in profiles else None for p in assigned]
