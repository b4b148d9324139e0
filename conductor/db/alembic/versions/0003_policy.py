"""Convergence policy inputs: request importance, force-complete, host features.

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'


def upgrade():
    with op.batch_alter_table('ferryman_migrations') as batch:
        batch.add_column(sa.Column('importance', sa.String(8), nullable=False,
                                   server_default='medium'))
        batch.add_column(sa.Column('force_complete_requested', sa.Boolean,
                                   nullable=False, server_default=sa.false()))
    with op.batch_alter_table('ferryman_hosts') as batch:
        batch.add_column(sa.Column('features', sa.JSON, nullable=False,
                                   server_default='{}'))
