"""Customer profiles as the API, the console and the CLI reach them: find, show, export, erase."""

from __future__ import annotations

from typing import Any

from hookbay.errors import BadRequest
from hookbay.ops.access import Principal, scope_client
from hookbay.ops.orders import facts_view, order_view
from hookbay.profiles import consent_state, lookup_email, lookup_phone
from hookbay.store import StoreInterface
from hookbay.store.profile_rows import StoredProfile, StoredProfileDetail
from hookbay.views import iso


def profile_out(p: StoredProfileDetail) -> dict[str, Any]:
    """A profile as the API, the CLI and the console show it: each field with when, by which
    request and source it was set, current consent and the ledger behind it, keys, merges, and
    what it bought."""
    return {
        "id": p.id,
        "client_id": p.client_id,
        "email": p.email,
        "phone": p.phone,
        "fields": {k: {"value": v["value"], "set_at": iso(v["at"]), "request_id": v["request_id"],
                       "source_id": v.get("source_id")} for k, v in sorted(p.fields.items())},
        "consent": {ch: {**st, "occurred_at": iso(st["occurred_at"])}
                    for ch, st in consent_state(p.ledger).items()},
        "ledger": [{"channel": e.channel, "granted": e.granted, "occurred_at": iso(e.occurred_at),
                    "source_id": e.source_id, "request_id": e.request_id, "field": e.field}
                   for e in p.ledger],
        "keys": [{"kind": kind, "value": value} for kind, value in p.keys],
        "request_ids": p.request_ids,
        "merged_from": p.merged_from,
        "purchases": facts_view(p.purchases),
        "recent_orders": [order_view(o) for o in p.recent_orders],
        "created_at": iso(p.created_at),
        "updated_at": iso(p.updated_at),
    }


def profile_summary(p: StoredProfile) -> dict[str, Any]:
    """A profile as the console's list shows it."""
    return {"id": p.id, "client_id": p.client_id, "email": p.email, "phone": p.phone,
            "updated_at": iso(p.updated_at)}


async def find_profiles(store: StoreInterface, p: Principal, *, email: str | None = None, phone: str | None = None,
                        client_id: str | None = None) -> list[dict[str, Any]]:
    """By email or phone, normalised the same way as incoming contacts."""
    if not email and not phone:
        raise BadRequest("Give email or phone")
    rows = await store.find_profiles(scope_client(p, client_id), email=lookup_email(email) if email else None,
                                     phone=lookup_phone(phone) if phone else None)
    return [profile_out(await store.get_profile(r.id)) for r in rows]


def search_kind(q: str) -> str:
    """What a search box's text is: an email, a phone number (digits, spaces, + - ( ) .) or a name."""
    if "@" in q:
        return "email"
    if any(c.isdigit() for c in q) and all(c.isdigit() or c in " +-().\u00a0" for c in q):
        return "phone"
    return "name"


async def search_profiles(store: StoreInterface, p: Principal, q: str, *, limit: int = 50,
                          before: str | None = None) -> dict[str, Any]:
    """The console's search: by email or phone (normalised like incoming contacts, exact), or by
    name (each word a prefix of the first or last name); no text lists the newest profiles, a page
    at a time (``next_cursor`` is the ``before`` of the next page)."""
    client = scope_client(p, None)
    q = q.strip()
    if not q:
        rows = await store.list_profiles(client, limit=limit, before_id=before)
        return {"items": [profile_summary(r) for r in rows],
                "next_cursor": rows[-1].id if len(rows) == limit else None}
    kind = search_kind(q)
    if kind == "email":
        rows = await store.find_profiles(client, email=lookup_email(q))
    elif kind == "phone":
        rows = await store.find_profiles(client, phone=lookup_phone(q))
    else:
        rows = await store.find_profiles_by_name(client, q.split()[:4], limit=limit)
    return {"items": [profile_summary(r) for r in rows], "next_cursor": None}


async def profile_records(store: StoreInterface, prof: dict[str, Any], limit: int = 200) -> list[dict[str, Any]]:
    """The records made for a profile already read through :func:`get_profile` (so within the
    caller's client), newest request first, at most ``limit`` requests' worth."""
    from hookbay.ops.requests import record_view

    mine = {prof["id"], *prof["merged_from"]}
    recs = await store.records_for(sorted(prof["request_ids"], reverse=True)[:limit])
    return [record_view(r) | {"request_id": rid, "source_id": r.source_id}
            for rid, rs in sorted(recs.items(), reverse=True) for r in rs if r.profile_id in mine]


async def get_profile(store: StoreInterface, p: Principal, profile_id: str) -> dict[str, Any]:
    return profile_out(await store.get_profile(profile_id, scope_client(p, None)))


async def export_profile(store: StoreInterface, p: Principal, profile_id: str) -> dict[str, Any]:
    """Everything held about one customer: the profile, its ledger, the records made for it and
    every order it placed, with its lines."""
    from hookbay.ops.requests import record_view
    from hookbay.store.orders import OrderStore

    client = scope_client(p, None)
    prof = profile_out(await store.get_profile(profile_id, client))
    recs = await store.records_for(prof["request_ids"])
    orders = await OrderStore(store).list(client, profile_id=prof["id"], limit=1_000_000)
    return {"profile": prof, "records": [record_view(r) | {"request_id": rid}
                                         for rid, rs in recs.items() for r in rs],
            "orders": [order_view(o) for o in orders]}


async def erase_profile(store: StoreInterface, p: Principal, profile_id: str) -> dict[str, Any]:
    """Erase the profile, its ledger, its records and its requests' raw bodies (logged)."""
    return await store.erase_profile(profile_id, scope_client(p, None), p.actor.name, audit=p.audit("profile.erase"))
