"""The contact parser (SPEC section 4, the Ascent360 format): one object becomes a normalised contact plus
the consent events it carries.

A bad optional field is reported and dropped so the rest of the contact survives; only a missing or
unusable SourceName/SourceType fails the record. Nothing here raises: a parser bug is an error entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError

from hookbay.parsers.generic import Entry, ParseResult, PathParts, format_path, json_kind
from hookbay.parsers.normalize import normalize_email, normalize_phone

PARSER_VERSION = "1"

_DATE = re.compile(r"([0-9]{2})-([0-9]{2})-([0-9]{4})")
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_INT64_MAX = 2**63 - 1
_PHONE_INT_MAX = 10**20

REQUIRED = ("SourceName", "SourceType")
CONSENT_CHANNELS = {
    "EmailPermission": "email",
    "PhonePermission": "phone",
    "SMSPermission": "sms",
    "AddressPermission": "mail",
}
ADDRESS_KEYS = {
    "Addressline1": "line1",
    "Addressline2": "line2",
    "City": "city",
    "State": "state",
    "Zip": "zip",
    "Country": "country",
}


@dataclass
class ContactOutcome:
    contact: dict[str, Any] | None = None
    consents: list[dict[str, Any]] = field(default_factory=list)
    errors: list[Entry] = field(default_factory=list)
    warnings: list[Entry] = field(default_factory=list)


class _FieldError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Skip:
    """Returned by a field handler when the value means "not given" (null, blank)."""


_SKIP = _Skip()


def _path(parts: PathParts) -> str:
    """``format_path`` cannot encode lone surrogates; fall back to ASCII-escaped segments so reporting never fails."""
    try:
        return format_path(parts)
    except Exception:
        return "$" + "".join(f"[{p}]" if isinstance(p, int) else f"[{json.dumps(p)}]" for p in parts)


def _entry(parts: PathParts, code: str, message: str, document: int) -> Entry:
    return {"path": _path(parts), "code": code, "message": message, "document": document}


@dataclass
class _Ctx:
    document: int
    default_region: str | None
    errors: list[Entry]
    warnings: list[Entry]

    def error(self, parts: PathParts, code: str, message: str) -> None:
        self.errors.append(_entry(parts, code, message, self.document))

    def warn(self, parts: PathParts, code: str, message: str) -> None:
        self.warnings.append(_entry(parts, code, message, self.document))


_kind = json_kind


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number_text(value: int | float) -> str:
    """JSON numbers as people write them: ``12.0`` is ``12``; ints too long to print are not text."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return str(value)
    except ValueError as e:
        raise _FieldError("invalid_type", "number too large to convert to text") from e


def _required(ctx: _Ctx, value: Any, parts: PathParts) -> Any:
    if value is None:
        raise _FieldError("required", "required; got null")
    if not isinstance(value, str):
        raise _FieldError("invalid_type", f"must be a string, got {_kind(value)}")
    text = value.strip()
    if not text:
        raise _FieldError("required", "required; got an empty string")
    return text


def _text(ctx: _Ctx, value: Any, parts: PathParts) -> Any:
    if _blank(value):
        return _SKIP
    if not isinstance(value, str):
        raise _FieldError("invalid_type", f"must be a string, got {_kind(value)}")
    return value.strip()


def _date_of_birth(ctx: _Ctx, value: Any, parts: PathParts) -> Any:
    if _blank(value):
        return _SKIP
    if not isinstance(value, str):
        raise _FieldError("invalid_date", f"must be a mm-dd-yyyy string, got {_kind(value)}")
    m = _DATE.fullmatch(value.strip())
    if not m:
        raise _FieldError("invalid_date", "must be a date written mm-dd-yyyy")
    month, day, year = (int(g) for g in m.groups())
    try:
        return date(year, month, day).isoformat()
    except ValueError as e:
        raise _FieldError("invalid_date", f"not a calendar date: {e}") from e


def _gender(ctx: _Ctx, value: Any, parts: PathParts) -> Any:
    if value is None:
        return _SKIP
    if isinstance(value, str):
        g = value.strip().lower()
        if g in ("male", "female"):
            return g.capitalize()
    return "Unknown"


def _email(ctx: _Ctx, value: Any, parts: PathParts) -> Any:
    if _blank(value):
        return _SKIP
    if not isinstance(value, str):
        raise _FieldError("invalid_email", f"must be a string, got {_kind(value)}")
    try:
        normalized = normalize_email(value.strip())
    except EmailNotValidError as e:
        raise _FieldError("invalid_email", str(e)) from e
    local, _, domain = normalized.rpartition("@")
    return f"{local}@{domain.lower()}"


def _phone(ctx: _Ctx, value: Any, parts: PathParts) -> Any:
    """Unallocated-but-well-formed numbers (e.g. Ofcom drama ranges, ranges newer than the metadata) are
    kept with a warning: they still identify a profile, and rejecting them would lose real numbers."""
    if _blank(value):
        return _SKIP
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _FieldError("invalid_phone", f"must be a string or number, got {_kind(value)}")
    if isinstance(value, int | float):
        if not (0 < value < _PHONE_INT_MAX) or (isinstance(value, float) and not value.is_integer()):
            raise _FieldError("invalid_phone", "a number given as a JSON number must be a positive integer")
        raw = str(int(value))
    else:
        raw = value.strip()
    region = None if raw.startswith("+") else (ctx.default_region or "").upper() or None
    if region is None and not raw.startswith("+"):
        raise _FieldError("invalid_phone", "no country code (+) and no default region configured")
    try:
        found = normalize_phone(raw, region)
    except phonenumbers.NumberParseException as e:
        raise _FieldError("invalid_phone", f"cannot parse phone number: {e}") from e
    if found is None:
        raise _FieldError("invalid_phone", "not a possible phone number for its country")
    e164, valid = found
    if not valid:
        ctx.warn(parts, "unverified_phone", f"{e164} is not in an allocated number range; kept")
    return e164


def _boolean(ctx: _Ctx, value: Any, parts: PathParts) -> Any:
    if value is None:
        return _SKIP
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
        return _BOOLEANS[value.strip().lower()]
    raise _FieldError("invalid_boolean", 'must be true/false (or "yes"/"no"/"1"/"0")')


def _address(ctx: _Ctx, value: Any, parts: PathParts) -> Any:
    if value is None:
        return _SKIP
    if not isinstance(value, dict):
        raise _FieldError("invalid_type", f"must be an object, got {_kind(value)}")
    out: dict[str, str] = {}
    for key, sub, sub_parts in _known_items(ctx, value, parts, ADDRESS_KEYS):
        if sub is None:
            continue
        if isinstance(sub, str):
            text = sub.strip()
        elif isinstance(sub, int | float) and not isinstance(sub, bool):
            try:
                text = _number_text(sub)
            except _FieldError as e:
                ctx.error(sub_parts, e.code, e.message)
                continue
        else:
            ctx.error(sub_parts, "invalid_type", f"must be a string, got {_kind(sub)}")
            continue
        if text:
            out[ADDRESS_KEYS[key]] = text
    return out or _SKIP


def _text_list(allow_bool: bool) -> Callable[[_Ctx, Any, PathParts], Any]:
    def handler(ctx: _Ctx, value: Any, parts: PathParts) -> Any:
        if value is None:
            return _SKIP
        if isinstance(value, dict):
            raise _FieldError("invalid_type", "must be an array of text values, got object")
        is_list = isinstance(value, list | tuple)
        out: dict[str, None] = {}  # ordered and de-duplicated in linear time
        for i, el in enumerate(value if is_list else (value,)):
            if el is None:
                continue
            if el.__class__ is str:  # the usual case first
                text = el.strip()
            elif isinstance(el, bool):
                if not allow_bool:
                    ctx.error((*parts, i) if is_list else parts, "invalid_type", "must be text or a number, got boolean")
                    continue
                text = "true" if el else "false"
            elif isinstance(el, int | float):
                try:
                    text = _number_text(el)
                except _FieldError as e:
                    ctx.error((*parts, i) if is_list else parts, e.code, e.message)
                    continue
            elif isinstance(el, str):
                text = el.strip()
            else:
                ctx.error((*parts, i) if is_list else parts, "invalid_type", f"must be text, got {_kind(el)}")
                continue
            if text:
                out[text] = None
        return list(out) or _SKIP

    return handler


def _provider_type(ctx: _Ctx, value: Any, parts: PathParts) -> Any:
    if _blank(value):
        return _SKIP
    n: int | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        n = int(value.strip())
    if n is None or abs(n) > _INT64_MAX:
        raise _FieldError("invalid_number", f"must be an integer, got {_kind(value)} {_preview(value)}")
    return n


def _preview(value: Any) -> str:
    try:
        text = json.dumps(value)
    except Exception:
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


Handler = Callable[[_Ctx, Any, PathParts], Any]

FIELDS: dict[str, tuple[str, Handler]] = {
    "SourceName": ("source_name", _required),
    "SourceType": ("source_type", _required),
    "FirstName": ("first_name", _text),
    "LastName": ("last_name", _text),
    "DateOfBirth": ("date_of_birth", _date_of_birth),
    "Gender": ("gender", _gender),
    "Email": ("email", _email),
    "Phone": ("phone", _phone),
    "Mobile": ("mobile", _phone),
    "Address": ("address", _address),
    "Activities": ("activities", _text_list(allow_bool=True)),
    "Interests": ("interests", _text_list(allow_bool=True)),
    "NewsLetters": ("newsletters", _text_list(allow_bool=True)),
    "ProviderType": ("provider_type", _provider_type),
    "ListIds": ("list_ids", _text_list(allow_bool=False)),
    **{name: (name, _boolean) for name in CONSENT_CHANNELS},
}


_KEY_MAPS: dict[int, tuple[dict[str, str], dict[str, str]]] = {}


def _known_items(
    ctx: _Ctx, obj: dict[Any, Any], parts: PathParts, known: dict[str, Any]
) -> list[tuple[str, Any, PathParts]]:
    """Case-insensitive key matching; the first spelling of a key wins, later ones are reported."""
    maps = _KEY_MAPS.get(id(known))
    if maps is None:  # FIELDS and ADDRESS_KEYS: module constants, mapped once
        maps = _KEY_MAPS[id(known)] = ({k: k for k in known}, {k.lower(): k for k in known})
    exact, by_lower = maps
    seen: dict[str, str] = {}
    out: list[tuple[str, Any, PathParts]] = []
    for raw_key, value in obj.items():
        key = raw_key if isinstance(raw_key, str) else str(raw_key)
        key_parts = (*parts, key)
        canonical = exact.get(key) or by_lower.get(key.lower())
        if canonical is None:
            ctx.warn(key_parts, "unknown_key", f"unknown key {key!r}; ignored")
        elif canonical in seen:
            ctx.warn(
                key_parts, "duplicate_key", f"{key!r} repeats {seen[canonical]!r} (keys ignore case); ignored"
            )
        else:
            seen[canonical] = key
            out.append((canonical, value, key_parts))
    return out


def _parse_object(obj: Any, root: PathParts, default_region: str | None, document: int) -> ContactOutcome:
    outcome = ContactOutcome()
    ctx = _Ctx(document, default_region, outcome.errors, outcome.warnings)
    try:
        if not isinstance(obj, dict):
            ctx.error(root, "not_an_object", f"a contact must be a JSON object, got {_kind(obj)}")
            return outcome
        contact: dict[str, Any] = {}
        consents: list[dict[str, Any]] = []
        given: set[str] = set()
        for name, value, parts in _known_items(ctx, obj, root, FIELDS):
            given.add(name)
            out_key, handler = FIELDS[name]
            try:
                result = handler(ctx, value, parts)
            except _FieldError as e:
                ctx.error(parts, e.code, e.message)
                continue
            except Exception as e:  # one field's bug must not lose the contact
                ctx.error(parts, "parse_failed", f"{type(e).__name__}: {e}")
                continue
            if result is _SKIP:
                continue
            if name in CONSENT_CHANNELS:
                consents.append({"channel": CONSENT_CHANNELS[name], "granted": result, "field": name})
            else:
                contact[out_key] = result
        for name in REQUIRED:
            if name not in given:
                ctx.error((*root, name), "required", f"{name} is required")
        if all(FIELDS[name][0] in contact for name in REQUIRED):
            outcome.contact = contact
            outcome.consents = consents
    except Exception as e:  # never raise into the ingest path
        outcome.contact = None
        outcome.consents = []
        ctx.error(root, "parse_failed", f"{type(e).__name__}: {e}")
    return outcome


def parse_contact(doc: Any, *, default_region: str | None = None, document: int = 0) -> ContactOutcome:
    """One contact from one decoded object; ``contact`` is None when SourceName/SourceType are unusable.

    ``default_region`` (ISO 3166 alpha-2) is used only for phone numbers written without ``+``.
    """
    return _parse_object(doc, (), default_region, document)


def _collect(outcome: ContactOutcome, result: ParseResult) -> None:
    result.errors.extend(outcome.errors)
    result.warnings.extend(outcome.warnings)
    if outcome.contact is not None:
        result.records.append({"contact": outcome.contact, "consents": outcome.consents})


def parse(docs: list[Any], *, default_region: str | None = None) -> ParseResult:
    """Records ``{"contact", "consents"}`` for every usable contact; errors of failed ones are still reported."""
    result = ParseResult()
    for document, doc in enumerate(docs):
        try:
            if isinstance(doc, list) and doc:
                for i, el in enumerate(doc):
                    _collect(_parse_object(el, (i,), default_region, document), result)
            elif isinstance(doc, list):
                result.errors.append(
                    _entry((), "not_an_object", "document is an empty array; no contact", document)
                )
            else:
                _collect(_parse_object(doc, (), default_region, document), result)
        except Exception as e:  # the batch must survive one bad document
            result.errors.append(_entry((), "parse_failed", f"{type(e).__name__}: {e}", document))
    return result
