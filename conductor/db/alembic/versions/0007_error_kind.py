"""A failed migration keeps the kind of its error, for drains to act on
whatever its message says.

Revision ID: 0007
Revises: 0006
"""

from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'


def upgrade():
    with op.batch_alter_table('ferryman_migrations') as batch:
        batch.add_column(sa.Column('error_kind', sa.String(32)))
