"""The generic parser: any decoded tree becomes flat, typed records whose column names are predictable.

Nothing in the input is dropped: what cannot be flattened (arrays, subtrees past the depth limit,
non-object documents) is kept as a JSON value, and anything surprising is reported as a warning.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import orjson

PARSER_VERSION = "1"
DEFAULT_MAX_DEPTH = 16

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}"
    r"(?::[0-9]{2}(?:[.,][0-9]+)?)?"
    r"(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)

Entry = dict[str, Any]
PathParts = tuple[str | int, ...]


@dataclass
class ParseResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    errors: list[Entry] = field(default_factory=list)
    warnings: list[Entry] = field(default_factory=list)


def snake_case(key: str) -> str:
    """``firstName``/``First Name``/``HTTPStatus``/``a-b`` -> ``first_name``/``first_name``/``http_status``/``a_b``.

    Works per character rather than with ASCII regexes so non-Latin keys keep their letters.
    A key with no letters or digits at all becomes ``value``.
    """
    out: list[str] = []
    prev = ""
    n = len(key)
    for i, ch in enumerate(key):
        if ch.isupper():
            word_start = prev in ("lower", "digit") or (
                prev == "upper" and i + 1 < n and key[i + 1].islower()
            )
            if word_start:
                out.append("_")
            out.append(ch.lower())
            prev = "upper"
        elif ch.isalnum():
            out.append(ch.lower())
            prev = "digit" if ch.isdigit() else "lower"
        else:
            if out and out[-1] != "_":
                out.append("_")
            prev = ""
    return "".join(out).strip("_") or "value"


def format_path(parts: PathParts) -> str:
    """JSONPath-style location (``$.a[0]["odd key"]``) used in errors and warnings."""
    out = ["$"]
    for p in parts:
        if isinstance(p, int):
            out.append(f"[{p}]")
        elif _IDENT.fullmatch(p):
            out.append(f".{p}")
        else:
            out.append(f"[{orjson.dumps(p).decode()}]")
    return "".join(out)


def string_type(s: str) -> str:
    """``timestamp``/``date`` only for full calendar dates that really parse, so ``2024`` or ``12`` stay strings."""
    if _DATE.fullmatch(s):
        try:
            date.fromisoformat(s)
        except ValueError:
            return "string"
        return "date"
    if _TIMESTAMP.fullmatch(s):
        iso = s[:-1] + "+00:00" if s[-1] in "Zz" else s
        try:
            datetime.fromisoformat(iso)
        except ValueError:
            return "string"
        return "timestamp"
    return "string"


def value_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return string_type(value)
    if isinstance(value, list | tuple):
        return "array"
    return "json"


def _entry(parts: PathParts, code: str, message: str, document: int) -> Entry:
    return {"path": format_path(parts), "code": code, "message": message, "document": document}


def free_name(base: str, taken: Container[str], next_suffix: dict[str, int]) -> str:
    """``base_2``, ``base_3``... the first one not taken, resuming where the last search for ``base``
    stopped: names are never freed, so the result is the same as scanning from 2, and colliding keys
    cost linear rather than quadratic time (a body of 16,000 punctuation-only keys took 15 s)."""
    n = next_suffix.get(base, 2)
    while f"{base}_{n}" in taken:
        n += 1
    next_suffix[base] = n + 1
    return f"{base}_{n}"


def _flatten(
    doc: dict[Any, Any], max_depth: int, root: PathParts, document: int, warnings: list[Entry]
) -> dict[str, Any]:
    if max_depth < 1:
        raise ValueError("max_depth must be at least 1")
    out: dict[str, Any] = {}
    next_suffix: dict[str, int] = {}
    stack: list[tuple[Iterator[tuple[Any, Any]], str, PathParts, int]] = [(iter(doc.items()), "", root, 1)]
    while stack:
        items, prefix, parts, depth = stack[-1]
        for key, value in items:
            key = key if isinstance(key, str) else str(key)
            seg = snake_case(key)
            name = f"{prefix}_{seg}" if prefix else seg
            if isinstance(value, dict) and value:
                if depth < max_depth:
                    stack.append((iter(value.items()), name, (*parts, key), depth + 1))
                    break
                warnings.append(
                    _entry(
                        (*parts, key),
                        "depth_limit",
                        f"nested deeper than {max_depth} levels; kept as JSON in {name!r}",
                        document,
                    )
                )
            if name in out:
                renamed = free_name(name, out, next_suffix)
                warnings.append(
                    _entry(
                        (*parts, key),
                        "key_collision",
                        f"field name {name!r} already taken; stored as {renamed!r}",
                        document,
                    )
                )
                name = renamed
            out[name] = value
        else:
            stack.pop()
    return out


def flatten(doc: Any, max_depth: int = DEFAULT_MAX_DEPTH) -> dict[str, Any]:
    """One flat ``{snake_case_path: value}`` dict; a non-object document becomes ``{"value": doc}``."""
    if not isinstance(doc, dict):
        return {"value": doc}
    return _flatten(doc, max_depth, (), 0, [])


def _record(fields: dict[str, Any]) -> dict[str, Any]:
    return {"fields": fields, "types": {k: value_type(v) for k, v in fields.items()}}


def _parse_doc(doc: Any, document: int, max_depth: int, result: ParseResult) -> None:
    objects: list[tuple[PathParts, dict[Any, Any]]]
    if isinstance(doc, dict):
        objects = [((), doc)]
    elif isinstance(doc, list) and doc and all(isinstance(el, dict) for el in doc):
        objects = [((i,), el) for i, el in enumerate(doc)]
    else:
        if isinstance(doc, list):
            what = "an array not made only of objects" if doc else "an empty array"
        else:
            what = f"a {value_type(doc)} value"
        result.warnings.append(
            _entry((), "not_an_object", f"document is {what}; stored as the field 'value'", document)
        )
        result.records.append(_record({"value": doc}))
        return
    for parts, obj in objects:
        if not obj:
            result.warnings.append(
                _entry(parts, "empty_object", "empty object; record has no fields", document)
            )
        result.records.append(_record(_flatten(obj, max_depth, parts, document, result.warnings)))


def parse(docs: list[Any], max_depth: int = DEFAULT_MAX_DEPTH) -> ParseResult:
    """Records for every document, in order; a document that cannot be parsed is an error, never an exception."""
    if max_depth < 1:
        raise ValueError("max_depth must be at least 1")
    result = ParseResult()
    for document, doc in enumerate(docs):
        try:
            _parse_doc(doc, document, max_depth, result)
        except Exception as e:  # the batch must survive one bad document
            result.errors.append(_entry((), "parse_failed", f"{type(e).__name__}: {e}", document))
    return result


def json_kind(value: Any) -> str:
    """JSON names for Python values, because integrators think in JSON, not Python."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
