"""Turn a raw request body into plain Python trees (dict/list/scalars), whatever its wire format.

Everything here runs on untrusted input, so every failure surfaces as ``MalformedBody`` or
``UnsupportedMediaType`` and nothing recurses over the input's structure.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from hookbay.errors import MalformedBody, UnsupportedMediaType

FORMATS = ("auto", "json", "ndjson", "form", "xml", "csv")
_NOT_YET = ("xml", "csv")

_JSON_TYPES = frozenset({"application/json", "text/json"})
_NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded"})
_XML_TYPES = frozenset({"application/xml", "text/xml"})
_CSV_TYPES = frozenset({"text/csv", "application/csv"})

_JSON_WS = " \t\r\n"
_NOT_CHARSETS = frozenset({"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined"})
_SNIFF_CHUNK = 4096


@dataclass(frozen=True)
class ParseLimits:
    """Bounds on decoded trees, so a small body cannot cost unbounded memory or time downstream."""

    max_depth: int = 64
    max_items: int = 100_000


DEFAULT_LIMITS = ParseLimits()


def _split_params(content_type: str) -> tuple[str, dict[str, str]]:
    head, _, rest = content_type.partition(";")
    params: dict[str, str] = {}
    while rest:
        name, eq, rest = rest.partition("=")
        name = name.strip().lower()
        rest = rest.lstrip()
        if rest.startswith('"'):
            value_chars: list[str] = []
            i = 1
            while i < len(rest) and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < len(rest):
                    i += 1
                value_chars.append(rest[i])
                i += 1
            value = "".join(value_chars)
            _, _, rest = rest[i + 1 :].partition(";")
        else:
            value, _, rest = rest.partition(";")
            value = value.strip()
        if name and eq and name not in params:
            params[name] = value
    return head.strip().lower(), params


def media_type(content_type: str | None) -> str:
    """``Text/HTML; charset=x`` -> ``text/html``; empty string when there is no header."""
    if not content_type:
        return ""
    return _split_params(content_type)[0]


def charset_of(content_type: str | None) -> str | None:
    """The ``charset`` parameter, lowercased, or None when absent or empty."""
    if not content_type:
        return None
    cs = _split_params(content_type)[1].get("charset", "").strip().lower()
    return cs or None


def is_json_type(mt: str) -> bool:
    return mt in _JSON_TYPES or (mt.endswith("+json") and "/" in mt)


def is_ndjson_type(mt: str) -> bool:
    return mt in _NDJSON_TYPES


def _codec_name(charset: str | None) -> str:
    """Canonical codec name; refuses Python codecs that are not charsets (zlib, rot13, unicode_escape...)."""
    if charset is None:
        return "utf-8"
    try:
        info = codecs.lookup(charset)
    except LookupError:
        raise UnsupportedMediaType(f"unknown charset {charset!r}", detail={"charset": charset}) from None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        raise UnsupportedMediaType(f"unknown charset {charset!r}", detail={"charset": charset})
    return info.name


def _decode(body: bytes, content_type: str | None) -> str:
    codec = _codec_name(charset_of(content_type))
    if codec == "utf-8" and body.startswith(codecs.BOM_UTF8):
        body = body[len(codecs.BOM_UTF8) :]
    try:
        text = body.decode(codec)
    except UnicodeError as e:
        label = "UTF-8" if codec == "utf-8" else codec
        start = getattr(e, "start", None)
        where = f" at byte {start}" if start is not None else ""
        raise MalformedBody(
            f"body is not valid {label}{where}",
            detail={"encoding": codec, "position": start, "reason": getattr(e, "reason", str(e))},
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


def _looks_like_json(body: bytes, content_type: str | None) -> bool:
    """First significant character is ``{`` or ``[``; decodes incrementally so a huge body is not copied."""
    decoder = codecs.getincrementaldecoder(_codec_name(charset_of(content_type)))(errors="replace")
    for start in range(0, len(body), _SNIFF_CHUNK):
        text = decoder.decode(body[start : start + _SNIFF_CHUNK]).lstrip(_JSON_WS + "\ufeff")
        if text:
            return text[0] in "{["
    return False


def _json_error(e: orjson.JSONDecodeError, *, line_offset: int = 0, pos_offset: int = 0) -> MalformedBody:
    line = e.lineno + line_offset
    return MalformedBody(
        f"invalid JSON at line {line} column {e.colno}: {e.msg}",
        detail={"position": e.pos + pos_offset, "line": line, "column": e.colno, "reason": e.msg},
    )


def _loads_json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise _json_error(e) from None


def _loads_ndjson(text: str) -> list[Any]:
    docs: list[Any] = []
    offset = 0
    for lineno, line in enumerate(text.split("\n")):
        if line.strip(_JSON_WS):
            try:
                docs.append(orjson.loads(line))
            except orjson.JSONDecodeError as e:
                raise _json_error(e, line_offset=lineno, pos_offset=offset) from None
        offset += len(line) + 1
    return docs


def _loads_form(text: str, codec: str, limits: ParseLimits) -> dict[str, Any]:
    try:
        pairs = parse_qsl(
            text, keep_blank_values=True, encoding=codec, errors="strict", max_num_fields=limits.max_items
        )
    except ValueError as e:
        raise MalformedBody(f"invalid form body: {e}", detail={"reason": str(e)}) from None
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key not in doc:
            doc[key] = value
        elif isinstance(doc[key], list):
            doc[key].append(value)
        else:
            doc[key] = [doc[key], value]
    return doc


def _check_limits(docs: list[Any], limits: ParseLimits) -> None:
    items = len(docs)
    stack: list[tuple[Any, int]] = [(d, 1) for d in docs if isinstance(d, dict | list)]
    while True:
        if items > limits.max_items:
            raise MalformedBody(f"more than {limits.max_items} items", detail={"limit": limits.max_items})
        if not stack:
            return
        value, depth = stack.pop()
        if depth > limits.max_depth:
            raise MalformedBody(f"nesting deeper than {limits.max_depth}", detail={"limit": limits.max_depth})
        if value:
            items += len(value)
            children = value.values() if isinstance(value, dict) else value
            stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def resolve_format(body: bytes, content_type: str | None, fmt: str) -> str:
    """The concrete format ``auto`` stands for, given the media type and (as a last resort) the body."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    if fmt != "auto":
        return fmt
    mt = media_type(content_type)
    if is_json_type(mt):
        return "json"
    if is_ndjson_type(mt):
        return "ndjson"
    if mt in _FORM_TYPES:
        return "form"
    if mt in _XML_TYPES or mt.endswith("+xml"):
        return "xml"
    if mt in _CSV_TYPES:
        return "csv"
    if _looks_like_json(body, content_type):
        return "json"
    raise UnsupportedMediaType(
        f"cannot parse content type {mt or '(none)'!r}", detail={"content_type": mt or None}
    )


def load_tree(
    body: bytes, content_type: str | None, fmt: str, limits: ParseLimits = DEFAULT_LIMITS
) -> list[Any]:
    """Decode ``body`` into one tree per record (NDJSON: one per line; a JSON array stays one)."""
    concrete = resolve_format(body, content_type, fmt)
    if concrete in _NOT_YET:
        raise UnsupportedMediaType(f"{concrete} bodies are not supported yet", detail={"format": concrete})
    text = _decode(body, content_type)
    if concrete == "json":
        docs = [_loads_json(text)]
    elif concrete == "ndjson":
        docs = _loads_ndjson(text)
    else:
        docs = [_loads_form(text, _codec_name(charset_of(content_type)), limits)]
    _check_limits(docs, limits)
    return docs


def check_well_formed(body: bytes, content_type: str | None, fmt: str) -> None:
    """Cheap syntax check run before acknowledging a delivery, so senders learn of garbage while they can retry."""
    mt = media_type(content_type)
    if fmt == "json":
        if mt and not is_json_type(mt):
            raise UnsupportedMediaType(
                f"expected application/json, got {mt}", detail={"expected": "application/json", "got": mt}
            )
        _loads_json(_decode(body, content_type))
    elif fmt == "ndjson" or (fmt == "auto" and is_ndjson_type(mt)):
        _loads_ndjson(_decode(body, content_type))
    elif fmt == "auto" and is_json_type(mt):
        _loads_json(_decode(body, content_type))
