"""Guests have owners (the project and user their hosts report), so the API
lets a project read its own servers and shows them as Nova does.

Revision ID: 0009
Revises: 0008
"""

from alembic import op
import sqlalchemy as sa

revision = '0009'
down_revision = '0008'


def upgrade():
    with op.batch_alter_table('ferryman_instances') as batch:
        batch.add_column(sa.Column('project_id', sa.String(64)))
        batch.add_column(sa.Column('user_id', sa.String(64)))
        batch.create_index('ix_ferryman_instances_project_id', ['project_id'])
