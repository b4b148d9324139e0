"""Migration statuses up to 32 characters: the per-subtype machines' phases
(connecting-volumes) are longer than 16.

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'


def upgrade():
    with op.batch_alter_table('ferryman_migrations') as batch:
        batch.alter_column('status', existing_type=sa.String(16),
                           type_=sa.String(32), existing_nullable=False)
