"""Placement: nested resource providers and their allocations, inventory
ratios and reserved amounts, guests' NUMA and PCI requests, host drains.

Revision ID: 0004
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'


def upgrade():
    with op.batch_alter_table('ferryman_hosts') as batch:
        batch.add_column(sa.Column('reserved', sa.JSON, nullable=False,
                                   server_default='{}'))
        batch.add_column(sa.Column('allocation_ratios', sa.JSON, nullable=False,
                                   server_default='{}'))
    with op.batch_alter_table('ferryman_instances') as batch:
        batch.add_column(sa.Column('numa_topology', sa.JSON))
        batch.add_column(sa.Column('pci_requests', sa.JSON, nullable=False,
                                   server_default='[]'))
    op.create_table(
        'ferryman_providers',
        sa.Column('name', sa.String(255), primary_key=True),
        sa.Column('host', sa.String(255), nullable=False, index=True),
        sa.Column('kind', sa.String(16), nullable=False),
        sa.Column('inventory', sa.JSON, nullable=False),
        sa.Column('traits', sa.JSON, nullable=False))
    op.create_table(
        'ferryman_nested_allocations',
        sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
        sa.Column('consumer', sa.String(36), nullable=False, index=True),
        sa.Column('host', sa.String(255), nullable=False, index=True),
        sa.Column('provider', sa.String(255), nullable=False, index=True),
        sa.Column('resources', sa.JSON, nullable=False),
        sa.UniqueConstraint('consumer', 'provider'))
    op.create_table(
        'ferryman_drains',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('host', sa.String(255), nullable=False, index=True),
        sa.Column('status', sa.String(16), nullable=False, index=True),
        sa.Column('max_parallel', sa.Integer, nullable=False),
        sa.Column('guests', sa.JSON, nullable=False),
        sa.Column('created_at', sa.DateTime, nullable=False),
        sa.Column('updated_at', sa.DateTime, nullable=False))
