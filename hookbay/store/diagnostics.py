"""The few statements ``hookbay doctor`` and the CLI run to diagnose a database before (or
instead of) opening a :class:`~hookbay.store.Store` on it."""

from __future__ import annotations

import sqlalchemy as sa


def ping(conn: sa.Connection) -> None:
    conn.execute(sa.text("SELECT 1"))


def has_schema(conn: sa.Connection) -> bool:
    """Whether hookbay's migrations ever ran here."""
    return sa.inspect(conn).has_table("alembic_version")


def newest_received_at(conn: sa.Connection) -> int | None:
    """The newest stored request's receipt time (µs), or None."""
    newest = conn.execute(sa.text("SELECT max(received_at) FROM requests")).scalar()
    return int(newest) if newest else None


def server_clock(conn: sa.Connection) -> float:
    """The PostgreSQL server's clock, seconds since the epoch."""
    return float(conn.execute(sa.text("SELECT extract(epoch FROM clock_timestamp())")).scalar() or 0)


def partition_layout(conn: sa.Connection, now_us: int) -> tuple[bool, bool]:
    """PostgreSQL: whether the request log is partitioned, and whether a dated partition holds
    ``now_us`` (else new requests go to the default partition)."""
    from hookbay.store import partitions

    if not partitions.is_partitioned(conn):
        return False, False
    return True, any(p.lo is not None and p.hi is not None and p.lo <= now_us < p.hi
                     for p in partitions.partitions(conn))
