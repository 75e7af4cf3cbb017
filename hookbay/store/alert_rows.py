"""The ``alert_rules`` and ``alerts`` tables' rows as the store hands them to the layers above it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class StoredAlertRule:
    """An ``alert_rules`` row. ``definition`` is the stored JSON document, parsed but not validated
    (``ops.alerts.RuleDefinition`` validates it), so a rule that no longer validates can be shown."""

    id: str
    client_id: str | None
    name: str
    enabled: bool
    definition: dict[str, Any]
    created_at: int
    updated_at: int

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> StoredAlertRule:
        return cls(id=row["id"], client_id=row["client_id"], name=row["name"], enabled=bool(row["enabled"]),
                   definition=orjson.loads(row["definition"]), created_at=row["created_at"],
                   updated_at=row["updated_at"])


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """An ``alerts`` row, or the evaluator's decision about one before it is stored."""

    id: str
    rule_id: str
    client_id: str | None
    subject: str
    state: str
    summary: str
    detail: dict[str, Any]
    opened_at: int
    resolved_at: int | None
    notified_at: int
    notifications: int
    last_error: str | None = None

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> StoredAlert:
        return cls(id=row["id"], rule_id=row["rule_id"], client_id=row["client_id"], subject=row["subject"],
                   state=row["state"], summary=row["summary"], detail=orjson.loads(row["detail"] or "{}"),
                   opened_at=row["opened_at"], resolved_at=row["resolved_at"], notified_at=row["notified_at"],
                   notifications=row["notifications"], last_error=row["last_error"])
