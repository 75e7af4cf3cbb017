"""request log partitioned by received time on PostgreSQL (issue #17, SPEC section 9)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29

A new (empty) PostgreSQL database gets ``requests`` as a table range-partitioned by
``received_at`` with a default partition; ``serve``, ``worker`` and ``hookbay partitions ensure``
create the dated partitions ahead. A database that already holds requests keeps its table: copying
it here would hold the upgrade (and the server) for as long as the copy takes, so
``hookbay partitions migrate`` does that in batches while the server runs. SQLite is unchanged.
"""
import sqlalchemy as sa
from alembic import op

from hookbay.store import partitions

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql" or partitions.is_partitioned(conn):
        return
    if conn.execute(sa.text("SELECT EXISTS (SELECT 1 FROM requests)")).scalar():
        return
    op.execute("DROP TABLE requests")
    partitions.create_partitioned(conn, "requests")
    op.execute(f"CREATE TABLE {partitions.DEFAULT} PARTITION OF requests DEFAULT")


def downgrade() -> None:
    """The partitioned table has the same columns and indexes: nothing to undo for 0010."""
