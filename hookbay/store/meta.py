"""Small key-value settings shared by every process (the ``meta`` table)."""

from __future__ import annotations

import sqlalchemy as sa

from hookbay.store import schema
from hookbay.store.core import StoreCore


class MetaMixin(StoreCore):
    """The ``Meta`` group."""

    async def get_meta(self, key: str) -> str | None:
        def q(conn: sa.Connection) -> str | None:
            return conn.execute(sa.select(schema.meta.c.value).where(schema.meta.c.key == key)).scalar()

        return await self.read(q)

    async def set_meta_if_absent(self, key: str, value: str) -> bool:
        """Race-free: ``serve --processes N`` starts N processes that bootstrap at once."""
        def w(conn: sa.Connection) -> bool:
            stmt = self.dialect.insert(schema.meta).values(key=key, value=value).on_conflict_do_nothing()
            return conn.execute(stmt.returning(schema.meta.c.key)).first() is not None

        return await self.write(w)

    async def set_meta(self, key: str, value: str) -> None:
        def w(conn: sa.Connection) -> None:
            stmt = self.dialect.insert(schema.meta).values(key=key, value=value)
            conn.execute(stmt.on_conflict_do_update(index_elements=[schema.meta.c.key], set_={"value": value}))

        await self.write(w)
