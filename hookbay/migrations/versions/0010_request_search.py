"""free-text search over request bodies and headers: SQLite FTS5 (trigram), PostgreSQL pg_trgm

Revision ID: 0010
Revises: 0007
Create Date: 2026-11-29

The index holds the first 64 KiB of each plaintext body and every request's headers (an encrypted
body is never indexed: the index would be a plaintext copy). On SQLite a contentless FTS5 table
(trigrams without positions, ``detail=none``: a quarter of the size; the query rechecks the row)
filled by a background thread after the ingest commit, and kept by triggers when an indexed row
changes (rowid to rowid); on PostgreSQL a GIN trigram index on an
expression over the row, which ``hookbay.store.search`` repeats word for word so the planner uses it.
"""
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

_BODY_NEW = "CASE WHEN new.key_id IS NULL THEN CAST(substr(new.body, 1, 65536) AS TEXT) END"
_BODY_OLD = "CASE WHEN old.key_id IS NULL THEN CAST(substr(old.body, 1, 65536) AS TEXT) END"
_INDEXED = "old.rowid <= (SELECT upto FROM requests_fts_state)"
_DELETE_OLD = (f"INSERT INTO requests_fts(requests_fts, rowid, body, headers) "
               f"VALUES ('delete', old.rowid, {_BODY_OLD}, old.headers);")
_INSERT_NEW = f"INSERT INTO requests_fts(rowid, body, headers) VALUES (new.rowid, {_BODY_NEW}, new.headers);"

PG_EXPR = ("((CASE WHEN key_id IS NULL THEN coalesce(encode(substring(body from 1 for 65536), 'escape'), '')"
           " ELSE '' END) || ' ' || headers)")


def upgrade() -> None:
    # the pages list newest first (by id) within a source or a client
    op.create_index("ix_requests_source_id_id", "requests", ["source_id", "id"])
    op.create_index("ix_requests_client_id_id", "requests", ["client_id", "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(f"CREATE INDEX ix_requests_text_trgm ON requests USING gin ({PG_EXPR} gin_trgm_ops)")
        return
    op.execute("CREATE VIRTUAL TABLE requests_fts USING fts5(body, headers, content='', tokenize='trigram', "
               "detail=none)")
    # new rows are indexed off the ingest commit (hookbay.store.search.TextIndexer) up to this rowid;
    # a row changed or deleted after it was indexed is changed in the index here
    op.execute("CREATE TABLE requests_fts_state (upto INTEGER NOT NULL)")
    op.execute("INSERT INTO requests_fts(rowid, body, headers) SELECT rowid, "
               "CASE WHEN key_id IS NULL THEN CAST(substr(body, 1, 65536) AS TEXT) END, headers FROM requests")
    op.execute("INSERT INTO requests_fts_state (upto) SELECT coalesce(max(rowid), 0) FROM requests")
    op.execute(f"CREATE TRIGGER requests_fts_ad AFTER DELETE ON requests WHEN {_INDEXED} BEGIN {_DELETE_OLD} END")
    op.execute(f"CREATE TRIGGER requests_fts_au AFTER UPDATE OF body, headers, key_id ON requests "
               f"WHEN {_INDEXED} BEGIN {_DELETE_OLD} {_INSERT_NEW} END")


def downgrade() -> None:
    op.drop_index("ix_requests_client_id_id", "requests")
    op.drop_index("ix_requests_source_id_id", "requests")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_requests_text_trgm")
        return
    for name in ("requests_fts_ad", "requests_fts_au"):
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DROP TABLE IF EXISTS requests_fts_state")
    op.execute("DROP TABLE IF EXISTS requests_fts")
