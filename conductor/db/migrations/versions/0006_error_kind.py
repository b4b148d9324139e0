"""A failed migration keeps the kind of its error, for drains to act on
whatever its message says.

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'


def upgrade():
    with op.batch_alter_table('ferryman_migrations') as batch:
        batch.add_column(sa.Column('error_kind', sa.String(32)))
