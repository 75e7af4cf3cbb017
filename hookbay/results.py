"""What processing one request makes on its way from the worker to the store: the parse, its
receipt and the deliveries it plans.

Pure values, so processing, the planner, provider routing and the store share them without
importing one another; picklable, since the parse pool sends a :class:`ProcessResult` back from a
spawned process. Records and receipt issues stay dicts: they are JSON as the parsers wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any]
# A receipt error or warning as the parsers write it: path, code, message, and extras such as
# document, record or detail.
Issue = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ParseReceipt:
    """A request's stored receipt. Frozen fields, growing lists: provider routing adds warnings."""

    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[Issue]]:
        """The stored JSON's shape, keys in this order (the column and ``/V1/Test`` write it)."""
        return {"errors": self.errors, "warnings": self.warnings}


@dataclass(frozen=True, slots=True)
class PlannedDelivery:
    """One delivery a record makes: the action (by index, type and name) and where it goes.
    ``once_key`` makes it unique beyond its request (one delivery per order and action)."""

    record_idx: int
    action_idx: int
    action_type: str
    action_name: str
    destination: str
    once_key: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """What a source's parser makes of a body, before it belongs to a stored request: what
    ``/V1/Test`` shows, and the start of a :class:`ProcessResult`."""

    parser: str
    parser_version: str
    state: str
    records: list[Record]
    receipt: ParseReceipt

    def for_request(self, request_id: str, source_id: str | None, client_id: str | None,
                    received_at: int) -> ProcessResult:
        return ProcessResult(request_id, source_id, client_id, received_at, self.parser, self.parser_version,
                             self.state, self.records, self.receipt)


@dataclass(slots=True)
class ProcessResult:
    """One stored request's parse and planned deliveries, as the store finishes its job.

    Mutable: one owner builds it in steps (parse, plan the source's actions, route provider pushes,
    which add deliveries and receipt warnings), and the store writes profile and order ids into its
    records; freezing the shell would promise an immutability its lists do not have."""

    request_id: str
    source_id: str | None
    client_id: str | None
    received_at: int
    parser: str
    parser_version: str
    state: str
    records: list[Record]
    receipt: ParseReceipt
    deliveries: list[PlannedDelivery] = field(default_factory=list)
