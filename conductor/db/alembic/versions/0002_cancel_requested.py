"""Migrations remember an operator's abort request.

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'


def upgrade():
    with op.batch_alter_table('ferryman_migrations') as batch:
        batch.add_column(sa.Column('cancel_requested', sa.Boolean, nullable=False,
                                   server_default=sa.false()))
