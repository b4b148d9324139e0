"""Hosts an operator forced down (Nova's forced_down) count as down.

Revision ID: 0008
Revises: 0007
"""

from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0007'


def upgrade():
    with op.batch_alter_table('ferryman_hosts') as batch:
        batch.add_column(sa.Column('forced_down', sa.Boolean, nullable=False,
                                   server_default=sa.false()))
