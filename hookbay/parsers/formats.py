"""Turn a raw request body into plain Python trees (dict/list/scalars), whatever its wire format.

Everything here runs on untrusted input, so every failure surfaces as ``MalformedBody`` or
``UnsupportedMediaType`` and nothing recurses over the input's structure.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass
from email import errors as email_errors
from email import policy as email_policy
from email.message import Message
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl, unquote
from xml.etree.ElementTree import Element
from xml.parsers import expat

import orjson
from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden
from defusedxml.ElementTree import DefusedXMLParser, ParseError
from defusedxml.ElementTree import fromstring as safe_xml_fromstring

from hookbay.errors import MalformedBody, UnsupportedMediaType
from hookbay.parsers.generic import free_name

FORMATS = ("auto", "json", "ndjson", "form", "xml", "csv")

_JSON_TYPES = frozenset({"application/json", "text/json"})
_NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded"})
_MULTIPART_TYPE = "multipart/form-data"
_XML_TYPES = frozenset({"application/xml", "text/xml"})
_CSV_TYPES = frozenset({"text/csv", "application/csv"})

_JSON_WS = " \t\r\n"
_NOT_CHARSETS = frozenset({"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined"})
_SNIFF_CHUNK = 4096
_XML_WS = " \t\r\n"
_EXPECTED_TYPE = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "form": "application/x-www-form-urlencoded or multipart/form-data",
    "xml": "application/xml",
    "csv": "text/csv",
}


@dataclass(frozen=True)
class ParseLimits:
    """Bounds on decoded trees, so a small body cannot cost unbounded memory or time downstream."""

    max_depth: int = 64
    max_items: int = 100_000


DEFAULT_LIMITS = ParseLimits()


def _split_params(content_type: str) -> tuple[str, dict[str, str]]:
    """Media type and parameters (first of each name wins); scans by index so a header of many
    parameters costs linear time (slicing off the rest per parameter was quadratic)."""
    head, _, _ = content_type.partition(";")
    params: dict[str, str] = {}
    pos = len(head) + 1
    end = len(content_type)
    while pos < end:
        semi = content_type.find(";", pos)
        eq = content_type.find("=", pos, end if semi < 0 else semi)
        if eq < 0:  # a parameter without "=": skip it
            if semi < 0:
                break
            pos = semi + 1
            continue
        name = content_type[pos:eq].strip().lower()
        i = eq + 1
        while i < end and content_type[i] in " \t\r\n":
            i += 1
        if i < end and content_type[i] == '"':
            value_chars: list[str] = []
            i += 1
            while i < end and content_type[i] != '"':
                if content_type[i] == "\\" and i + 1 < end:
                    i += 1
                value_chars.append(content_type[i])
                i += 1
            value = "".join(value_chars)
            semi = content_type.find(";", i + 1)
        else:
            semi = content_type.find(";", i)
            value = content_type[i: end if semi < 0 else semi].strip()
        if name and name not in params:
            params[name] = value
        if semi < 0:
            break
        pos = semi + 1
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


def is_xml_type(mt: str) -> bool:
    return mt in _XML_TYPES or (mt.endswith("+xml") and "/" in mt)


def format_of_media_type(mt: str) -> str | None:
    """The format a media type names unambiguously, or None (``text/plain``, ``application/octet-stream``...)."""
    if is_json_type(mt):
        return "json"
    if is_ndjson_type(mt):
        return "ndjson"
    if mt in _FORM_TYPES or mt == _MULTIPART_TYPE:
        return "form"
    if is_xml_type(mt):
        return "xml"
    if mt in _CSV_TYPES:
        return "csv"
    return None


def _check_fixed_media_type(mt: str, fmt: str) -> None:
    """A fixed-format source refuses bodies whose media type clearly names another format (415).

    Vague types (none, ``text/plain``, ``application/octet-stream``) pass: the parser decides.
    NDJSON sources accept JSON media types, since one JSON document per line is what many senders label so.
    """
    named = format_of_media_type(mt)
    if named is None or named == fmt or (fmt == "ndjson" and named == "json"):
        return
    expected = _EXPECTED_TYPE[fmt]
    raise UnsupportedMediaType(
        f"expected {expected}, got {mt}", detail={"expected": expected, "got": mt, "format": fmt}
    )


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


def _first_significant_char(body: bytes, content_type: str | None) -> str:
    """First character after whitespace and BOM ('' if none); decodes incrementally so a huge body is not copied."""
    decoder = codecs.getincrementaldecoder(_codec_name(charset_of(content_type)))(errors="replace")
    for start in range(0, len(body), _SNIFF_CHUNK):
        text = decoder.decode(body[start : start + _SNIFF_CHUNK]).lstrip(_JSON_WS + "\ufeff")
        if text:
            return text[0]
    return ""


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


# --- XML -------------------------------------------------------------------------------------------
#
# Bodies go through defusedxml with DTDs, entity declarations and external references all forbidden,
# so billion-laughs and XXE documents fail at their DOCTYPE, before anything is expanded or fetched.

_XML_DECL_ENCODING = re.compile(rb"[ \t\r\n]*<\?xml[^>]{0,200}?encoding[ \t\r\n]*=")
_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _xml_source(body: bytes, content_type: str | None) -> bytes | str:
    """What to hand the XML parser: the bytes, unless only the HTTP charset says how to read them.

    XML declares its own encoding (declaration or BOM, default UTF-8), and expat reads it from the bytes.
    A ``charset`` parameter is used only for a document that declares nothing, by decoding it first.
    """
    codec = _codec_name(charset_of(content_type))
    if codec == "utf-8" or body.startswith(_BOMS) or _XML_DECL_ENCODING.match(body):
        return body
    return _decode(body, content_type)


def _xml_error(e: Exception) -> MalformedBody:
    if isinstance(e, DTDForbidden | EntitiesForbidden):
        what = "DOCTYPE" if isinstance(e, DTDForbidden) else "ENTITY"
        return MalformedBody(
            f"XML DTDs and entities are not allowed (found {what} {e.name!r})",
            detail={"reason": type(e).__name__, "name": e.name},
        )
    if isinstance(e, DefusedXmlException):
        return MalformedBody(
            "XML DTDs and entities are not allowed (external reference)", detail={"reason": type(e).__name__}
        )
    if isinstance(e, ParseError):
        line, column = getattr(e, "position", (0, 0))
        code = getattr(e, "code", None)
        reason = expat.ErrorString(code) if isinstance(code, int) else str(e)
        return MalformedBody(
            f"invalid XML at line {line} column {column + 1}: {reason}",
            detail={"line": line, "column": column + 1, "reason": reason},
        )
    return MalformedBody(f"invalid XML: {e}", detail={"reason": str(e)})


def _too_many_xml_items(limits: ParseLimits) -> MalformedBody:
    return MalformedBody(
        f"more than {limits.max_items} XML elements and attributes", detail={"limit": limits.max_items}
    )


def _too_deep_xml(limits: ParseLimits) -> MalformedBody:
    return MalformedBody(f"XML nesting deeper than {limits.max_depth}", detail={"limit": limits.max_depth})


class _XmlLimiter:
    """Parser target that builds nothing and fails as soon as a limit is passed."""

    def __init__(self, limits: ParseLimits) -> None:
        self.limits = limits
        self.depth = 0
        self.items = 0

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self.depth += 1
        self.items += 1 + len(attrib)
        if self.depth > self.limits.max_depth:
            raise _too_deep_xml(self.limits)
        if self.items > self.limits.max_items:
            raise _too_many_xml_items(self.limits)

    def end(self, tag: str) -> None:
        self.depth -= 1

    def close(self) -> None:
        return None


def _scan_xml(source: bytes | str, limits: ParseLimits) -> None:
    """Safe, streaming well-formedness and limits check: no tree is built, bombs stop at their DOCTYPE."""
    parser = DefusedXMLParser(
        target=_XmlLimiter(limits), forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    try:
        parser.feed(source)
        parser.close()
    except MalformedBody:
        raise
    except (ParseError, ValueError, LookupError) as e:  # ValueError covers DefusedXmlException, codec errors
        raise _xml_error(e) from None


def _xml_local(name: str) -> str:
    return name.rpartition("}")[2]


def _xml_content(el: Element, done: dict[int, Any]) -> Any:
    """One element's value, its children's values already in ``done`` (see ``_xml_to_tree``)."""
    children = list(el)
    pieces = (p.strip(_XML_WS) for p in [el.text or "", *(c.tail or "" for c in children)])
    text = " ".join(p for p in pieces if p)  # mixed content: text around child elements, one space apart
    if not children and not el.attrib:
        return text or None
    obj: dict[str, Any] = {"@" + _xml_local(k): v for k, v in el.attrib.items()}
    for child in children:
        key = _xml_local(child.tag)
        value = done.pop(id(child))
        if key not in obj:
            obj[key] = value
        elif isinstance(obj[key], list):  # element values are never lists, so a list means "repeated"
            obj[key].append(value)
        else:
            obj[key] = [obj[key], value]
    if text:
        obj["#text"] = text
    return obj


def _xml_to_tree(root: Element, limits: ParseLimits) -> dict[str, Any]:
    """``{root tag: content}``, built bottom-up without recursion so depth costs no stack."""
    order: list[Element] = []
    stack = [(root, 1)]
    items = 0
    while stack:
        el, depth = stack.pop()
        if depth > limits.max_depth:
            raise _too_deep_xml(limits)
        items += 1 + len(el.attrib)
        if items > limits.max_items:
            raise _too_many_xml_items(limits)
        order.append(el)
        stack.extend((child, depth + 1) for child in el)
    done: dict[int, Any] = {}
    for el in reversed(order):  # reversed pre-order: every child before its parent
        done[id(el)] = _xml_content(el, done)
    return {_xml_local(root.tag): done[id(root)]}


def _loads_xml(body: bytes, content_type: str | None, limits: ParseLimits) -> dict[str, Any]:
    source = _xml_source(body, content_type)
    # Cheap pre-check: every element needs a '<' and every attribute a '=', so when there are few of
    # both the tree is small; otherwise count exactly while streaming before building anything.
    lt, eq = ("<", "=") if isinstance(source, str) else (b"<", b"=")
    if source.count(lt) + source.count(eq) > limits.max_items:  # type: ignore[arg-type]
        _scan_xml(source, limits)
    try:
        root = safe_xml_fromstring(source, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, ValueError, LookupError) as e:
        raise _xml_error(e) from None
    return _xml_to_tree(root, limits)


# --- CSV -------------------------------------------------------------------------------------------


def _csv_delimiter(header_line: str) -> str:
    """``,`` unless the header has no comma but has ``;`` or tabs (the commonest of the two wins).

    ``csv.Sniffer`` is not used: it guesses from data rows and guesses differently from body to body.
    """
    if "," in header_line:
        return ","
    semi, tab = header_line.count(";"), header_line.count("\t")
    if semi or tab:
        return ";" if semi >= tab else "\t"
    return ","


def _csv_header(row: list[str]) -> list[str]:
    """Trimmed names; blanks become ``column_N`` and repeats get ``_2``, ``_3`` so no cell is lost."""
    names: list[str] = []
    seen: set[str] = set()
    next_suffix: dict[str, int] = {}
    for i, raw in enumerate(row, start=1):
        base = raw.strip() or f"column_{i}"
        name = free_name(base, seen, next_suffix) if base in seen else base
        seen.add(name)
        names.append(name)
    return names


def _loads_csv(text: str, limits: ParseLimits) -> list[dict[str, Any]]:
    if not text.strip():
        raise MalformedBody("CSV body is empty: a header row is required", detail={"reason": "empty"})
    end = text.find("\n")
    delimiter = _csv_delimiter(text if end < 0 else text[:end])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    docs: list[dict[str, Any]] = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank lines
            if header is None:
                header = _csv_header(row)
                continue
            if len(docs) >= limits.max_items:
                raise MalformedBody(f"more than {limits.max_items} CSV rows", detail={"limit": limits.max_items})
            doc: dict[str, Any] = {name: row[i] if i < len(row) else None for i, name in enumerate(header)}
            if len(row) > len(header):
                doc["_extra"] = row[len(header) :]
            docs.append(doc)
    except csv.Error as e:
        raise MalformedBody(
            f"invalid CSV at line {reader.line_num}: {e}", detail={"line": reader.line_num, "reason": str(e)}
        ) from None
    if header is None:
        raise MalformedBody("CSV body is empty: a header row is required", detail={"reason": "empty"})
    return docs


# --- multipart/form-data ---------------------------------------------------------------------------
#
# Parsed with the stdlib email parser (python-multipart is not a dependency). The compat32 policy is
# used rather than ``policy.default``: the latter builds a parsed header object per header and is
# about seven times slower on a body of many small parts, which a sender controls.

_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,199}[0-9A-Za-z'()+_,\-./:=?]")
# The stdlib email package is lenient and has had exceptions escape on odd headers; on untrusted
# input every one of these means "not a multipart body we can read".
_EMAIL_ERRORS = (email_errors.MessageError, ValueError, LookupError, IndexError, TypeError, AttributeError)


def _clean_header_text(s: str) -> str:
    """Header values carry raw bytes as surrogate escapes; keep valid UTF-8, replace the rest."""
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeError:
        return s.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _param(part: Message, name: str) -> str | None:
    """A Content-Disposition parameter from the raw header: raw UTF-8 (what browsers send) or RFC 2231.

    The raw value is read because compat32 turns non-ASCII header bytes into replacement characters.
    """
    raw = next((v for k, v in part.raw_items() if k.lower() == "content-disposition"), None)
    if raw is None:
        return None
    params = _split_params(re.sub(r"\r?\n[ \t]", " ", _clean_header_text(str(raw))))[1]
    extended = params.get(name + "*")
    if extended is not None and extended.count("'") >= 2:  # charset'lang'percent-encoded
        charset, _, encoded = extended.split("'", 2)
        try:
            return unquote(encoded, encoding=_codec_name(charset or "utf-8"), errors="replace")
        except UnsupportedMediaType:
            pass
    return params.get(name)


def _multipart_file(part: Message, filename: str | None) -> dict[str, Any]:
    payload = part.get_payload(decode=True)
    return {
        "filename": filename,
        "content_type": part.get_content_type() if part.get("content-type") is not None else None,
        "size": len(payload) if isinstance(payload, bytes) else 0,
    }


def _subparts(msg: Message) -> list[Message]:
    payload = msg.get_payload()
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _multipart_values(part: Message, default_charset: str) -> list[Any]:
    """A part's value(s): text for a field, a descriptor (never the content) for each file."""
    if part.is_multipart():  # RFC 2388 multipart/mixed: several files under one field name
        return [_multipart_file(sub, _param(sub, "filename")) for sub in _subparts(part)]
    filename = _param(part, "filename")
    if filename is not None:
        return [_multipart_file(part, filename)]
    payload = part.get_payload(decode=True)
    raw = payload if isinstance(payload, bytes) else b""
    codec = _codec_name(part.get_content_charset() or default_charset)
    try:
        return [raw.decode(codec)]
    except UnicodeError:
        raise MalformedBody(
            f"multipart field is not valid {codec}", detail={"encoding": codec, "field": _param(part, "name")}
        ) from None


def _loads_multipart(body: bytes, content_type: str | None, limits: ParseLimits) -> dict[str, Any]:
    """Fields as in an urlencoded form; files as ``{"filename", "content_type", "size"}``.

    The parser gets a synthesized header carrying only the (validated) boundary, so nothing from the
    request can inject other headers into it.
    """
    params = _split_params(content_type or "")[1]
    boundary = params.get("boundary", "")
    if not _BOUNDARY.fullmatch(boundary):
        raise MalformedBody(
            "multipart/form-data needs a valid boundary parameter", detail={"boundary": boundary or None}
        )
    default_charset = params.get("charset", "").strip().lower() or "utf-8"
    head = f'Content-Type: multipart/form-data; boundary="{boundary}"\r\nMIME-Version: 1.0\r\n\r\n'
    doc: dict[str, Any] = {}
    try:
        msg = BytesParser(policy=email_policy.compat32).parsebytes(head.encode("ascii") + body)
        if not msg.is_multipart():
            if body.strip() in (b"", f"--{boundary}--".encode("ascii")):
                return doc
            raise MalformedBody("multipart body does not contain its boundary", detail={"boundary": boundary})
        if any(isinstance(d, email_errors.CloseBoundaryNotFoundDefect) for d in msg.defects):
            raise MalformedBody(
                "multipart body is truncated: closing boundary not found", detail={"boundary": boundary}
            )
        parts = _subparts(msg)
        if len(parts) > limits.max_items:
            raise MalformedBody(
                f"more than {limits.max_items} multipart parts", detail={"limit": limits.max_items}
            )
        for part in parts:
            name = _param(part, "name")
            if name is None:
                continue  # not a form field (RFC 7578 requires a name)
            for value in _multipart_values(part, default_charset):
                if name not in doc:
                    doc[name] = value
                elif isinstance(doc[name], list):
                    doc[name].append(value)
                else:
                    doc[name] = [doc[name], value]
    except RecursionError:
        raise MalformedBody("multipart body is nested too deeply") from None
    except _EMAIL_ERRORS as e:
        raise MalformedBody(f"invalid multipart body: {e}", detail={"reason": str(e)}) from None
    return doc


# --- dispatch --------------------------------------------------------------------------------------


def resolve_format(body: bytes, content_type: str | None, fmt: str) -> str:
    """The concrete format ``auto`` stands for, given the media type and (as a last resort) the body.

    A fixed format is returned as is, unless the media type clearly names another format (415).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    mt = media_type(content_type)
    if fmt != "auto":
        _check_fixed_media_type(mt, fmt)
        return fmt
    named = format_of_media_type(mt)
    if named is not None:
        return named
    first = _first_significant_char(body, content_type)
    if first in ("{", "["):
        return "json"
    if first == "<" and not mt:
        return "xml"
    raise UnsupportedMediaType(
        f"cannot parse content type {mt or '(none)'!r}", detail={"content_type": mt or None}
    )


def load_tree(
    body: bytes, content_type: str | None, fmt: str, limits: ParseLimits = DEFAULT_LIMITS
) -> list[Any]:
    """Decode ``body`` into one tree per record (NDJSON: one per line, CSV: one per row; a JSON array stays one)."""
    concrete = resolve_format(body, content_type, fmt)
    if concrete == "xml":
        return [_loads_xml(body, content_type, limits)]
    if concrete == "csv":
        return _loads_csv(_decode(body, content_type), limits)  # row count is the CSV limit
    if concrete == "form" and media_type(content_type) == _MULTIPART_TYPE:
        docs: list[Any] = [_loads_multipart(body, content_type, limits)]
    else:
        text = _decode(body, content_type)
        if concrete == "json":
            docs = [_loads_json(text)]
        elif concrete == "ndjson":
            docs = _loads_ndjson(text)
        else:
            docs = [_loads_form(text, _codec_name(charset_of(content_type)), limits)]
        if concrete != "form" and _within_limits(text, limits):
            return docs
    _check_limits(docs, limits)
    return docs


def _check_json_limits(text: str, docs: list[Any], limits: ParseLimits) -> None:
    if not _within_limits(text, limits):
        _check_limits(docs, limits)


def _within_limits(text: str | bytes, limits: ParseLimits) -> bool:
    """True when JSON text (or its UTF-8 bytes) is too small to break the limits, so the tree need
    not be walked: every value takes at least one character, and every level of nesting an opening
    bracket."""
    if isinstance(text, bytes):
        return len(text) <= limits.max_items and text.count(b"[") + text.count(b"{") <= limits.max_depth
    return len(text) <= limits.max_items and text.count("[") + text.count("{") <= limits.max_depth


_PLAIN_JSON_HEADERS = frozenset({
    "application/json", "application/json; charset=utf-8", "application/json;charset=utf-8",
    "application/json; charset=UTF-8", "application/json;charset=UTF-8",
})


def check_well_formed(
    body: bytes, content_type: str | None, fmt: str, limits: ParseLimits = DEFAULT_LIMITS
) -> None:
    """Cheap syntax check run before acknowledging a delivery, so senders learn of garbage while they can retry.

    JSON/NDJSON are parsed and held to the tree limits, XML is scanned safely (bombs -> 400) without
    building a tree; CSV and form bodies only get the media-type check of a fixed format.
    """
    if content_type in _PLAIN_JSON_HEADERS and fmt in ("auto", "json"):
        # The common case, on the hot path: orjson reads the bytes and checks the UTF-8 itself. A
        # failure (or a BOM) falls through to the general path, which words the error precisely.
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        else:
            if not _within_limits(body, limits):
                _check_limits([doc], limits)
            return
    mt = media_type(content_type)
    if fmt == "json":
        if mt and not is_json_type(mt):
            raise UnsupportedMediaType(
                f"expected application/json, got {mt}", detail={"expected": "application/json", "got": mt}
            )
        text = _decode(body, content_type)
        _check_json_limits(text, [_loads_json(text)], limits)
    elif fmt == "ndjson" or (fmt == "auto" and is_ndjson_type(mt)):
        if fmt == "ndjson":
            _check_fixed_media_type(mt, fmt)
        text = _decode(body, content_type)
        _check_json_limits(text, _loads_ndjson(text), limits)
    elif fmt == "auto" and is_json_type(mt):
        text = _decode(body, content_type)
        _check_json_limits(text, [_loads_json(text)], limits)
    elif fmt == "xml" or (fmt == "auto" and is_xml_type(mt)):
        if fmt == "xml":
            _check_fixed_media_type(mt, fmt)
        _scan_xml(_xml_source(body, content_type), limits)
    elif fmt in ("csv", "form"):
        _check_fixed_media_type(mt, fmt)
