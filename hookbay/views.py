"""Rows to API shapes, shared by the admin API, the receipt endpoint and the CLI."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson

from hookbay.models import RequestDetail, RequestSummary, SourceConfig, SourceOut


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


def request_summary(row: dict[str, Any]) -> RequestSummary:
    return RequestSummary(
        id=row["id"], source_id=row["source_id"], client_id=row["client_id"],
        received_at=iso(row["received_at"]) or "", method=row["method"], path=row["path"],
        peer=row["peer"], content_type=row["content_type"], body_size=row["body_size"],
        verdict=row["verdict"], rule=row["rule"], status=row["status"], state=row["state"],
        duplicate_of=row["duplicate_of"], content_encoding=row.get("content_encoding"),
    )


def record_view(rec: dict[str, Any]) -> dict[str, Any]:
    data = orjson.loads(rec["data"])
    return {"index": rec["idx"], "parser": rec["parser"], "parser_version": rec["parser_version"], **data}


def request_detail(row: dict[str, Any], records: list[dict[str, Any]]) -> RequestDetail:
    body: bytes | None = row["body"]
    text: str | None = None
    if body is not None:
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            text = None
    return RequestDetail(
        **request_summary(row).model_dump(),
        query=row["query"],
        headers=orjson.loads(row["headers"]),
        body=text,
        body_base64=base64.b64encode(bytes(body)).decode() if body is not None else None,
        receipt=orjson.loads(row["receipt"]) if row["receipt"] else None,
        records=[record_view(r) for r in records],
    )


def receipt(row: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    rc = orjson.loads(row["receipt"]) if row["receipt"] else {}
    return {
        "request_id": row["id"],
        "state": row["state"],
        "verdict": row["verdict"],
        "received_at": iso(row["received_at"]),
        "processed_at": iso(row["processed_at"]),
        "duplicate_of": row["duplicate_of"],
        "records": [record_view(r) for r in records],
        "errors": rc.get("errors", []),
        "warnings": rc.get("warnings", []),
    }
