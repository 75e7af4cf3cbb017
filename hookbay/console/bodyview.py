"""A request body made readable by its type (JSON, NDJSON, XML, form, CSV), and the request as a
curl command. Pure functions over text the page already shows; each is linear in the text, and the
page runs them off the event loop (the console shares its loop with ingest)."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import shlex
from typing import Any
from urllib.parse import parse_qsl
from xml.etree.ElementTree import indent, tostring

import orjson
from defusedxml.ElementTree import fromstring as safe_xml

from hookbay.parsers.generic import format_path

MAX_ROWS = 500
MAX_LINES = 2000
HIGHLIGHT_MAX_CHARS = 256 * 1024  # the console's text preview; longer bodies are shown plain
NEST_LIMIT = 200  # deeper JSON is shown compact on one line rather than recursed into

Token = tuple[str, str]  # (class, text): the template escapes the text
SKIP_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding", "accept-encoding",
                          "x-forwarded-for", "x-forwarded-proto", "x-real-ip"})


def pretty_body(text: str, content_type: str | None) -> dict[str, Any] | None:
    """``{"kind": ..., ...}`` for a body that parses as its type says (or looks like), else None:
    the raw text is then the only view."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    head = text.lstrip()[:1]
    try:
        if "ndjson" in ctype or "jsonl" in ctype or "json-seq" in ctype:
            return _ndjson(text)
        if "json" in ctype or (not ctype and head in ("{", "[")):
            value = orjson.loads(text)
            out: dict[str, Any] = {"kind": "json", "text": _json(text)}
            if len(text) <= HIGHLIGHT_MAX_CHARS:
                out["lines"] = json_lines(value)
                out["anchors"] = {line["anchor"] for line in out["lines"] if line["anchor"]}
            return out
        if "xml" in ctype or (not ctype and head == "<"):
            root = safe_xml(text.encode())
            indent(root)
            pretty = tostring(root, encoding="unicode")
            return {"kind": "xml", "text": pretty,
                    "lines": xml_lines(pretty) if len(pretty) <= HIGHLIGHT_MAX_CHARS else None}
        if ctype == "application/x-www-form-urlencoded":
            return {"kind": "form", "header": ["field", "value"],
                    "rows": [list(p) for p in parse_qsl(text, keep_blank_values=True)[:MAX_ROWS]], "more": False}
        if ctype in ("text/csv", "application/csv"):
            rows = []
            for n, row in enumerate(csv.reader(io.StringIO(text, newline=""))):
                if n > MAX_ROWS:
                    break
                rows.append(row)
            if rows:
                return {"kind": "csv", "header": rows[0], "rows": rows[1:], "more": len(rows) > MAX_ROWS}
    except Exception:  # noqa: BLE001  (a body that does not parse is shown raw)
        return None
    return None


def body_anchor(path: str) -> str:
    """The id of the body line a receipt path (``$.a[0].b``) points at: a hash, since a JSONPath
    holds characters an id or a URL fragment should not."""
    return "bp-" + hashlib.sha1(path.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def json_lines(value: Any) -> list[dict[str, Any]]:
    """Pretty JSON (two-space indent, as ``_json``) as lines of highlighted tokens, each line that
    starts a value carrying the anchor of that value's path, so a receipt error can link to it.

    Hand-written rather than Pygments: a lexer sees text, not the tree, and cannot say which path a
    line holds. One pass over the parsed value, linear in its size."""
    lines: list[dict[str, Any]] = []

    def emit(depth: int, parts: tuple[str | int, ...] | None, tokens: list[Token]) -> None:
        anchor = None
        if parts is not None:
            try:
                anchor = body_anchor(format_path(parts))
            except Exception:  # noqa: BLE001  (a key with a lone surrogate: the line just has no anchor)
                anchor = None
        lines.append({"indent": "  " * depth, "tokens": tokens, "anchor": anchor})

    def scalar(v: Any) -> Token:
        if isinstance(v, str):
            return ("j-str", orjson.dumps(v).decode())
        if v is None or isinstance(v, bool):
            return ("j-lit", orjson.dumps(v).decode())
        return ("j-num", orjson.dumps(v).decode())

    def walk(v: Any, parts: tuple[str | int, ...], depth: int, lead: list[Token], comma: bool) -> None:
        tail: list[Token] = [("j-punct", ",")] if comma else []
        if isinstance(v, dict) and v and depth < NEST_LIMIT:
            emit(depth, parts, [*lead, ("j-punct", "{")])
            items = list(v.items())
            for i, (k, child) in enumerate(items):
                key: list[Token] = [("j-key", orjson.dumps(k).decode()), ("j-punct", ": ")]
                walk(child, (*parts, k), depth + 1, key, i < len(items) - 1)
            emit(depth, None, [("j-punct", "}"), *tail])
        elif isinstance(v, list) and v and depth < NEST_LIMIT:
            emit(depth, parts, [*lead, ("j-punct", "[")])
            for i, child in enumerate(v):
                walk(child, (*parts, i), depth + 1, [], i < len(v) - 1)
            emit(depth, None, [("j-punct", "]"), *tail])
        elif isinstance(v, (dict, list)):
            emit(depth, parts, [*lead, ("j-punct", orjson.dumps(v).decode()), *tail])
        else:
            emit(depth, parts, [*lead, scalar(v), *tail])

    walk(value, (), 0, [], False)
    return lines


_XML_TAG = re.compile(r"<[^<>]*>")
_XML_ATTR = re.compile(r"""(\s+)([^\s=/>]+)(=)("[^"]*"|'[^']*')""")


def xml_lines(pretty: str) -> list[list[Token]]:
    """ElementTree's pretty output as lines of tokens (tags, attribute names and values, text).
    Its output is well formed, so two regular expressions without nesting split it, in linear time."""
    out: list[list[Token]] = []
    for line in pretty.splitlines():
        tokens: list[Token] = []
        pos = 0
        for m in _XML_TAG.finditer(line):
            if m.start() > pos:
                tokens.append(("x-text", line[pos:m.start()]))
            tag = m.group(0)
            head = re.match(r"</?[^\s/>]+", tag)
            end = head.end() if head else 1
            tokens.append(("x-tag", tag[:end]))
            at = end
            for a in _XML_ATTR.finditer(tag, end):
                if a.start() > at:
                    tokens.append(("x-tag", tag[at:a.start()]))
                tokens += [("x-text", a.group(1)), ("x-attr", a.group(2)), ("x-tag", "="), ("x-val", a.group(4))]
                at = a.end()
            tokens.append(("x-tag", tag[at:]))
            pos = m.end()
        if pos < len(line):
            tokens.append(("x-text", line[pos:]))
        out.append(tokens)
    return out


def _json(text: str) -> str:
    return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()


def _ndjson(text: str) -> dict[str, Any]:
    lines = []
    for n, line in enumerate(text.splitlines()[:MAX_LINES], 1):
        if not line.strip():
            continue
        try:
            lines.append({"n": n, "text": orjson.dumps(orjson.loads(line)).decode(), "ok": True})
        except orjson.JSONDecodeError:
            lines.append({"n": n, "text": line, "ok": False})
    return {"kind": "ndjson", "lines": lines}


def curl(base_url: str, method: str, path: str, query: str, headers: list[list[str]], body: str | None,
         has_body: bool) -> str:
    """The request as one curl command (POSIX shell quoting). A body that is not text is read from
    the downloaded file; a redacted API key stays redacted."""
    parts = ["curl", "-X", method, shlex.quote(base_url + path + (f"?{query}" if query else ""))]
    for name, value in headers:
        if name.lower() not in SKIP_HEADERS:
            parts += ["-H", shlex.quote(f"{name}: {value}")]
    if body is not None and body != "":
        parts += ["--data-binary", shlex.quote(body)]
    elif has_body:
        parts += ["--data-binary", "@body.bin"]
    return " ".join(parts)

