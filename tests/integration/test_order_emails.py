"""Transaction emails end to end (SQLite and PostgreSQL): a WooCommerce order through the shipped
mapping, the documented order-confirmation action, a real SMTP server (aiosmtpd). The receipt is
sent despite a marketing opt-out, holds every line, and an order update does not send it again."""

from __future__ import annotations

import copy
import json
import time
from email import message_from_bytes
from pathlib import Path
from typing import Any

import yaml
from aiosmtpd.controller import Controller

from hookbay.parsers import compile
from tests.conftest import free_port
from tests.integration.test_deliveries import _Collector, _deliveries, _send, _settled

ROOT = Path(__file__).resolve().parents[2]


def test_order_confirmation_once_per_order_with_every_line(db_url: str, live_server_factory) -> None:  # type: ignore[no-untyped-def]
    handler = _Collector()
    port = free_port()
    ctl = Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        live = live_server_factory(db_url, smtp_host="127.0.0.1", smtp_port=port, smtp_from="shop@hookbay.test")
        confirmation = yaml.safe_load((ROOT / "docs" / "order-confirmation.yaml").read_text())
        newsletter = {"type": "email", "name": "upsell", "on": "order", "marketing": True,
                      "subject": "More like {{ lines[0].name }}", "text": "..."}
        mapping = compile.parse_text((ROOT / "docs" / "mappings" / "woocommerce-order.yaml").read_text()).to_dict()
        woo = live.create_source(name="woo", config={"parser": "mapping", "mapping": mapping,
                                                     "actions": [confirmation, newsletter]})
        # the buyer opted out of marketing email earlier, through a form
        form = live.create_source(name="form", config={"parser": "contact"})
        _send(live, form, {"SourceName": "Web", "SourceType": "Form", "Email": "maya.okafor@example.com",
                           "FirstName": "Maya", "EmailPermission": False})
        time.sleep(0.1)
        created = json.loads((ROOT / "docs" / "mappings" / "woocommerce-order-created.json").read_text())
        rid = _send(live, woo, created)
        ds = _deliveries(live, request_id=rid, until=lambda ds: len(ds) == 2 and _settled()(ds))
        states = {d["action_name"]: d["state"] for d in ds}
        assert states == {"order-confirmation": "succeeded", "upsell": "skipped"}, ds
        [env] = handler.envelopes
        assert env.rcpt_tos == ["maya.okafor@example.com"]
        msg = message_from_bytes(env.content)
        assert msg["Subject"] == "Your order 1842 (71.02 USD)"
        parts = {p.get_content_type(): p.get_payload(decode=True).decode() for p in msg.walk()
                 if not p.is_multipart()}
        html, text = parts["text/html"], parts["text/plain"]
        assert "Hello Maya" in html
        for line in created["line_items"]:
            assert f"<td>{line['name']}</td><td>{line['sku']}</td>" in html
            assert line["name"] in text
        assert "<td>48.00</td>" in html and "<td>8.90</td>" in html and "71.02 USD" in html
        assert "1 x Organic Cotton Hoodie - Forest, M  48.00 USD" in text

        updated = copy.deepcopy(created)
        updated.update(status="completed", date_modified_gmt="2024-03-16T08:00:00")
        rid2 = _send(live, woo, updated)
        live.wait_state(rid2)
        time.sleep(0.5)
        assert [d["action_name"] for d in _deliveries(live, request_id=rid, until=_settled())] != []
        with live.admin() as c:
            assert c.get("/api/v1/deliveries", params={"request_id": rid2}).json()["items"] == []
        second = copy.deepcopy(created)
        second["id"] = 1843
        rid3 = _send(live, woo, second)
        [d3] = [d for d in _deliveries(live, request_id=rid3, until=lambda ds: len(ds) == 2 and _settled()(ds))
                if d["action_name"] == "order-confirmation"]
        assert d3["state"] == "succeeded"
        assert len(handler.envelopes) == 2, "the update sent nothing; the new order its own confirmation"
    finally:
        ctl.stop()


def test_actions_without_on_ignore_orders_and_on_order_is_validated(live: Any) -> None:
    """A source's existing contact actions keep running on contacts only when its mapping gains orders."""
    mapping = compile.parse_text((ROOT / "docs" / "mappings" / "woocommerce-order.yaml").read_text()).to_dict()
    src = live.create_source(config={"parser": "mapping", "mapping": mapping, "allow_private_destinations": True,
                                     "actions": [{"type": "forward", "url": "http://127.0.0.1:9/x"}]})
    body = json.loads((ROOT / "docs" / "mappings" / "woocommerce-order-created.json").read_text())
    [d] = _deliveries(live, request_id=_send(live, src, body))
    assert d["record_index"] == 0  # the contact, not the order
    with live.admin() as c:
        r = c.patch(f"/api/v1/sources/{src['id']}", json={"config": {"actions": [
            {"type": "email", "on": "invoice", "subject": "s", "text": "t"}]}})
    assert r.status_code in (400, 422) and "on" in r.text
