"""Drains shared by conductors: each drain is owned by one conductor's drainer
at a time, under a lease that expires (a dead owner's drains are taken over).

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'


def upgrade():
    with op.batch_alter_table('ferryman_drains') as batch:
        batch.add_column(sa.Column('owner', sa.String(255)))
        batch.add_column(sa.Column('lease_expires_at', sa.DateTime))
