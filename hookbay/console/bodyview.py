"""A request body made readable by its type (JSON, NDJSON, XML, form, CSV), and the request as a
curl command. Pure functions over text the page already shows; each is linear in the text, and the
page runs them off the event loop (the console shares its loop with ingest)."""

from __future__ import annotations

import csv
import io
import shlex
from typing import Any
from urllib.parse import parse_qsl
from xml.etree.ElementTree import indent, tostring

import orjson
from defusedxml.ElementTree import fromstring as safe_xml

MAX_ROWS = 500
MAX_LINES = 2000
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
            return {"kind": "json", "text": _json(text)}
        if "xml" in ctype or (not ctype and head == "<"):
            root = safe_xml(text.encode())
            indent(root)
            return {"kind": "xml", "text": tostring(root, encoding="unicode")}
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

