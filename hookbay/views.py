"""Rows to API shapes, shared by the admin API, the receipt endpoint and the CLI. The request log's
views are built in :mod:`hookbay.ops.requests`, from the store's typed rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def iso(us: int | None) -> str | None:
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: str) -> int:
    """Accept ISO-8601 (``Z`` or offset) or a relative ``15m``/``2h``/``3d`` ago; return epoch µs."""
    import time

    v = value.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if v and v[-1] in units and v[:-1].isdigit():
        return int((time.time() - int(v[:-1]) * units[v[-1]]) * 1e6)
    dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1e6)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What ``GET /V1/Requests/{id}`` (and ``?wait=1``) answers; serialised in field order."""

    request_id: str
    state: str
    verdict: str
    received_at: str | None
    processed_at: str | None
    duplicate_of: str | None
    records: list[dict[str, Any]]
    errors: list[Any]
    warnings: list[Any]
