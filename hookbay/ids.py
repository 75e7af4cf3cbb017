"""Time-sortable identifiers (ULID layout: 48-bit milliseconds + 80 random bits, Crockford base32)."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_request_id() -> str:
    """Hot path: 12 hex digits of milliseconds then 80 random bits, sortable by time like a ULID."""
    return f"req_{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def new_source_id() -> str:
    return "src_" + ulid()


def now_us() -> int:
    return time.time_ns() // 1000
