"""The ``profiles`` table's rows, and a profile with what hangs off it, as the store hands them to
the layers above it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hookbay.store.order_rows import PurchaseFacts, StoredOrder


@dataclass(frozen=True, slots=True)
class StoredProfile:
    """A ``profiles`` row without its fields: what a search or a page of profiles lists (the
    fields are read with the rest of the profile, :class:`StoredProfileDetail`)."""

    id: str
    client_id: str
    email: str | None
    phone: str | None
    created_at: int
    updated_at: int

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> StoredProfile:
        return cls(id=row["id"], client_id=row["client_id"], email=row["email"], phone=row["phone"],
                   created_at=row["created_at"], updated_at=row["updated_at"])


@dataclass(frozen=True, slots=True)
class StoredConsentEvent:
    """A ``consent_events`` row: one entry of a profile's consent ledger."""

    id: int
    channel: str
    granted: bool
    occurred_at: int
    source_id: str | None
    request_id: str | None
    field: str | None

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> StoredConsentEvent:
        return cls(id=row["id"], channel=row["channel"], granted=bool(row["granted"]),
                   occurred_at=row["occurred_at"], source_id=row["source_id"], request_id=row["request_id"],
                   field=row["field"])


@dataclass(frozen=True, slots=True)
class StoredProfileDetail(StoredProfile):
    """Everything held about one profile. ``fields`` is the stored JSON document, parsed (each
    field's value with the time, request and source that set it)."""

    fields: dict[str, Any]
    keys: list[tuple[str, str]]  # (kind, value), sorted
    ledger: list[StoredConsentEvent]  # oldest first
    request_ids: list[str]
    merged_from: list[str]  # oldest merge first
    purchases: PurchaseFacts
    recent_orders: list[StoredOrder]
