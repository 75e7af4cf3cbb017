"""The pure profile rules other than merge_fields (see test_merge_fields.py): identity keys, folding
a merged profile into the survivor, the searchable columns, consent from the ledger, the lookup
normalisation, and the API's profile view (``ops.profiles.profile_out``). Issue #19: the mutation
run found these reached only through the store, where a wrong tie-break or a dropped key went
unnoticed."""

from __future__ import annotations

import pytest

from hookbay.ops.profiles import profile_out
from hookbay.profiles import (
    consent_state,
    identity_columns,
    identity_keys,
    lookup_email,
    lookup_phone,
    merge_profile_fields,
)
from hookbay.store.order_rows import CurrencyTotal, PurchaseFacts, StoredOrder, StoredOrderLine
from hookbay.store.profile_rows import StoredConsentEvent, StoredProfileDetail
from hookbay.views import iso


def _f(value: object, at: int, rid: str = "r1", sid: str | None = "s1") -> dict:
    return {"value": value, "at": at, "request_id": rid, "source_id": sid}


def test_identity_keys_email_lowered_phone_and_mobile_one_kind() -> None:
    assert identity_keys({"email": "Ada@Example.COM", "phone": "+441234", "mobile": "+449876"}) == [
        ("email", "ada@example.com"), ("phone", "+441234"), ("phone", "+449876")]
    assert identity_keys({"phone": "+441234", "mobile": "+441234"}) == [("phone", "+441234")]
    assert identity_keys({"mobile": "+449876"}) == [("phone", "+449876")]
    assert identity_keys({"email": "", "phone": None, "first_name": "Ada"}) == []


def test_merge_profile_fields_a_field_only_the_merged_profile_has_is_copied() -> None:
    survivor = {"email": _f("a@x.io", 5)}
    theirs = _f("Ada", 3, "r2", "s2")
    assert merge_profile_fields(survivor, {"first_name": theirs}) is True
    assert survivor["first_name"] == theirs and survivor["first_name"] is not theirs


def test_merge_profile_fields_later_scalar_wins_survivor_wins_a_tie() -> None:
    survivor = {"city": _f("Leeds", 5), "zip": _f("1", 5)}
    assert merge_profile_fields(survivor, {"city": _f("York", 6, "r2"), "zip": _f("2", 5, "r2")}) is True
    assert survivor["city"] == _f("York", 6, "r2")
    assert survivor["zip"] == _f("1", 5)  # a tie keeps the survivor's
    assert merge_profile_fields(survivor, {"zip": _f("3", 4, "r3")}) is False
    assert survivor["zip"] == _f("1", 5)


def test_merge_profile_fields_set_fields_union_credited_to_the_merged_setter() -> None:
    survivor = {"interests": _f(["a", "b"], 7)}
    assert merge_profile_fields(survivor, {"interests": _f(["b", "c"], 4, "r9", "s9")}) is True
    assert survivor["interests"] == {"value": ["a", "b", "c"], "at": 7, "request_id": "r9", "source_id": "s9"}
    survivor = {"interests": _f(["a"], 2)}
    merge_profile_fields(survivor, {"interests": {"value": ["z"], "at": 8, "request_id": "r3"}})
    assert survivor["interests"] == {"value": ["a", "z"], "at": 8, "request_id": "r3", "source_id": None}
    # nothing new: unchanged, even when the merged one is later
    assert merge_profile_fields(survivor, {"interests": _f(["z"], 99, "r4")}) is False
    assert survivor["interests"]["request_id"] == "r3"


def test_merge_profile_fields_a_set_name_holding_a_scalar_is_a_scalar() -> None:
    survivor = {"interests": _f("golf", 1)}
    assert merge_profile_fields(survivor, {"interests": _f(["chess"], 2, "r2")}) is True
    assert survivor["interests"] == _f(["chess"], 2, "r2")
    survivor = {"interests": _f(["golf"], 1)}
    assert merge_profile_fields(survivor, {"interests": _f("chess", 2, "r2")}) is True
    assert survivor["interests"] == _f("chess", 2, "r2")


def test_identity_columns() -> None:
    assert identity_columns({"email": _f("a@x.io", 1), "phone": _f("+1", 1), "mobile": _f("+2", 1)}) == ("a@x.io", "+1")
    assert identity_columns({"mobile": _f("+2", 1)}) == (None, "+2")
    assert identity_columns({}) == (None, None)


def _event(id_: int, channel: str, granted: object, at: int, field: str | None = None) -> StoredConsentEvent:
    """A ledger row as the database gives it back (``granted`` an int on SQLite)."""
    return StoredConsentEvent.of({"id": id_, "channel": channel, "granted": granted, "occurred_at": at,
                                  "request_id": f"r{id_}", "source_id": "s1", "field": field})


def test_consent_state_latest_event_per_channel_ties_by_ledger_order() -> None:
    ledger = [_event(3, "email", 0, 20), _event(1, "email", 1, 10), _event(2, "sms", 1, 20),
              _event(5, "sms", 0, 20), _event(4, "sms", 1, 20)]
    assert consent_state(ledger) == {
        "email": {"granted": False, "occurred_at": 20, "request_id": "r3", "source_id": "s1"},
        "sms": {"granted": False, "occurred_at": 20, "request_id": "r5", "source_id": "s1"},
    }
    assert consent_state([]) == {}
    assert consent_state([_event(1, "email", 0, 1), _event(2, "email", 1, 2)])["email"]["granted"] is True


@pytest.mark.parametrize(("typed", "region", "want"), [
    ("+44 20 7946 0018", None, "+442079460018"),
    ("020 7946 0018", "GB", "+442079460018"),
    ("  not a number ", None, "not a number"),
])
def test_lookup_phone(typed: str, region: str | None, want: str) -> None:
    assert lookup_phone(typed, region) == want


def test_lookup_email() -> None:
    assert lookup_email("  Ada@Example.COM ") == "ada@example.com"


def test_profile_out() -> None:
    order = StoredOrder(id="ord_1", client_id="acme", source_id="s2", external_id="A-1", profile_id="prf_1",
                        status="paid", currency="EUR", total_minor=1250, subtotal_minor=None, tax_minor=None,
                        shipping_minor=None, discount_minor=125, placed_at=2_000_000, event_at=2_000_000,
                        request_id="r2", created_at=2_000_000, updated_at=2_000_000,
                        lines=(StoredOrderLine(0, "SKU-1", "Mug", 2, 625, 1250),))
    ledger = [_event(1, "email", 1, 1_000_000, "EmailPermission"),
              _event(2, "email", 0, 2_000_000, "EmailPermission")]
    prof = StoredProfileDetail(
        id="prf_1", client_id="acme", email="a@x.io", phone=None, created_at=1_000_000, updated_at=3_000_000,
        fields={"b": _f(2, 2_000_000, "r2", "s2"), "a": {"value": 1, "at": 1_000_000, "request_id": "r1"}},
        keys=[("email", "a@x.io")], ledger=ledger, request_ids=["r1"], merged_from=["prf_0"],
        purchases=PurchaseFacts(order_count=1, totals=(CurrencyTotal("EUR", 1250, 1),),
                                first_order_at=2_000_000, last_order_at=2_000_000),
        recent_orders=[order])
    view = profile_out(prof)
    assert view == {
        "id": "prf_1", "client_id": "acme", "email": "a@x.io", "phone": None,
        "fields": {"a": {"value": 1, "set_at": iso(1_000_000), "request_id": "r1", "source_id": None},
                   "b": {"value": 2, "set_at": iso(2_000_000), "request_id": "r2", "source_id": "s2"}},
        "consent": {"email": {"granted": False, "occurred_at": iso(2_000_000), "request_id": "r2", "source_id": "s1"}},
        "ledger": [{"channel": "email", "granted": True, "occurred_at": iso(1_000_000), "source_id": "s1",
                    "request_id": "r1", "field": "EmailPermission"},
                   {"channel": "email", "granted": False, "occurred_at": iso(2_000_000), "source_id": "s1",
                    "request_id": "r2", "field": "EmailPermission"}],
        "keys": [{"kind": "email", "value": "a@x.io"}], "request_ids": ["r1"], "merged_from": ["prf_0"],
        "purchases": {"order_count": 1, "totals": [{"currency": "EUR", "total_minor": 1250, "order_count": 1,
                                                    "total": "12.50"}],
                      "first_order_at": iso(2_000_000), "last_order_at": iso(2_000_000)},
        "recent_orders": [{
            "id": "ord_1", "client_id": "acme", "source_id": "s2", "external_id": "A-1", "profile_id": "prf_1",
            "status": "paid", "currency": "EUR", "total_minor": 1250, "total": "12.50", "subtotal_minor": None,
            "subtotal": None, "tax_minor": None, "tax": None, "shipping_minor": None, "shipping": None,
            "discount_minor": 125, "discount": "1.25", "placed_at": iso(2_000_000), "event_at": iso(2_000_000),
            "request_id": "r2",
            "lines": [{"sku": "SKU-1", "name": "Mug", "quantity": 2, "unit_price_minor": 625, "total_minor": 1250,
                       "unit_price": "6.25", "total": "12.50"}]}],
        "created_at": iso(1_000_000), "updated_at": iso(3_000_000),
    }
    assert list(view["fields"]) == ["a", "b"]  # sorted by name
    assert list(view) == ["id", "client_id", "email", "phone", "fields", "consent", "ledger", "keys", "request_ids",
                          "merged_from", "purchases", "recent_orders", "created_at", "updated_at"]  # the wire order
    assert all(type(e["granted"]) is bool for e in view["ledger"])
