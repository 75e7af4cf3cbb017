"""Contacts into profiles end to end: consent ledger, last-writer-wins, wait=1, test endpoint,
mappings, replay and erasure, over real HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import orjson
import yaml

from hookbay.ids import new_request_id, now_us
from hookbay.parsers.formats import load_tree
from hookbay.processing.worker import Worker
from hookbay.store import Store
from hookbay.store.sources import SourceCache
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]
CONTACT = orjson.loads((ROOT / "bench" / "contact.json").read_bytes())


def _admin(live, method: str, path: str, **kw):  # type: ignore[no-untyped-def]
    with live.admin() as c:
        return c.request(method, path, **kw)


def _post(live, src, body, **params):  # type: ignore[no-untyped-def]
    return live.client.post(f"/V1/Data/{src['token']}", json=body, params=params)


def test_contact_makes_profile_with_consent(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"parser": "contact", "format": "json"})
    r = _post(live, src, CONTACT, wait=1)
    assert r.status_code == 200, r.text
    receipt = r.json()["receipt"]
    assert receipt["state"] == "processed"
    rec = receipt["records"][0]
    assert rec["contact"]["email"] == "Ada.Lovelace@example.com"
    assert rec["contact"]["date_of_birth"] == "1985-12-10"
    assert rec["contact"]["gender"] == "Female"
    assert rec["contact"]["phone"] == "+442079460958"
    pid = rec["profile_id"]
    assert pid

    found = _admin(live, "GET", "/api/v1/profiles", params={"email": " ada.lovelace@EXAMPLE.com"}).json()
    assert [p["id"] for p in found] == [pid]
    by_phone = _admin(live, "GET", "/api/v1/profiles", params={"phone": "+44 20 7946 0958"}).json()
    assert [p["id"] for p in by_phone] == [pid]
    prof = found[0]
    assert prof["fields"]["first_name"]["value"] == "Ada"
    assert prof["fields"]["first_name"]["request_id"] == r.json()["request_id"]
    assert {ch: c["granted"] for ch, c in prof["consent"].items()} == {
        "email": True, "phone": False, "sms": True, "mail": True}


def test_later_values_win_sets_merge_and_ledger_grows(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"parser": "contact"})
    first = _post(live, src, CONTACT, wait=1).json()
    later = copy.deepcopy(CONTACT)
    later.update({"FirstName": "Augusta", "EmailPermission": False, "Interests": ["poetry"]})
    del later["SMSPermission"]
    second = _post(live, src, later, wait=1).json()
    pid = first["receipt"]["records"][0]["profile_id"]
    assert second["receipt"]["records"][0]["profile_id"] == pid
    prof = _admin(live, "GET", f"/api/v1/profiles/{pid}").json()
    assert prof["fields"]["first_name"] == {**prof["fields"]["first_name"], "value": "Augusta",
                                           "request_id": second["request_id"]}
    assert prof["fields"]["last_name"]["request_id"] == second["request_id"]
    assert prof["fields"]["interests"]["value"] == ["mathematics", "engines", "poetry"]
    assert prof["consent"]["email"]["granted"] is False
    assert prof["consent"]["sms"]["granted"] is True  # absent means no change
    emails = [e for e in prof["ledger"] if e["channel"] == "email"]
    assert [e["granted"] for e in emails] == [True, False]
    assert sorted(prof["request_ids"]) == sorted([first["request_id"], second["request_id"]])
    # a contact with only a mobile number matches the same customer
    mob = _post(live, src, {"SourceName": "POS", "SourceType": "Store", "Mobile": "+44 7700 900123",
                            "LastName": "King"}, wait=1).json()
    assert mob["receipt"]["records"][0]["profile_id"] == pid


def test_wait_reports_field_errors_and_422_on_failure(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"parser": "contact"})
    bad = _post(live, src, {"SourceType": "Web", "Email": "x@y.io"}, wait=1)
    assert bad.status_code == 422
    body = bad.json()
    assert body["receipt"]["state"] == "failed"
    assert any(e["path"] == "$.SourceName" and e["code"] == "required" for e in body["receipt"]["errors"])
    stored = _admin(live, "GET", f"/api/v1/requests/{body['request_id']}").json()
    assert stored["state"] == "failed" and stored["body"]  # the raw request is still kept
    partial = _post(live, src, {"SourceName": "W", "SourceType": "Web", "Email": "p@q.io",
                                "DateOfBirth": "1985-12-10", "Colour": "red"}, wait=1)
    assert partial.status_code == 200
    rc = partial.json()["receipt"]
    assert rc["records"][0]["contact"]["email"] == "p@q.io"
    assert [(e["path"], e["code"]) for e in rc["errors"]] == [("$.DateOfBirth", "invalid_date")]
    assert [(w["path"], w["code"]) for w in rc["warnings"]] == [("$.Colour", "unknown_key")]
    # the receipt endpoint says the same later
    again = live.client.get(f"/V1/Requests/{partial.json()['request_id']}").json()
    assert again["errors"] == rc["errors"] and again["state"] == "processed"


def test_sync_source_answers_with_receipt(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"parser": "contact", "sync": True})
    r = _post(live, src, {"SourceName": "x"})
    assert r.status_code == 422 and r.json()["receipt"]["errors"][0]["path"] == "$.SourceType"


def test_test_endpoint_stores_nothing(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"parser": "contact"})
    r = live.client.post(f"/V1/Test/{src['token']}", json=CONTACT)
    assert r.status_code == 200
    out = r.json()
    assert out["stored"] is False and out["records"][0]["contact"]["gender"] == "Female"
    bad = live.client.post(f"/V1/Test/{src['token']}", json={"nope": 1})
    assert bad.status_code == 422 and {e["code"] for e in bad.json()["errors"]} >= {"required"}
    assert live.client.post("/V1/Test/00000000-0000-0000-0000-000000000000", json={}).status_code == 404
    assert _admin(live, "GET", "/api/v1/requests").json()["items"] == []
    assert _admin(live, "GET", "/api/v1/profiles", params={"email": "ada.lovelace@example.com"}).json() == []


def test_woocommerce_mapping_to_profile(live) -> None:  # type: ignore[no-untyped-def]
    mapping = yaml.safe_load((ROOT / "docs/mappings/woocommerce-order-created.yaml").read_text())
    body = orjson.loads((ROOT / "docs/mappings/woocommerce-order-created.json").read_bytes())
    src = live.create_source(config={"parser": "mapping", "mapping": mapping, "default_region": "US"})
    r = _post(live, src, body, wait=1)
    assert r.status_code == 200, r.text
    rec = r.json()["receipt"]["records"][0]
    assert rec["contact"]["email"] == body["billing"]["email"].strip().lower()
    assert rec["contact"]["source_name"] == "WooCommerce"
    assert rec["profile_id"]


def test_xml_mapping_to_records(live) -> None:  # type: ignore[no-untyped-def]
    mapping = yaml.safe_load((ROOT / "docs/mappings/xml-order-record.yaml").read_text())
    xml = (ROOT / "docs/mappings/xml-order.xml").read_bytes()
    src = live.create_source(config={"parser": "mapping", "mapping": mapping, "format": "xml"})
    r = live.client.post(f"/V1/Data/{src['token']}?wait=1", content=xml, headers={"Content-Type": "application/xml"})
    assert r.status_code == 200, r.text
    recs = r.json()["receipt"]["records"]
    # the documented tree is exactly what the XML decoder makes of the example: the mapping was written against it
    tree = orjson.loads((ROOT / "docs/mappings/xml-order.tree.json").read_bytes())
    assert load_tree(xml, "application/xml", "xml") == [tree]
    lines = tree["Order"]["Lines"]["Line"]
    assert [x["mapping_version"] for x in recs] == [mapping["version"]] * len(lines) == [1, 1, 1]
    order = {"order_id": "PO-2024-00731", "placed_at": "2024-03-14T16:42:00", "store_code": "BER-03",
             "store_name": "Berlin Mitte", "customer_email": "greta.vogel@example.de", "loyalty_tier": "gold",
             "order_currency": "EUR", "currency": "EUR", "source": "pos-xml"}
    assert [x["fields"] for x in recs] == [
        {**order, "line_number": 1, "sku": "TNT-2P-GRN", "description": "Trekking tent, 2 person", "quantity": 1,
         "unit_price": 249.0, "tags": "outdoor,camping", "gift": False},
        {**order, "line_number": 2, "sku": "MAT-INF-L", "description": "Inflatable sleeping mat", "quantity": 2,
         "unit_price": 59.9, "tags": "camping", "gift": True},
        {**order, "line_number": 3, "sku": "GAS-230", "description": "Gas cartridge 230 g", "quantity": 4,
         "unit_price": 6.5, "gift": False},  # no <Tags>: no field
    ]


def test_replay_dry_run_then_apply(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source()
    rid = _post(live, src, CONTACT, wait=1).json()["request_id"]
    assert "fields" in _admin(live, "GET", f"/api/v1/requests/{rid}").json()["records"][0]
    patched = _admin(live, "PATCH", f"/api/v1/sources/{src['id']}", json={"config": {"parser": "contact"}})
    assert patched.status_code == 200, patched.text
    dry = _admin(live, "POST", "/api/v1/replay", json={"request_id": rid, "dry_run": True}).json()
    assert dry["count"] == 1 and dry["items"][0]["changed"]
    assert '"contact"' in dry["items"][0]["diff"] and dry["items"][0]["diff"].startswith("---")
    assert "fields" in _admin(live, "GET", f"/api/v1/requests/{rid}").json()["records"][0]
    done = _admin(live, "POST", "/api/v1/replay", json={"source": src["id"]}).json()
    assert done["count"] == 1
    detail = _admin(live, "GET", f"/api/v1/requests/{rid}").json()
    assert len(detail["records"]) == 1 and detail["records"][0]["contact"]["first_name"] == "Ada"
    again = _admin(live, "POST", "/api/v1/replay", json={"request_id": rid, "dry_run": True}).json()
    assert again["items"][0]["changed"] is False


def test_export_and_erase(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"parser": "contact"})
    r = _post(live, src, CONTACT, wait=1).json()
    pid, rid = r["receipt"]["records"][0]["profile_id"], r["request_id"]
    exp = _admin(live, "GET", f"/api/v1/profiles/{pid}/export")
    assert exp.status_code == 200 and exp.json()["profile"]["id"] == pid
    assert exp.json()["records"][0]["request_id"] == rid
    er = _admin(live, "DELETE", f"/api/v1/profiles/{pid}").json()
    assert er["requests_scrubbed"] == 1 and er["records_deleted"] == 1 and er["consent_events_deleted"] == 4
    assert _admin(live, "GET", f"/api/v1/profiles/{pid}").status_code == 404
    assert _admin(live, "GET", "/api/v1/profiles", params={"email": "ada.lovelace@example.com"}).json() == []
    detail = _admin(live, "GET", f"/api/v1/requests/{rid}").json()
    assert detail["body"] is None and detail["headers"] == [] and detail["records"] == []


async def test_concurrent_updates_never_lose_a_field(db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path, worker_batch=5, worker_yield_ratio=0)
    url = db_url.replace("postgresql://", "postgresql+psycopg://", 1)
    stores = [Store(url), Store(url), Store(url)]
    stores[0].migrate()
    for st in stores:
        await st.start()
    try:
        src, _ = await stores[0].create_source(name="c", client_id="acme", config={"parser": "contact"})
        n = 60
        for i in range(n):
            body = orjson.dumps({"SourceName": "s", "SourceType": "t", "Email": "same@example.com",
                                 "Interests": [f"i{i}"], "EmailPermission": i % 2 == 0})
            await stores[0].writer.ingest({
                "id": new_request_id(), "source_id": src.id, "client_id": "acme", "received_at": now_us(),
                "method": "POST", "path": "/", "query": "", "headers": "[]", "peer": None,
                "content_type": "application/json", "body": body, "body_size": len(body), "verdict": "accepted",
                "rule": None, "status": 200, "state": "pending", "idempotency_key": None, "duplicate_of": None,
                "receipt": None, "processed_at": None})
        workers = []
        for i, st in enumerate(stores[1:]):
            cache = SourceCache(st, 1 << 20)
            await cache.reload()
            workers.append(Worker(st, cache, settings, worker_id=f"w{i}"))

        async def drain(w: Worker) -> None:
            idle = 0
            while idle < 3:
                idle = 0 if await w.run_once() or await w.store.queue_depth() else idle + 1
                await asyncio.sleep(0.01 * idle)

        await asyncio.gather(*(drain(w) for w in workers))
        found = await stores[0].find_profiles("acme", email="same@example.com")
        assert len(found) == 1
        prof = await stores[0].get_profile(found[0].id)
        assert sorted(prof.fields["interests"]["value"]) == sorted(f"i{i}" for i in range(n))
        assert len([e for e in prof.ledger if e.channel == "email"]) == n
        assert len(prof.request_ids) == n
    finally:
        for st in stores:
            await st.close()
