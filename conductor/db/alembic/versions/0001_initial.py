"""Hosts, instances, allocations, migrations and task events.

Revision ID: 0001
Revises:
"""

from alembic import op
import sqlalchemy as sa

revision = '0001'
down_revision = None


def upgrade():
    op.create_table(
        'ferryman_hosts',
        sa.Column('name', sa.String(255), primary_key=True),
        sa.Column('enabled', sa.Boolean, nullable=False),
        sa.Column('disabled_reason', sa.String(255)),
        sa.Column('hypervisor_type', sa.String(64), nullable=False),
        sa.Column('cpu_model', sa.String(255)),
        sa.Column('cpu_features', sa.JSON, nullable=False),
        sa.Column('vcpus', sa.Integer, nullable=False),
        sa.Column('memory_mb', sa.Integer, nullable=False),
        sa.Column('disk_gb', sa.Integer, nullable=False),
        sa.Column('instances_path', sa.String(1024)),
        sa.Column('last_seen', sa.DateTime, nullable=False))
    op.create_table(
        'ferryman_instances',
        sa.Column('uuid', sa.String(36), primary_key=True),
        sa.Column('name', sa.String(255), nullable=False, index=True),
        sa.Column('host', sa.String(255), nullable=False, index=True),
        sa.Column('vcpus', sa.Integer, nullable=False),
        sa.Column('memory_mb', sa.Integer, nullable=False),
        sa.Column('disk_gb', sa.Integer, nullable=False),
        sa.Column('storage', sa.String(16), nullable=False),
        sa.Column('disks', sa.JSON, nullable=False),
        sa.Column('volumes', sa.JSON, nullable=False),
        sa.Column('sla_class', sa.String(16), nullable=False),
        sa.Column('power_state', sa.String(16), nullable=False),
        sa.Column('migration_id', sa.String(36)))
    op.create_table(
        'ferryman_allocations',
        sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
        sa.Column('consumer', sa.String(36), nullable=False, index=True),
        sa.Column('host', sa.String(255), nullable=False, index=True),
        sa.Column('vcpus', sa.Integer, nullable=False),
        sa.Column('memory_mb', sa.Integer, nullable=False),
        sa.Column('disk_gb', sa.Integer, nullable=False),
        sa.UniqueConstraint('consumer', 'host'))
    op.create_table(
        'ferryman_migrations',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('instance_uuid', sa.String(36), nullable=False, index=True),
        sa.Column('source', sa.String(255), nullable=False, index=True),
        sa.Column('destination', sa.String(255), nullable=False, index=True),
        sa.Column('subtype', sa.String(16), nullable=False),
        sa.Column('block_migration', sa.String(8), nullable=False),
        sa.Column('force', sa.Boolean, nullable=False),
        sa.Column('status', sa.String(16), nullable=False, index=True),
        sa.Column('created_at', sa.DateTime, nullable=False),
        sa.Column('updated_at', sa.DateTime, nullable=False),
        sa.Column('switchover_at', sa.DateTime),
        sa.Column('last_known_host', sa.String(255)),
        sa.Column('error', sa.Text),
        sa.Column('rollback_errors', sa.JSON, nullable=False),
        sa.Column('progress', sa.JSON, nullable=False),
        sa.Column('stats', sa.JSON, nullable=False))
    op.create_table(
        'ferryman_task_events',
        sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
        sa.Column('migration_id', sa.String(36), nullable=False, index=True),
        sa.Column('atom', sa.String(255), nullable=False),
        sa.Column('state', sa.String(32), nullable=False),
        sa.Column('host', sa.String(255)),
        sa.Column('started_at', sa.DateTime),
        sa.Column('ended_at', sa.DateTime),
        sa.Column('error', sa.Text),
        sa.Column('details', sa.JSON))
