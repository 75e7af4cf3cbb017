"""The console's body views: highlighted JSON is exactly the pretty text, with one anchor per value
path (what a receipt error's path links to); highlighted XML is exactly ElementTree's output."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from hookbay.console.bodyview import body_anchor, json_lines, pretty_body, xml_lines
from hookbay.parsers.generic import format_path

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=25)


def _paths(v: Any, parts: tuple[str | int, ...] = ()) -> set[str]:
    out = {format_path(parts)}
    if isinstance(v, dict):
        for k, c in v.items():
            out |= _paths(c, (*parts, k))
    elif isinstance(v, list):
        for i, c in enumerate(v):
            out |= _paths(c, (*parts, i))
    return out


@given(json_values)
def test_highlighted_json_is_the_pretty_text_with_an_anchor_per_value(value: Any) -> None:
    text = orjson.dumps(value).decode()
    p = pretty_body(text, "application/json")
    assert p is not None and p["kind"] == "json"
    rendered = "\n".join(line["indent"] + "".join(t for _, t in line["tokens"]) for line in p["lines"])
    assert rendered == p["text"]
    assert p["anchors"] == {body_anchor(path) for path in _paths(orjson.loads(text))}


def test_a_value_line_carries_its_path_and_tokens_by_kind() -> None:
    lines = json_lines({"a": [1, {"b c": None}], "d": "x", "e": True})
    by_anchor = {line["anchor"]: line for line in lines if line["anchor"]}
    line = by_anchor[body_anchor('$.a[1]["b c"]')]
    assert line["indent"] == "      " and line["tokens"] == [("j-key", '"b c"'), ("j-punct", ": "), ("j-lit", "null")]
    assert by_anchor[body_anchor("$.d")]["tokens"][2] == ("j-str", '"x"')
    assert by_anchor[body_anchor("$.a[0]")]["tokens"] == [("j-num", "1"), ("j-punct", ",")]


def test_deep_nesting_is_shown_compact_past_the_limit() -> None:
    deep: Any = 1
    for _ in range(400):
        deep = [deep]
    lines = json_lines(deep)
    assert len(lines) < 420  # 200 levels opened and closed, then the rest on one line


def test_highlighted_xml_is_the_pretty_text() -> None:
    p = pretty_body("<a x=\"1\"><b y='2'>t&amp;</b><c/></a>", "application/xml")
    assert p is not None
    assert ["".join(t for _, t in line) for line in p["lines"]] == p["text"].splitlines()
    assert ("x-attr", "y") in p["lines"][1] and ("x-val", '"2"') in p["lines"][1]
    assert xml_lines("<a>\n</a>") == [[("x-tag", "<a"), ("x-tag", ">")], [("x-tag", "</a"), ("x-tag", ">")]]
