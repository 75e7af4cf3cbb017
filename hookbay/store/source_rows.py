"""The ``sources`` table's rows as the store hands them to the layers above it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class StoredSource:
    """A ``sources`` row. ``config`` is the stored JSON document, parsed but not validated, so a
    source whose config no longer validates can still be found, shown and fixed."""

    id: str
    client_id: str
    name: str
    token: str
    enabled: bool
    config: dict[str, Any]
    api_key_hash: str | None
    created_at: int
    updated_at: int

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> StoredSource:
        return cls(id=row["id"], client_id=row["client_id"], name=row["name"], token=row["token"],
                   enabled=bool(row["enabled"]), config=orjson.loads(row["config"] or "{}"),
                   api_key_hash=row["api_key_hash"], created_at=row["created_at"], updated_at=row["updated_at"])
