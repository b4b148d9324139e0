"""The conductor: accepts migrations, checks them, and runs their flows."""

import uuid as uuidlib

import oslo_messaging as messaging
from oslo_log import log as logging

from compute_agent import rpcapi as compute_rpcapi
from conductor import admission
from conductor import audit
from conductor import drain as host_drain
from conductor import rpcapi
from conductor import runner as flow_runner
from conductor.db import api as db_api
from ferryman.common import exception
from ferryman.common import rpc_auth
from ferryman.common import schemas
from ferryman.common import vocabulary as vocab
from flows import states
from flows.tasks import base as task_base

LOG = logging.getLogger(__name__)

# Calls only an agent makes: {method: the argument naming the host whose key
# must have signed it}. The others are operators' (see rpc_auth).
AGENT_METHODS = {'report_host': 'host', 'evacuated_guests': 'host',
                 'guests_fenced': 'host'}


def _evacuated_storage(mig, inst):
    # As admission decided it: rebuilt when it made disks on the destination.
    if inst['storage'] == 'volume':
        return vocab.EVACUATE_VOLUMES
    return vocab.EVACUATE_REBUILD if mig['block_migration'] == 'true' else \
        vocab.EVACUATE_SHARED


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
        self.admission = admission.Admission(conf, self.db, self.compute,
                                             self.runner)
        self.drainer = host_drain.Drainer(conf, self.db, self.admission)
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
                     force=False, importance='medium', request_id=None):
        """With ``request_id`` (a caller that answered before asking, as Nova's
        API does from 2.34), a refusal of a known guest is also recorded under
        it (list_refused_requests), since no migration will show it."""
        try:
            return self.admission.admit(instance, host, block_migration, force,
                                        importance)
        except exception.FerrymanError as exc:
            if request_id is not None:
                self._record_refusal(request_id, instance, host, exc)
            raise

    def _record_refusal(self, request_id, instance, host, exc):
        try:
            uuid = self.db.instances.get(instance)['uuid']
        except exception.InstanceNotFound:
            return  # nothing to show it on
        self.db.refusals.add(request_id, uuid, 'live-migration', host, exc.message)
        LOG.info('%s: live migration of %s refused: %s', request_id, uuid,
                 exc.message)

    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def list_refused_requests(self, ctxt, instance):
        """A guest's move requests refused before any migration was recorded
        (each with its request id, the host asked for and why), newest first."""
        return self.db.refusals.list(self.db.instances.get(instance)['uuid'])

    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def evacuate(self, ctxt, instance, host=None, force=False):
        """Rebuild the guest of a dead (or forced-down) host elsewhere:
        scheduled, on ``host`` checked, or on ``host`` forced; the migration
        (subtype evacuation) at once."""
        return self.admission.evacuate(instance, host, force)

    # Fencing: an agent back from the dead, before its first report. ----------------
    @schemas.checked(schemas.CONDUCTOR_SERVICE, sender='host')
    def evacuated_guests(self, ctxt, host):
        """The guests evacuated away from ``host`` that it must destroy before
        it reports: [{migration, uuid, storage, volumes}]."""
        out = []
        for mig in self.db.migrations.to_fence(host):
            inst = self.db.instances.get(mig['instance_uuid'])
            out.append({'migration': mig['id'], 'uuid': inst['uuid'],
                        'storage': _evacuated_storage(mig, inst),
                        'volumes': list(inst['volumes'])})
        return out

    @schemas.checked(schemas.CONDUCTOR_SERVICE, sender='host')
    def guests_fenced(self, ctxt, host, migrations):
        """``host`` destroyed those evacuations' guests: their source
        allocations go (those still in flight at their end); the ids marked."""
        done = self.db.migrations.fenced(host, migrations)
        for mid in done:
            self.db.history.add(mid, 'fence-source', 'FENCED', host=host,
                                details={'what': 'the returning source destroyed '
                                                 'and undefined the guest'})
        LOG.info('Host %s fenced the guests of evacuations %s', host,
                 ', '.join(done) or 'none')
        return done

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
        if mig['subtype'] == states.EVACUATION:
            raise exception.CannotForceComplete(
                migration=migration, reason='it is an evacuation: nothing is '
                'copied, so nothing can be hurried')
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

    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def force_down(self, ctxt, host, forced_down):
        """Count the host as down (or no longer) whatever its agent reports,
        as Nova's forced_down: nothing is scheduled there nor moved from it."""
        self.db.hosts.set_forced_down(host, forced_down)
        LOG.info('Host %s %s', host, 'forced down' if forced_down else
                 'no longer forced down')
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
