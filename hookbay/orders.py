"""Orders as data: money in integer minor units of an ISO 4217 currency, event times in microseconds,
and the rules that decide which version of an order is current and what it adds to its buyer's facts.

Pure functions only; the database side is :mod:`hookbay.store.orders`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

# ISO 4217 minor-unit exponents that differ from 2 (the list is short and stable; everything else has 2).
_EXPONENTS = {
    **dict.fromkeys(
        ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV",
         "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    "CLF": 4, "UYW": 4,
}
_CURRENCY = re.compile(r"[A-Z]{3}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
MAX_MINOR = 10**15  # far beyond any real order; keeps totals inside a signed 64-bit column
MAX_QUANTITY = 10**9

# Statuses of an order that never became a purchase: kept as orders, left out of the buyer's facts.
NOT_PURCHASED = frozenset({"cancelled", "canceled", "refunded", "failed", "voided", "trash", "draft"})

ORDER_FIELDS = ("id", "currency", "total", "status", "placed_at", "updated_at", "subtotal", "tax", "shipping",
                "discount")
ORDER_REQUIRED = ("id", "currency", "total")
LINE_FIELDS = ("sku", "name", "quantity", "unit_price", "total")
MONEY_FIELDS = ("total", "subtotal", "tax", "shipping", "discount")


class OrderValueError(ValueError):
    """A value of an order that cannot be stored as it is; the message names what was wrong."""


def exponent(currency: str) -> int:
    return _EXPONENTS.get(currency, 2)


def currency_code(value: Any) -> str:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value.strip().upper()):
        raise OrderValueError("currency must be a three-letter ISO 4217 code such as 'USD'")
    return value.strip().upper()


def to_minor(value: Any, currency: str, *, minor: bool = False) -> int:
    """An amount as integer minor units. Major-unit text or numbers (``"71.02"``) are read as decimals,
    never through floats; more decimals than the currency has is an error, not a silent rounding."""
    if isinstance(value, bool) or value is None:
        raise OrderValueError(f"expected an amount, got {type(value).__name__}")
    if isinstance(value, float):
        value = repr(value)
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, str) and _DECIMAL.fullmatch(value.strip()) and len(value) < 40:
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise OrderValueError(f"{value[:40]!r} is not an amount") from None
    else:
        raise OrderValueError("expected an amount (a number or decimal text such as '12.50')")
    scaled = amount if minor else amount.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        unit = "minor units" if minor else f"{currency} ({exponent(currency)} decimals)"
        raise OrderValueError(f"{value!s:.40} has more decimals than {unit} allow")
    out = int(scaled)
    if abs(out) >= MAX_MINOR:
        raise OrderValueError("amount is out of range")
    return out


def to_time_us(value: Any) -> int:
    """ISO 8601 text (a time without an offset is UTC, as WooCommerce's ``*_gmt`` fields are) or epoch
    seconds, as microseconds since the epoch."""
    if isinstance(value, bool):
        raise OrderValueError("expected a time, got a boolean")
    if isinstance(value, int | float):
        if not 0 <= value < 10**11:
            raise OrderValueError("epoch seconds out of range")
        return int(Decimal(repr(value)) * 1_000_000)
    if not isinstance(value, str) or len(value) > 64:
        raise OrderValueError("expected an ISO 8601 time such as '2024-03-14T10:21:37-04:00'")
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        raise OrderValueError(f"{value!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def quantity(value: Any) -> int:
    if isinstance(value, bool):
        raise OrderValueError("quantity must be a whole number")
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,10}\s*", value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or not -MAX_QUANTITY < value < MAX_QUANTITY:
        raise OrderValueError("quantity must be a whole number")
    return value


def external_id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise OrderValueError("the order id must be text or an integer")
    text = str(value).strip()
    if not text or len(text) > 200:
        raise OrderValueError("the order id must be 1 to 200 characters")
    return text


def normalize(fields: dict[str, Any], lines: list[dict[str, Any]], *, minor: bool = False
              ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A mapped order (``fields``) and its mapped lines as the stored shape, plus (field, message)
    problems. A problem with ``id``, ``currency`` or ``total`` makes the order unusable (None)."""
    problems: list[tuple[str, str]] = []
    out: dict[str, Any] = {}
    for name in ORDER_REQUIRED:
        if fields.get(name) is None:
            problems.append((name, "required for an order"))
    try:
        out["id"] = external_id(fields.get("id"))
    except OrderValueError as e:
        problems.append(("id", str(e)))
    try:
        cur = out["currency"] = currency_code(fields.get("currency"))
    except OrderValueError as e:
        problems.append(("currency", str(e)))
        cur = ""
    if problems:
        return {}, _dedupe(problems)
    for name in MONEY_FIELDS:
        if fields.get(name) is None:
            continue
        try:
            out[f"{name}_minor"] = to_minor(fields[name], cur, minor=minor)
        except OrderValueError as e:
            problems.append((name, str(e)))
    if "total_minor" not in out:
        return {}, problems
    status = fields.get("status")
    if status is not None:
        out["status"] = str(status).strip().lower()[:40] or None
    for name in ("placed_at", "updated_at"):
        if fields.get(name) is not None:
            try:
                out[name] = to_time_us(fields[name])
            except OrderValueError as e:
                problems.append((name, str(e)))
    out["lines"] = []
    for i, line in enumerate(lines):
        norm, line_problems = normalize_line(line, cur, minor=minor)
        problems.extend((f"lines[{i}].{f}", m) for f, m in line_problems)
        if norm is not None:
            out["lines"].append(norm)
    return out, problems


def normalize_line(line: dict[str, Any], currency: str, *, minor: bool = False
                   ) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """A line keeps what is valid; a line with neither a name nor a sku is dropped."""
    problems: list[tuple[str, str]] = []
    out: dict[str, Any] = {}
    for name in ("sku", "name"):
        if line.get(name) is not None:
            out[name] = str(line[name])[:500]
    try:
        out["quantity"] = quantity(line.get("quantity", 1))
    except OrderValueError as e:
        problems.append(("quantity", str(e)))
        out["quantity"] = 1
    for name in ("unit_price", "total"):
        if line.get(name) is not None:
            try:
                out[f"{name}_minor"] = to_minor(line[name], currency, minor=minor)
            except OrderValueError as e:
                problems.append((name, str(e)))
    if "total_minor" not in out and "unit_price_minor" in out:
        out["total_minor"] = out["unit_price_minor"] * out["quantity"]
    if "sku" not in out and "name" not in out:
        problems.append(("name", "a line needs a name or a sku; line left out"))
        return None, problems
    return out, problems


def _dedupe(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for f, m in problems:
        seen.setdefault(f, m)
    return list(seen.items())


@dataclass(frozen=True, slots=True)
class Version:
    """Which event of an order is newer: the event time, then the request id (time-ordered) on a tie,
    so a redelivered or replayed older event never overwrites a newer one."""

    event_at: int
    request_id: str

    def newer_or_same(self, other: Version) -> bool:
        """The same event again (a replay) is applied again: it may carry a corrected mapping."""
        return (self.event_at, self.request_id) >= (other.event_at, other.request_id)


def format_minor(minor: int | None, currency: str) -> str | None:
    """Minor units as decimal text in the currency's major unit (``7102``, ``USD`` -> ``"71.02"``)."""
    if minor is None:
        return None
    return str(Decimal(minor).scaleb(-exponent(currency)))


def order_template(o: dict[str, Any]) -> dict[str, Any]:
    """A stored order record as an email template sees it: amounts as decimal text (``total``) and
    minor units (``total_minor``), times as ISO 8601, each line likewise."""
    from hookbay.views import iso

    cur = o["currency"]
    out: dict[str, Any] = {"id": o["id"], "status": o.get("status"), "currency": cur,
                           "placed_at": iso(o.get("placed_at")), "updated_at": iso(o.get("updated_at"))}
    for name in MONEY_FIELDS:
        out[f"{name}_minor"] = o.get(f"{name}_minor")
        out[name] = format_minor(o.get(f"{name}_minor"), cur)
    out["lines"] = [{"sku": ln.get("sku"), "name": ln.get("name"), "quantity": ln.get("quantity"),
                     "unit_price_minor": ln.get("unit_price_minor"), "total_minor": ln.get("total_minor"),
                     "unit_price": format_minor(ln.get("unit_price_minor"), cur),
                     "total": format_minor(ln.get("total_minor"), cur)} for ln in o.get("lines", [])]
    return out
