"""Orders in the database: applying order events (latest event time wins), the buyer's purchase
facts kept current, and the reads behind the API, the CLI and the console.

The rules (money, times, which event is newer, which statuses count) are :mod:`hookbay.orders`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hookbay.ids import ulid
from hookbay.orders import NOT_PURCHASED, Version
from hookbay.results import ProcessResult
from hookbay.store import bulk, schema
from hookbay.store.errors import ConcurrentChange
from hookbay.store.merges import resolve_profile_id
from hookbay.store.order_rows import CurrencyTotal, PurchaseFacts, StoredOrder, StoredOrderLine

if TYPE_CHECKING:
    from hookbay.store.interface import StoreInterface

ORD, OL, PP = schema.orders, schema.order_lines, schema.profile_purchases

ORDER_COLUMNS = ("status", "currency", "total_minor", "subtotal_minor", "tax_minor", "shipping_minor",
                 "discount_minor")


_ORDER_FIELDS = tuple(f for f in StoredOrder.__slots__ if f != "lines")
_LINE_FIELDS = StoredOrderLine.__slots__


def order_items(results: Sequence[ProcessResult]) -> list[dict[str, Any]]:
    """The order records of finished requests, each with its buyer: the profile of the contact made
    from the same document (``contact_idx``), which the profile rules assigned just before."""
    items = []
    for res in results:
        recs = res.records
        for rec in recs:
            if "order" not in rec:
                continue
            idx = rec.get("contact_idx")
            if isinstance(idx, int) and 0 <= idx < len(recs) and recs[idx].get("profile_id"):
                rec["profile_id"] = recs[idx]["profile_id"]
            items.append({"client_id": res.client_id, "source_id": res.source_id,
                          "request_id": res.request_id, "at": res.received_at,
                          "order": rec["order"], "profile_id": rec.get("profile_id"), "rec": rec})
    return items


def apply_orders(conn: sa.Connection, items: list[dict[str, Any]], now: int) -> list[str]:
    """Store a batch of order events in order; returns each one's order id.

    ``items`` hold client_id, source_id, request_id, at (received time), order (normalised, see
    :func:`hookbay.orders.normalize`) and profile_id. An event replaces the stored order only when it
    is not older (event time, then request id): events arriving out of order never roll an order
    back. The event time is the order's ``updated_at``, else its ``placed_at``, else when the request
    arrived. Orders are locked (PostgreSQL: FOR UPDATE) in the order the batch names them."""
    ids: list[str] = []
    touched: set[str] = set()
    for it in items:
        o = it["order"]
        event_at = o.get("updated_at") or o.get("placed_at") or it["at"]
        row = conn.execute(
            sa.select(ORD.c.id, ORD.c.event_at, ORD.c.request_id, ORD.c.profile_id, ORD.c.placed_at)
            .where(ORD.c.source_id == it["source_id"], ORD.c.external_id == o["id"])
            .with_for_update()).first()
        values = {c: o.get(c) for c in ORDER_COLUMNS}
        if row is None:
            oid = "ord_" + ulid()
            inserted = bulk.insert(
                conn, ORD, ("id", "client_id", "source_id", "external_id", "profile_id", *ORDER_COLUMNS, "placed_at",
                          "event_at", "request_id", "created_at", "updated_at"),
                [(oid, it["client_id"], it["source_id"], o["id"], it.get("profile_id"),
                  *(values[c] for c in ORDER_COLUMNS), o.get("placed_at") or event_at, event_at,
                  it["request_id"], now, now)],
                on_conflict_nothing=True, returning=("id",))
            if not inserted:
                raise ConcurrentChange("an order was created meanwhile by another worker")
            _write_lines(conn, oid, o.get("lines", []))
            touched.add(it.get("profile_id") or "")
            ids.append(oid)
            continue
        oid = row.id
        ids.append(oid)
        if not Version(event_at, it["request_id"]).newer_or_same(Version(row.event_at, row.request_id)):
            continue
        profile_id = it.get("profile_id") or row.profile_id
        conn.execute(ORD.update().where(ORD.c.id == oid).values(
            **values, profile_id=profile_id, placed_at=o.get("placed_at") or row.placed_at, event_at=event_at,
            request_id=it["request_id"], updated_at=now))
        conn.execute(OL.delete().where(OL.c.order_id == oid))
        _write_lines(conn, oid, o.get("lines", []))
        touched.update((row.profile_id or "", profile_id or ""))
    touched.discard("")
    refresh_facts(conn, touched)
    return ids


def _write_lines(conn: sa.Connection, order_id: str, lines: list[dict[str, Any]]) -> None:
    bulk.insert(conn, OL, ("order_id", "idx", "sku", "name", "quantity", "unit_price_minor", "total_minor"),
                [(order_id, i, ln.get("sku"), ln.get("name"), ln["quantity"], ln.get("unit_price_minor"),
                  ln.get("total_minor")) for i, ln in enumerate(lines)])


def refresh_facts(conn: sa.Connection, profile_ids: Iterable[str]) -> None:
    """Recompute the purchase facts of these profiles from their orders (cheap: one profile's orders)."""
    pids = sorted(set(profile_ids))
    if not pids:
        return
    conn.execute(PP.delete().where(PP.c.profile_id.in_(pids)))
    counted = sa.or_(ORD.c.status.is_(None), ORD.c.status.not_in(sorted(NOT_PURCHASED)))
    agg = (sa.select(ORD.c.profile_id, ORD.c.currency, sa.func.min(ORD.c.client_id), sa.func.count(),
                     sa.func.sum(ORD.c.total_minor), sa.func.min(ORD.c.placed_at), sa.func.max(ORD.c.placed_at))
           .where(ORD.c.profile_id.in_(pids), counted).group_by(ORD.c.profile_id, ORD.c.currency))
    conn.execute(PP.insert().from_select(
        ["profile_id", "currency", "client_id", "order_count", "total_minor", "first_order_at", "last_order_at"],
        agg))


def move_orders(conn: sa.Connection, merged: str, survivor: str) -> None:
    """A profile merge: the merged-away profile's orders become the survivor's, facts follow."""
    conn.execute(ORD.update().where(ORD.c.profile_id == merged).values(profile_id=survivor))
    refresh_facts(conn, (merged, survivor))


def erase_orders(conn: sa.Connection, profile_id: str) -> int:
    """Erasure: the profile's orders, their lines and its facts go."""
    ids = list(conn.execute(sa.select(ORD.c.id).where(ORD.c.profile_id == profile_id)).scalars())
    if ids:
        bulk.delete_in(conn, OL, "order_id", ids)
        bulk.delete_in(conn, ORD, "id", ids)
    conn.execute(PP.delete().where(PP.c.profile_id == profile_id))
    return len(ids)


def purchase_facts(conn: sa.Connection, profile_id: str) -> PurchaseFacts:
    rows = conn.execute(sa.select(PP.c.currency, PP.c.total_minor, PP.c.order_count, PP.c.first_order_at,
                                  PP.c.last_order_at).where(PP.c.profile_id == profile_id)
                        .order_by(PP.c.currency)).all()
    return PurchaseFacts(
        order_count=sum(r.order_count for r in rows),
        totals=tuple(CurrencyTotal(r.currency, r.total_minor, r.order_count) for r in rows),
        first_order_at=min((r.first_order_at for r in rows), default=None),
        last_order_at=max((r.last_order_at for r in rows), default=None),
    )


def list_orders(conn: sa.Connection, *, client_id: str | None, profile_id: str | None = None,
                source_id: str | None = None, since_us: int | None = None, limit: int = 100,
                with_lines: bool = True) -> list[StoredOrder]:
    """Newest placed first. ``client_id`` None is the admin's view of every client."""
    stmt = sa.select(*(ORD.c[f] for f in _ORDER_FIELDS))
    if client_id is not None:
        stmt = stmt.where(ORD.c.client_id == client_id)
    if profile_id is not None:
        stmt = stmt.where(ORD.c.profile_id == profile_id)
    if source_id is not None:
        stmt = stmt.where(ORD.c.source_id == source_id)
    if since_us is not None:
        stmt = stmt.where(ORD.c.placed_at >= since_us)
    rows = conn.execute(stmt.order_by(ORD.c.placed_at.desc(), ORD.c.id.desc()).limit(limit)).all()
    lines: dict[str, list[StoredOrderLine]] = {}
    if with_lines and rows:
        for r in bulk.select_in(conn, OL, ("order_id", *_LINE_FIELDS), "order_id", [o.id for o in rows]):
            lines.setdefault(r[0], []).append(StoredOrderLine(*r[1:]))
    return [StoredOrder(**dict(zip(_ORDER_FIELDS, r, strict=True)),
                        lines=tuple(sorted(lines.get(r.id, ()), key=lambda ln: ln.idx))) for r in rows]


class OrderStore:
    """The async reads of orders for the API, the CLI and the console."""

    def __init__(self, store: StoreInterface) -> None:
        self.store = store

    async def list(self, client_id: str | None, *, profile_id: str | None = None, source_id: str | None = None,
                   since_us: int | None = None, limit: int = 100) -> list[StoredOrder]:
        """A merged-away profile id lists its survivor's orders, as a profile lookup answers the survivor."""
        def q(conn: sa.Connection) -> list[StoredOrder]:
            pid = None
            if profile_id is not None:
                pid = resolve_profile_id(conn, profile_id)
            return list_orders(conn, client_id=client_id, profile_id=pid, source_id=source_id, since_us=since_us,
                               limit=limit)

        return await self.store.read(q)
