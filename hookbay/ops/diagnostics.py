"""What ``hookbay doctor`` and the CLI find out about a database before (or instead of) opening a
:class:`~hookbay.store.Store` on it: they only read, so nothing is created on a wrong URL."""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

from hookbay.store import diagnostics


@dataclass(frozen=True, slots=True)
class PartitionState:
    partitioned: bool  # the request log is partitioned (PostgreSQL, a database made at 0011 or later)
    current: bool  # a dated partition holds now (else new requests go to requests_default)


def ping(conn: sa.Connection) -> None:
    """Raises the driver's error when the database does not answer."""
    diagnostics.ping(conn)


def has_schema(conn: sa.Connection) -> bool:
    """Whether hookbay's migrations ever ran here."""
    return diagnostics.has_schema(conn)


def stored_ahead_s(conn: sa.Connection) -> float:
    """How far the newest stored request's receipt time is ahead of this machine's clock (seconds;
    0 with none stored): on SQLite, a clock that went back behind what it already stored."""
    newest = diagnostics.newest_received_at(conn)
    return (newest / 1e6 - time.time()) if newest else 0.0


def clock_skew_s(conn: sa.Connection) -> float:
    """The PostgreSQL server's clock minus this machine's (seconds), against the midpoint of the query."""
    t0 = time.time()
    db_now = diagnostics.server_clock(conn)
    t1 = time.time()
    return db_now - (t0 + t1) / 2


def partition_state(conn: sa.Connection) -> PartitionState:
    partitioned, current = diagnostics.partition_layout(conn, int(time.time() * 1e6))
    return PartitionState(partitioned=partitioned, current=current)
