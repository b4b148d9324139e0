"""Evacuation: a guest's base image (what its local disks are rebuilt from), and
when an evacuation's dead source fenced its guest (its allocation is held until
then).

Revision ID: 0011
Revises: 0010
"""

from alembic import op
import sqlalchemy as sa

revision = '0011'
down_revision = '0010'


def upgrade():
    with op.batch_alter_table('ferryman_instances') as batch:
        batch.add_column(sa.Column('image', sa.String(255)))
    with op.batch_alter_table('ferryman_migrations') as batch:
        batch.add_column(sa.Column('fenced_at', sa.DateTime))
