"""profile merges and worker heartbeats

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('profile_merges',
    sa.Column('merged_id', sa.String(length=40), nullable=False),
    sa.Column('survivor_id', sa.String(length=40), nullable=False),
    sa.Column('client_id', sa.String(length=100), nullable=False),
    sa.Column('request_id', sa.String(length=40), nullable=True),
    sa.Column('merged_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('merged_id', name=op.f('pk_profile_merges'))
    )
    with op.batch_alter_table('profile_merges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_profile_merges_survivor_id'), ['survivor_id'], unique=False)
    op.create_table('workers',
    sa.Column('id', sa.String(length=80), nullable=False),
    sa.Column('started_at', sa.BigInteger(), nullable=False),
    sa.Column('heartbeat_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workers'))
    )


def downgrade() -> None:
    op.drop_table('workers')
    with op.batch_alter_table('profile_merges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_profile_merges_survivor_id'))
    op.drop_table('profile_merges')
