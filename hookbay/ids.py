"""Time-sortable identifiers (ULID layout: 48-bit milliseconds + 80 random bits, Crockford base32)."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_LOWER = _ALPHABET.lower()
# One base32 digit per random byte (its low 5 bits): 256 is a multiple of 32, so each digit is
# uniform, and the whole id is encoded in C instead of a Python loop.
_DIGIT_OF_BYTE = bytes(ord(_LOWER[b & 31]) for b in range(256))
_prefix: tuple[int, str] = (-1, "")


def ulid(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def _time_prefix(ms: int) -> str:
    return "req_" + "".join(_LOWER[(ms >> shift) & 31] for shift in range(45, -1, -5))


def new_request_id(now_ms: int | None = None) -> str:
    """Hot path: 10 base32 digits of milliseconds, then 26 random digits (130 bits; the id is a
    capability that reads the receipt): 40 characters with the prefix, the column's width.

    Sorted by time like a ULID (Crockford's digits, lower case, are in ASCII order), and after
    every id of the older layout (``req_`` + 12 hex digits of milliseconds + 80 random bits)
    made before it: each base32 digit covers at least the bits of the hex digit at its place,
    so the first one that differs is larger (until the year 2527)."""
    global _prefix
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    cached = _prefix
    if cached[0] != ms:
        cached = _prefix = (ms, _time_prefix(ms))
    return cached[1] + os.urandom(26).translate(_DIGIT_OF_BYTE).decode()


def request_id_floor(ms: int) -> str:
    """The smallest request id made at ``ms`` or later: a cursor for "ids after this time"."""
    return _time_prefix(ms) + "0" * 26


def request_id_ms(request_id: str) -> int | None:
    """The milliseconds a request id was made at (either layout), or None if it is not one."""
    body = request_id[4:] if request_id.startswith("req_") else ""
    try:
        if len(body) == 36 and body[:10].isalnum():
            ms = 0
            for ch in body[:10]:
                ms = ms * 32 + _LOWER.index(ch)
            return ms
        if len(body) == 32:
            return int(body[:12], 16)
    except ValueError:
        return None
    return None


def new_source_id() -> str:
    return "src_" + ulid()


def now_us() -> int:
    return time.time_ns() // 1000
