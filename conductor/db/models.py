"""Conductor tables. Schema changes go through alembic (conductor/db/alembic)."""

import sqlalchemy as sa
from sqlalchemy import orm


class Base(orm.DeclarativeBase):
    type_annotation_map = {dict: sa.JSON, list: sa.JSON}


class Host(Base):
    __tablename__ = 'ferryman_hosts'

    name = sa.Column(sa.String(255), primary_key=True)
    enabled = sa.Column(sa.Boolean, nullable=False, default=True)
    disabled_reason = sa.Column(sa.String(255))
    # Set by an operator (Nova's forced_down): the host counts as down whatever
    # its agent reports, so its guests may be evacuated.
    forced_down = sa.Column(sa.Boolean, nullable=False, default=False,
                            server_default=sa.false())
    hypervisor_type = sa.Column(sa.String(64), nullable=False)
    cpu_model = sa.Column(sa.String(255))
    cpu_features = sa.Column(sa.JSON, nullable=False, default=list)
    vcpus = sa.Column(sa.Integer, nullable=False)
    memory_mb = sa.Column(sa.Integer, nullable=False)
    disk_gb = sa.Column(sa.Integer, nullable=False)
    instances_path = sa.Column(sa.String(1024))
    # What the host's operator allows migrations to use (post_copy, auto_converge)
    # and its link bandwidth (bandwidth_mibps), as its agent reports them.
    features = sa.Column(sa.JSON, nullable=False, default=dict, server_default='{}')
    # Per resource (vcpus, memory_mb, disk_gb): held back for the host itself, and
    # how far allocations may exceed the rest (capacity = (total - reserved) * ratio).
    reserved = sa.Column(sa.JSON, nullable=False, default=dict, server_default='{}')
    allocation_ratios = sa.Column(sa.JSON, nullable=False, default=dict,
                                  server_default='{}')
    last_seen = sa.Column(sa.DateTime, nullable=False)


class Instance(Base):
    __tablename__ = 'ferryman_instances'

    uuid = sa.Column(sa.String(36), primary_key=True)
    name = sa.Column(sa.String(255), nullable=False, index=True)
    host = sa.Column(sa.String(255), nullable=False, index=True)
    vcpus = sa.Column(sa.Integer, nullable=False)
    memory_mb = sa.Column(sa.Integer, nullable=False)
    disk_gb = sa.Column(sa.Integer, nullable=False)
    storage = sa.Column(sa.String(16), nullable=False)
    disks = sa.Column(sa.JSON, nullable=False, default=list)
    volumes = sa.Column(sa.JSON, nullable=False, default=list)
    sla_class = sa.Column(sa.String(16), nullable=False, default='pet')
    power_state = sa.Column(sa.String(16), nullable=False)
    # From its flavor: [{'vcpus': N, 'memory_mb': M}, ...], one entry per NUMA cell
    # it must be placed in (None: floats); [{'count': N, 'trait': T}, ...].
    numa_topology = sa.Column(sa.JSON)
    pci_requests = sa.Column(sa.JSON, nullable=False, default=list,
                             server_default='[]')
    # The base image its local disks were made from (its metadata's): what an
    # evacuation rebuilds them from. None: none known.
    image = sa.Column(sa.String(255))
    # The one migration allowed to move this guest; set and cleared atomically.
    migration_id = sa.Column(sa.String(36))
    # Its owner as its host reports it (Keystone ids; None: not known).
    project_id = sa.Column(sa.String(64), index=True)
    user_id = sa.Column(sa.String(64))


class Allocation(Base):
    """Resources held on a host by a consumer: an instance, or a migration holding
    the source side of its instance while it moves."""
    __tablename__ = 'ferryman_allocations'
    __table_args__ = (sa.UniqueConstraint('consumer', 'host'),)

    id = sa.Column(sa.Integer, primary_key=True, autoincrement=True)
    consumer = sa.Column(sa.String(36), nullable=False, index=True)
    host = sa.Column(sa.String(255), nullable=False, index=True)
    vcpus = sa.Column(sa.Integer, nullable=False)
    memory_mb = sa.Column(sa.Integer, nullable=False)
    disk_gb = sa.Column(sa.Integer, nullable=False)


class Provider(Base):
    """A resource provider nested under a host: a NUMA cell (VCPU, MEMORY_MB) or a
    PCI device (PCI_DEVICE, with traits such as the physical network)."""
    __tablename__ = 'ferryman_providers'

    name = sa.Column(sa.String(255), primary_key=True)  # HOST/numa0, HOST/pci/ADDR
    host = sa.Column(sa.String(255), nullable=False, index=True)
    kind = sa.Column(sa.String(16), nullable=False)  # numa, pci
    inventory = sa.Column(sa.JSON, nullable=False, default=dict)
    traits = sa.Column(sa.JSON, nullable=False, default=list)


class NestedAllocation(Base):
    """What a consumer holds on one nested provider of a host, besides its
    allocation on the host itself (ferryman_allocations)."""
    __tablename__ = 'ferryman_nested_allocations'
    __table_args__ = (sa.UniqueConstraint('consumer', 'provider'),)

    id = sa.Column(sa.Integer, primary_key=True, autoincrement=True)
    consumer = sa.Column(sa.String(36), nullable=False, index=True)
    host = sa.Column(sa.String(255), nullable=False, index=True)
    provider = sa.Column(sa.String(255), nullable=False, index=True)
    resources = sa.Column(sa.JSON, nullable=False)


class Drain(Base):
    """A host being emptied: every guest on it live-migrated elsewhere. Kept here
    so a restarted conductor carries on with it."""
    __tablename__ = 'ferryman_drains'

    id = sa.Column(sa.String(36), primary_key=True)
    host = sa.Column(sa.String(255), nullable=False, index=True)
    status = sa.Column(sa.String(16), nullable=False, index=True)
    max_parallel = sa.Column(sa.Integer, nullable=False)
    # uuid -> {'name', 'status' (pending, migrating, moved, failed), 'migration',
    # 'error'}
    guests = sa.Column(sa.JSON, nullable=False, default=dict)
    created_at = sa.Column(sa.DateTime, nullable=False)
    updated_at = sa.Column(sa.DateTime, nullable=False)
    # The drainer (one per conductor process) that advances it, until the lease
    # runs out: a dead conductor's drains go to another one.
    owner = sa.Column(sa.String(255))
    lease_expires_at = sa.Column(sa.DateTime)


class Migration(Base):
    __tablename__ = 'ferryman_migrations'

    id = sa.Column(sa.String(36), primary_key=True)
    instance_uuid = sa.Column(sa.String(36), nullable=False, index=True)
    source = sa.Column(sa.String(255), nullable=False, index=True)
    destination = sa.Column(sa.String(255), nullable=False, index=True)
    subtype = sa.Column(sa.String(16), nullable=False)
    block_migration = sa.Column(sa.String(8), nullable=False)
    force = sa.Column(sa.Boolean, nullable=False, default=False)
    importance = sa.Column(sa.String(8), nullable=False, default='medium',
                           server_default='medium')
    status = sa.Column(sa.String(32), nullable=False, index=True)
    created_at = sa.Column(sa.DateTime, nullable=False)
    updated_at = sa.Column(sa.DateTime, nullable=False)
    # Set once the guest runs on the destination: from then on only roll forward.
    switchover_at = sa.Column(sa.DateTime)
    # Set by an operator's abort; the flow ends in cancelled at its next check.
    cancel_requested = sa.Column(sa.Boolean, nullable=False, default=False,
                                 server_default=sa.false())
    force_complete_requested = sa.Column(sa.Boolean, nullable=False, default=False,
                                         server_default=sa.false())
    last_known_host = sa.Column(sa.String(255))
    # Evacuation: when its source, back from the dead, destroyed the guest there
    # (fencing); the source allocation is held until then.
    fenced_at = sa.Column(sa.DateTime)
    error = sa.Column(sa.Text)
    # The error's kind (exception.FerrymanError.kind): what callers act on.
    error_kind = sa.Column(sa.String(32))
    rollback_errors = sa.Column(sa.JSON, nullable=False, default=list)
    progress = sa.Column(sa.JSON, nullable=False, default=dict)
    stats = sa.Column(sa.JSON, nullable=False, default=dict)


class TaskEvent(Base):
    """One atom transition of a migration's flow."""
    __tablename__ = 'ferryman_task_events'

    id = sa.Column(sa.Integer, primary_key=True, autoincrement=True)
    migration_id = sa.Column(sa.String(36), nullable=False, index=True)
    atom = sa.Column(sa.String(255), nullable=False)
    state = sa.Column(sa.String(32), nullable=False)
    host = sa.Column(sa.String(255))
    started_at = sa.Column(sa.DateTime)
    ended_at = sa.Column(sa.DateTime)
    error = sa.Column(sa.Text)
    details = sa.Column(sa.JSON)


class RefusedRequest(Base):
    """A move request the conductor refused before any migration was recorded:
    kept so a client that was answered 202 (Nova's API from 2.34) can still see
    that, and why, it was refused (os-instance-actions, result Error)."""
    __tablename__ = 'ferryman_refused_requests'

    id = sa.Column(sa.Integer, primary_key=True, autoincrement=True)
    request_id = sa.Column(sa.String(64), nullable=False, index=True)
    instance_uuid = sa.Column(sa.String(36), nullable=False, index=True)
    action = sa.Column(sa.String(32), nullable=False)
    # The destination asked for, if any.
    host = sa.Column(sa.String(255))
    error = sa.Column(sa.Text, nullable=False)
    created_at = sa.Column(sa.DateTime, nullable=False)
