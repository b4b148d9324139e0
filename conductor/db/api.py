"""The conductor's database: hosts, guests, allocations, migrations, task history.

Every function returns plain dicts (JSON types), never ORM objects, so results can go
straight into RPC replies and TaskFlow storage. Each change is one transaction.
"""

import collections
import datetime
import os
import threading

import alembic.command
import alembic.config
from oslo_log import log as logging
import sqlalchemy as sa
from sqlalchemy import orm

from conductor import placement
from conductor.db import models
from ferryman.common import exception
from ferryman.common import schemas
from flows import states

LOG = logging.getLogger(__name__)

RESOURCES = ('vcpus', 'memory_mb', 'disk_gb')
_INSERT_TASK_EVENT = sa.insert(models.TaskEvent.__table__)
_GET_MIGRATION = sa.select(models.Migration.__table__).where(
    models.Migration.__table__.c.id == sa.bindparam('id'))
DRAIN_RUNNING = 'running'
DRAIN_DONE = 'done'


def misfit_error(misfit, host, instance):
    """InsufficientCapacity for a request that does not fit, naming the filter."""
    return exception.InsufficientCapacity(
        message='Host %r lacks capacity for instance %r: %s (refused by filter '
                '%s)' % (host, instance, misfit.reason, misfit.kind),
        host=host, instance=instance, resource=misfit.resource,
        requested=misfit.requested, free=misfit.free)


# pg_advisory_xact_lock key of drain starts (any 64-bit number nobody else uses).
DRAIN_SLOT_LOCK = 0x66657272794472


class NoDrainSlot(Exception):
    """A drain may not start a migration now (a limit is reached, or the drain
    is no longer this drainer's); the guest waits for a later pass."""


def _later(now, seconds):
    return None if seconds is None else now + datetime.timedelta(seconds=seconds)


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


def _row_dict(row):
    """A Core row as to_dict gives its ORM object."""
    return {key: value.isoformat() + 'Z' if isinstance(value, datetime.datetime)
            else value for key, value in row._mapping.items()}


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
        # Drain starts: the advisory lock (PostgreSQL) and this one (sqlite).
        self._slot_lock = threading.Lock()
        # Guest uuid -> when its host's reports first lacked it (this process).
        self._missing_since = {}

    def upgrade(self):
        cfg = alembic.config.Config()
        cfg.set_main_option('script_location',
                            os.path.join(os.path.dirname(__file__), 'migrations'))
        with self.engine.begin() as connection:
            cfg.attributes['connection'] = connection
            alembic.command.upgrade(cfg, 'head')

    # Hosts. ------------------------------------------------------------------------
    def report_host(self, name, info, guests, vanish_after=None):
        """Record what an agent reports (checked against its schema already):
        capacity, nested providers, its guests, and guests not known before
        (with their allocations).

        A report speaks for its own host only: it never moves a known guest (a
        report gathered before a switch-over could arrive after it; only
        migrations change an instance's host), nor rewrites one recorded on
        another host.
        """
        try:
            self._report_host(name, info, guests, vanish_after)
        except sa.exc.IntegrityError:
            # Two first reports raced (an agent's cast and another RPC worker, or
            # a refresh): the other one inserted the host or guest; apply this
            # report over what it stored.
            self._report_host(name, info, guests, vanish_after)

    def _report_host(self, name, info, guests, vanish_after):
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
            host.reserved = info.get('reserved') or {}
            host.allocation_ratios = info.get('allocation_ratios') or {}
            host.last_seen = now
            self._sync_providers(s, name, placement.providers_from_report(name, info))
            for guest in guests:
                inst = s.get(models.Instance, guest['uuid'])
                new = inst is None
                if not self._owns(s, name, guest, inst):
                    continue
                if new:
                    inst = models.Instance(uuid=guest['uuid'], host=name)
                    s.add(inst)
                    s.add(models.Allocation(consumer=guest['uuid'], host=name,
                                            **{r: guest[r] for r in RESOURCES}))
                for key in ('name', 'vcpus', 'memory_mb', 'disk_gb', 'storage',
                            'disks', 'volumes', 'sla_class', 'power_state'):
                    setattr(inst, key, guest[key])
                inst.numa_topology = guest.get('numa_topology') or None
                inst.pci_requests = guest.get('pci_requests') or []
                if new and (inst.numa_topology or inst.pci_requests):
                    s.flush()
                    self._place_found_guest(s, name, inst)
            if vanish_after is not None:
                self._forget_vanished(s, name, {g['uuid'] for g in guests},
                                      vanish_after)

    @staticmethod
    def _owns(s, host, guest, inst):
        """Whether ``host``'s report may describe the guest: one not known yet,
        or recorded on ``host``. A guest arriving in a migration the conductor
        knows is expected there and left to the migration; any other is logged
        and left as it is (the audit checks where it runs)."""
        if inst is None:
            if s.get(models.Migration, guest['uuid']) is None:
                return True
            LOG.warning('Host %s reports a guest %s, the id of a migration: '
                        'ignored', host, guest['uuid'])
            return False
        if inst.host == host:
            return True
        mig = inst.migration_id and s.get(models.Migration, inst.migration_id)
        if not (mig and mig.destination == host):
            LOG.warning('Host %s reports guest %s (%s), which is recorded on %s: '
                        'its record is left as it is', host, inst.uuid, inst.name,
                        inst.host)
        return False

    def _forget_vanished(self, s, host, reported, vanish_after):
        """Guests gone from their host (deleted outside Ferryman) stop holding
        resources there once every report for ``vanish_after`` seconds has lacked
        them. A guest in a migration is never forgotten, nor one whose last
        migration ended within that time: a report gathered before a switch-over
        can arrive after it."""
        now = utcnow()
        known = s.scalars(sa.select(models.Instance).where(
            models.Instance.host == host, models.Instance.migration_id.is_(None)))
        for inst in known:
            if inst.uuid in reported:
                self._missing_since.pop(inst.uuid, None)
                continue
            since = self._missing_since.setdefault(inst.uuid, now)
            last_move = s.scalar(sa.select(sa.func.max(models.Migration.updated_at))
                                 .where(models.Migration.instance_uuid == inst.uuid))
            if (now - since).total_seconds() < vanish_after or (
                    last_move is not None and
                    (now - last_move).total_seconds() < vanish_after):
                continue
            LOG.warning('Instance %s (%s) has not been on %s for %.0f s: forgetting '
                        'it and its allocations there', inst.uuid, inst.name, host,
                        (now - since).total_seconds())
            for table in (models.Allocation, models.NestedAllocation):
                s.execute(sa.delete(table).where(table.consumer == inst.uuid))
            s.delete(inst)
            self._missing_since.pop(inst.uuid, None)

    def _sync_providers(self, s, host, reported):
        known = {p.name: p for p in s.scalars(sa.select(models.Provider).where(
            models.Provider.host == host))}
        for values in reported:
            row = known.pop(values['name'], None)
            if row is None:
                s.add(models.Provider(host=host, **values))
            else:
                row.kind, row.inventory, row.traits = (
                    values['kind'], values['inventory'], values['traits'])
        for gone in known.values():
            s.delete(gone)

    def _place_found_guest(self, s, host, inst):
        """A guest found running: count it on the cells and devices it needs, where
        they fit (the agent knows no better than the host's own view here)."""
        host_row = to_dict(s.get(models.Host, host))
        try:
            plan = placement.fit_nested(host_row, self._providers(s, host)[host],
                                        inst.numa_topology, inst.pci_requests)
        except placement.Misfit as exc:
            LOG.warning('Guest %s on %s: its NUMA/PCI use cannot be counted: %s',
                        inst.uuid, host, exc.reason)
            return
        for provider, resources in plan:
            s.add(models.NestedAllocation(consumer=inst.uuid, host=host,
                                          provider=provider, resources=resources))

    def _usage(self, s, host):
        row = s.execute(sa.select(*[sa.func.coalesce(sa.func.sum(
            getattr(models.Allocation, r)), 0) for r in RESOURCES]).where(
            models.Allocation.host == host)).one()
        return dict(zip(RESOURCES, (int(v) for v in row)))

    def _providers(self, s, host=None, only=None):
        """Host -> its nested providers (dicts), each with what is used of it
        (of ``host``, or of the hosts in ``only``, when given)."""
        # Core rows, not ORM objects: the scheduler reads every host's providers
        # for every request.
        q = sa.select(models.Provider.__table__).order_by(models.Provider.name)
        uq = sa.select(models.NestedAllocation.provider,
                       models.NestedAllocation.resources)
        if host is not None:
            q = q.where(models.Provider.host == host)
            uq = uq.where(models.NestedAllocation.host == host)
        if only is not None:
            q = q.where(models.Provider.host.in_(only))
            uq = uq.where(models.NestedAllocation.host.in_(only))
        used = collections.defaultdict(collections.Counter)
        unreadable = collections.defaultdict(list)
        for provider, resources in s.execute(uq):
            if schemas.problems('resources', resources):
                unreadable[provider].append(schemas.shown(resources))
            else:
                used[provider].update(resources)
        out = collections.defaultdict(list)
        for p in s.execute(q):
            d = _row_dict(p)
            d['used'] = dict(used[p.name])
            d['problems'] = ['provider %s: %s' % (p.name, text) for text in
                             schemas.problems('provider', d)] + [
                'provider %s: an allocation of %s on it cannot be interpreted' % (
                    p.name, r) for r in unreadable[p.name]]
            out[p.host].append(d)
        return out

    def _host_dicts(self, s, hosts, down_after, one=None, only=None):
        """Hosts (rows of their table) as dicts with their usage, nested
        providers and outbound migrations: a few grouped queries whatever the
        number of hosts (those named in ``only``, or ``one``, when given)."""
        if one is not None:
            only = [one]
        usage_q = sa.select(models.Allocation.host, *[sa.func.coalesce(
            sa.func.sum(getattr(models.Allocation, r)), 0) for r in RESOURCES]
        ).group_by(models.Allocation.host)
        out_q = sa.select(models.Migration.source, sa.func.count()).where(
            models.Migration.status.in_(states.ACTIVE)).group_by(
            models.Migration.source)
        if only is not None:
            usage_q = usage_q.where(models.Allocation.host.in_(only))
            out_q = out_q.where(models.Migration.source.in_(only))
        usage = {row[0]: dict(zip(RESOURCES, (int(v) for v in row[1:])))
                 for row in s.execute(usage_q)}
        outbound = dict(s.execute(out_q).all())
        providers = self._providers(s, only=only)
        now = utcnow()
        result = []
        for host in hosts:
            out = _row_dict(host)
            out['used'] = usage.get(host.name, dict.fromkeys(RESOURCES, 0))
            out['up'] = (now - host.last_seen).total_seconds() <= down_after
            out['migrations_out'] = outbound.get(host.name, 0)
            out['providers'] = providers.get(host.name, [])
            # A row nothing can interpret (written by hand, or before reports
            # were checked) is listed with its problems, its capacity none: the
            # scheduler's record filter refuses it, the audit reports it.
            out['problems'] = schemas.problems('host', out) + [
                text for p in out['providers'] for text in p['problems']]
            out['capacity'] = {r: 0 if out['problems'] else
                               placement.capacity(out, r) for r in RESOURCES}
            result.append(out)
        return result

    def get_host(self, name, down_after=60):
        with self.session() as s:
            host = s.execute(sa.select(models.Host.__table__).where(
                models.Host.name == name)).first()
            if host is None:
                raise exception.HostNotFound(host=name)
            return self._host_dicts(s, [host], down_after, one=name)[0]

    def get_hosts(self, names, down_after=60):
        """Host name -> the host as get_host gives it, for those of ``names``
        that exist, read together (one set of grouped queries)."""
        with self.session() as s:
            rows = s.execute(sa.select(models.Host.__table__).where(
                models.Host.name.in_(names))).all()
            return {h['name']: h for h in self._host_dicts(
                s, rows, down_after, only=[r.name for r in rows])}

    def host_facts(self, *names):
        """Host name -> its own row (features, paths, capacity as reported),
        without the usage, providers and migrations get_host adds: one query,
        for readers that need only what the agent reported."""
        with self.session() as s:
            rows = {h.name: to_dict(h) for h in s.scalars(
                sa.select(models.Host).where(models.Host.name.in_(names)))}
        for name in names:
            if name not in rows:
                raise exception.HostNotFound(host=name)
        return rows

    def list_hosts(self, down_after=60):
        with self.session() as s:
            hosts = s.execute(sa.select(models.Host.__table__).order_by(
                models.Host.name)).all()
            return self._host_dicts(s, hosts, down_after)

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

    def describe_instances(self, host=None, instance=None):
        """Instances as list_instances gives them, each with its newest
        migration (``last_migration``, None if it never moved) and when its host
        last reported (``reported_at``): three queries whatever their number.
        ``instance``: only that one (a uuid), InstanceNotFound if unknown."""
        with self.session() as s:
            q = sa.select(models.Instance).order_by(models.Instance.name)
            if host is not None:
                q = q.where(models.Instance.host == host)
            if instance is not None:
                q = q.where(models.Instance.uuid == instance)
            found = [to_dict(i) for i in s.scalars(q)]
            if instance is not None and not found:
                raise exception.InstanceNotFound(instance=instance)
            uuids = [i['uuid'] for i in found]
            newest = sa.select(
                models.Migration.instance_uuid,
                sa.func.max(models.Migration.created_at).label('created_at')
            ).group_by(models.Migration.instance_uuid)
            if instance is not None or host is not None:
                newest = newest.where(models.Migration.instance_uuid.in_(uuids))
            newest = newest.subquery()
            last = {m.instance_uuid: to_dict(m) for m in s.scalars(
                sa.select(models.Migration).join(newest, sa.and_(
                    models.Migration.instance_uuid == newest.c.instance_uuid,
                    models.Migration.created_at == newest.c.created_at)))}
            seen = dict(s.execute(sa.select(models.Host.name, models.Host.last_seen)
                                  ).all())
        for inst in found:
            inst['last_migration'] = last.get(inst['uuid'])
            when = seen.get(inst['host'])
            inst['reported_at'] = when.isoformat() + 'Z' if when else None
        return found

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
            mig = self._add_migration(s, values, now)
        return to_dict(mig)

    @staticmethod
    def _add_migration(s, values, now):
        """Lock the guest to a new migration in ``s``; refused if it has one."""
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
                               stats={}, last_known_host=values['source'], **values)
        s.add(mig)
        return mig

    def get_migration(self, migration_id):
        # Flows read their migration several times per step: a prebuilt Core
        # SELECT costs a fraction of an ORM session's get.
        with self.engine.connect() as conn:
            row = conn.execute(_GET_MIGRATION, {'id': migration_id}).first()
        if row is None:
            raise exception.MigrationNotFound(migration=migration_id)
        return _row_dict(row)

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
    def claim(self, migration_id, destination=None, force=False):
        """One transaction: claim ``destination`` (default: the migration's) for
        the guest and move the guest's source allocation to the migration, which
        holds it until the end; refuse when the destination lacks room.

        The destination becomes the migration's (an attempt on another candidate
        moves it). ``force`` copies the source allocation as it is, unchecked; a
        source allocation on nested providers cannot be copied and is refused.
        """
        with self._claim_lock, self.session.begin() as s:
            mig = s.get(models.Migration, migration_id)
            inst = s.get(models.Instance, mig.instance_uuid)
            dest = destination or mig.destination
            # The row lock serialises claims on one host across conductors.
            host = s.get(models.Host, dest, with_for_update=True)
            if host is None:
                raise exception.HostNotFound(host=dest)
            if mig.destination != dest:
                mig.destination = dest
                mig.updated_at = utcnow()
            if s.scalars(sa.select(models.Allocation).where(
                    models.Allocation.consumer == inst.uuid,
                    models.Allocation.host == dest)).first():
                return  # claimed already (a task run again after a crash)
            held = self._held(s, inst.uuid, mig.source)
            if force:
                spans = 1 + len(held['nested'])
                if spans > 1:
                    raise exception.CannotForceNested(
                        instance=inst.uuid, host=dest, count=spans,
                        providers=', '.join([mig.source] + sorted(
                            n.provider for n in held['nested'])))
                root = held['root']
                wanted = ({r: getattr(root, r) for r in RESOURCES} if root is not None
                          else self.requested(inst, mig.subtype))
                plan = []
            else:
                wanted = self.requested(inst, mig.subtype)
                host_dict = to_dict(host)
                try:
                    placement.check_root(host_dict, self._usage(s, dest), wanted)
                    plan = placement.fit_nested(
                        host_dict, self._providers(s, dest)[dest],
                        inst.numa_topology, inst.pci_requests)
                except placement.Misfit as exc:
                    raise misfit_error(exc, dest, inst.uuid)
            for row in [held['root']] + held['nested']:
                if row is not None:
                    row.consumer = mig.id
            s.add(models.Allocation(consumer=inst.uuid, host=dest, **wanted))
            for provider, resources in plan:
                s.add(models.NestedAllocation(consumer=inst.uuid, host=dest,
                                              provider=provider,
                                              resources=resources))

    def _held(self, s, consumer, source):
        """The guest's allocation rows on its source (root and nested), unless the
        migration holds them already."""
        root = s.scalars(sa.select(models.Allocation).where(
            models.Allocation.consumer == consumer,
            models.Allocation.host == source)).first()
        nested = s.scalars(sa.select(models.NestedAllocation).where(
            models.NestedAllocation.consumer == consumer,
            models.NestedAllocation.host == source).order_by(
            models.NestedAllocation.provider)).all()
        return {'root': root, 'nested': list(nested)}

    def allocation_providers(self, consumer, host):
        """Providers the consumer's allocation on a host spans: the host itself
        and every nested provider it uses there."""
        with self.session() as s:
            held = self._held(s, consumer, host)
            return ([host] if held['root'] is not None else []) + [
                n.provider for n in held['nested']]

    @staticmethod
    def requested(inst, subtype):
        """What the guest needs on a destination: local disk only when copied."""
        inst = inst if isinstance(inst, dict) else to_dict(inst)
        wanted = {r: inst[r] for r in RESOURCES}
        if subtype != states.BLOCK:
            wanted['disk_gb'] = 0
        return wanted

    def unclaim(self, migration_id, destination=None):
        """Undo claim() in one transaction: the guest's claim on ``destination``
        (default: the migration's) goes, what the migration held returns to the
        guest."""
        with self._claim_lock, self.session.begin() as s:
            mig = s.get(models.Migration, migration_id)
            dest = destination or mig.destination
            for table in (models.Allocation, models.NestedAllocation):
                s.execute(sa.delete(table).where(
                    table.consumer == mig.instance_uuid, table.host == dest))
                s.execute(sa.update(table).where(table.consumer == mig.id).values(
                    consumer=mig.instance_uuid))

    def drop_source_allocation(self, migration_id):
        """The migration completed: what it held on the source goes, at once."""
        with self.session.begin() as s:
            for table in (models.Allocation, models.NestedAllocation):
                s.execute(sa.delete(table).where(table.consumer == migration_id))

    def nested_allocations(self, consumer=None, host=None):
        with self.session() as s:
            q = sa.select(models.NestedAllocation).order_by(
                models.NestedAllocation.provider)
            if consumer is not None:
                q = q.where(models.NestedAllocation.consumer == consumer)
            if host is not None:
                q = q.where(models.NestedAllocation.host == host)
            return [to_dict(a) for a in s.scalars(q)]

    # Drains. ------------------------------------------------------------------------
    def create_drain(self, drain_id, host, max_parallel, guests, owner=None,
                     lease=None):
        """Record a drain of ``host`` and disable the host for new placements, in
        one transaction; refuse while another drain of it runs. ``owner`` holds
        it for ``lease`` seconds (the drainer of the conductor asked)."""
        now = utcnow()
        with self.session.begin() as s:
            row = s.get(models.Host, host, with_for_update=True)
            if row is None:
                raise exception.HostNotFound(host=host)
            running = s.scalars(sa.select(models.Drain).where(
                models.Drain.host == host,
                models.Drain.status == DRAIN_RUNNING)).first()
            if running is not None:
                raise exception.DrainInProgress(host=host, drain=running.id)
            row.enabled = False
            row.disabled_reason = 'draining (drain %s)' % drain_id
            drain = models.Drain(id=drain_id, host=host, status=DRAIN_RUNNING,
                                 max_parallel=max_parallel, guests=guests,
                                 created_at=now, updated_at=now, owner=owner,
                                 lease_expires_at=_later(now, lease))
            s.add(drain)
        return to_dict(drain)

    def update_drain(self, drain_id, owner=None, **values):
        """Change a drain; with ``owner``, only while that drainer still holds
        it (None, and nothing changed, once another one took it over)."""
        with self.session.begin() as s:
            drain = s.get(models.Drain, drain_id, with_for_update=True)
            if owner is not None and drain.owner != owner:
                return None
            for key, value in values.items():
                setattr(drain, key, value)
            drain.updated_at = utcnow()
            return to_dict(drain)

    def get_drain(self, drain_id):
        with self.session() as s:
            drain = s.get(models.Drain, drain_id)
            if drain is None:
                raise exception.DrainNotFound(drain=drain_id)
            return to_dict(drain)

    def list_drains(self, host=None, status=None):
        with self.session() as s:
            q = sa.select(models.Drain).order_by(models.Drain.created_at)
            if host is not None:
                q = q.where(models.Drain.host == host)
            if status is not None:
                q = q.where(models.Drain.status == status)
            return [to_dict(d) for d in s.scalars(q)]

    def lease_drains(self, owner, lease):
        """The running drains ``owner`` holds now, each for ``lease`` more
        seconds: its own, unowned ones and those whose owner's lease ran out (a
        dead conductor's). Rows another conductor is leasing at this moment are
        skipped, not waited for."""
        now = utcnow()
        with self.session.begin() as s:
            rows = s.scalars(sa.select(models.Drain).where(
                models.Drain.status == DRAIN_RUNNING,
                sa.or_(models.Drain.owner.is_(None), models.Drain.owner == owner,
                       models.Drain.lease_expires_at < now)).order_by(
                models.Drain.created_at).with_for_update(skip_locked=True)).all()
            for row in rows:
                if row.owner not in (None, owner):
                    LOG.warning('Drain %s of %s: taking it over from %s, whose '
                                'lease ran out at %s', row.id, row.host, row.owner,
                                row.lease_expires_at)
                row.owner = owner
                row.lease_expires_at = _later(now, lease)
            return [to_dict(row) for row in rows]

    def release_drains(self, owner):
        """``owner`` stops: its drains are free for any drainer at once."""
        with self.session.begin() as s:
            return s.execute(sa.update(models.Drain).where(
                models.Drain.owner == owner).values(
                owner=None, lease_expires_at=None)).rowcount

    def create_drain_migration(self, values, drain_id, owner, max_per_host,
                               max_cluster, lease=None):
        """create_migration() for a drain, only while there is room: in the same
        transaction, under one lock for every conductor, the migrations in flight
        leaving the source and in the whole cluster are counted and must stay
        below the limits, and the drain must still be ``owner``'s. Raise
        NoDrainSlot (nothing recorded) otherwise.

        With ``lease`` (seconds), a lease that ran out while no other drainer
        took the drain is renewed rather than refused: a pass slower than the
        lease (a loaded conductor, many drains) keeps its drains."""
        now = utcnow()
        with self._slot_lock, self.session.begin() as s:
            if self.engine.dialect.name == 'postgresql':
                # Serialises the count and the insert across conductors; held
                # to the end of the transaction.
                s.execute(sa.text('SELECT pg_advisory_xact_lock(:key)'),
                          {'key': DRAIN_SLOT_LOCK})
            # Locked: a drainer taking it over waits for (or skips) this row.
            drain = s.get(models.Drain, drain_id, with_for_update=True)
            lapsed = drain is not None and (drain.lease_expires_at is None or
                                            drain.lease_expires_at < now)
            if drain is None or drain.owner != owner or (lapsed and not lease):
                raise NoDrainSlot('drain %s is no longer held by %s' % (
                    drain_id, owner))
            if lapsed:
                LOG.info('Drain %s of %s: lease ran out mid-pass and nobody took '
                         'it over; renewed', drain_id, drain.host)
                drain.lease_expires_at = _later(now, lease)
            by_source = dict(s.execute(sa.select(
                models.Migration.source, sa.func.count()).where(
                models.Migration.status.in_(states.ACTIVE)).group_by(
                models.Migration.source)).all())
            leaving = by_source.get(values['source'], 0)
            if leaving >= max_per_host:
                raise NoDrainSlot('%d migrations leave %s, at most %d' % (
                    leaving, values['source'], max_per_host))
            total = sum(by_source.values())
            if total >= max_cluster:
                raise NoDrainSlot('%d migrations in flight in the cluster, at '
                                  'most %d' % (total, max_cluster))
            mig = self._add_migration(s, values, now)
        return to_dict(mig)

    def get_migrations(self, ids):
        with self.session() as s:
            return [to_dict(m) for m in s.scalars(sa.select(models.Migration).where(
                models.Migration.id.in_(ids)))]

    def active_migrations_by_source(self):
        """Source host -> migrations leaving it that are not finished yet."""
        with self.session() as s:
            return dict(s.execute(sa.select(
                models.Migration.source, sa.func.count()).where(
                models.Migration.status.in_(states.ACTIVE)).group_by(
                models.Migration.source)).all())

    def count_active_migrations(self, source=None):
        with self.session() as s:
            q = sa.select(sa.func.count()).where(
                models.Migration.status.in_(states.ACTIVE))
            if source is not None:
                q = q.where(models.Migration.source == source)
            return s.scalar(q)

    # Task history. -----------------------------------------------------------------
    def add_task_event(self, migration_id, atom, state, host=None, started_at=None,
                       ended_at=None, error=None, details=None):
        # One INSERT, no ORM unit of work, of a statement built once: the history
        # writes on every transition.
        with self.engine.begin() as conn:
            conn.execute(_INSERT_TASK_EVENT, dict(
                migration_id=migration_id, atom=atom, state=state, host=host,
                started_at=started_at, ended_at=ended_at, error=error,
                details=details))

    def get_task_history(self, migration_id):
        with self.session() as s:
            q = sa.select(models.TaskEvent).where(
                models.TaskEvent.migration_id == migration_id).order_by(
                models.TaskEvent.id)
            return [to_dict(e) for e in s.scalars(q)]
