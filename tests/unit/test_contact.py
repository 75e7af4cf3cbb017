from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookbay.parsers.contact import PARSER_VERSION, ContactOutcome, parse, parse_contact

BENCH_BODY = Path(__file__).resolve().parents[2] / "bench" / "contact.json"
BASE = {"SourceName": "WebForm", "SourceType": "Web"}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=50,
)
field_names = st.sampled_from(
    [
        "FirstName", "LastName", "DateOfBirth", "Gender", "Email", "Phone", "Mobile", "EmailPermission",
        "PhonePermission", "SMSPermission", "AddressPermission", "Address", "Activities", "Interests",
        "NewsLetters", "ProviderType", "ListIds", "email", "PHONE", "address",
    ]
)  # fmt: skip


def one(fields: dict[str, Any], **kw: Any) -> ContactOutcome:
    return parse_contact({**BASE, **fields}, **kw)


def codes(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["path"], e["code"]) for e in entries]


def test_parser_version() -> None:
    assert PARSER_VERSION == "1"


def test_spec_example_body() -> None:
    result = parse([json.loads(BENCH_BODY.read_text())])
    assert result.errors == []
    assert codes(result.warnings) == [("$.Mobile", "unverified_phone")]
    assert result.records == [
        {
            "contact": {
                "source_name": "WebForm",
                "source_type": "Web",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "date_of_birth": "1985-12-10",
                "gender": "Female",
                "email": "Ada.Lovelace@example.com",
                "phone": "+442079460958",
                "mobile": "+447700900123",
                "address": {
                    "line1": "12 St James's Square",
                    "city": "London",
                    "zip": "SW1Y 4LB",
                    "country": "GB",
                },
                "activities": ["newsletter-signup"],
                "interests": ["mathematics", "engines"],
                "newsletters": ["weekly"],
                "provider_type": 3,
                "list_ids": ["a1b2c3"],
            },
            "consents": [
                {"channel": "email", "granted": True, "field": "EmailPermission"},
                {"channel": "phone", "granted": False, "field": "PhonePermission"},
                {"channel": "sms", "granted": True, "field": "SMSPermission"},
                {"channel": "mail", "granted": True, "field": "AddressPermission"},
            ],
        }
    ]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"SourceName": "  Shop ", "SourceType": "POS"}, {"source_name": "Shop", "source_type": "POS"}),
        ({"FirstName": " Ada "}, {"first_name": "Ada"}),
        ({"LastName": "Lovelace"}, {"last_name": "Lovelace"}),
        ({"FirstName": "   "}, {}),
        ({"FirstName": None}, {}),
        ({"DateOfBirth": "12-10-1985"}, {"date_of_birth": "1985-12-10"}),
        ({"DateOfBirth": "02-29-2024"}, {"date_of_birth": "2024-02-29"}),
        ({"DateOfBirth": " 01-31-2000 "}, {"date_of_birth": "2000-01-31"}),
        ({"DateOfBirth": ""}, {}),
        ({"Gender": "male"}, {"gender": "Male"}),
        ({"Gender": "FEMALE"}, {"gender": "Female"}),
        ({"Gender": " Female "}, {"gender": "Female"}),
        ({"Gender": "m"}, {"gender": "Unknown"}),
        ({"Gender": ""}, {"gender": "Unknown"}),
        ({"Gender": "nonbinary"}, {"gender": "Unknown"}),
        ({"Gender": 1}, {"gender": "Unknown"}),
        ({"Gender": None}, {}),
        ({"Email": " Ada.Lovelace@Example.COM "}, {"email": "Ada.Lovelace@example.com"}),
        ({"Email": "ADA@B\u00dccher.DE"}, {"email": "ADA@b\u00fccher.de"}),
        ({"Email": ""}, {}),
        ({"Phone": "+44 20 7946 0958"}, {"phone": "+442079460958"}),
        ({"Phone": "+1 (650) 253-0000"}, {"phone": "+16502530000"}),
        ({"Mobile": "+49 151 23456789"}, {"mobile": "+4915123456789"}),
        ({"Phone": ""}, {}),
        ({"Address": {"Addressline1": " 1 Main St ", "Addressline2": "Apt 2", "City": "Springfield",
                      "State": "IL", "Zip": "62701", "Country": "US"}},
         {"address": {"line1": "1 Main St", "line2": "Apt 2", "city": "Springfield", "state": "IL",
                      "zip": "62701", "country": "US"}}),
        ({"Address": {"addressLINE1": "x", "CITY": "y"}}, {"address": {"line1": "x", "city": "y"}}),
        ({"Address": {"Zip": 62701}}, {"address": {"zip": "62701"}}),
        ({"Address": {"City": "", "Zip": None}}, {}),
        ({"Address": {}}, {}),
        ({"Address": None}, {}),
        ({"Activities": ["ski", " ski ", "golf", "", None]}, {"activities": ["ski", "golf"]}),
        ({"Activities": "ski"}, {"activities": ["ski"]}),
        ({"Interests": [1, 2.0, 2.5, True, "1"]}, {"interests": ["1", "2", "2.5", "true"]}),
        ({"NewsLetters": ["weekly", "weekly"]}, {"newsletters": ["weekly"]}),
        ({"NewsLetters": []}, {}),
        ({"ProviderType": 3}, {"provider_type": 3}),
        ({"ProviderType": " 7 "}, {"provider_type": 7}),
        ({"ProviderType": 7.0}, {"provider_type": 7}),
        ({"ProviderType": None}, {}),
        ({"ListIds": ["a1", 42, 42, " b "]}, {"list_ids": ["a1", "42", "b"]}),
        ({"ListIds": 42}, {"list_ids": ["42"]}),
    ],
)  # fmt: skip
def test_valid_fields(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    out = one(fields)
    assert out.errors == []
    assert out.contact == {"source_name": "WebForm", "source_type": "Web", **expected}


@pytest.mark.parametrize(
    ("number", "region", "expected"),
    [
        ("020 7946 0958", "GB", "+442079460958"),
        ("020 7946 0958", "gb", "+442079460958"),
        ("(650) 253-0000", "US", "+16502530000"),
        (6502530000, "US", "+16502530000"),
        (6502530000.0, "US", "+16502530000"),
        (442079460958, None, None),
        ("+44 20 7946 0958", "US", "+442079460958"),
    ],
)
def test_phone_default_region(number: Any, region: str | None, expected: str | None) -> None:
    out = one({"Phone": number}, default_region=region)
    assert out.contact is not None
    assert out.contact.get("phone") == expected
    assert codes(out.errors) == ([] if expected else [("$.Phone", "invalid_phone")])


def test_unallocated_phone_is_kept_with_warning() -> None:
    out = one({"Mobile": "+44 7700 900123"})
    assert out.contact is not None and out.contact["mobile"] == "+447700900123"
    assert codes(out.warnings) == [("$.Mobile", "unverified_phone")]
    assert out.errors == []


@pytest.mark.parametrize(
    ("fields", "path", "code"),
    [
        ({"FirstName": 12}, "$.FirstName", "invalid_type"),
        ({"LastName": ["x"]}, "$.LastName", "invalid_type"),
        ({"DateOfBirth": "1985-12-10"}, "$.DateOfBirth", "invalid_date"),
        ({"DateOfBirth": "12/10/1985"}, "$.DateOfBirth", "invalid_date"),
        ({"DateOfBirth": "1-2-1985"}, "$.DateOfBirth", "invalid_date"),
        ({"DateOfBirth": "02-30-2024"}, "$.DateOfBirth", "invalid_date"),
        ({"DateOfBirth": "13-01-2024"}, "$.DateOfBirth", "invalid_date"),
        ({"DateOfBirth": "02-29-2023"}, "$.DateOfBirth", "invalid_date"),
        ({"DateOfBirth": "01-01-0000"}, "$.DateOfBirth", "invalid_date"),
        ({"DateOfBirth": "\u0661\u0662-10-1985"}, "$.DateOfBirth", "invalid_date"),
        ({"DateOfBirth": 12101985}, "$.DateOfBirth", "invalid_date"),
        ({"Email": "not-an-email"}, "$.Email", "invalid_email"),
        ({"Email": "a b@example.com"}, "$.Email", "invalid_email"),
        ({"Email": "a@b.test"}, "$.Email", "invalid_email"),
        ({"Email": 5}, "$.Email", "invalid_email"),
        ({"Phone": "hello"}, "$.Phone", "invalid_phone"),
        ({"Phone": "+44 12"}, "$.Phone", "invalid_phone"),
        ({"Phone": "0207 946 0958"}, "$.Phone", "invalid_phone"),
        ({"Mobile": True}, "$.Mobile", "invalid_phone"),
        ({"Mobile": -44}, "$.Mobile", "invalid_phone"),
        ({"Mobile": 1.5}, "$.Mobile", "invalid_phone"),
        ({"Mobile": {"n": 1}}, "$.Mobile", "invalid_phone"),
        ({"Mobile": 10**5000}, "$.Mobile", "invalid_phone"),
        ({"EmailPermission": "maybe"}, "$.EmailPermission", "invalid_boolean"),
        ({"PhonePermission": 1}, "$.PhonePermission", "invalid_boolean"),
        ({"SMSPermission": ""}, "$.SMSPermission", "invalid_boolean"),
        ({"AddressPermission": ["true"]}, "$.AddressPermission", "invalid_boolean"),
        ({"Address": "1 Main St"}, "$.Address", "invalid_type"),
        ({"Address": ["1 Main St"]}, "$.Address", "invalid_type"),
        ({"Address": {"City": ["x"]}}, "$.Address.City", "invalid_type"),
        ({"Address": {"Zip": True}}, "$.Address.Zip", "invalid_type"),
        ({"Activities": {"a": 1}}, "$.Activities", "invalid_type"),
        ({"Interests": [["nested"]]}, "$.Interests[0]", "invalid_type"),
        ({"NewsLetters": [{"x": 1}]}, "$.NewsLetters[0]", "invalid_type"),
        ({"ListIds": [True]}, "$.ListIds[0]", "invalid_type"),
        ({"ListIds": [10**5000]}, "$.ListIds[0]", "invalid_type"),
        ({"ProviderType": "Mailchimp"}, "$.ProviderType", "invalid_number"),
        ({"ProviderType": "3.5"}, "$.ProviderType", "invalid_number"),
        ({"ProviderType": 3.5}, "$.ProviderType", "invalid_number"),
        ({"ProviderType": True}, "$.ProviderType", "invalid_number"),
        ({"ProviderType": [3]}, "$.ProviderType", "invalid_number"),
        ({"ProviderType": 2**64}, "$.ProviderType", "invalid_number"),
    ],
)
def test_invalid_field_is_dropped_and_rest_kept(fields: dict[str, Any], path: str, code: str) -> None:
    out = one({"FirstName": "Ada", **fields})
    assert codes(out.errors) == [(path, code)]
    assert all(e["document"] == 0 for e in out.errors)
    assert out.contact is not None
    assert out.contact["source_name"] == "WebForm"
    kept = {} if "FirstName" in fields else {"first_name": "Ada"}
    assert out.contact == {"source_name": "WebForm", "source_type": "Web", **kept}
    assert out.consents == []


def test_bad_list_element_keeps_the_others() -> None:
    out = one({"Interests": ["ok", ["nested"], "also"], "Address": {"City": ["x"], "Zip": "1"}})
    assert out.contact is not None
    assert out.contact["interests"] == ["ok", "also"]
    assert out.contact["address"] == {"zip": "1"}


@pytest.mark.parametrize(
    ("field", "value", "channel", "granted"),
    [
        ("EmailPermission", True, "email", True),
        ("EmailPermission", False, "email", False),
        ("PhonePermission", "yes", "phone", True),
        ("PhonePermission", "No", "phone", False),
        ("SMSPermission", "TRUE", "sms", True),
        ("SMSPermission", " false ", "sms", False),
        ("AddressPermission", "1", "mail", True),
        ("AddressPermission", "0", "mail", False),
        ("smspermission", True, "sms", True),
    ],
)
def test_consent_events(field: str, value: Any, channel: str, granted: bool) -> None:
    out = one({field: value})
    assert out.errors == []
    canonical = {"smspermission": "SMSPermission"}.get(field, field)
    assert out.consents == [{"channel": channel, "granted": granted, "field": canonical}]
    assert out.contact == {"source_name": "WebForm", "source_type": "Web"}


@pytest.mark.parametrize(
    "field", ["EmailPermission", "PhonePermission", "SMSPermission", "AddressPermission"]
)
def test_null_or_absent_consent_is_no_event(field: str) -> None:
    assert one({field: None}).consents == []
    assert one({}).consents == []
    assert one({field: None}).errors == []


def test_keys_are_case_insensitive() -> None:
    out = parse_contact(
        {
            "sourcename": "WebForm",
            "SOURCETYPE": "Web",
            "firstname": "Ada",
            "eMaIl": "ada@example.com",
            "newsletters": ["weekly"],
            "ADDRESS": {"zIp": "1"},
            "emailpermission": "yes",
        }
    )
    assert out.errors == [] and out.warnings == []
    assert out.contact == {
        "source_name": "WebForm",
        "source_type": "Web",
        "first_name": "Ada",
        "email": "ada@example.com",
        "newsletters": ["weekly"],
        "address": {"zip": "1"},
    }
    assert out.consents == [{"channel": "email", "granted": True, "field": "EmailPermission"}]


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("Source_Name", "$.Source_Name"),
        ("First Name", '$["First Name"]'),
        ("e-mail", '$["e-mail"]'),
        ("Favourite", "$.Favourite"),
    ],
)
def test_unknown_key_is_a_warning_with_its_path(key: str, path: str) -> None:
    out = one({key: "x"})
    assert out.contact == {"source_name": "WebForm", "source_type": "Web"}
    assert out.errors == []
    assert codes(out.warnings) == [(path, "unknown_key")]


def test_unknown_address_key_and_array_element_paths() -> None:
    result = parse([[{**BASE, "Address": {"Street": "x", "City": "y"}}, {**BASE, "Zzz": 1}]])
    assert codes(result.warnings) == [("$[0].Address.Street", "unknown_key"), ("$[1].Zzz", "unknown_key")]
    assert [r["contact"].get("address") for r in result.records] == [{"city": "y"}, None]


def test_duplicate_key_differing_in_case_first_wins() -> None:
    out = one({"Email": "a@example.com", "EMAIL": "b@example.com"})
    assert out.contact is not None and out.contact["email"] == "a@example.com"
    assert codes(out.warnings) == [("$.EMAIL", "duplicate_key")]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"SourceType": "Web", "Email": "a@example.com"}, [("$.SourceName", "required")]),
        ({"SourceName": "WebForm"}, [("$.SourceType", "required")]),
        ({}, [("$.SourceName", "required"), ("$.SourceType", "required")]),
        ({"SourceName": None, "SourceType": "Web"}, [("$.SourceName", "required")]),
        ({"SourceName": "  ", "SourceType": "Web"}, [("$.SourceName", "required")]),
        ({"SourceName": 5, "SourceType": "Web"}, [("$.SourceName", "invalid_type")]),
        ({"SourceName": "x", "SourceType": ["Web"]}, [("$.SourceType", "invalid_type")]),
    ],
)
def test_missing_required_fails_the_record(doc: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    out = parse_contact({**doc, "EmailPermission": True}, document=3)
    assert out.contact is None
    assert out.consents == []
    assert codes(out.errors) == expected
    assert all(e["document"] == 3 for e in out.errors)
    result = parse([doc, BASE])
    assert len(result.records) == 1
    assert codes(result.errors) == expected
    assert [e["document"] for e in result.errors] == [0] * len(expected)


def test_failed_record_still_reports_its_field_errors() -> None:
    result = parse([{"SourceType": "Web", "DateOfBirth": "bad"}])
    assert result.records == []
    assert codes(result.errors) == [("$.DateOfBirth", "invalid_date"), ("$.SourceName", "required")]


@pytest.mark.parametrize(
    ("docs", "n_records", "errors"),
    [
        ([BASE], 1, []),
        ([[BASE, BASE]], 2, []),
        ([[BASE, 3, "x"]], 1, [("$[1]", "not_an_object"), ("$[2]", "not_an_object")]),
        ([[[BASE]]], 0, [("$[0]", "not_an_object")]),
        ([[]], 0, [("$", "not_an_object")]),
        (["text"], 0, [("$", "not_an_object")]),
        ([None], 0, [("$", "not_an_object")]),
        ([42, BASE], 1, [("$", "not_an_object")]),
        ([], 0, []),
    ],
)
def test_document_shapes(docs: list[Any], n_records: int, errors: list[tuple[str, str]]) -> None:
    result = parse(docs)
    assert len(result.records) == n_records
    assert codes(result.errors) == errors
    assert all(set(r) == {"contact", "consents"} for r in result.records)


def test_parse_contact_rejects_non_object() -> None:
    out = parse_contact([BASE], document=2)
    assert out.contact is None
    assert out.errors == [
        {"path": "$", "code": "not_an_object", "message": out.errors[0]["message"], "document": 2}
    ]


def test_parse_passes_default_region() -> None:
    result = parse([{**BASE, "Phone": "020 7946 0958"}], default_region="GB")
    assert result.records[0]["contact"]["phone"] == "+442079460958"


def test_surrogate_key_never_breaks_reporting() -> None:
    out = one({"\ud800": 1})
    assert out.contact is not None
    assert out.warnings[0]["code"] == "unknown_key"


@given(json_values)
@settings(max_examples=300)
def test_any_json_value_never_raises(value: Any) -> None:
    result = parse([value], default_region="US")
    assert len(result.records) <= max(1, len(value) if isinstance(value, list) else 1)
    for entry in result.errors + result.warnings:
        assert set(entry) == {"path", "code", "message", "document"}
    assert all(e["code"] != "parse_failed" for e in result.errors)


@given(
    st.dictionaries(st.text(max_size=12) | field_names, json_values, max_size=8),
    st.sampled_from([None, "US", "GB"]),
)
@settings(max_examples=300)
def test_valid_source_plus_arbitrary_keys_gives_one_record(extra: dict[str, Any], region: str | None) -> None:
    extra = {k: v for k, v in extra.items() if k.lower() not in ("sourcename", "sourcetype")}
    result = parse([{**BASE, **extra}], default_region=region)
    assert len(result.records) == 1
    contact = result.records[0]["contact"]
    assert contact["source_name"] == "WebForm" and contact["source_type"] == "Web"
    assert all(e["code"] != "parse_failed" for e in result.errors)
