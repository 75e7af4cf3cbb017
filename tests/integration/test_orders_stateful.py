"""Order rules proven over random sequences: order events (created, updated, arriving out of order,
with or without a buyer, buyers whose keys later merge two profiles, several currencies) go through
the real ingest writer, a multi-output mapping, the worker and the store, on SQLite and PostgreSQL,
interleaved with erasures; after every step every order, its lines and buyer, and every profile's
purchase facts are compared with tests/models/orders.py."""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from hookbay.orders import exponent
from hookbay.parsers import contact as contact_parser
from hookbay.processing.worker import Worker
from hookbay.store import Store, schema
from hookbay.store.sources import SourceCache
from tests.conftest import make_settings
from tests.integration.test_identity_stateful import request_row
from tests.models.orders import OrdersModel

EXAMPLES = int(os.environ.get("HOOKBAY_STATEFUL_EXAMPLES", "20"))
STEPS = int(os.environ.get("HOOKBAY_STATEFUL_STEPS", "12"))
T0 = 1_750_000_000

EMAILS = ["ann@x.co", "bob@x.co", "cy@y.org"]
PHONES = ["+13035550101", "+13035550102", "+13035550103"]
STATUSES = ["pending", "processing", "completed", "cancelled", "refunded"]

MAPPING = {"version": 1, "outputs": {
    "contact": {"fields": {"Email": {"expr": "email"}, "Phone": {"expr": "phone"},
                           "SourceName": {"constant": "POS"}, "SourceType": {"constant": "POS"}}},
    "order": {"fields": {"id": {"expr": "order.id"}, "status": {"expr": "order.status"},
                         "currency": {"expr": "order.currency"}, "total": {"expr": "order.total"},
                         "placed_at": {"expr": "order.placed"}, "updated_at": {"expr": "order.updated"}},
              "lines": {"each": "order.items", "fields": {"sku": {"expr": "sku"}, "quantity": {"expr": "qty"},
                                                          "unit_price": {"expr": "price"}}}},
}}

events = st.fixed_dictionaries({
    "source": st.integers(0, 1),
    "order": st.integers(0, 3),
    "email": st.one_of(st.none(), st.sampled_from(EMAILS)),
    "phone": st.one_of(st.none(), st.sampled_from(PHONES)),
    "status": st.sampled_from(STATUSES),
    "currency": st.sampled_from(["USD", "EUR", "JPY", "KWD"]),
    "lines": st.lists(st.tuples(st.sampled_from(["A", "B", "C"]), st.integers(1, 5), st.integers(0, 99_999)),
                      max_size=3),
    "offset": st.integers(-50, 50),  # event times out of arrival order, ties included
})


def money(minor: int, currency: str) -> str:
    e = exponent(currency)
    return str(minor) if e == 0 else f"{minor // 10**e}.{minor % 10**e:0{e}d}"


def iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


class OrdersMachine(RuleBasedStateMachine):
    URL = ""
    TMP = Path(".")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client_id = "c_" + uuid.uuid4().hex[:12]
        self.model = OrdersModel()
        self.clock = itertools.count(1)
        settings = make_settings(self.URL, self.TMP, worker_batch=100, worker_yield_ratio=0)
        self.store = Store(settings.effective_database_url)
        self.run(self.store.start())
        self.sources = [self.run(self.store.create_source(
            name=f"s{i}", client_id=self.client_id,
            config={"parser": "mapping", "mapping": MAPPING, "default_region": "US"}))[0] for i in range(2)]
        self.cache = SourceCache(self.store, 1 << 20)
        self.run(self.cache.reload())
        self.worker = Worker(self.store, self.cache, settings, worker_id="w-" + self.client_id)
        self.sys_profile: dict[int, str] = {}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()

    @rule(evs=st.lists(events, min_size=1, max_size=3))
    def send(self, evs: list[dict[str, Any]]) -> None:
        """Order events arrive one request each and are processed in arrival order."""
        for ev in evs:
            tick = next(self.clock)
            cur = ev["currency"]
            total = sum(q * p for _, q, p in ev["lines"])
            placed = T0 + ev["order"] * 1000
            updated = T0 + 100_000 + tick * 10 + ev["offset"]
            body: dict[str, Any] = {"order": {
                "id": f"o{ev['order']}", "status": ev["status"], "currency": cur, "total": money(total, cur),
                "placed": iso(placed), "updated": iso(updated),
                "items": [{"sku": s, "qty": q, "price": money(p, cur)} for s, q, p in ev["lines"]]}}
            if ev["email"]:
                body["email"] = ev["email"]
            if ev["phone"]:
                body["phone"] = ev["phone"]
            raw = orjson.dumps(body)
            row = request_row(self.sources[ev["source"]].id, self.client_id, raw, (T0 + tick) * 1_000_000)
            self.run(self.store.writer.ingest(row))
            while self.run(self.worker.run_once()):
                pass
            got = self.run(self.store.get_request(row["id"]))
            assert got.state == "processed", got.receipt
            contact = {k: v for k, v in (("Email", ev["email"]), ("Phone", ev["phone"])) if v}
            pid = None
            if contact:
                parsed = contact_parser.parse([{**contact, "SourceName": "POS", "SourceType": "POS"}],
                                              default_region="US")
                rec = parsed.records[0]
                pid = self.model.identity.apply(rec["contact"], [], row["received_at"], row["id"], row["source_id"])
            self.model.apply(row["source_id"], f"o{ev['order']}", updated * 1_000_000, row["id"], ev["status"], cur,
                             total, placed * 1_000_000, [(s, q, p) for s, q, p in ev["lines"]], pid)

    @precondition(lambda self: bool(self.model.identity.profiles))
    @rule(data=st.data())
    def erase(self, data: st.DataObject) -> None:
        pid = data.draw(st.sampled_from(sorted(self.model.identity.profiles)))
        keys = {k for k, p in self.model.identity.keys.items() if p == pid}
        kind, value = sorted(keys)[0]
        found = self.run(self.store.find_profiles(self.client_id, **{kind: value}))
        assert len(found) == 1
        self.run(self.store.erase_profile(found[0].id, self.client_id, "test"))
        self.model.erase(pid)

    def _system(self, conn: sa.Connection) -> tuple[dict[Any, Any], dict[Any, Any]]:
        ORD, OL, PK, PP = schema.orders, schema.order_lines, schema.profile_keys, schema.profile_purchases
        keys: dict[str, set[tuple[str, str]]] = {}
        for kind, value, pid in conn.execute(sa.select(PK.c.kind, PK.c.value, PK.c.profile_id)
                                             .where(PK.c.client_id == self.client_id)):
            keys.setdefault(pid, set()).add((kind, value))
        lines: dict[str, list[tuple[str, int, int]]] = {}
        for oid, sku, q, p in conn.execute(sa.select(OL.c.order_id, OL.c.sku, OL.c.quantity, OL.c.unit_price_minor)
                                           .order_by(OL.c.order_id, OL.c.idx)):
            lines.setdefault(oid, []).append((sku, q, p))
        orders = {}
        for o in conn.execute(sa.select(ORD).where(ORD.c.client_id == self.client_id)).mappings():
            assert o["profile_id"] is None or o["profile_id"] in keys, "an order's buyer is a live profile"
            buyer = frozenset(keys[o["profile_id"]]) if o["profile_id"] else None
            orders[(o["source_id"], o["external_id"])] = (o["status"], o["currency"], o["total_minor"],
                                                          lines.get(o["id"], []), buyer)
        facts: dict[Any, dict[str, tuple[int, ...]]] = {}
        for r in conn.execute(sa.select(PP).where(PP.c.client_id == self.client_id)).mappings():
            facts.setdefault(frozenset(keys[r["profile_id"]]), {})[r["currency"]] = (
                r["order_count"], r["total_minor"], r["first_order_at"], r["last_order_at"])
        return orders, facts

    @invariant()
    def matches_model(self) -> None:
        orders, facts = self.run(self.store.read(self._system))
        assert orders == self.model.snapshot()
        assert facts == self.model.facts()


def test_order_rules_match_the_model(db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    Store(settings.effective_database_url).migrate()

    class Machine(OrdersMachine):
        URL = db_url
        TMP = tmp_path

    run_state_machine_as_test(Machine, settings=hsettings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
        suppress_health_check=list(HealthCheck)))
