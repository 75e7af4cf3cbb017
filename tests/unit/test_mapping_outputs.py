"""Mappings with several outputs (contact, order with lines, record), and the order value rules."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookbay import orders
from hookbay.parsers.compile import from_dict, parse, parse_text
from hookbay.parsers.mapping import MappingError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "mappings"


def load(name: str) -> Any:
    text = (DOCS / name).read_text()
    return parse_text(text) if name.endswith(".yaml") else json.loads(text)


def by_kind(records: list[dict[str, Any]]) -> tuple[list[Any], list[Any], list[Any]]:
    return ([r for r in records if "contact" in r], [r for r in records if "order" in r],
            [r for r in records if "fields" in r])


def test_woocommerce_order_makes_the_buyer_and_the_order_with_its_lines() -> None:
    res = parse([load("woocommerce-order-created.json")], load("woocommerce-order.yaml"))
    assert res.errors == [] and res.warnings == []
    contacts, found, _ = by_kind(res.records)
    assert contacts[0]["contact"]["email"] == "maya.okafor@example.com"
    order = found[0]
    assert order["contact_idx"] == 0
    o = order["order"]
    assert (o["id"], o["status"], o["currency"], o["total_minor"], o["tax_minor"], o["shipping_minor"]) == \
        ("1842", "processing", "USD", 7102, 412, 1000)
    assert o["placed_at"] == 1710459727_000000  # 2024-03-14T23:42:07 read as UTC
    assert [(ln["sku"], ln["quantity"], ln["unit_price_minor"], ln["total_minor"]) for ln in o["lines"]] == [
        ("HOOD-ORG-FOR-M", 1, 4800, 4800), ("WRAP-BW-3", 1, 890, 890)]


def test_shopify_order_status_currency_and_computed_line_totals() -> None:
    body = load("shopify-orders-create.json")
    res = parse([body], load("shopify-order.yaml"))
    assert res.errors == []
    _, found, _ = by_kind(res.records)
    o = found[0]["order"]
    assert (o["id"], o["status"], o["total_minor"], o["subtotal_minor"]) == ("5893471240311", "paid", 12152, 11200)
    assert o["placed_at"] == 1710426096_000000  # 10:21:36-04:00
    assert o["lines"][0] == {"sku": "TEA-SEN-250", "name": "Sencha Green Tea - 250 g", "quantity": 2,
                             "unit_price_minor": 2400, "total_minor": 4800}
    cancelled = copy.deepcopy(body)
    cancelled["cancelled_at"] = "2024-03-15T09:00:00-04:00"
    o2 = by_kind(parse([cancelled], load("shopify-order.yaml")).records)[1][0]["order"]
    assert o2["status"] == "cancelled"


def test_pos_order_several_orders_per_body_in_minor_units_reading_the_root() -> None:
    res = parse([load("pos-order.json")], load("pos-order.yaml"))
    assert res.errors == [] and res.warnings == []
    contacts, found, _ = by_kind(res.records)
    assert len(contacts) == 1
    assert [(f["order"]["id"], f["order"]["currency"], f["order"]["total_minor"], f["order"]["status"])
            for f in found] == [("40211", "NOK", 45900, "closed"), ("40212", "NOK", 5900, "voided")]
    assert all(f["contact_idx"] == 0 for f in found)
    assert found[0]["order"]["updated_at"] == 1714645869_000000
    assert [ln["total_minor"] for ln in found[0]["order"]["lines"]] == [11800, 4900, 29200]


def test_bad_values_are_receipt_errors_naming_the_field_and_the_order_is_left_out() -> None:
    m = load("woocommerce-order.yaml")
    body = load("woocommerce-order-created.json")
    body["total"] = "71.025"
    res = parse([body], m)
    assert by_kind(res.records)[1] == []
    assert res.errors == [{"path": "$.outputs.order.fields.total", "code": "invalid_order_value",
                           "message": "total: 71.025 has more decimals than USD (2 decimals) allow", "document": 0}]
    body = load("woocommerce-order-created.json")
    body["line_items"][0]["quantity"] = 1.5
    res = parse([body], m)
    assert res.errors[0]["path"] == "$.outputs.order.lines.fields.quantity"
    assert len(by_kind(res.records)[1]) == 1, "a bad line value does not lose the order"
    body = load("woocommerce-order-created.json")
    del body["currency"]
    res = parse([body], m)
    assert by_kind(res.records)[1] == [] and by_kind(res.records)[0], "the contact is still made"
    assert any(e["path"] == "$.outputs.order.fields.currency" for e in res.errors)


def test_record_output_and_contact_errors_are_under_their_output() -> None:
    m = from_dict({"version": 3, "outputs": {
        "contact": {"fields": {"Email": {"expr": "mail"}, "SourceName": {"constant": "x"}}},
        "record": {"each": "notes", "fields": {"n": {"expr": "@"}}}}})
    res = parse([{"mail": "not-an-email", "notes": ["a", "b"]}], m)
    assert by_kind(res.records)[2] == [{"fields": {"n": "a"}, "mapping_version": 3},
                                       {"fields": {"n": "b"}, "mapping_version": 3}]
    assert res.errors and all(e["path"].startswith("$.outputs.contact") for e in res.errors)


@pytest.mark.parametrize("doc,message", [
    ({"version": 1, "outputs": {}}, "outputs needs at least one of contact, order, record"),
    ({"version": 1, "outputs": {"order": {"fields": {"id": {"expr": "id"}}}}}, "needs the fields currency, total"),
    ({"version": 1, "outputs": {"order": {"fields": {"id": {"expr": "a"}, "currency": {"expr": "b"},
                                                     "total": {"expr": "c"}, "totl": {"expr": "d"}}}}},
     "unknown field 'totl' of an order"),
    ({"version": 1, "outputs": {"order": {"fields": {"id": {"expr": "a"}, "currency": {"expr": "b"},
                                                     "total": {"expr": "c"}},
                                          "lines": {"fields": {"price": {"expr": "p"}}}}}},
     "unknown field 'price' of a line"),
    ({"version": 1, "outputs": {"invoice": {"fields": {"a": {"expr": "a"}}}}}, "unknown key 'invoice'"),
])
def test_bad_multi_output_mappings_are_refused_when_saved(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(MappingError) as e:
        from_dict(doc)
    assert message in str(e.value)


def test_multi_output_mapping_round_trips_and_has_one_digest() -> None:
    m = load("woocommerce-order.yaml")
    again = from_dict(json.loads(json.dumps(m.to_dict())))
    assert again.digest() == m.digest() and again.to_dict() == m.to_dict()
    assert m.target == "outputs" and "order.total" in m.field_names


@pytest.mark.parametrize("value,currency,minor", [
    ("71.02", "USD", 7102), (12.5, "EUR", 1250), ("1200", "JPY", 1200), ("1.234", "KWD", 1234), (3, "USD", 300),
    ("-4.10", "USD", -410), ("0.1", "USD", 10),
])
def test_amounts_become_integer_minor_units(value: Any, currency: str, minor: int) -> None:
    assert orders.to_minor(value, currency) == minor


@pytest.mark.parametrize("value,currency", [("12.5", "JPY"), ("1.001", "USD"), ("1e3", "USD"), (True, "USD"),
                                            ("NaN", "USD"), ("", "USD"), ([1], "USD"), ("9" * 20, "USD")])
def test_amounts_that_cannot_be_stored_exactly_are_refused(value: Any, currency: str) -> None:
    with pytest.raises(orders.OrderValueError):
        orders.to_minor(value, currency)


@given(st.integers(-10**12, 10**12), st.sampled_from(["USD", "JPY", "KWD", "CLF"]))
def test_decimal_text_of_any_minor_amount_round_trips(minor: int, currency: str) -> None:
    e = orders.exponent(currency)
    sign, a = ("-" if minor < 0 else ""), abs(minor)
    text = f"{sign}{a}" if e == 0 else f"{sign}{a // 10**e}.{a % 10**e:0{e}d}"
    assert orders.to_minor(text, currency) == minor


def test_times_with_offsets_without_and_epoch_seconds() -> None:
    assert orders.to_time_us("2024-03-14T10:21:37-04:00") == orders.to_time_us("2024-03-14T14:21:37Z")
    assert orders.to_time_us("2024-03-14T14:21:37") == 1710426097_000000
    assert orders.to_time_us(1710426097) == 1710426097_000000
    with pytest.raises(orders.OrderValueError):
        orders.to_time_us("14/03/2024")
