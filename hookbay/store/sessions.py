"""Console session revocations, kept in the ``meta`` table so every process sees a logout."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from hookbay.store import schema


def revoke_session(key: str, expires: int, prefix: str, now: int) -> Callable[[sa.Connection], None]:
    """A write that records ``key`` as revoked until ``expires`` and drops revocations (keys under
    ``prefix``) whose cookies have expired by ``now``."""
    def w(conn: sa.Connection) -> None:
        m = schema.meta
        conn.execute(m.delete().where(m.c.key.like(prefix + "%"), sa.cast(m.c.value, sa.BigInteger) < now))
        if conn.execute(sa.select(m.c.key).where(m.c.key == key)).first() is None:
            conn.execute(m.insert().values(key=key, value=str(expires)))

    return w
