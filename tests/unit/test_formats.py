from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookbay.errors import MalformedBody, UnsupportedMediaType
from hookbay.parsers.formats import (
    ParseLimits,
    charset_of,
    check_well_formed,
    load_tree,
    media_type,
    resolve_format,
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
    max_leaves=40,
)


@pytest.mark.parametrize(
    ("content_type", "expected_media", "expected_charset"),
    [
        (None, "", None),
        ("", "", None),
        ("application/json", "application/json", None),
        ("Application/JSON; Charset=UTF-8", "application/json", "utf-8"),
        ("text/plain;charset=ISO-8859-1", "text/plain", "iso-8859-1"),
        ('text/plain; charset="latin1"; format=flowed', "text/plain", "latin1"),
        ("text/plain; format=flowed; charset=utf-16", "text/plain", "utf-16"),
        ('text/plain; a="x;y"; charset=ascii', "text/plain", "ascii"),
        ("text/plain; charset=", "text/plain", None),
        ("text/plain; charset", "text/plain", None),
        ("  application/vnd.api+json  ", "application/vnd.api+json", None),
    ],
)
def test_media_type_and_charset(
    content_type: str | None, expected_media: str, expected_charset: str | None
) -> None:
    assert media_type(content_type) == expected_media
    assert charset_of(content_type) == expected_charset


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"{}", "application/json", "json"),
        (b"{}", "application/vnd.api+json", "json"),
        (b"{}", "text/json", "json"),
        (b"{}\n{}", "application/x-ndjson", "ndjson"),
        (b"{}\n{}", "application/jsonl", "ndjson"),
        (b"a=1", "application/x-www-form-urlencoded", "form"),
        (b"<a/>", "application/xml", "xml"),
        (b"<a/>", "text/xml", "xml"),
        (b"<a/>", "application/atom+xml", "xml"),
        (b"a,b\n1,2", "text/csv", "csv"),
        (b'  \n{"a": 1}', "text/plain", "json"),
        (b"\xef\xbb\xbf[1]", None, "json"),
        (b" " * 10_000 + b"[1]", "application/octet-stream", "json"),
        ("[1]".encode("utf-16"), "text/plain; charset=utf-16", "json"),
    ],
)
def test_auto_resolution(body: bytes, content_type: str | None, expected: str) -> None:
    assert resolve_format(body, content_type, "auto") == expected


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"hello", "text/plain"),
        (b"", None),
        (b"   ", "application/octet-stream"),
        (b"\x89PNG\r\n", "image/png"),
    ],
)
def test_auto_unknown_is_unsupported(body: bytes, content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        load_tree(body, content_type, "auto")


@pytest.mark.parametrize("fmt", ["xml", "csv"])
def test_xml_csv_not_supported_yet(fmt: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        load_tree(b"<a/>", "application/xml", fmt)
    with pytest.raises(UnsupportedMediaType):
        load_tree(b"<a/>", "application/xml", "auto")


def test_unknown_format_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        load_tree(b"{}", "application/json", "yaml")


@pytest.mark.parametrize(
    ("body", "content_type", "fmt", "expected"),
    [
        (b'{"a": 1}', "application/json", "json", [{"a": 1}]),
        (b"[1, 2, 3]", "application/json", "auto", [[1, 2, 3]]),
        (b'[{"a": 1}, {"a": 2}]', None, "json", [[{"a": 1}, {"a": 2}]]),
        (b"\xef\xbb\xbf{}", "application/json", "auto", [{}]),
        (b'"x"', "application/json", "json", ["x"]),
        (b"null", "text/plain", "json", [None]),
        (b'{"a":1}\n\n{"a":2}\r\n  \n[3]\n', "application/x-ndjson", "auto", [{"a": 1}, {"a": 2}, [3]]),
        (b"", "application/x-ndjson", "ndjson", []),
        (b"\xef\xbb\xbf1\n2", None, "ndjson", [1, 2]),
        (
            b"a=1&b=&c&a=2&a=3",
            "application/x-www-form-urlencoded",
            "auto",
            [{"a": ["1", "2", "3"], "b": "", "c": ""}],
        ),
        (b"name=J%C3%BCrgen+M&x=%26", None, "form", [{"name": "J\u00fcrgen M", "x": "&"}]),
        (b"", "application/x-www-form-urlencoded", "form", [{}]),
        (
            b"name=J%FCrgen",
            "application/x-www-form-urlencoded; charset=latin-1",
            "auto",
            [{"name": "J\u00fcrgen"}],
        ),
    ],
)
def test_load_tree_cases(body: bytes, content_type: str | None, fmt: str, expected: list[Any]) -> None:
    assert load_tree(body, content_type, fmt) == expected


def test_latin1_charset_decodes() -> None:
    body = '{"name": "Jos\u00e9 M\u00fcller", "city": "S\u00e3o Paulo"}'.encode("latin-1")
    assert load_tree(body, "application/json; charset=ISO-8859-1", "auto") == [
        {"name": "Jos\u00e9 M\u00fcller", "city": "S\u00e3o Paulo"}
    ]


def test_utf16_charset_decodes() -> None:
    body = '{"a": "\u00e9\u4e2d"}'.encode("utf-16")
    assert load_tree(body, "application/json; charset=utf-16", "json") == [{"a": "\u00e9\u4e2d"}]


def test_invalid_utf8_is_malformed() -> None:
    with pytest.raises(MalformedBody) as exc:
        load_tree(b'{"a": "\xff\xfe"}', "application/json", "json")
    assert "UTF-8" in exc.value.message
    assert exc.value.detail["position"] == 7


def test_undecodable_in_declared_charset_is_malformed() -> None:
    with pytest.raises(MalformedBody, match="ascii"):
        load_tree('{"a": "\u00e9"}'.encode(), "application/json; charset=us-ascii", "json")


@pytest.mark.parametrize("charset", ["no-such-charset", "zlib", "rot13", "base64", "unicode_escape", "idna"])
def test_unknown_or_non_text_charset_is_unsupported(charset: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        load_tree(b"{}", f"application/json; charset={charset}", "json")


@pytest.mark.parametrize(
    ("body", "line", "column", "position"),
    [
        (b'{"a": 1,}', 1, 8, 7),
        (b'{\n  "a": x\n}', 2, 8, 9),
        (b"[1, 2", 1, 6, 5),
        (b"", 1, 1, 0),
        (b"NaN", 1, 1, 0),
    ],
)
def test_json_syntax_error_detail(body: bytes, line: int, column: int, position: int) -> None:
    with pytest.raises(MalformedBody) as exc:
        load_tree(body, "application/json", "json")
    detail = exc.value.detail
    assert (detail["line"], detail["column"], detail["position"]) == (line, column, position)
    assert detail["reason"]
    assert f"line {line} column {column}" in exc.value.message


def test_ndjson_error_reports_body_line() -> None:
    body = b'{"a": 1}\n\n{"a": }\n'
    with pytest.raises(MalformedBody) as exc:
        load_tree(body, "application/x-ndjson", "auto")
    assert exc.value.detail["line"] == 3
    assert exc.value.detail["column"] == 7
    assert exc.value.detail["position"] == body.index(b"}", 11)


def test_form_invalid_percent_escape_is_malformed() -> None:
    with pytest.raises(MalformedBody):
        load_tree(b"a=%ff", "application/x-www-form-urlencoded", "auto")


def test_very_deep_json_is_malformed_not_recursion_error() -> None:
    with pytest.raises(MalformedBody):
        load_tree(b"[" * 100_000 + b"]" * 100_000, "application/json", "json")


def test_depth_limit() -> None:
    limits = ParseLimits(max_depth=3)
    assert load_tree(b"[[[]]]", None, "json", limits) == [[[[]]]]
    with pytest.raises(MalformedBody, match="nesting deeper than 3"):
        load_tree(b"[[[[]]]]", None, "json", limits)
    with pytest.raises(MalformedBody, match="nesting deeper than 3"):
        load_tree(b'{"a": {"b": {"c": {}}}}', None, "json", limits)
    with pytest.raises(MalformedBody, match="nesting deeper than 64"):
        load_tree(b"[" * 65 + b"]" * 65, None, "json")
    assert load_tree(b"[" * 64 + b"]" * 64, None, "json")


def test_item_limit() -> None:
    limits = ParseLimits(max_items=10)
    assert load_tree(orjson.dumps(list(range(9))), None, "json", limits)
    with pytest.raises(MalformedBody, match="more than 10 items"):
        load_tree(orjson.dumps(list(range(10))), None, "json", limits)
    with pytest.raises(MalformedBody, match="more than 10 items"):
        load_tree(orjson.dumps({str(i): {"x": i} for i in range(6)}), None, "json", limits)
    with pytest.raises(MalformedBody, match="more than 10 items"):
        load_tree(b"1\n" * 11, None, "ndjson", limits)
    with pytest.raises(MalformedBody):
        load_tree(b"&".join(b"a=1" for _ in range(11)), None, "form", limits)
    with pytest.raises(MalformedBody, match="more than 100000 items"):
        load_tree(orjson.dumps(list(range(100_001))), None, "json")


@pytest.mark.parametrize(
    ("body", "content_type", "fmt"),
    [
        (b'{"a": 1}', "application/json", "json"),
        (b'{"a": 1}', None, "json"),
        (b'{"a": 1}', "application/cloudevents+json; charset=utf-8", "json"),
        (b'{"a": 1}', "application/json", "auto"),
        (b"not json", "text/plain", "auto"),
        (b"not json", None, "auto"),
        (b"<a/>", "application/xml", "auto"),
        (b"a=1", "application/x-www-form-urlencoded", "form"),
        (b"{}\n[1]\n", "application/x-ndjson", "ndjson"),
        (b"{}\n[1]\n", "application/x-ndjson", "auto"),
        (b"whatever", None, "xml"),
        (b"[" * 2000, "text/plain", "auto"),
    ],
)
def test_check_well_formed_accepts(body: bytes, content_type: str | None, fmt: str) -> None:
    check_well_formed(body, content_type, fmt)


@pytest.mark.parametrize(
    ("body", "content_type", "fmt", "error"),
    [
        (b'{"a": 1,}', "application/json", "json", MalformedBody),
        (b"", None, "json", MalformedBody),
        (b'{"a": 1,}', "application/vnd.x+json", "auto", MalformedBody),
        (b'{"a": "\xff"}', "application/json", "auto", MalformedBody),
        (b'{"a": 1}', "text/plain", "json", UnsupportedMediaType),
        (b'{"a": 1}', "application/x-ndjson", "json", UnsupportedMediaType),
        (b'{"a": 1}', "application/json; charset=nope", "json", UnsupportedMediaType),
        (b"{}\n{x}\n", None, "ndjson", MalformedBody),
        (b"{}\n{x}\n", "application/jsonl", "auto", MalformedBody),
        (b"[" * 2000 + b"]" * 2000, "application/json", "json", MalformedBody),
    ],
)
def test_check_well_formed_rejects(
    body: bytes, content_type: str | None, fmt: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        check_well_formed(body, content_type, fmt)


def test_check_well_formed_names_expected_type() -> None:
    with pytest.raises(UnsupportedMediaType, match="application/json") as exc:
        check_well_formed(b"{}", "text/plain", "json")
    assert exc.value.detail == {"expected": "application/json", "got": "text/plain"}


@given(json_values)
def test_json_round_trip(value: Any) -> None:
    assert load_tree(orjson.dumps(value), "application/json", "json") == [value]
    check_well_formed(orjson.dumps(value), "application/json", "json")


@given(st.lists(json_values, max_size=5))
def test_ndjson_round_trip(values: list[Any]) -> None:
    body = b"\n".join(orjson.dumps(v) for v in values)
    assert load_tree(body, "application/x-ndjson", "auto") == values


@settings(max_examples=300)
@given(
    st.binary(max_size=300) | st.text(max_size=100).map(str.encode),
    st.sampled_from(
        [
            None,
            "",
            "application/json",
            "application/json; charset=latin-1",
            "application/json; charset=utf-16",
            "application/json; charset=bogus",
            "text/plain",
            "text/plain; charset=unicode_escape",
            "text/plain; charset=utf-7",
            "application/x-ndjson",
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded; charset=utf-16",
            "application/xml",
            "image/png",
        ]
    ),
    st.sampled_from(["auto", "json", "ndjson", "form", "xml", "csv"]),
)
def test_arbitrary_bytes_only_raise_domain_errors(body: bytes, content_type: str | None, fmt: str) -> None:
    for call in (load_tree, check_well_formed):
        try:
            call(body, content_type, fmt)
        except (MalformedBody, UnsupportedMediaType):
            pass
