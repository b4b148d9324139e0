"""The conductor's database: hosts, guests, allocations, migrations, task history.

Every function returns plain dicts (JSON types), never ORM objects, so results can go
straight into RPC replies and TaskFlow storage. Each change is one transaction.
"""

import datetime
import os
import threading

import alembic.command
import alembic.config
import sqlalchemy as sa
from sqlalchemy import orm

from conductor.db import models
from ferryman import exception
from flows import states

RESOURCES = ('vcpus', 'memory_mb', 'disk_gb')


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def to_dict(row):
    out = {}
    for column in row.__table__.columns:
        value = getattr(row, column.name)
        if isinstance(value, datetime.datetime):
            value = value.isoformat() + 'Z'
        out[column.name] = value
    return out


def _sqlite_pragmas(dbapi_conn, _record):
    cursor = dbapi_conn.cursor()
    # WAL lets the engines' readers go on while one writer commits.
    cursor.execute('PRAGMA journal_mode=WAL')
    cursor.execute('PRAGMA synchronous=NORMAL')
    cursor.close()


def create_engine(url):
    kwargs = {}
    if url.startswith('sqlite'):
        kwargs['connect_args'] = {'timeout': 30, 'check_same_thread': False}
        path = sa.engine.make_url(url).database
        if path and path != ':memory:':
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    engine = sa.create_engine(url, **kwargs)
    if url.startswith('sqlite'):
        sa.event.listen(engine, 'connect', _sqlite_pragmas)
    return engine


class Database(object):

    def __init__(self, url):
        self.url = url
        self.engine = create_engine(url)
        self.session = orm.sessionmaker(self.engine, expire_on_commit=False)
        # Claims are check-then-write; the row lock (PostgreSQL) and this lock
        # (sqlite, one conductor process) make two racing claims serial.
        self._claim_lock = threading.Lock()

    def upgrade(self):
        cfg = alembic.config.Config()
        cfg.set_main_option('script_location',
                            os.path.join(os.path.dirname(__file__), 'migrations'))
        with self.engine.begin() as connection:
            cfg.attributes['connection'] = connection
            alembic.command.upgrade(cfg, 'head')

    # Hosts. ------------------------------------------------------------------------
    def report_host(self, name, info, guests):
        """Record what an agent reports: capacity, and guests not known before.

        Reports never move a known guest: a report gathered before a switch-over
        could arrive after it; only migrations change an instance's host.
        """
        now = utcnow()
        with self.session.begin() as s:
            host = s.get(models.Host, name)
            if host is None:
                host = models.Host(name=name, enabled=True)
                s.add(host)
            for key in ('hypervisor_type', 'cpu_model', 'cpu_features', 'vcpus',
                        'memory_mb', 'disk_gb', 'instances_path'):
                setattr(host, key, info[key])
            host.features = info.get('features', {})
            host.last_seen = now
            for guest in guests:
                inst = s.get(models.Instance, guest['uuid'])
                if inst is None:
                    inst = models.Instance(uuid=guest['uuid'], host=name)
                    s.add(inst)
                    s.add(models.Allocation(consumer=guest['uuid'], host=name,
                                            **{r: guest[r] for r in RESOURCES}))
                for key in ('name', 'vcpus', 'memory_mb', 'disk_gb', 'storage',
                            'disks', 'volumes', 'sla_class', 'power_state'):
                    setattr(inst, key, guest[key])

    def _usage(self, s, host):
        row = s.execute(sa.select(*[sa.func.coalesce(sa.func.sum(
            getattr(models.Allocation, r)), 0) for r in RESOURCES]).where(
            models.Allocation.host == host)).one()
        return dict(zip(RESOURCES, (int(v) for v in row)))

    def _host_dict(self, s, host, down_after):
        out = to_dict(host)
        out['used'] = self._usage(s, host.name)
        age = (utcnow() - host.last_seen).total_seconds()
        out['up'] = age <= down_after
        out['migrations_out'] = s.scalar(sa.select(sa.func.count()).where(
            models.Migration.source == host.name,
            models.Migration.status.in_(states.ACTIVE)))
        return out

    def get_host(self, name, down_after=60):
        with self.session() as s:
            host = s.get(models.Host, name)
            if host is None:
                raise exception.HostNotFound(host=name)
            return self._host_dict(s, host, down_after)

    def list_hosts(self, down_after=60):
        with self.session() as s:
            hosts = s.scalars(sa.select(models.Host).order_by(models.Host.name))
            return [self._host_dict(s, h, down_after) for h in hosts]

    def set_host_enabled(self, name, enabled, reason=None):
        with self.session.begin() as s:
            host = s.get(models.Host, name)
            if host is None:
                raise exception.HostNotFound(host=name)
            host.enabled = enabled
            host.disabled_reason = None if enabled else reason

    # Instances. ----------------------------------------------------------------------
    def get_instance(self, ref):
        """By uuid, or by name when the name is unique."""
        with self.session() as s:
            inst = s.get(models.Instance, ref)
            if inst is None:
                found = s.scalars(sa.select(models.Instance).where(
                    models.Instance.name == ref)).all()
                if len(found) != 1:
                    raise exception.InstanceNotFound(instance=ref)
                inst = found[0]
            return to_dict(inst)

    def list_instances(self, host=None):
        with self.session() as s:
            q = sa.select(models.Instance).order_by(models.Instance.name)
            if host is not None:
                q = q.where(models.Instance.host == host)
            return [to_dict(i) for i in s.scalars(q)]

    def allocations(self, consumer=None, host=None):
        with self.session() as s:
            q = sa.select(models.Allocation).order_by(models.Allocation.id)
            if consumer is not None:
                q = q.where(models.Allocation.consumer == consumer)
            if host is not None:
                q = q.where(models.Allocation.host == host)
            return [to_dict(a) for a in s.scalars(q)]

    # Migrations. -------------------------------------------------------------------
    def create_migration(self, values):
        """Record an accepted migration and lock its guest to it, atomically."""
        now = utcnow()
        with self.session.begin() as s:
            locked = s.execute(sa.update(models.Instance).where(
                models.Instance.uuid == values['instance_uuid'],
                models.Instance.migration_id.is_(None)).values(
                migration_id=values['id'])).rowcount
            if not locked:
                holder = s.get(models.Instance, values['instance_uuid']).migration_id
                raise exception.InstanceAlreadyMigrating(
                    instance=values['instance_uuid'], migration=holder)
            mig = models.Migration(status=states.ACCEPTED, created_at=now,
                                   updated_at=now, rollback_errors=[], progress={},
                                   stats={}, last_known_host=values['source'],
                                   **values)
            s.add(mig)
        return to_dict(mig)

    def get_migration(self, migration_id):
        with self.session() as s:
            mig = s.get(models.Migration, migration_id)
            if mig is None:
                raise exception.MigrationNotFound(migration=migration_id)
            return to_dict(mig)

    def list_migrations(self, instance=None, status=None, host=None):
        with self.session() as s:
            q = sa.select(models.Migration).order_by(models.Migration.created_at)
            if instance is not None:
                q = q.where(models.Migration.instance_uuid == instance)
            if status is not None:
                q = q.where(models.Migration.status == status)
            if host is not None:
                q = q.where(sa.or_(models.Migration.source == host,
                                   models.Migration.destination == host))
            return [to_dict(m) for m in s.scalars(q)]

    def update_migration(self, migration_id, **values):
        with self.session.begin() as s:
            mig = s.get(models.Migration, migration_id)
            for key, value in values.items():
                setattr(mig, key, value)
            mig.updated_at = utcnow()
            return to_dict(mig)

    def add_rollback_error(self, migration_id, text):
        with self.session.begin() as s:
            mig = s.get(models.Migration, migration_id)
            mig.rollback_errors = list(mig.rollback_errors) + [text]

    def advance(self, migration_id, event, **values):
        """Apply a state machine event (and other values) in one transaction."""
        with self.session.begin() as s:
            mig = s.get(models.Migration, migration_id, with_for_update=True)
            new = states.advance(mig.subtype, mig.status, event)
            mig.status = new
            for key, value in values.items():
                setattr(mig, key, value)
            mig.updated_at = utcnow()
            if new in states.TERMINAL:
                s.execute(sa.update(models.Instance).where(
                    models.Instance.uuid == mig.instance_uuid,
                    models.Instance.migration_id == mig.id).values(migration_id=None))
            return to_dict(mig)

    def _moved(self, s, mig, now):
        mig.switchover_at = mig.switchover_at or now
        mig.last_known_host = mig.destination
        s.execute(sa.update(models.Instance).where(
            models.Instance.uuid == mig.instance_uuid).values(host=mig.destination))

    def enter_post_copy(self, migration_id):
        """The guest now runs on the destination, its memory still arriving."""
        now = utcnow()
        with self.session.begin() as s:
            mig = s.get(models.Migration, migration_id, with_for_update=True)
            mig.status = states.advance(mig.subtype, mig.status, 'post_copy')
            mig.updated_at = now
            self._moved(s, mig, now)
            return to_dict(mig)

    def switch_over(self, migration_id, stats):
        """The hypervisor's job completed: the guest runs on the destination."""
        now = utcnow()
        with self.session.begin() as s:
            mig = s.get(models.Migration, migration_id, with_for_update=True)
            mig.status = states.advance(mig.subtype, mig.status, 'switch_over')
            mig.updated_at = now
            mig.stats = stats
            self._moved(s, mig, now)
            return to_dict(mig)

    # Allocations. -----------------------------------------------------------------
    def claim(self, migration_id):
        """Move the guest's source allocation to the migration and claim the
        destination for the guest; refuse when the destination lacks room."""
        with self._claim_lock, self.session.begin() as s:
            mig = s.get(models.Migration, migration_id)
            inst = s.get(models.Instance, mig.instance_uuid)
            host = s.get(models.Host, mig.destination, with_for_update=True)
            if s.scalars(sa.select(models.Allocation).where(
                    models.Allocation.consumer == inst.uuid,
                    models.Allocation.host == mig.destination)).first():
                return  # claimed already (a task run again after a crash)
            wanted = self.requested(inst, mig.subtype)
            used = self._usage(s, host.name)
            for r in RESOURCES:
                free = getattr(host, r) - used[r]
                if wanted[r] > free:
                    raise exception.InsufficientCapacity(
                        host=host.name, instance=inst.uuid, resource=r,
                        requested=wanted[r], free=free)
            s.execute(sa.update(models.Allocation).where(
                models.Allocation.consumer == inst.uuid,
                models.Allocation.host == mig.source).values(consumer=mig.id))
            s.add(models.Allocation(consumer=inst.uuid, host=mig.destination,
                                    **wanted))

    @staticmethod
    def requested(inst, subtype):
        """What the guest needs on a destination: local disk only when copied."""
        inst = inst if isinstance(inst, dict) else to_dict(inst)
        wanted = {r: inst[r] for r in RESOURCES}
        if subtype != states.BLOCK:
            wanted['disk_gb'] = 0
        return wanted

    def unclaim(self, migration_id):
        """Undo claim(): the destination claim goes, the source returns to the guest."""
        with self._claim_lock, self.session.begin() as s:
            mig = s.get(models.Migration, migration_id)
            s.execute(sa.delete(models.Allocation).where(
                models.Allocation.consumer == mig.instance_uuid,
                models.Allocation.host == mig.destination))
            s.execute(sa.update(models.Allocation).where(
                models.Allocation.consumer == mig.id).values(
                consumer=mig.instance_uuid))

    def drop_source_allocation(self, migration_id):
        with self.session.begin() as s:
            s.execute(sa.delete(models.Allocation).where(
                models.Allocation.consumer == migration_id))

    # Task history. -----------------------------------------------------------------
    def add_task_event(self, migration_id, atom, state, host=None, started_at=None,
                       ended_at=None, error=None, details=None):
        with self.session.begin() as s:
            s.add(models.TaskEvent(migration_id=migration_id, atom=atom, state=state,
                                   host=host, started_at=started_at,
                                   ended_at=ended_at, error=error, details=details))

    def get_task_history(self, migration_id):
        with self.session() as s:
            q = sa.select(models.TaskEvent).where(
                models.TaskEvent.migration_id == migration_id).order_by(
                models.TaskEvent.id)
            return [to_dict(e) for e in s.scalars(q)]
