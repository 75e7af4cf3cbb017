"""Orders end to end on a live server (SQLite and PostgreSQL): the shipped WooCommerce, Shopify and
POS mappings turn real payloads into the buyer's profile and orders; an update replaces its order,
an older event arriving late does not; purchase facts, the orders API, the profile API, the console
profile page and ``hookbay orders`` show them; erasure takes them away."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from hookbay.parsers import compile
from tests.conftest import ADMIN_TOKEN, cli_migrate
from tests.integration.test_tenants import _login

DOCS = Path(__file__).resolve().parents[2] / "docs" / "mappings"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def mapping(name: str) -> dict[str, Any]:
    return compile.parse_text((DOCS / name).read_text()).to_dict()


def payload(name: str) -> Any:
    return json.loads((DOCS / name).read_text())


def post(live: Any, src: dict[str, Any], body: Any) -> dict[str, Any]:
    r = live.client.post(f"/V1/Data/{src['token']}?wait=1", json=body)
    assert r.status_code == 200, r.text
    receipt: dict[str, Any] = r.json()["receipt"]
    assert receipt["state"] == "processed", receipt
    return receipt


def test_shop_orders_become_orders_of_the_buyer_profile(live: Any, tmp_path: Path) -> None:
    woo = live.create_source(name="woo", config={"parser": "mapping", "mapping": mapping("woocommerce-order.yaml")})
    shop = live.create_source(name="shopify", config={"parser": "mapping", "mapping": mapping("shopify-order.yaml")})
    pos = live.create_source(name="pos", config={"parser": "mapping", "mapping": mapping("pos-order.yaml")})

    created = payload("woocommerce-order-created.json")
    got = post(live, woo, created)
    pid = got["records"][0]["profile_id"]

    # order.updated: completed, a third line, later modification time
    updated = copy.deepcopy(created)
    updated.update(status="completed", total="89.02", date_modified_gmt="2024-03-16T08:00:00")
    updated["line_items"].append({**created["line_items"][1], "sku": "GIFT-BOX", "name": "Gift box", "price": 18,
                                  "total": "18.00", "quantity": 1})
    post(live, woo, updated)
    # an older order.updated delivered late (a retry): it must not roll the order back
    stale = copy.deepcopy(created)
    stale.update(status="on-hold", date_modified_gmt="2024-03-15T00:00:00")
    post(live, woo, stale)

    orders = live.client.get("/api/v1/orders", params={"profile": pid}, headers=ADMIN).json()
    assert len(orders) == 1
    o = orders[0]
    assert (o["external_id"], o["status"], o["total_minor"], o["total"], o["currency"], o["source_id"]) == \
        ("1842", "completed", 8902, "89.02", "USD", woo["id"])
    assert [(ln["sku"], ln["quantity"], ln["unit_price_minor"], ln["total"]) for ln in o["lines"]] == [
        ("HOOD-ORG-FOR-M", 1, 4800, "48.00"), ("WRAP-BW-3", 1, 890, "8.90"), ("GIFT-BOX", 1, 1800, "18.00")]
    assert o["placed_at"] == "2024-03-14T23:42:07Z" and o["event_at"] == "2024-03-16T08:00:00Z"

    # the same buyer on Shopify (create, then update to refunded, then a new paid order) and at a POS till
    sh = payload("shopify-orders-create.json")
    sh["customer"]["email"] = sh["email"] = "maya.okafor@example.com"
    post(live, shop, sh)
    refund = copy.deepcopy(sh)
    refund.update(financial_status="refunded", updated_at="2024-03-20T10:00:00-04:00")
    post(live, shop, refund)
    second = copy.deepcopy(sh)
    second.update(id=5893471240399, updated_at="2024-04-01T10:00:00-04:00", processed_at="2024-04-01T09:59:00-04:00")
    post(live, shop, second)
    till = payload("pos-order.json")
    till["guest"]["email"] = "Maya.Okafor@example.com"
    post(live, pos, till)

    prof = live.client.get(f"/api/v1/profiles/{pid}", headers=ADMIN).json()
    facts = prof["purchases"]
    # woo 1842 (89.02) + shopify second (121.52) in USD; the refunded one and the voided ticket do not count
    assert facts["order_count"] == 3
    assert facts["totals"] == [
        {"currency": "NOK", "total_minor": 45900, "order_count": 1, "total": "459.00"},
        {"currency": "USD", "total_minor": 8902 + 12152, "order_count": 2, "total": "210.54"}]
    assert facts["first_order_at"] == "2024-03-14T23:42:07Z"
    assert facts["last_order_at"] == "2024-05-02T10:02:44Z"
    assert len(prof["recent_orders"]) == 5
    assert {x["status"] for x in prof["recent_orders"]} == {"completed", "refunded", "paid", "closed", "voided"}

    by_source = live.client.get("/api/v1/orders", params={"source": "shopify"}, headers=ADMIN).json()
    assert sorted(x["external_id"] for x in by_source) == ["5893471240311", "5893471240399"]
    since = live.client.get("/api/v1/orders", params={"since": "2024-04-01T00:00:00Z"}, headers=ADMIN).json()
    assert [x["external_id"] for x in since] == ["40212", "40211", "5893471240399"]
    assert live.client.get("/api/v1/orders", params={"since": "yesterday-ish"}, headers=ADMIN).status_code == 400

    # the console's profile page
    with httpx.Client(base_url=live.url, timeout=15) as c:
        _login(c, ADMIN_TOKEN)
        page = c.get(f"/ui/profiles/{pid}").text
    assert 'id="order-count">3<' in page
    assert "459.00 NOK" in page and "210.54 USD" in page
    assert "1842" in page and "Gift box" in page and "Lunch menu" in page

    # hookbay orders, as an operator runs it against the same database
    env = dict(os.environ)
    env.update({"HOOKBAY_DATA_DIR": str(tmp_path), "HOOKBAY_DATABASE_URL": str(live.settings.database_url),  # type: ignore[attr-defined]
                "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN, "HOOKBAY_LOG_LEVEL": "warning"})
    cli_migrate(env)
    out = subprocess.run([sys.executable, "-m", "hookbay", "orders", "--profile", pid, "--json"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert sorted(x["external_id"] for x in json.loads(out.stdout)) == sorted(x["external_id"] for x in
                                                                             prof["recent_orders"])
    text = subprocess.run([sys.executable, "-m", "hookbay", "orders", "--source", "woo", "--client", "acme"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "1842" in text.stdout and "89.02 USD" in text.stdout, text.stderr
    bad = subprocess.run([sys.executable, "-m", "hookbay", "orders", "--since", "soon"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "--since" in bad.stderr + bad.stdout

    export = live.client.get(f"/api/v1/profiles/{pid}/export", headers=ADMIN).json()
    assert sorted(x["external_id"] for x in export["orders"]) == sorted(x["external_id"] for x in
                                                                       prof["recent_orders"])

    # erasure takes the buyer's orders and facts along
    erased = live.client.delete(f"/api/v1/profiles/{pid}", headers=ADMIN).json()
    assert erased["orders_deleted"] == 5
    assert live.client.get("/api/v1/orders", headers=ADMIN).json() == []


def test_an_order_without_a_buyer_and_a_bad_amount_explain_themselves(live: Any) -> None:
    woo = live.create_source(name="woo", config={"parser": "mapping", "mapping": mapping("woocommerce-order.yaml")})
    guest = payload("woocommerce-order-created.json")
    guest["billing"] = {}
    got = post(live, woo, guest)
    assert got["errors"] == []
    assert "$.outputs.contact.fields.Email" in [w["path"] for w in got["warnings"]]
    (o,) = live.client.get("/api/v1/orders", headers=ADMIN).json()
    assert o["profile_id"] is None and o["total"] == "71.02"

    broken = payload("woocommerce-order-created.json")
    broken.update(id=1843, total="71.0251")
    got = post(live, woo, broken)  # the contact still counts: processed, with the order's error
    assert {"path": "$.outputs.order.fields.total", "code": "invalid_order_value",
            "message": "total: 71.0251 has more decimals than USD (2 decimals) allow",
            "document": 0} in got["errors"]
    assert [x["external_id"] for x in live.client.get("/api/v1/orders", headers=ADMIN).json()] == ["1842"]
