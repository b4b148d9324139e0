"""The conductor: accepts migrations, checks them, and runs their flows."""

import uuid as uuidlib

import oslo_messaging as messaging
from oslo_log import log as logging

from compute_agent import rpcapi as compute_rpcapi
from conductor import audit
from conductor import drain as host_drain
from conductor import policy
from conductor import rpcapi
from conductor import runner as flow_runner
from conductor import scheduler
from conductor.db import api as db_api
from ferryman.common import exception
from ferryman.common import rpc_auth
from ferryman.common import schemas
from flows import selection
from flows import states
from flows.tasks import base as task_base

LOG = logging.getLogger(__name__)

# Calls only an agent makes: {method: the argument naming the host whose key
# must have signed it}. The others are operators' (see rpc_auth).
AGENT_METHODS = {'report_host': 'host'}


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


class ConductorManager(object):
    # Every version this serves: conductor.rpcapi keeps their history.
    target = messaging.Target(version=rpcapi.VERSION)

    def __init__(self, conf, db=None, auth=None):
        self.conf = conf
        # Before the database: a conductor without its secret creates nothing.
        auth = auth or rpc_auth.conductor_auth(conf)
        self.db = db or db_api.Database(conf.database.connection)
        self.db.upgrade()
        self.compute = compute_rpcapi.ComputeAPI(conf, auth=auth)
        self.runner = flow_runner.FlowRunner(
            conf, self.db, task_base.Services(conf, self.db, self.compute))
        self.drainer = host_drain.Drainer(self)
        # A slot freed is a slot a drain may use now, not at its next look.
        self.runner.on_finished.append(lambda _mid: self.drainer.wake())

    def stop(self):
        self.drainer.stop()
        self.runner.stop()

    @property
    def _down_after(self):
        return self.conf.conductor.host_down_after

    # Migrations. -------------------------------------------------------------------
    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def live_migrate(self, ctxt, instance, host=None, block_migration='auto',
                     force=False, importance='medium'):
        return self.start_migration(instance, host, block_migration, force,
                                    importance)

    def start_migration(self, instance, host=None, block_migration='auto',
                        force=False, importance='medium', drain_slot=None):
        """Check the request, record the migration, start its flow; return at once.

        Everything that can refuse the request runs before anything is recorded,
        so a refused request changes nothing. ``drain_slot`` (a drain's) records
        it only within the drain limits (Drains.create_migration).
        """
        # Drains come here too, not through live_migrate's schema.
        _str('instance', instance)
        _str('host', host, optional=True)
        _bool('force', force)
        policy.validate('importance', importance, policy.IMPORTANCE)
        requested = selection.normalize_block_migration(block_migration)
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
        # Source and destination read together: the request's checks are part
        # of every migration's cost.
        hosts = self.db.hosts.get_many([inst['host']] + ([host] if host else []),
                                       self._down_after)
        source = hosts.get(inst['host'])
        if source is None:
            raise exception.HostNotFound(host=inst['host'])
        if source['problems']:
            raise exception.RecordUnreadable(what='host %s' % source['name'],
                                             problems='; '.join(source['problems']))
        if not source['up']:
            raise exception.HostUnavailable(
                host=source['name'], reason='the source agent has not reported '
                                            'recently')
        if force and host is None:
            raise exception.InvalidArgument(
                name='force', value=force,
                reason='forcing needs a host: name one, or let the scheduler pick')
        if host is not None:
            dest = hosts.get(host)
            if dest is None:
                raise exception.HostNotFound(host=host)
            why = scheduler.refusal(inst, source, dest, force=force)
            if why is not None:
                raise why[1]
            if force:
                self._check_forceable(inst, dest)
            subtype = self._probe(inst, source, dest, requested)
            candidates = [dest['name']]
        else:
            subtype, candidates = self._schedule(inst, source, requested)
        values = {
            'id': str(uuidlib.uuid4()), 'instance_uuid': inst['uuid'],
            'source': source['name'], 'destination': candidates[0],
            'subtype': subtype, 'block_migration': requested, 'force': force,
            'importance': importance}
        migration = self.db.migrations.create(values) if drain_slot is None else \
            self.db.drains.create_migration(values, **drain_slot)
        store = {
            'migration_id': migration['id'],
            'instance': {k: inst[k] for k in ('uuid', 'name', 'vcpus', 'memory_mb',
                                              'disk_gb', 'storage', 'disks',
                                              'volumes', 'sla_class')},
            'source': source['name'], 'destination': candidates[0],
            'candidates': candidates,
            'subtype': subtype,
            'source_info': {k: source[k] for k in ('hypervisor_type', 'cpu_model',
                                                   'cpu_features')},
        }
        try:
            self.runner.submit(migration, store)
        except Exception as exc:
            # Not started: release the guest so the request can be made again.
            self.db.migrations.advance(migration['id'], 'fail',
                                       error='not started: %s' % exc)
            raise
        LOG.info('Migration %s of %s: %s -> %s (%s)', migration['id'],
                 inst['name'], source['name'], ', '.join(candidates), subtype)
        return migration

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
        source_info = {k: source[k] for k in ('hypervisor_type', 'cpu_model',
                                              'cpu_features')}
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

    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def abort_migration(self, ctxt, migration):
        """Ask a migration to stop; it ends in cancelled with the guest on the
        source. Before the copy it simply never starts; during it the job is
        aborted and everything rolled back. Past switch-over it is too late."""
        mig = self.db.migrations.get(migration)
        if mig['status'] in states.TERMINAL:
            raise exception.CannotAbort(migration=migration,
                                        reason='it is already %s' % mig['status'])
        if mig['switchover_at'] is not None:
            raise exception.CannotAbort(
                migration=migration, reason='the guest already runs on %s; the '
                'migration is finishing' % mig['destination'])
        LOG.info('Migration %s: abort requested', migration)
        return self.db.migrations.update(migration, cancel_requested=True)

    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def force_complete_migration(self, ctxt, migration):
        """Finish now: post-copy where the policy and hosts allow it, else pause
        the guest until the copy completes."""
        mig = self.db.migrations.get(migration)
        if mig['status'] not in states.BEFORE_SWITCH_OVER:
            raise exception.CannotForceComplete(
                migration=migration, reason='it is %s' % mig['status'])
        LOG.info('Migration %s: force-complete requested', migration)
        return self.db.migrations.update(migration, force_complete_requested=True)

    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def get_migration(self, ctxt, migration):
        return self.db.migrations.get(migration)

    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def list_migrations(self, ctxt, instance=None, status=None, host=None):
        if instance is not None:
            instance = self.db.instances.get(instance)['uuid']
        return self.db.migrations.list(instance=instance, status=status, host=host)

    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def get_task_history(self, ctxt, migration):
        self.db.migrations.get(migration)
        return self.db.history.list(migration)

    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def audit(self, ctxt):
        """Check every invariant against the hosts; list what is violated."""
        hosts = self.db.hosts.list(self._down_after)
        violations = audit.run(self.db, self.compute, hosts,
                               owned=set(self.runner.owners()))
        return {'violations': [{'kind': k, 'text': t} for k, t in violations],
                'hosts': len(hosts), 'instances': len(self.db.instances.list()),
                'active_migrations': len([
                    m for m in self.db.migrations.list()
                    if m['status'] in states.ACTIVE])}

    # Host drains. ------------------------------------------------------------------
    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def drain_host(self, ctxt, host, max_parallel=None):
        """Disable the host and live-migrate every guest off it (importance high),
        at most ``max_parallel`` at once (default [conductor] drain_max_per_host)
        and while fewer than [conductor] drain_max_cluster run in the cluster;
        returns the drain at once."""
        host_drain.validate_max_parallel(max_parallel)
        return self.drainer.drain(str(uuidlib.uuid4()), host,
                                  max_parallel)

    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def get_drain(self, ctxt, drain):
        return host_drain.with_counts(self.db.drains.get(drain))

    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def list_drains(self, ctxt, host=None):
        return [host_drain.with_counts(d) for d in self.db.drains.list(host=host)]

    # Hosts and guests. -------------------------------------------------------------
    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def list_hosts(self, ctxt):
        return self.db.hosts.list(self._down_after)

    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def list_instances(self, ctxt, host=None):
        return self.db.instances.list(host=host)

    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def describe_instances(self, ctxt, host=None, instance=None):
        return self.db.instances.describe(host=host, instance=instance)

    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def set_host_enabled(self, ctxt, host, enabled, reason=None):
        self.db.hosts.set_enabled(host, enabled, reason)
        return self.db.hosts.get(host, self._down_after)

    @schemas.checked(schemas.CONDUCTOR_SERVICE, sender='host')
    def report_host(self, ctxt, host, info, guests):
        """Take in what an agent reports about its host and guests, once it
        passes the report's schema (refusals are logged, and raised to a
        caller: a cast has none); the report speaks for ``host`` alone
        (Reports.record)."""
        try:
            self.db.reports.record(
                host, info, guests,
                vanish_after=self.conf.conductor.vanished_guest_grace)
        except Exception:  # a cast: nobody else would see the error
            LOG.exception('Report from host %s not taken in', host)
