"""Move requests refused before a migration was recorded, by request id.

Revision ID: 0010
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa

revision = '0010'
down_revision = '0009'


def upgrade():
    op.create_table(
        'ferryman_refused_requests',
        sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
        sa.Column('request_id', sa.String(64), nullable=False, index=True),
        sa.Column('instance_uuid', sa.String(36), nullable=False, index=True),
        sa.Column('action', sa.String(32), nullable=False),
        sa.Column('host', sa.String(255)),
        sa.Column('error', sa.Text, nullable=False),
        sa.Column('created_at', sa.DateTime, nullable=False))
