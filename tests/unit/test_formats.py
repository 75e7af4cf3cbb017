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


def test_fixed_format_refuses_another_named_format() -> None:
    """XML and CSV are supported now; a fixed format still refuses a body labelled as another format."""
    assert load_tree(b"<a/>", "application/xml", "xml") == [{"a": None}]
    assert load_tree(b"<a/>", "application/xml", "auto") == [{"a": None}]
    with pytest.raises(UnsupportedMediaType):
        load_tree(b"<a/>", "application/xml", "csv")


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
        (b"<a>whatever</a>", None, "xml"),
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


# --- XML -------------------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz>&lol9;</lolz>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE order [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<order><note>&xxe;</note></order>"""
EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE order SYSTEM "http://127.0.0.1:9/evil.dtd">
<order><note>x</note></order>"""
PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE order [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/x.dtd"> %remote;]>
<order/>"""
DOCTYPE_ONLY = b"""<!DOCTYPE order><order/>"""


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        # text-only element -> its trimmed text; values stay strings
        (b"<a>  42 </a>", {"a": "42"}),
        # empty element (or whitespace only) -> null
        (b"<a/>", {"a": None}),
        (b"<a>\n  </a>", {"a": None}),
        # child elements -> keys
        (b"<order><id>7</id><total>9.50</total></order>", {"order": {"id": "7", "total": "9.50"}}),
        # repeated child elements -> list, in document order; a single one stays a value
        (
            b"<order><lines><line>a</line><line>b</line><line/></lines><tag>x</tag></order>",
            {"order": {"lines": {"line": ["a", "b", None]}, "tag": "x"}},
        ),
        (b"<o><l>a</l><x>1</x><l>b</l></o>", {"o": {"l": ["a", "b"], "x": "1"}}),
        # attributes -> "@name"; text next to attributes or children -> "#text"
        (b'<a id="1" kind="x"/>', {"a": {"@id": "1", "@kind": "x"}}),
        (b'<price currency="EUR"> 9.5 </price>', {"price": {"@currency": "EUR", "#text": "9.5"}}),
        (b"<p>Hello <b>big</b>\n world</p>", {"p": {"b": "big", "#text": "Hello world"}}),
        (b'<a id=""></a>', {"a": {"@id": ""}}),
        # namespaces: "{uri}" dropped from tags and attributes; xmlns declarations are not attributes
        (
            b'<o:order xmlns:o="urn:o" xmlns="urn:d" xmlns:x="urn:x" x:id="5"><item>1</item><o:item>2</o:item></o:order>',
            {"order": {"@id": "5", "item": ["1", "2"]}},
        ),
        # comments and processing instructions are ignored; CDATA is text; character references decoded
        (b"<?xml version='1.0'?><a><!-- c --><?pi x?><![CDATA[<b>&]]> &amp;&#233;</a>", {"a": "<b>& &\u00e9"}),
    ],
)
def test_xml_tree_rules(xml: bytes, expected: dict[str, Any]) -> None:
    assert load_tree(xml, "application/xml", "xml") == [expected]
    check_well_formed(xml, "application/xml", "xml")


@pytest.mark.parametrize("body", [BILLION_LAUGHS, XXE, EXTERNAL_DTD, PARAMETER_ENTITY, DOCTYPE_ONLY])
@pytest.mark.parametrize(("content_type", "fmt"), [("application/xml", "xml"), ("text/xml", "auto"), (None, "xml")])
def test_xml_bombs_and_external_entities_are_refused(body: bytes, content_type: str | None, fmt: str) -> None:
    with pytest.raises(MalformedBody, match="DTDs and entities are not allowed"):
        load_tree(body, content_type, fmt)
    with pytest.raises(MalformedBody, match="DTDs and entities are not allowed"):
        check_well_formed(body, content_type, fmt)


def test_xxe_never_reads_the_file() -> None:
    with pytest.raises(MalformedBody) as exc:
        load_tree(XXE, "application/xml", "xml")
    assert "root:" not in str(exc.value.to_dict())


@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_deep_xml_is_malformed_not_recursion_error(depth: int) -> None:
    body = b"<a>" * depth + b"</a>" * depth
    with pytest.raises(MalformedBody, match="XML nesting deeper than 64"):
        load_tree(body, "application/xml", "xml")
    with pytest.raises(MalformedBody, match="XML nesting deeper than 64"):
        check_well_formed(body, "application/xml", "xml")


def test_xml_depth_limit_is_exact() -> None:
    assert load_tree(b"<a>" * 64 + b"</a>" * 64, None, "xml")
    with pytest.raises(MalformedBody):
        load_tree(b"<a>" * 65 + b"</a>" * 65, None, "xml")
    with pytest.raises(MalformedBody, match="deeper than 3"):
        load_tree(b"<a><b><c><d/></c></b></a>", None, "xml", ParseLimits(max_depth=3))


def test_xml_item_limit_counts_elements_and_attributes() -> None:
    limits = ParseLimits(max_items=10)
    assert load_tree(b"<r>" + b"<i/>" * 9 + b"</r>", None, "xml", limits)
    with pytest.raises(MalformedBody, match="more than 10 XML elements"):
        load_tree(b"<r>" + b"<i/>" * 10 + b"</r>", None, "xml", limits)
    with pytest.raises(MalformedBody, match="more than 10 XML elements"):
        load_tree(b"<r " + b" ".join(b'a%d="1"' % i for i in range(10)) + b"/>", None, "xml", limits)
    with pytest.raises(MalformedBody, match="more than 10 XML elements"):
        check_well_formed(b"<r>" + b"<i/>" * 10 + b"</r>", None, "xml", limits)


def test_huge_flat_xml_is_refused_while_streaming() -> None:
    body = b"<r>" + b"<i/>" * 2_000_000 + b"</r>"
    with pytest.raises(MalformedBody, match="more than 100000 XML elements"):
        load_tree(body, "application/xml", "xml")


def test_xml_cheap_precheck_does_not_refuse_text_full_of_markup_characters() -> None:
    """'<' and '=' inside CDATA and attribute values only send the body to the exact count."""
    body = b"<r><![CDATA[" + b"<=" * 200 + b"]]></r>"
    assert load_tree(body, None, "xml", ParseLimits(max_items=10)) == [{"r": "<=" * 200}]


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        ('<?xml version="1.0" encoding="ISO-8859-1"?><n>J\u00fcrgen</n>'.encode("latin-1"), "text/xml", "J\u00fcrgen"),
        # the document's own declaration wins over the HTTP charset
        (
            '<?xml version="1.0" encoding="ISO-8859-1"?><n>J\u00fcrgen</n>'.encode("latin-1"),
            "text/xml; charset=utf-8",
            "J\u00fcrgen",
        ),
        # no declaration: the HTTP charset says how to read it
        ("<n>J\u00fcrgen</n>".encode("latin-1"), "application/xml; charset=latin-1", "J\u00fcrgen"),
        ("<n>\u4e2d</n>".encode("utf-16"), "application/xml", "\u4e2d"),
        ("<n>\u4e2d</n>".encode("utf-16-le"), "application/xml; charset=utf-16le", "\u4e2d"),
        (b"\xef\xbb\xbf<n>\xc3\xa9</n>", "application/xml", "\u00e9"),
    ],
)
def test_xml_encodings(body: bytes, content_type: str, expected: str) -> None:
    assert load_tree(body, content_type, "auto") == [{"n": expected}]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"<a>",
        b"<a></b>",
        b"<a/><b/>",
        b"<a>&undefined;</a>",
        b"<a>\x00</a>",
        b"<a>\xff</a>",
        b'<?xml version="1.0" encoding="bogus"?><a/>',
        b'<?xml version="1.0" encoding="zlib"?><a/>',
        b'<?xml version="1.0" encoding="idna"?><a/>',
        b'<?xml version="1.0" encoding="shift_jis"?><a/>',
    ],
)
def test_invalid_xml_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        load_tree(body, "application/xml", "xml")
    with pytest.raises(MalformedBody):
        check_well_formed(body, "application/xml", "xml")


def test_xml_syntax_error_detail() -> None:
    with pytest.raises(MalformedBody) as exc:
        load_tree(b"<a>\n  <b></c>\n</a>", "application/xml", "xml")
    assert exc.value.detail["line"] == 2
    assert exc.value.detail["column"] == 8
    assert "line 2 column 8" in exc.value.message and "mismatched tag" in exc.value.message


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"  \n<a/>", None, "xml"),
        (b"\xef\xbb\xbf<a/>", None, "xml"),
        (b"<a/>", "application/soap+xml", "xml"),
        (b"x", "multipart/form-data; boundary=b", "form"),
        (b"a", "application/csv", "csv"),
    ],
)
def test_auto_resolution_new_formats(body: bytes, content_type: str | None, expected: str) -> None:
    assert resolve_format(body, content_type, "auto") == expected


def test_auto_sniffs_xml_only_without_media_type() -> None:
    with pytest.raises(UnsupportedMediaType):
        resolve_format(b"<html></html>", "text/html", "auto")
    with pytest.raises(UnsupportedMediaType):
        resolve_format(b"a,b\n1,2", None, "auto")  # CSV only by media type


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("xml", "application/json"),
        ("xml", "text/csv"),
        ("xml", "application/x-www-form-urlencoded"),
        ("csv", "application/xml"),
        ("csv", "application/json"),
        ("form", "application/json"),
        ("form", "text/xml"),
        ("ndjson", "application/xml"),
        ("json", "application/xml"),
    ],
)
def test_fixed_format_with_another_formats_media_type_is_415(fmt: str, content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as exc:
        check_well_formed(b"<a/>", content_type, fmt)
    assert exc.value.detail["got"] == media_type(content_type)
    with pytest.raises(UnsupportedMediaType):
        load_tree(b"<a/>", content_type, fmt)


@pytest.mark.parametrize(
    ("fmt", "content_type", "body"),
    [
        ("xml", "text/plain", b"<a/>"),
        ("xml", "application/octet-stream", b"<a/>"),
        ("csv", "text/plain", b"a\n1"),
        ("csv", None, b"a\n1"),
        ("form", "multipart/form-data; boundary=b", b"--b--"),
        ("ndjson", "application/json", b"{}"),
    ],
)
def test_fixed_format_accepts_vague_media_types(fmt: str, content_type: str | None, body: bytes) -> None:
    check_well_formed(body, content_type, fmt)
    load_tree(body, content_type, fmt)


def test_check_well_formed_holds_json_to_tree_limits() -> None:
    """The pre-ack check refuses what the worker would refuse, so the sender hears it while it can retry."""
    with pytest.raises(MalformedBody, match="more than 100000 items"):
        check_well_formed(orjson.dumps([0] * 100_001), "application/json", "json")
    with pytest.raises(MalformedBody, match="nesting deeper than 64"):
        check_well_formed(b"[" * 65 + b"]" * 65, "application/json", "auto")
    with pytest.raises(MalformedBody, match="more than 2 items"):
        check_well_formed(b"1\n2\n3", None, "ndjson", ParseLimits(max_items=2))


# --- CSV -------------------------------------------------------------------------------------------

ROWS = [{"email": "a@b.co", "name": "Ada"}, {"email": "c@d.co", "name": "Cy"}]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"email,name\na@b.co,Ada\nc@d.co,Cy\n", "text/csv"),
        (b"email,name\r\na@b.co,Ada\r\nc@d.co,Cy", "text/csv; charset=utf-8"),
        (b"email;name\na@b.co;Ada\nc@d.co;Cy\n", "text/csv"),
        (b"email\tname\na@b.co\tAda\nc@d.co\tCy\n", "application/csv"),
        (b"\xef\xbb\xbfemail,name\na@b.co,Ada\nc@d.co,Cy\n", "text/csv"),
        (b"\n\nemail , name\n\na@b.co,Ada\n\n\nc@d.co,Cy\n\n", "text/csv"),
        (b'"email","name"\n"a@b.co","Ada"\nc@d.co,"Cy"\n', "text/csv"),
    ],
)
def test_csv_rows_become_documents(body: bytes, content_type: str) -> None:
    assert load_tree(body, content_type, "auto") == ROWS
    check_well_formed(body, content_type, "csv")


def test_csv_quoting_and_values_stay_strings() -> None:
    body = b'id,note,amount\n1,"a, ""quoted""\nline",0012\n2,,\n'
    assert load_tree(body, "text/csv", "csv") == [
        {"id": "1", "note": 'a, "quoted"\nline', "amount": "0012"},
        {"id": "2", "note": "", "amount": ""},
    ]


def test_csv_semicolon_with_decimal_commas_in_data() -> None:
    assert load_tree(b"sku;price\nA;9,50\n", "text/csv", "csv") == [{"sku": "A", "price": "9,50"}]


def test_csv_ragged_rows() -> None:
    body = b"a,b,c\n1,2,3,4,5\n1\n1,2,3\n"
    assert load_tree(body, "text/csv", "csv") == [
        {"a": "1", "b": "2", "c": "3", "_extra": ["4", "5"]},
        {"a": "1", "b": None, "c": None},
        {"a": "1", "b": "2", "c": "3"},
    ]


def test_csv_blank_and_duplicate_header_names() -> None:
    assert load_tree(b"a,,a,a\n1,2,3,4\n", "text/csv", "csv") == [
        {"a": "1", "column_2": "2", "a_2": "3", "a_3": "4"}
    ]


def test_csv_latin1_charset() -> None:
    body = "name;city\nJ\u00fcrgen;K\u00f6ln\n".encode("latin-1")
    assert load_tree(body, "text/csv; charset=ISO-8859-1", "auto") == [{"name": "J\u00fcrgen", "city": "K\u00f6ln"}]
    with pytest.raises(MalformedBody, match="UTF-8"):
        load_tree(body, "text/csv", "auto")


def test_csv_header_only_has_no_documents() -> None:
    assert load_tree(b"a,b\n", "text/csv", "csv") == []


@pytest.mark.parametrize("body", [b"", b"   \r\n\n", b"\xef\xbb\xbf"])
def test_csv_empty_body_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedBody, match="header row is required"):
        load_tree(body, "text/csv", "csv")


@pytest.mark.parametrize("body", [b'a,b\n1,"x"y\n', b'a,b\n1,"unterminated\n', b"a\n" + b"x" * 200_000])
def test_csv_syntax_errors_are_malformed(body: bytes) -> None:
    with pytest.raises(MalformedBody, match="invalid CSV at line"):
        load_tree(body, "text/csv", "csv")


def test_csv_row_limit() -> None:
    limits = ParseLimits(max_items=3)
    assert len(load_tree(b"a\n1\n2\n3\n", "text/csv", "csv", limits)) == 3
    with pytest.raises(MalformedBody, match="more than 3 CSV rows"):
        load_tree(b"a\n1\n2\n3\n4\n", "text/csv", "csv", limits)


# --- multipart/form-data ---------------------------------------------------------------------------


def multipart(*parts: tuple[str, bytes], boundary: str = "----hb7MA4YWxkTrZu0gW") -> tuple[bytes, str]:
    """Build a multipart body from (header block, content) pairs."""
    out = b""
    for headers, content in parts:
        out += f"--{boundary}\r\n{headers}\r\n\r\n".encode() + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def test_multipart_fields_and_files() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4 + b"\r\n--not-the-boundary\r\n"
    body, ctype = multipart(
        ('Content-Disposition: form-data; name="email"', b"a@b.co"),
        ('Content-Disposition: form-data; name="tags"', b"x"),
        ('Content-Disposition: form-data; name="tags"', b"y"),
        ('Content-Disposition: form-data; name="note"', "line1\r\nline2 \u00e9".encode()),
        ('Content-Disposition: form-data; name="empty"', b""),
        ('Content-Disposition: form-data; name="avatar"; filename="me.png"\r\nContent-Type: image/png', png),
        ('Content-Disposition: form-data; name="cv"; filename=""\r\nContent-Type: application/octet-stream', b""),
    )
    assert load_tree(body, ctype, "auto") == [
        {
            "email": "a@b.co",
            "tags": ["x", "y"],
            "note": "line1\r\nline2 \u00e9",
            "empty": "",
            "avatar": {"filename": "me.png", "content_type": "image/png", "size": len(png)},
            "cv": {"filename": "", "content_type": "application/octet-stream", "size": 0},
        }
    ]
    assert load_tree(body, ctype, "form") == load_tree(body, ctype, "auto")
    check_well_formed(body, ctype, "form")


def test_multipart_names_charsets_and_nameless_parts() -> None:
    body, ctype = multipart(
        ('Content-Disposition: form-data; name="n\u00e4me"; filename="\u00fc.txt"', b"x"),
        ("Content-Disposition: form-data; name*=utf-8''st%C3%A4dt", b"K\xc3\xb6ln"),
        ('Content-Disposition: form-data; name="latin"\r\nContent-Type: text/plain; charset=latin-1', b"K\xf6ln"),
        ("Content-Type: text/plain", b"no name: not a form field"),
        ('Content-Disposition: form-data; name="q"; filename="a.txt"', b"no content type"),
    )
    assert load_tree(body, ctype, "form") == [
        {
            "n\u00e4me": {"filename": "\u00fc.txt", "content_type": None, "size": 1},
            "st\u00e4dt": "K\u00f6ln",
            "latin": "K\u00f6ln",
            "q": {"filename": "a.txt", "content_type": None, "size": 15},
        }
    ]


def test_multipart_quoted_boundary_and_bare_lf() -> None:
    body = b'--b q\nContent-Disposition: form-data; name="a"\n\n1\n--b q--\n'
    assert load_tree(body, 'multipart/form-data; boundary="b q"', "form") == [{"a": "1"}]


@pytest.mark.parametrize("body", [b"", b"--b--", b"--b--\r\n"])
def test_multipart_empty_form(body: bytes) -> None:
    assert load_tree(body, "multipart/form-data; boundary=b", "form") == [{}]


@pytest.mark.parametrize(
    ("body", "content_type", "match"),
    [
        (b"--b\r\n\r\nx\r\n--b--", "multipart/form-data", "boundary"),
        (b"--b\r\n\r\nx\r\n--b--", 'multipart/form-data; boundary=""', "boundary"),
        (b"--b\r\n\r\nx\r\n--b--", 'multipart/form-data; boundary="a\\"b"', "boundary"),
        (b"--b\r\n\r\nx\r\n--b--", "multipart/form-data; boundary=" + "x" * 201, "boundary"),
        (b"hello", "multipart/form-data; boundary=b", "does not contain its boundary"),
        (b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\nx', "multipart/form-data; boundary=b", "truncated"),
        (b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\n\xff\r\n--b--', "multipart/form-data; boundary=b",
         "not valid utf-8"),
    ],
)
def test_multipart_malformed(body: bytes, content_type: str, match: str) -> None:
    with pytest.raises(MalformedBody, match=match):
        load_tree(body, content_type, "form")


def test_multipart_header_injection_through_boundary_is_refused() -> None:
    ctype = 'multipart/form-data; boundary="x\r\nContent-Type: text/plain"'
    with pytest.raises(MalformedBody, match="boundary"):
        load_tree(b"--x\r\n\r\n1\r\n--x--", ctype, "form")


def test_multipart_part_limit() -> None:
    body, ctype = multipart(*[(f'Content-Disposition: form-data; name="f{i}"', b"1") for i in range(4)])
    with pytest.raises(MalformedBody, match="more than 3 multipart parts"):
        load_tree(body, ctype, "form", ParseLimits(max_items=3))


def test_multipart_deep_nesting_is_malformed() -> None:
    depth = 2000
    body = b""
    for i in range(depth):
        body += b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
    with pytest.raises(MalformedBody):
        load_tree(body, "multipart/form-data; boundary=b0", "form")


# --- properties ------------------------------------------------------------------------------------

xml_names = st.sampled_from(["a", "b", "item", "x:y"])
xml_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8)


@st.composite
def xml_elements(draw: st.DrawFn, depth: int = 0) -> tuple[str, dict[str, str], str, list[Any]]:
    tag = draw(xml_names).replace("x:", "")
    attrs = draw(st.dictionaries(st.sampled_from(["id", "k"]), xml_text, max_size=2))
    text = draw(xml_text)
    children = draw(st.lists(xml_elements(depth + 1), max_size=3)) if depth < 3 else []
    return tag, attrs, text, children


def _to_xml(el: tuple[str, dict[str, str], str, list[Any]]) -> str:
    from xml.sax.saxutils import escape, quoteattr

    tag, attrs, text, children = el
    a = "".join(f" {k}={quoteattr(v)}" for k, v in attrs.items())
    return f"<{tag}{a}>{escape(text)}{''.join(_to_xml(c) for c in children)}</{tag}>"


def _expected(el: tuple[str, dict[str, str], str, list[Any]]) -> Any:
    """The documented rules, written recursively (fine for these small trees)."""
    tag, attrs, text, children = el
    text = text.strip(" \t\r\n")
    if not children and not attrs:
        return text or None
    obj: dict[str, Any] = {"@" + k: v.replace("\r", " ").replace("\n", " ").replace("\t", " ") for k, v in attrs.items()}
    for child in children:
        key, value = child[0], _expected(child)
        if key not in obj:
            obj[key] = value
        elif isinstance(obj[key], list):
            obj[key].append(value)
        else:
            obj[key] = [obj[key], value]
    if text:
        obj["#text"] = text
    return obj


@settings(max_examples=200)
@given(xml_elements())
def test_xml_rules_property(el: tuple[str, dict[str, str], str, list[Any]]) -> None:
    body = _to_xml(el).encode()
    assert load_tree(body, "application/xml", "xml") == [{el[0]: _expected(el)}]


csv_cells = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\r\x00"), max_size=8)


@settings(max_examples=200)
@given(
    st.lists(st.text("abcdefgh", min_size=1, max_size=5), min_size=1, max_size=5, unique=True),
    st.data(),
    st.sampled_from([",", ";", "\t"]),
)
def test_csv_round_trip(header: list[str], data: st.DataObject, delimiter: str) -> None:
    import csv
    import io

    if len(header) == 1:
        delimiter = ","  # a one-column header names no delimiter, so the default applies
    rows = data.draw(st.lists(st.lists(csv_cells, min_size=len(header), max_size=len(header)), max_size=5))
    rows = [r for r in rows if any(c.strip() for c in r)]
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerows([header, *rows])
    docs = load_tree(out.getvalue().encode(), "text/csv", "csv")
    assert docs == [dict(zip(header, r, strict=True)) for r in rows]


@settings(max_examples=300)
@given(
    st.binary(max_size=300)
    | st.sampled_from([BILLION_LAUGHS, XXE, b"<a>", b"a,b\n1", b"--b\r\n\r\n1\r\n--b--"]).flatmap(
        lambda seed: st.binary(max_size=20).map(lambda tail: seed[: len(seed) // 2] + tail)
    ),
    st.sampled_from(
        [
            None,
            "application/xml",
            "application/xml; charset=utf-16",
            "application/xml; charset=latin-1",
            "text/csv",
            "text/csv; charset=utf-16",
            "text/csv; charset=bogus",
            "multipart/form-data; boundary=b",
            "multipart/form-data",
            "application/json",
        ]
    ),
    st.sampled_from(["auto", "xml", "csv", "form"]),
)
def test_arbitrary_bytes_as_xml_csv_multipart_only_raise_domain_errors(
    body: bytes, content_type: str | None, fmt: str
) -> None:
    for call in (load_tree, check_well_formed):
        try:
            result = call(body, content_type, fmt)
        except (MalformedBody, UnsupportedMediaType):
            continue
        if result is not None:
            orjson.dumps(result)  # whatever comes out can be stored as JSON


def _verdict(body: bytes, ctype: str, fmt: str, limits: ParseLimits) -> tuple[str, dict[str, Any] | None] | None:
    try:
        check_well_formed(body, ctype, fmt, limits)
    except (MalformedBody, UnsupportedMediaType) as e:
        return (e.code, e.detail)
    return None


_bodies = (
    json_values.map(orjson.dumps)
    | st.binary(max_size=64)
    | st.tuples(json_values.map(orjson.dumps), st.binary(max_size=3), st.integers(0, 64)).map(
        lambda t: t[0][: t[2]] + t[1] + t[0][t[2]:])
    | json_values.map(lambda v: b"\xef\xbb\xbf" + orjson.dumps(v))
    | st.integers(0, 80).map(lambda d: b"[" * d + b"]" * d)
)


@settings(max_examples=400)
@given(_bodies, st.sampled_from(["auto", "json"]), st.sampled_from(["application/json", "application/json; charset=utf-8"]))
def test_plain_json_fast_path_agrees_with_the_general_path(body: bytes, fmt: str, ctype: str) -> None:
    """The hot path reads bytes with orjson for the usual header; the same media type spelled
    another way takes the general path (decode, then parse). Same verdict, same error, always."""
    limits = ParseLimits(max_depth=16, max_items=50)
    general = ctype.replace("application/json", "Application/JSON")
    assert _verdict(body, ctype, fmt, limits) == _verdict(body, general, fmt, limits)
