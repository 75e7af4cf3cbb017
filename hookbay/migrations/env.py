"""Alembic environment: runs on the connection the store hands in, or on HOOKBAY's configured URL."""

from __future__ import annotations

from alembic import context

from hookbay.store.schema import include_object, metadata

config = context.config


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is None:
        import sqlalchemy as sa

        from hookbay.settings import get_settings

        engine = sa.create_engine(get_settings().effective_database_url)
        with engine.begin() as c:
            context.configure(connection=c, target_metadata=metadata, render_as_batch=True,
                              include_object=include_object)
            context.run_migrations()
        return
    context.configure(connection=conn, target_metadata=metadata, render_as_batch=True,
                      include_object=include_object)
    context.run_migrations()


run()
