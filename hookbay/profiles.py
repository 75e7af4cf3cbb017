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


_PG_KEY_LOOKUP = (
    "SELECT k.client_id, k.kind, k.value, pk.profile_id FROM unnest({arrays}) AS k(client_id, kind, value)"
    " JOIN LATERAL (SELECT profile_id FROM profile_keys"
    " WHERE client_id = k.client_id AND kind = k.kind AND value = k.value) pk ON true"
)


def _lookup(conn: sa.Connection, triples: set[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """The profile each (client_id, kind, value) key belongs to, for the keys that exist.

    On PostgreSQL one statement with one index probe per key (a plain IN list or join can be planned
    as a scan of the client's whole key range when the table has no statistics yet, which gets slower
    as it grows); on SQLite one IN list per client and kind."""
    found: dict[tuple[str, str, str], str] = {}
    ordered = sorted(triples)
    if conn.dialect.name == "postgresql":
        from .store.bulk import pg_array

        arrays = [pg_array(col, "text[]") for col in zip(*ordered, strict=True)]
        sql = _PG_KEY_LOOKUP.format(arrays=", ".join(a[0] for a in arrays))
        for c, k, v, pid in conn.exec_driver_sql(sql, tuple(a[1] for a in arrays)):
            found[(c, k, v)] = pid
        return found
    groups: dict[tuple[str, str], list[str]] = {}
    for c, k, v in ordered:
        groups.setdefault((c, k), []).append(v)
    for (c, k), values in groups.items():
        for i in range(0, len(values), 500):
            chunk = values[i:i + 500]
            sql = ("SELECT value, profile_id FROM profile_keys WHERE client_id = ? AND kind = ? AND value IN ("
                   + ", ".join("?" * len(chunk)) + ")")
            for value, pid in conn.exec_driver_sql(sql, (c, k, *chunk)):
                found[(c, k, value)] = pid
    return found


_PK_COLS = ("client_id", "kind", "value", "profile_id")
_P_COLS = ("id", "client_id", "email", "phone", "fields", "created_at", "updated_at")
_CE_COLS = ("profile_id", "client_id", "channel", "granted", "occurred_at", "source_id", "request_id", "field")


def _identity_columns(fields: dict[str, Any]) -> tuple[Any, Any]:
    email = fields.get("email", {}).get("value")
    phone = (fields.get("phone") or fields.get("mobile") or {}).get("value")
    return email, phone


def apply_contacts(conn: sa.Connection, insert: Any, items: list[dict[str, Any]], now: int) -> list[str | None]:
    """Merge a batch of contacts into profiles with a handful of statements per batch, not per
    contact: one key lookup, one key insert, one locked read of the profiles that already existed,
    one insert of the new profiles (with their merged fields), one update, one ledger insert.
    ``items`` hold client_id, contact, consents, at, request_id, source_id; returns each one's
    profile id. ``insert`` is unused (kept for callers); statements go through :mod:`.store.bulk`.

    Concurrency: new identity keys are inserted with ON CONFLICT DO NOTHING ... RETURNING; a key
    that is not returned was created meanwhile by another worker, so it is read back and the
    contact goes to that key's winner (as does every contact of the profile this batch would have
    created). Profiles that existed before are read FOR UPDATE (PostgreSQL) in id order, so merges
    to one profile serialise; profiles created here are invisible to others until commit."""
    from .store import bulk

    keys_of = [identity_keys(it["contact"]) for it in items]
    wanted = {(it["client_id"], k, v) for it, ks in zip(items, keys_of, strict=True) for k, v in ks}
    if not wanted:
        return [None] * len(items)

    known = _lookup(conn, wanted)
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

    created: dict[str, str] = {}  # new profile id -> client id
    if new_keys:
        inserted = set(bulk.insert(conn, PK, _PK_COLS, [(*t, p) for t, p in sorted(new_keys.items())],
                                   on_conflict_nothing=True, returning=_PK_COLS[:3]))
        lost = {t for t in new_keys if t not in inserted}
        remap: dict[str, str] = {}
        if lost:
            winners = _lookup(conn, lost)
            remap = {p: winners[t] for t, p in new_keys.items() if t in lost and winners.get(t) and winners[t] != p}
            assigned = [remap.get(p, p) if p else p for p in assigned]
        created = {p: c for (c, _k, _v), p in new_keys.items() if p not in remap}

    existing = sorted({p for p in assigned if p and p not in created})
    profiles: dict[str, dict[str, Any]] = {p: {} for p in created}
    for pid, fields in bulk.select_in(conn, P, ("id", "fields"), "id", existing, for_update=True, order_by="id"):
        profiles[pid] = orjson.loads(fields)
    changed: set[str] = set()
    events: list[tuple[Any, ...]] = []
    ledger_keys: set[tuple[str, str, str]] = set()  # the ledger's unique key: one event per channel
    for it, pid in zip(items, assigned, strict=True):
        if pid is None or pid not in profiles:
            continue
        if merge_fields(profiles[pid], it["contact"], it["at"], it["request_id"], it["source_id"]):
            changed.add(pid)
        rid = it["request_id"]
        for c in it.get("consents", []):
            if rid is not None:
                if (rid, pid, c["channel"]) in ledger_keys:
                    continue  # a second contact of the same request for the same profile: the first wins
                ledger_keys.add((rid, pid, c["channel"]))
            events.append((pid, it["client_id"], c["channel"], bool(c["granted"]), it["at"], it["source_id"],
                           rid, c.get("field")))
    if created:  # fresh ids: nothing to conflict with
        rows = []
        for pid in sorted(created):
            f = profiles[pid]
            rows.append((pid, created[pid], *_identity_columns(f), orjson.dumps(f).decode(), now, now))
        bulk.insert(conn, P, _P_COLS, rows)
    updates = []
    for pid in sorted(changed):
        if pid not in created:
            f = profiles[pid]
            updates.append((orjson.dumps(f).decode(), *_identity_columns(f), now, pid))
    bulk.update(conn, P, "id", ("fields", "email", "phone", "updated_at"), updates)
    if events:
        # ON CONFLICT doubles what PostgreSQL spends per ledger row; it is only needed when these
        # requests already have ledger rows (a replay), since duplicates within the batch are gone.
        # (Two workers finishing one request at once still fail on the unique key, as on records.)
        replayed = bulk.select_in(conn, CE, ("request_id",), "request_id", {e[6] for e in events if e[6] is not None})
        bulk.insert(conn, CE, _CE_COLS, events, on_conflict_nothing=bool(replayed))
    return [p if p in profiles else None for p in assigned]
