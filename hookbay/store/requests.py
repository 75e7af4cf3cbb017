"""The request log's rows as typed values: what ingest writes (:class:`RequestRow`) and what the
store hands the layers above it (:class:`StoredRequestSummary`, :class:`StoredRequest`,
:class:`StoredRecord`, and counts of requests, :class:`TrafficBucket`). JSON columns stay text
here, exactly as stored; views parse them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from hookbay.errors import EncryptionKeyMissing


class RequestRow(TypedDict):
    """A ``requests`` row as ingest builds it and the writer inserts it: a plain dict (no cost on
    the hot path) that the writer may still change, marking a duplicate of an earlier request."""

    id: str
    source_id: str
    client_id: str
    received_at: int
    method: str
    path: str
    query: str
    headers: str  # JSON list of [name, value] pairs
    peer: str | None
    content_type: str | None
    content_encoding: str | None
    body: bytes | None
    body_size: int
    verdict: str
    rule: str | None
    status: int
    state: str
    idempotency_key: str | None
    duplicate_of: str | None
    receipt: str | None  # JSON
    processed_at: int | None
    key_id: str | None


@dataclass(frozen=True, slots=True)
class StoredRequestSummary:
    """A ``requests`` row without its body, headers and receipt: one line of a search."""

    id: str
    source_id: str | None
    client_id: str | None
    received_at: int
    method: str
    path: str
    query: str
    peer: str | None
    content_type: str | None
    content_encoding: str | None
    body_size: int
    verdict: str
    rule: str | None
    status: int
    state: str
    idempotency_key: str | None
    duplicate_of: str | None
    processed_at: int | None
    key_id: str | None

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> StoredRequestSummary:
        return cls(**{name: row[name] for name in SUMMARY_FIELDS})


@dataclass(frozen=True, slots=True)
class StoredRequest(StoredRequestSummary):
    """A whole ``requests`` row, decrypted. ``open_error`` is set (and ``body`` None) when a batch
    load met a row sealed with a key that is not configured: processing it raises that error."""

    headers: str  # JSON list of [name, value] pairs
    body: bytes | None
    receipt: str | None  # JSON
    open_error: EncryptionKeyMissing | None = None

    @classmethod
    def of(cls, row: Mapping[Any, Any], open_error: EncryptionKeyMissing | None = None) -> StoredRequest:
        body = row["body"]
        return cls(**{name: row[name] for name in SUMMARY_FIELDS}, headers=row["headers"],
                   body=bytes(body) if body is not None else None, receipt=row["receipt"], open_error=open_error)


SUMMARY_FIELDS = tuple(StoredRequestSummary.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A ``records`` row: one parsed record of a request; ``data`` is its JSON text."""

    id: int
    request_id: str
    idx: int
    source_id: str
    client_id: str
    parser: str
    parser_version: str
    data: str
    profile_id: str | None
    created_at: int


@dataclass(frozen=True, slots=True)
class TrafficBucket:
    """How many requests one time bucket holds with one verdict, state and rejecting rule
    (:meth:`hookbay.store.Store.traffic`); ``bucket`` is its index from the window's start."""

    bucket: int
    verdict: str
    state: str
    rule: str | None
    n: int


@dataclass(slots=True)
class ClaimedJob:
    """A job the worker holds the lease on: which request to process, and how often it was tried."""

    job_id: int
    request_id: str
    attempts: int
