"""Profiles in the database: a batch of contacts applied with a handful of statements, merges of
profiles that turn out to be one person, and lookups that follow merged-away ids.

The rules themselves (what a key is, which value wins, how two profiles fold into one) are the
pure functions of :mod:`hookbay.profiles`; this module only reads, locks and writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from hookbay.ids import _ALPHABET, ulid
from hookbay.profiles import identity_columns, identity_keys, merge_fields, merge_profile_fields
from hookbay.store import bulk, schema
from hookbay.store import orders as order_store
from hookbay.store.errors import ConcurrentChange

P, PK, CE, PM, REC = (schema.profiles, schema.profile_keys, schema.consent_events, schema.profile_merges,
                      schema.records)

@dataclass(slots=True)
class _Profile:
    id: str
    client_id: str
    created_at: int
    fields: dict[str, Any]
    new: bool
    changed: bool = False


_PG_KEY_LOOKUP = (
    "SELECT k.client_id, k.kind, k.value, pk.profile_id FROM unnest({arrays}) AS k(client_id, kind, value)"
    " JOIN LATERAL (SELECT profile_id FROM profile_keys"
    " WHERE client_id = k.client_id AND kind = k.kind AND value = k.value) pk ON true"
)


def lookup_keys(conn: sa.Connection, triples: set[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """The profile each (client_id, kind, value) key belongs to, for the keys that exist.

    On PostgreSQL one statement with one index probe per key (a plain IN list or join can be planned
    as a scan of the client's whole key range when the table has no statistics yet, which gets slower
    as it grows); on SQLite one IN list per client and kind."""
    found: dict[tuple[str, str, str], str] = {}
    ordered = sorted(triples)
    if not ordered:
        return found
    if conn.dialect.name == "postgresql":
        arrays = [bulk.pg_array(col, "text[]") for col in zip(*ordered, strict=True)]
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


def _after(prev: str) -> str:
    """The next ULID after ``prev`` (its last base-32 digit plus one, carrying)."""
    digits = list(prev)
    i = len(digits) - 1
    while digits[i] == "Z":
        digits[i] = "0"
        i -= 1
    digits[i] = _ALPHABET[_ALPHABET.index(digits[i]) + 1]
    return "".join(digits)


class _Ids:
    """Profile ids increasing in creation order within a batch (the profiles of one batch share a
    ``created_at``, and "the older profile survives a merge" then falls to the id)."""

    def __init__(self) -> None:
        self.last = ""

    def __call__(self) -> str:
        body = ulid()
        if body <= self.last:
            body = _after(self.last)
        self.last = body
        return "prf_" + body


def apply_contacts(conn: sa.Connection, items: list[dict[str, Any]], now: int) -> list[str | None]:
    """Merge a batch of contacts into profiles, in order, as if applied one at a time; returns each
    one's profile id (its survivor's, if a later contact of the batch merged it away).

    ``items`` hold client_id, contact, consents, at, request_id, source_id. A handful of statements
    per batch, not per contact: one key lookup, one locked read of the matched profiles, one key
    insert, one insert of new profiles, one update, one ledger insert; merges (rare) cost a few
    statements each.

    Concurrency (PostgreSQL): matched profiles are locked FOR UPDATE in id order, so changes to one
    profile serialise. A matched profile gone by the time it is locked (merged away meanwhile) or a
    new key inserted meanwhile by another worker raises :class:`ConcurrentChange`; the caller runs
    the transaction again and then sees the other worker's result."""
    keys_of = [identity_keys(it["contact"]) for it in items]
    wanted = {(it["client_id"], k, v) for it, ks in zip(items, keys_of, strict=True) for k, v in ks}
    if not wanted:
        return [None] * len(items)

    owners = lookup_keys(conn, wanted)
    matched = sorted(set(owners.values()))
    profiles: dict[str, _Profile] = {}
    for pid, client_id, fields, created_at in bulk.select_in(
            conn, P, ("id", "client_id", "fields", "created_at"), "id", matched, for_update=True, order_by="id"):
        profiles[pid] = _Profile(pid, client_id, created_at, orjson.loads(fields), new=False)
    if len(profiles) != len(matched):
        raise ConcurrentChange("a matched profile was merged away meanwhile")

    merged_into: dict[str, str] = {}
    merges: list[tuple[str, str, str, str | None, int]] = []  # merged, survivor, client, request, at
    new_keys: dict[tuple[str, str, str], str] = {}
    new_id = _Ids()

    def final(pid: str) -> str:
        while pid in merged_into:
            pid = merged_into[pid]
        return pid

    assigned: list[str | None] = []
    pending_events: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for it, ks in zip(items, keys_of, strict=True):
        if not ks:
            assigned.append(None)
            continue
        c = it["client_id"]
        found: list[str] = []
        for k, v in ks:
            p = owners.get((c, k, v)) or new_keys.get((c, k, v))
            if p is not None:
                p = final(p)
                if p not in found:
                    found.append(p)
        if not found:
            pid = new_id()
            profiles[pid] = _Profile(pid, c, now, {}, new=True)
        else:
            pid = min(found, key=lambda p: (profiles[p].created_at, p))
            for other in found:
                if other != pid:
                    merge_profile_fields(profiles[pid].fields, profiles[other].fields)
                    profiles[pid].changed = True
                    merged_into[other] = pid
                    merges.append((other, pid, c, it["request_id"], it["at"]))
        for k, v in ks:
            t = (c, k, v)
            if t not in owners and t not in new_keys:
                new_keys[t] = pid
        if merge_fields(profiles[pid].fields, it["contact"], it["at"], it["request_id"], it["source_id"]):
            profiles[pid].changed = True
        assigned.append(pid)
        for consent in it.get("consents", []):
            pending_events.append((pid, it, consent))

    if new_keys:
        rows = sorted((*t, final(p)) for t, p in new_keys.items())
        inserted = bulk.insert(conn, PK, ("client_id", "kind", "value", "profile_id"), rows,
                               on_conflict_nothing=True, returning=("client_id", "kind", "value"))
        if len(inserted) != len(rows):
            raise ConcurrentChange("an identity key was created meanwhile by another worker")

    for merged, survivor, *_ in merges:
        if not profiles[merged].new:
            _move_profile(conn, merged, final(survivor))
    if merges:
        bulk.insert(conn, PM, ("merged_id", "survivor_id", "client_id", "request_id", "merged_at"),
                    [(m, s, c, r, at) for m, s, c, r, at in merges])

    alive = [p for p in profiles.values() if p.id not in merged_into]
    bulk.insert(conn, P, ("id", "client_id", "email", "phone", "fields", "created_at", "updated_at"),
                [(p.id, p.client_id, *identity_columns(p.fields), orjson.dumps(p.fields).decode(), now, now)
                 for p in sorted(alive, key=lambda p: p.id) if p.new])
    bulk.update(conn, P, "id", ("fields", "email", "phone", "updated_at"),
                [(orjson.dumps(p.fields).decode(), *identity_columns(p.fields), now, p.id)
                 for p in sorted(alive, key=lambda p: p.id) if not p.new and p.changed])

    events: list[tuple[Any, ...]] = []
    ledger_keys: set[tuple[str, str, str]] = set()  # the ledger's unique key: one event per channel
    for pid, it, consent in pending_events:
        pid = final(pid)
        rid = it["request_id"]
        if rid is not None:
            if (rid, pid, consent["channel"]) in ledger_keys:
                continue  # a second contact of the same request for the same profile: the first wins
            ledger_keys.add((rid, pid, consent["channel"]))
        events.append((pid, it["client_id"], consent["channel"], bool(consent["granted"]), it["at"],
                       it["source_id"], rid, consent.get("field")))
    if events:
        # ON CONFLICT doubles what PostgreSQL spends per ledger row; it is only needed when these
        # requests already have ledger rows (a replay), since duplicates within the batch are gone.
        replayed = bulk.select_in(conn, CE, ("request_id",), "request_id", {e[6] for e in events if e[6] is not None})
        bulk.insert(conn, CE, ("profile_id", "client_id", "channel", "granted", "occurred_at", "source_id",
                               "request_id", "field"), events, on_conflict_nothing=bool(replayed))
    return [final(p) if p is not None else None for p in assigned]


def _move_profile(conn: sa.Connection, merged: str, survivor: str) -> None:
    """Everything of a merged-away profile becomes the survivor's: its keys, its records, its consent
    ledger. Where both hold an event of the same request and channel (one request's two contacts
    went to the two profiles) the earlier event is kept, as the ledger's first-wins rule would have."""
    conn.execute(PK.update().where(PK.c.profile_id == merged).values(profile_id=survivor))
    conn.execute(REC.update().where(REC.c.profile_id == merged).values(profile_id=survivor))
    a, b = CE.alias("a"), CE.alias("b")
    for loser, winner in ((merged, survivor), (survivor, merged)):
        dupes = (sa.select(a.c.id).join(b, sa.and_(b.c.request_id == a.c.request_id, b.c.channel == a.c.channel))
                 .where(a.c.profile_id == loser, b.c.profile_id == winner, b.c.id < a.c.id))
        conn.execute(CE.delete().where(CE.c.id.in_(dupes.scalar_subquery())))
    conn.execute(CE.update().where(CE.c.profile_id == merged).values(profile_id=survivor))
    order_store.move_orders(conn, merged, survivor)
    conn.execute(P.delete().where(P.c.id == merged))
