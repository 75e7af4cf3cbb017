"""PostgreSQL: the free-text index off the ingest commit (issue #17)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29

The trigram index of migration 0010 sat on the request log itself, so every ingested row (and
every update of its state) computed its trigrams inside the commit: 108 µs of PostgreSQL's 156 µs
per request. It moves to ``request_text``, filled after the commit by the text indexer up to a
mark of transaction ids (``hookbay.store.search``). Existing rows are indexed here, once. SQLite
is unchanged.
"""
from alembic import op

from hookbay.store import search

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    search.pg_install_text_index(conn)
    if not conn.exec_driver_sql("SELECT EXISTS (SELECT 1 FROM request_text_state)").scalar():
        search.pg_index_all(conn)
    op.execute("DROP INDEX IF EXISTS ix_requests_text_trgm")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP TRIGGER IF EXISTS {search.PG_TEXT_FN} ON requests")
    op.execute(f"DROP FUNCTION IF EXISTS {search.PG_TEXT_FN}()")
    op.execute("DROP TABLE IF EXISTS request_text_state")
    op.execute("DROP TABLE IF EXISTS request_text")
    op.execute("DROP INDEX IF EXISTS ix_requests_text_txid")
    op.execute("ALTER TABLE requests DROP COLUMN IF EXISTS text_txid")
    op.execute(f"CREATE INDEX ix_requests_text_trgm ON requests USING gin ({search.PG_EXPR} gin_trgm_ops)")
