"""orders, order lines, profile purchase facts, once-per-order deliveries, provider connections

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('orders',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('client_id', sa.String(length=100), nullable=False),
    sa.Column('source_id', sa.String(length=40), nullable=False),
    sa.Column('external_id', sa.String(length=200), nullable=False),
    sa.Column('profile_id', sa.String(length=40), nullable=True),
    sa.Column('status', sa.String(length=40), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('total_minor', sa.BigInteger(), nullable=False),
    sa.Column('subtotal_minor', sa.BigInteger(), nullable=True),
    sa.Column('tax_minor', sa.BigInteger(), nullable=True),
    sa.Column('shipping_minor', sa.BigInteger(), nullable=True),
    sa.Column('discount_minor', sa.BigInteger(), nullable=True),
    sa.Column('placed_at', sa.BigInteger(), nullable=False),
    sa.Column('event_at', sa.BigInteger(), nullable=False),
    sa.Column('request_id', sa.String(length=40), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_orders')),
    sa.UniqueConstraint('source_id', 'external_id', name=op.f('uq_orders_source_id_external_id'))
    )
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index('ix_orders_client_placed', ['client_id', 'placed_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_orders_profile_id'), ['profile_id'], unique=False)
    op.create_table('order_lines',
    sa.Column('order_id', sa.String(length=40), nullable=False),
    sa.Column('idx', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('sku', sa.String(length=500), nullable=True),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('quantity', sa.BigInteger(), nullable=False),
    sa.Column('unit_price_minor', sa.BigInteger(), nullable=True),
    sa.Column('total_minor', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('order_id', 'idx', name=op.f('pk_order_lines'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('once_key', sa.String(length=300), nullable=True))
        batch_op.create_index('uq_deliveries_once', ['source_id', 'once_key'], unique=True)
    op.create_table('provider_connections',
    sa.Column('client_id', sa.String(length=100), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('key_env', sa.String(length=200), nullable=False),
    sa.Column('pod', sa.String(length=10), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('client_id', 'type', name=op.f('pk_provider_connections'))
    )
    op.create_table('profile_purchases',
    sa.Column('profile_id', sa.String(length=40), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('client_id', sa.String(length=100), nullable=False),
    sa.Column('order_count', sa.Integer(), nullable=False),
    sa.Column('total_minor', sa.BigInteger(), nullable=False),
    sa.Column('first_order_at', sa.BigInteger(), nullable=False),
    sa.Column('last_order_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('profile_id', 'currency', name=op.f('pk_profile_purchases'))
    )


def downgrade() -> None:
    op.drop_table('provider_connections')
    op.drop_table('profile_purchases')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('uq_deliveries_once')
        batch_op.drop_column('once_key')
    op.drop_table('order_lines')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_orders_profile_id'))
        batch_op.drop_index('ix_orders_client_placed')
    op.drop_table('orders')
