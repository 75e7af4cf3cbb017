from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookbay.parsers.generic import (
    PARSER_VERSION,
    flatten,
    format_path,
    parse,
    snake_case,
    string_type,
    value_type,
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=50,
)


def test_parser_version() -> None:
    assert PARSER_VERSION == "1"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("firstName", "first_name"),
        ("First Name", "first_name"),
        ("HTTPStatus", "http_status"),
        ("a-b", "a_b"),
        ("already_snake", "already_snake"),
        ("userID", "user_id"),
        ("getHTTPResponseCode", "get_http_response_code"),
        ("address2City", "address2_city"),
        ("line1", "line1"),
        ("ABC", "abc"),
        ("  spaced  out ", "spaced_out"),
        ("a__b", "a_b"),
        ("_id", "id"),
        ("@type", "type"),
        ("user[name]", "user_name"),
        ("e-mail.address", "e_mail_address"),
        ("Stra\u00dfeName", "stra\u00dfe_name"),
        ("\u00c9coleID", "\u00e9cole_id"),
        ("\u540d\u524d", "\u540d\u524d"),
        ("", "value"),
        ("$", "value"),
        ("---", "value"),
    ],
)
def test_snake_case(key: str, expected: str) -> None:
    assert snake_case(key) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-31", "date"),
        ("2024-02-30", "string"),
        ("2024-01-31T10:20:30Z", "timestamp"),
        ("2024-01-31T10:20:30z", "timestamp"),
        ("2024-01-31T10:20:30.123456+02:00", "timestamp"),
        ("2024-01-31T10:20:30.123456789-0500", "timestamp"),
        ("2024-01-31 10:20", "timestamp"),
        ("2024-01-31T25:00:00", "string"),
        ("2024", "string"),
        ("12", "string"),
        ("20240131", "string"),
        ("2024-1-31", "string"),
        (" 2024-01-31", "string"),
        ("2024-01-31T10:20:30Zjunk", "string"),
        ("\u0662\u0660\u0662\u0664-01-31", "string"),
        ("hello", "string"),
        ("", "string"),
    ],
)
def test_string_type(value: str, expected: str) -> None:
    assert string_type(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "null"),
        (True, "bool"),
        (False, "bool"),
        (0, "int"),
        (2**64 - 1, "int"),
        (1.0, "float"),
        ("x", "string"),
        ("2024-01-01", "date"),
        ([], "array"),
        ([1, {"a": 2}], "array"),
        ({}, "json"),
        ({"a": 1}, "json"),
    ],
)
def test_value_type(value: Any, expected: str) -> None:
    assert value_type(value) == expected


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"address": {"city": "X"}}, {"address_city": "X"}),
        ({"a": {"b": {"c": 1}, "d": [1, {"E": 2}]}}, {"a_b_c": 1, "a_d": [1, {"E": 2}]}),
        ({"firstName": "A", "lastName": "B"}, {"first_name": "A", "last_name": "B"}),
        (
            {"firstName": "A", "first_name": "B", "First Name": "C"},
            {"first_name": "A", "first_name_2": "B", "first_name_3": "C"},
        ),
        ({"a_b": 1, "a": {"b": 2}}, {"a_b": 1, "a_b_2": 2}),
        ({"a_b": 1, "a_b_2": 2, "a": {"b": 3}}, {"a_b": 1, "a_b_2": 2, "a_b_3": 3}),
        ({"a": {}}, {"a": {}}),
        ({"n": None, "t": True, "i": 3, "f": 3.0}, {"n": None, "t": True, "i": 3, "f": 3.0}),
        ({}, {}),
        ([1, 2], {"value": [1, 2]}),
        ("x", {"value": "x"}),
    ],
)
def test_flatten(doc: Any, expected: dict[str, Any]) -> None:
    out = flatten(doc)
    assert out == expected
    assert list(out) == list(expected)
    for key, value in expected.items():
        assert type(out[key]) is type(value)


def test_flatten_depth_limit_keeps_rest_as_json() -> None:
    doc = {"a": {"b": {"c": {"d": 1}}}, "x": 1}
    assert flatten(doc, max_depth=2) == {"a_b": {"c": {"d": 1}}, "x": 1}
    assert flatten(doc, max_depth=1) == {"a": {"b": {"c": {"d": 1}}}, "x": 1}
    assert flatten(doc, max_depth=3) == {"a_b_c": {"d": 1}, "x": 1}
    assert flatten(doc, max_depth=4) == {"a_b_c_d": 1, "x": 1}
    with pytest.raises(ValueError):
        flatten(doc, max_depth=0)


def test_flatten_default_depth_is_16() -> None:
    doc: dict[str, Any] = {"v": 1}
    for _ in range(20):
        doc = {"k": doc}
    out = flatten(doc)
    (name,) = out
    assert name == "_".join(["k"] * 16)
    assert isinstance(out[name], dict)


def test_parse_record_shape_and_types() -> None:
    result = parse(
        [
            {
                "id": 7,
                "score": 1.5,
                "active": False,
                "note": None,
                "createdAt": "2024-05-01T12:00:00Z",
                "birthday": "1990-02-03",
                "name": "Ann",
                "tags": ["a", "b"],
                "address": {"city": "X", "geo": {"lat": 1.0}},
            }
        ]
    )
    assert result.errors == [] and result.warnings == []
    assert result.records == [
        {
            "fields": {
                "id": 7,
                "score": 1.5,
                "active": False,
                "note": None,
                "created_at": "2024-05-01T12:00:00Z",
                "birthday": "1990-02-03",
                "name": "Ann",
                "tags": ["a", "b"],
                "address_city": "X",
                "address_geo_lat": 1.0,
            },
            "types": {
                "id": "int",
                "score": "float",
                "active": "bool",
                "note": "null",
                "created_at": "timestamp",
                "birthday": "date",
                "name": "string",
                "tags": "array",
                "address_city": "string",
                "address_geo_lat": "float",
            },
        }
    ]


def test_parse_depth_limit_types_json_and_warns() -> None:
    result = parse([{"a": {"b": {"c": 1}}}], max_depth=2)
    assert result.records == [{"fields": {"a_b": {"c": 1}}, "types": {"a_b": "json"}}]
    assert [(w["path"], w["code"]) for w in result.warnings] == [("$.a.b", "depth_limit")]


def test_parse_collision_warns() -> None:
    result = parse([{"firstName": 1, "first_name": 2}])
    assert result.records[0]["fields"] == {"first_name": 1, "first_name_2": 2}
    assert [(w["path"], w["code"]) for w in result.warnings] == [("$.first_name", "key_collision")]


def test_parse_array_of_objects_gives_one_record_each() -> None:
    result = parse([[{"a": 1}, {"b": {"c": 2}}, {}]])
    assert [r["fields"] for r in result.records] == [{"a": 1}, {"b_c": 2}, {}]
    assert [(w["path"], w["code"]) for w in result.warnings] == [("$[2]", "empty_object")]


@pytest.mark.parametrize(
    ("doc", "value_kind"),
    [
        ([1, {"a": 1}], "array"),
        ([], "array"),
        ([1, 2], "array"),
        ("2024-01-01", "date"),
        (42, "int"),
        (None, "null"),
    ],
)
def test_parse_non_object_document(doc: Any, value_kind: str) -> None:
    result = parse([doc])
    assert result.records == [{"fields": {"value": doc}, "types": {"value": value_kind}}]
    assert [(w["path"], w["code"]) for w in result.warnings] == [("$", "not_an_object")]
    assert result.errors == []


def test_parse_empty_object() -> None:
    result = parse([{}])
    assert result.records == [{"fields": {}, "types": {}}]
    assert [(w["path"], w["code"]) for w in result.warnings] == [("$", "empty_object")]


def test_parse_multiple_documents_and_entry_shape() -> None:
    result = parse([{"a": 1}, {}, 5])
    assert [r["fields"] for r in result.records] == [{"a": 1}, {}, {"value": 5}]
    assert [w["document"] for w in result.warnings] == [1, 2]
    for w in result.warnings:
        assert set(w) == {"path", "code", "message", "document"}
        assert w["message"]


def test_parse_reports_bad_document_as_error() -> None:
    class Boom:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    result = parse([{Boom(): 1}, {"ok": 1}])
    assert [r["fields"] for r in result.records] == [{"ok": 1}]
    assert [(e["path"], e["code"], e["document"]) for e in result.errors] == [("$", "parse_failed", 0)]


def test_parse_no_documents() -> None:
    result = parse([])
    assert (result.records, result.errors, result.warnings) == ([], [], [])


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ((), "$"),
        (("a", "b"), "$.a.b"),
        (("a", 0, "c"), "$.a[0].c"),
        (("First Name",), '$["First Name"]'),
        (('q"uote',), '$["q\\"uote"]'),
    ],
)
def test_format_path(parts: tuple[str | int, ...], expected: str) -> None:
    assert format_path(parts) == expected


def _leaves(value: Any) -> Counter[tuple[str, Any]]:
    """Scalars as (type, value) so that 1, 1.0 and True stay distinct."""
    out: Counter[tuple[str, Any]] = Counter()
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        else:
            out[(type(v).__name__, v)] += 1
    return out


@given(json_values)
def test_parse_never_raises_and_keeps_every_leaf(value: Any) -> None:
    result = parse([value])
    assert result.errors == []
    assert result.records
    kept: Counter[tuple[str, Any]] = Counter()
    for record in result.records:
        assert set(record["fields"]) == set(record["types"])
        kept += _leaves(record["fields"])
    assert kept == _leaves(value)


@given(json_values, st.integers(min_value=1, max_value=4))
def test_flatten_types_are_consistent(value: Any, max_depth: int) -> None:
    result = parse([value], max_depth=max_depth)
    for record in result.records:
        for key, kind in record["types"].items():
            assert kind == value_type(record["fields"][key])
            assert kind in {"int", "float", "bool", "string", "timestamp", "date", "array", "null", "json"}
            if kind == "json":
                assert isinstance(record["fields"][key], dict)
