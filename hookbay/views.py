"""Rows to API shapes, shared by the admin API, the receipt endpoint and the CLI. The request log's
views are built in :mod:`hookbay.ops.requests`, from the store's typed rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from hookbay.models import SourceConfig, SourceOut


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


def source_out(row: dict[str, Any], base_url: str, api_key: str | None = None, *, secrets: int = 0,
               secret: str | None = None) -> SourceOut:
    return SourceOut(
        id=row["id"],
        client_id=row["client_id"],
        name=row["name"],
        token=row["token"],
        ingest_url=f"{base_url}/V1/Data/{row['token']}",
        enabled=bool(row["enabled"]),
        api_key_required=row["api_key_hash"] is not None,
        config=SourceConfig.model_validate(orjson.loads(row["config"] or "{}")),
        created_at=iso(row["created_at"]) or "",
        updated_at=iso(row["updated_at"]) or "",
        api_key=api_key,
        signing_secrets=secrets,
        secret=secret,
    )


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
