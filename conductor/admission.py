"""Admission: whether a live migration may start, and starting it.

Everything that can refuse a request runs before anything is recorded, so a
refused request changes nothing: the request's arguments, the guest, its source
host, the destination (named, or the scheduler's candidates) and both agents'
storage probe. Then the migration is recorded and its flow handed to the runner.
Operators' requests (the manager's live_migrate) and drains both come here.
"""

import datetime
import uuid as uuidlib

from oslo_log import log as logging

from conductor import policy
from conductor import scheduler
from conductor.db import rows
from ferryman.common import exception
from ferryman.common import schemas
from ferryman.common import vocabulary
from flows import selection

LOG = logging.getLogger(__name__)

_SOURCE_INFO = ('hypervisor_type', 'cpu_model', 'cpu_features')
_GUEST_INFO = ('uuid', 'name', 'vcpus', 'memory_mb', 'disk_gb', 'storage', 'disks',
               'volumes', 'sla_class')
# An evacuation also hands on what a rebuild needs: the base image.
_EVACUATED_INFO = _GUEST_INFO + ('image',)


def _str(name, value, optional=False):
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > 255:
        raise exception.InvalidArgument(name=name, value=value,
                                        reason='expected a non-empty string')
    return value


def _bool(name, value):
    if not isinstance(value, bool):
        raise exception.InvalidArgument(name=name, value=value,
                                        reason='expected true or false')
    return value


class Admission(object):

    def __init__(self, conf, db, compute, runner):
        self.conf = conf
        self.db = db
        self.compute = compute
        self.runner = runner

    @property
    def _down_after(self):
        return self.conf.conductor.host_down_after

    def admit(self, instance, host=None, block_migration='auto', force=False,
              importance='medium', drain_slot=None):
        """Check the request, record the migration, start its flow; the
        migration, at once.

        ``drain_slot`` (a drain's) records it only within the drain limits
        (Database.create_drain_migration).
        """
        # Drains come here too, not through live_migrate's schema.
        _str('instance', instance)
        _str('host', host, optional=True)
        _bool('force', force)
        policy.validate('importance', importance, vocabulary.IMPORTANCE)
        requested = selection.normalize_block_migration(block_migration)
        inst = self._guest(instance)
        # Source and destination read together: the request's checks are part
        # of every migration's cost.
        hosts = self.db.hosts.get_many([inst['host']] + ([host] if host else []),
                                       self._down_after)
        source = self._source(inst, hosts)
        if force and host is None:
            raise exception.InvalidArgument(
                name='force', value=force,
                reason='forcing needs a host: name one, or let the scheduler pick')
        if host is not None:
            subtype, candidates = self._check_destination(
                inst, source, hosts.get(host), host, requested, force)
        else:
            subtype, candidates = self._schedule(inst, source, requested)
        values = {
            'id': str(uuidlib.uuid4()), 'instance_uuid': inst['uuid'],
            'source': source['name'], 'destination': candidates[0],
            'subtype': subtype, 'block_migration': requested, 'force': force,
            'importance': importance}
        migration = self.db.migrations.create(values) if drain_slot is None else \
            self.db.drains.create_migration(values, **drain_slot)
        self._start(migration, {
            'migration_id': migration['id'],
            'instance': {k: inst[k] for k in _GUEST_INFO},
            'source': source['name'], 'destination': candidates[0],
            'candidates': candidates,
            'subtype': subtype,
            'source_info': {k: source[k] for k in _SOURCE_INFO},
        })
        LOG.info('Migration %s of %s: %s -> %s (%s)', migration['id'],
                 inst['name'], source['name'], ', '.join(candidates), subtype)
        return migration

    def _guest(self, instance):
        """The guest, if it can move now."""
        inst = self.db.instances.get(instance)
        unreadable = schemas.problems('instance', inst)
        if unreadable:
            raise exception.RecordUnreadable(what='instance %s' % inst['uuid'],
                                             problems='; '.join(unreadable))
        if inst['power_state'] != 'running':
            raise exception.InstanceNotRunning(instance=instance,
                                               power_state=inst['power_state'])
        if inst['migration_id']:
            raise exception.InstanceAlreadyMigrating(instance=instance,
                                                     migration=inst['migration_id'])
        return inst

    def _source(self, inst, hosts):
        """The guest's host, if it can send it now."""
        source = hosts.get(inst['host'])
        if source is None:
            raise exception.HostNotFound(host=inst['host'])
        if source['problems']:
            raise exception.RecordUnreadable(what='host %s' % source['name'],
                                             problems='; '.join(source['problems']))
        if not source['up']:
            raise exception.HostUnavailable(
                host=source['name'], reason='the source is down: %s' %
                scheduler.why_down(source))
        return source

    def _check_destination(self, inst, source, dest, name, requested, force):
        """(subtype, [name]) for the destination the request named, if it can
        take the guest (``force`` skips the scheduler's filters, not the probe)."""
        if dest is None:
            raise exception.HostNotFound(host=name)
        why = scheduler.refusal(inst, source, dest, force=force)
        if why is not None:
            raise why[1]
        if force:
            self._check_forceable(inst, dest)
        return self._probe(inst, source, dest, requested), [dest['name']]

    def _check_forceable(self, inst, dest):
        """A forced move copies the source allocation as it is: one that spans
        nested providers (NUMA cells, PCI devices) cannot be, and is refused
        before anything changes."""
        providers = self.db.allocations.providers(inst['uuid'], inst['host'])
        if len(providers) > 1:
            raise exception.CannotForceNested(
                instance=inst['uuid'], host=dest['name'], count=len(providers),
                providers=', '.join(providers))

    def _schedule(self, inst, source, requested):
        """(subtype, candidate host names best first): the first that passes the
        filters and both agents' checks, then the next ones of the same subtype,
        up to [conductor] max_destination_attempts, for the flow to fall back on."""
        hosts, refused = scheduler.candidates(
            inst, source, self.db.hosts.list(self._down_after))
        errors = []
        for i, dest in enumerate(hosts):
            try:
                subtype = self._probe(inst, source, dest, requested)
            except exception.FerrymanError as exc:
                errors.append('%s: %s' % (dest['name'], exc))
                continue
            rest = [h['name'] for h in hosts[i + 1:]
                    if scheduler.expected_subtype(inst, source, h) == subtype]
            limit = self.conf.conductor.max_destination_attempts
            return subtype, ([dest['name']] + rest)[:limit]
        reasons = ['%s refused by filter %s' % kv for kv in sorted(refused.items())]
        raise exception.NoValidHost(instance=inst['uuid'], reason='; '.join(
            reasons + errors) or 'no other hosts')

    def _probe(self, inst, source, dest, requested):
        """Ask both agents about the storage between them; decide the subtype.

        The probe file is removed whatever happens: a refused request leaves
        nothing behind.
        """
        token = uuidlib.uuid4().hex
        source_info = {k: source[k] for k in _SOURCE_INFO}
        guest = {k: inst[k] for k in ('uuid', 'vcpus', 'memory_mb', 'disk_gb')}
        try:
            self.compute.check_destination(dest['name'], guest, source_info, token)
            facts = self.compute.check_source(source['name'], inst['uuid'], token)
        finally:
            try:
                self.compute.remove_probe(dest['name'], token)
            except Exception:
                LOG.exception('Cannot remove probe %s on %s', token, dest['name'])
        return selection.choose_subtype(requested, facts, inst['uuid'],
                                        dest['name'])

    # Evacuation. --------------------------------------------------------------------
    def evacuate(self, instance, host=None, force=False):
        """Check an evacuation of a dead host's guest, record it, start its
        flow; the migration, at once. Everything that can refuse it runs first:
        a refused request changes nothing."""
        _str('instance', instance)
        _str('host', host, optional=True)
        _bool('force', force)
        if force and host is None:
            raise exception.InvalidArgument(
                name='force', value=force,
                reason='forcing needs a host: name one, or let the scheduler pick')
        inst = self.db.instances.get(instance)
        unreadable = schemas.problems('instance', inst)
        if unreadable:
            raise exception.RecordUnreadable(what='instance %s' % inst['uuid'],
                                             problems='; '.join(unreadable))
        if inst['migration_id']:
            raise exception.InstanceAlreadyMigrating(instance=instance,
                                                     migration=inst['migration_id'])
        hosts = self.db.hosts.get_many([inst['host']] + ([host] if host else []),
                                       self._down_after)
        source = self._dead_source(inst, hosts)
        if host is not None:
            dest = hosts.get(host)
            if dest is None:
                raise exception.HostNotFound(host=host)
            why = scheduler.refusal(inst, source, dest, force=force)
            if why is not None:
                raise why[1]
            if force:
                self._check_forceable(inst, dest)
            storage, candidates = self._rebuild_check(inst, source, dest), [host]
        else:
            storage, candidates = self._schedule_rebuild(inst, source)
        values = {
            'id': str(uuidlib.uuid4()), 'instance_uuid': inst['uuid'],
            'source': source['name'], 'destination': candidates[0],
            'subtype': vocabulary.EVACUATION,
            # Disks are made on the destination only when rebuilt (what the
            # claim counts there).
            'block_migration': 'true' if storage == vocabulary.EVACUATE_REBUILD
            else 'false', 'force': force, 'importance': 'high'}
        migration = self.db.migrations.create(values)
        self._start(migration, {
            'migration_id': migration['id'],
            'instance': {k: inst[k] for k in _EVACUATED_INFO},
            'source': source['name'], 'destination': candidates[0],
            'candidates': candidates, 'subtype': vocabulary.EVACUATION,
            'source_info': {k: source[k] for k in _SOURCE_INFO},
            'evacuation_storage': storage,
        })
        LOG.info('Evacuation %s of %s: %s -> %s (%s)', migration['id'],
                 inst['name'], source['name'], ', '.join(candidates), storage)
        return migration

    def _dead_source(self, inst, hosts):
        """The guest's host, if its guests may be evacuated: its agent is down
        or an operator forced it down. Anything else is refused naming its
        state: a guest must never run on two hosts."""
        source = hosts.get(inst['host'])
        if source is None:
            raise exception.HostNotFound(host=inst['host'])
        if source['problems']:
            raise exception.RecordUnreadable(what='host %s' % source['name'],
                                             problems='; '.join(source['problems']))
        if source['up']:
            ago = (rows.utcnow() - datetime.datetime.fromisoformat(
                source['last_seen'].rstrip('Z'))).total_seconds()
            raise exception.SourceHostUp(
                instance=inst['uuid'], host=source['name'],
                down_after=self._down_after,
                state='up: its agent reported %.0f s ago and it is not forced '
                      'down' % max(ago, 0))
        return source

    def _rebuild_check(self, inst, source, dest):
        """How the guest comes back on ``dest``, from its agent's check
        (compatibility, room, whether it sees the guest's files)."""
        facts = self.compute.check_rebuild(
            dest['name'], {k: inst[k] for k in _EVACUATED_INFO},
            {k: source[k] for k in _SOURCE_INFO})
        return selection.evacuation_storage(inst, facts, dest['name'],
                                            source['name'])

    def _schedule_rebuild(self, inst, source):
        """(storage, candidates best first): as _schedule, every candidate one
        where the guest comes back the same way."""
        hosts, refused = scheduler.candidates(
            inst, source, self.db.hosts.list(self._down_after))
        errors, found, storage = [], [], None
        limit = self.conf.conductor.max_destination_attempts
        for dest in hosts:
            try:
                kind = self._rebuild_check(inst, source, dest)
            except exception.FerrymanError as exc:
                errors.append((dest['name'], exc))
                continue
            if storage is None or kind == storage:
                storage = kind
                found.append(dest['name'])
            if len(found) >= limit:
                break
        if found:
            return storage, found
        if errors and all(isinstance(e, exception.ImageMissing) for _h, e in errors):
            raise errors[0][1]
        reasons = ['%s refused by filter %s' % kv for kv in sorted(refused.items())]
        raise exception.NoValidHost(instance=inst['uuid'], reason='; '.join(
            reasons + ['%s: %s' % (h, e) for h, e in errors]) or 'no other hosts')

    def _start(self, migration, store):
        try:
            self.runner.submit(migration, store)
        except Exception as exc:
            # Not started: release the guest so the request can be made again.
            self.db.migrations.advance(migration['id'], 'fail', error='not started: %s' % exc)
            raise
