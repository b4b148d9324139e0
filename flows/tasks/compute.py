"""Tasks that call one compute agent; each undo stands beside its step.

Undo steps before switch-over ask first whether the guest has moved: once it runs on
the destination, removing what it uses there would destroy it, so they do nothing.
"""

import time

from oslo_log import log as logging
import oslo_messaging as messaging

from conductor import policy
from ferryman.common import exception
from ferryman.common import vocabulary as vocab
from flows import constants as c
from flows import selection
from flows import states
from flows.tasks import base

LOG = logging.getLogger(__name__)


class CheckDestination(base.MigrationTask):
    """Destination: capacity, CPU and hypervisor compatibility; leaves a probe."""
    runs_on = 'destination'

    def __init__(self):
        super().__init__(c.CHECK_DESTINATION)

    def execute(self, migration_id, instance, destination, source_info):
        self.compute.check_destination(destination, instance, source_info,
                                       selection.probe_token(migration_id))

    def revert(self, migration_id, destination, **kwargs):
        self.best_effort(migration_id, 'remove probe', self.compute.remove_probe,
                         destination, selection.probe_token(migration_id))


class CheckSource(base.MigrationTask):
    """Source: the guest runs, and its storage still is what the subtype needs."""
    runs_on = 'source'

    def __init__(self):
        super().__init__(c.CHECK_SOURCE)

    def execute(self, migration_id, instance, source, destination, subtype):
        facts = self.compute.check_source(source, instance['uuid'],
                                          selection.probe_token(migration_id))
        found = selection.choose_subtype('auto', facts, instance['uuid'], destination)
        if found != subtype:
            raise exception.StorageMismatch(
                requested=subtype, instance=instance['uuid'], host=destination,
                reason='the storage now calls for a %s migration' % found)


class RemoveProbe(base.MigrationTask):
    runs_on = 'destination'

    def __init__(self):
        super().__init__(c.REMOVE_PROBE)

    def execute(self, migration_id, destination):
        self.compute.remove_probe(destination, selection.probe_token(migration_id))


class CreateLocalDisks(base.MigrationTask):
    """block: the instance directory and empty disks the copy will fill."""
    runs_on = 'destination'

    def __init__(self):
        super().__init__(c.CREATE_LOCAL_DISKS)

    def execute(self, instance, destination):
        self.compute.create_local_disks(destination, instance)

    def revert(self, migration_id, instance, destination, **kwargs):
        # Also after a failed execute: it may have made some disks before failing.
        if not self.switched_over(migration_id):
            self.best_effort(migration_id, 'delete destination disks',
                             self.compute.delete_local_disks, destination, instance)


class ConnectVolumes(base.MigrationTask):
    """block-storage: the guest's volumes attached on the destination as well."""
    runs_on = 'destination'

    def __init__(self):
        super().__init__(c.CONNECT_VOLUMES)

    def execute(self, migration_id, instance, destination):
        if self.db.migrations.get(migration_id)['status'] == states.PREPARING:
            self.db.migrations.advance(migration_id, 'connect_volumes')
        self.compute.connect_volumes(destination, instance)

    def revert(self, migration_id, instance, destination, **kwargs):
        # Disconnects only; volume data is never touched.
        if not self.switched_over(migration_id):
            self.best_effort(migration_id, 'disconnect destination volumes',
                             self.compute.disconnect_volumes, destination, instance)
            # Preparing again: the next candidate, or the rollback, comes next.
            self.best_effort(migration_id, 'record the volumes disconnected',
                             self._disconnected, migration_id)

    def _disconnected(self, migration_id):
        if self.db.migrations.get(migration_id)['status'] == states.CONNECTING_VOLUMES:
            self.db.migrations.advance(migration_id, 'disconnect_volumes')


class PlugNetworking(base.MigrationTask):
    """The guest's ports prepared (not yet active) on the destination."""
    runs_on = 'destination'

    def __init__(self):
        super().__init__(c.PLUG_NETWORKING)

    def execute(self, instance, destination):
        self.compute.plug_networking(destination, instance)

    def revert(self, migration_id, instance, destination, **kwargs):
        if not self.switched_over(migration_id):
            self.best_effort(migration_id, 'unplug destination ports',
                             self.compute.unplug_networking, destination, instance)


def _policy(task, migration, instance):
    """(policy, link bandwidth) for the migration, and its destination's row.

    Both read only what the hosts reported (features, paths): one query for the
    two hosts, not get_host's usage and providers.
    """
    hosts = task.db.hosts.facts(migration['source'], migration['destination'])
    source, destination = hosts[migration['source']], hosts[migration['destination']]
    return (policy.for_migration(task.conf, instance, migration['importance'],
                                 source, destination),
            policy.link_bandwidth(source, destination), destination)


class StartMigration(base.MigrationTask):
    """Source: the hypervisor starts copying, in the background, with what the
    policy chose up front (initial downtime, auto-converge, compression, whether
    post-copy may be used later)."""
    runs_on = 'source'

    def __init__(self):
        super().__init__(c.START_MIGRATION)

    def execute(self, migration_id, instance, source, destination, subtype):
        mig = self.db.migrations.get(migration_id)
        if mig['cancel_requested']:
            raise exception.MigrationCancelled(migration=migration_id)
        if states.allows(subtype, mig['status'], 'start'):
            self.db.migrations.advance(migration_id, 'start')
        # Run again after a crash: a job that already runs or ran is not restarted.
        job = self.compute.get_migration_job(source, instance['uuid'])
        if job['status'] in (vocab.JOB_RUNNING, vocab.JOB_COMPLETED):
            return
        chosen, bandwidth, dest = _policy(self, mig, instance)
        params = chosen.start_params(policy.data_mb(instance, subtype), bandwidth)
        # Hosts may keep instances at different paths; the source's hypervisor
        # defines the guest on the destination, so it must know where.
        params['destination_instances_path'] = dest['instances_path']
        try:
            job = self.compute.start_migration(source, instance, destination,
                                               subtype, params)
        except messaging.MessagingTimeout:
            # The answer is lost (the agent died or the broker restarted), not
            # necessarily the job: a job that started is watched, not undone.
            if not self._started(migration_id, source, destination, instance):
                raise
            return
        if (job or {}).get('paused_copy'):
            # The hypervisor cannot copy this guest live without corrupting it:
            # its whole copy is downtime, which the history must show.
            self.db.history.add(migration_id, c.START_MIGRATION, 'DECISION',
                                host=source, error=None, details={
                                    'action': policy.PAUSE.kind,
                                    'why': 'paused for the whole copy: %s' %
                                           job['paused_copy']})

    def _started(self, migration_id, source, destination, instance):
        uuid = instance['uuid']
        deadline = time.monotonic() + self.conf.conductor.agent_unreachable_timeout
        while True:
            try:
                job = self.compute.get_migration_job(source, uuid)
                break
            except messaging.MessagingTimeout:
                if time.monotonic() > deadline:
                    return False
        if job['status'] in (vocab.JOB_RUNNING, vocab.JOB_COMPLETED):
            LOG.info('Migration %s: the job runs although its start was not '
                     'answered', migration_id)
            return True
        return job['status'] == vocab.JOB_NONE and self.guest_runs_on(destination,
                                                                      uuid)

    def revert(self, migration_id, instance, source, **kwargs):
        if not self.switched_over(migration_id):
            # The guest keeps running on the source; its half-made copy goes.
            self.best_effort(migration_id, 'abort migration job',
                             self.compute.abort_migration, source, instance['uuid'])


class MonitorMigration(base.MigrationTask):
    """Conductor, asking the source: samples the job, lets the policy steer it,
    and commits the switch-over (post-copy or completion) the moment it happens.
    Every decision goes into the task history with the numbers behind it."""

    def __init__(self):
        super().__init__(c.MONITOR_MIGRATION)

    def execute(self, migration_id, instance, source, destination, subtype):
        mig = self.db.migrations.get(migration_id)
        if mig['status'] == states.FINISHING:
            return
        chosen, bandwidth, _dest = _policy(self, mig, instance)
        data = policy.data_mb(instance, subtype)
        steering = policy.Steering(chosen, data, chosen.start_params(data, bandwidth))
        steering.state['post_copy'] = mig['status'] == states.POST_COPY
        uuid = instance['uuid']
        wait_s = 0.0  # the first sample at once
        lost = None   # since when the source's agent has not answered
        while True:
            mig = self.db.migrations.get(migration_id)
            if mig['cancel_requested'] and mig['status'] in (states.COPYING_DISKS,
                                                             states.RUNNING):
                job = self.compute.abort_migration(source, uuid)
                if job['status'] != vocab.JOB_COMPLETED:
                    raise exception.MigrationCancelled(migration=migration_id)
            else:
                # Held open by the agent until the job ends or the interval
                # passes: the switch-over is seen the moment it happens.
                try:
                    job = self.compute.get_migration_job(source, uuid,
                                                         wait_s=wait_s)
                except messaging.MessagingTimeout:
                    # The agent is restarting (libvirt's job goes on without
                    # it) or unreachable: ask again, within a bound.
                    lost = lost or time.monotonic()
                    if time.monotonic() - lost > \
                            self.conf.conductor.agent_unreachable_timeout:
                        raise
                    LOG.warning('Migration %s: no progress answer from %s for '
                                '%.0f s; asking again', migration_id, source,
                                time.monotonic() - lost)
                    continue
                lost = None
            wait_s = self.conf.conductor.monitor_interval
            status = job['status']
            # Paused by the hypervisor's agent (a paused copy) or by us earlier.
            steering.state['paused'] = steering.state['paused'] or bool(
                job.get('paused'))
            if status == vocab.JOB_COMPLETED:
                self._disks_copied(migration_id)
                self.db.migrations.switch_over(migration_id, _stats(job))
                return
            if status == vocab.JOB_NONE and self.guest_runs_on(destination, uuid):
                # The source agent lost the job (it restarted) and the guest had
                # moved meanwhile: finished, not to be rolled back.
                LOG.info('Migration %s: the guest already runs on %s',
                         migration_id, destination)
                self._disks_copied(migration_id)
                self.db.migrations.switch_over(migration_id, {})
                return
            if status in (vocab.JOB_FAILED, vocab.JOB_CANCELLED, vocab.JOB_NONE):
                raise exception.MigrationJobFailed(
                    instance=uuid,
                    reason=job.get('error') or 'job %s on %s' % (status, source))
            if not job.get('copying_disks'):
                mig = self._disks_copied(migration_id, mig)
            if job.get('post_copy') and mig['status'] == states.RUNNING:
                self.db.migrations.enter_post_copy(migration_id)
            self.db.migrations.update(migration_id, progress=_progress(job))
            if mig['force_complete_requested'] and not (
                    steering.state['post_copy'] or steering.state['paused']):
                action, why = steering.force_complete()
            else:
                action, why = steering.next_action(job)
            if action != policy.CONTINUE:
                self._act(migration_id, source, uuid, action, why, job)

    def _disks_copied(self, migration_id, mig=None):
        """block: the job copies memory now, or has ended well, so its disks are
        copied (the monitor may not have sampled the moment between)."""
        mig = mig or self.db.migrations.get(migration_id)
        if mig['status'] == states.COPYING_DISKS:
            return self.db.migrations.advance(migration_id, 'disks_copied')
        return mig

    def _act(self, migration_id, source, uuid, action, why, job):
        name = action.kind
        self.db.history.add(migration_id, c.MONITOR_MIGRATION, 'DECISION',
                            host='conductor', error=None, details={
                                'action': name, 'why': why,
                                'downtime_ms': action.downtime_ms,
                                'sample': _progress(job)})
        LOG.info('Migration %s: %s (%s)', migration_id, name, why)
        steer = {policy.DOWNTIME: lambda: self.compute.set_max_downtime(
                     source, uuid, action.downtime_ms),
                 policy.POST_COPY.kind: lambda: self.compute.start_post_copy(source,
                                                                             uuid),
                 policy.PAUSE.kind: lambda: self.compute.pause_guest(source, uuid)}
        if name in steer:
            try:
                job = steer[name]()
            except exception.MigrationJobFailed as exc:
                # The job ended meanwhile; the next sample says how.
                LOG.info('Migration %s: %s not applied: %s', migration_id, name, exc)
                return
            if action == policy.POST_COPY and job.get('post_copy') and \
                    job['status'] == vocab.JOB_RUNNING:
                self._disks_copied(migration_id)
                self.db.migrations.enter_post_copy(migration_id)
        elif action == policy.ABORT:
            self.compute.abort_migration(source, uuid)
            raise exception.MigrationJobFailed(instance=uuid,
                                               reason='policy abort: %s' % why)


def _progress(job):
    total = job.get('data_total_mb') or 0
    done = job.get('data_processed_mb') or 0
    return {'percent': round(100.0 * done / total, 1) if total else 0.0,
            'iteration': job.get('iteration'),
            'memory_total_mb': job.get('memory_total_mb'),
            'throttle_percent': job.get('throttle_percent'),
            'max_downtime_ms': job.get('max_downtime_ms'),
            'memory_remaining_mb': job.get('memory_remaining_mb'),
            'dirty_rate_mibps': job.get('dirty_rate_mibps'),
            'bandwidth_mibps': job.get('bandwidth_mibps'),
            'elapsed_s': job.get('elapsed_s')}


def _stats(job):
    return {'total_time_s': job.get('elapsed_s'), 'downtime_ms': job.get('downtime_ms'),
            'data_sent_mb': job.get('data_processed_mb'),
            'iterations': job.get('iteration')}


class _ForwardOnly(base.MigrationTask):
    """After switch-over: tried again on failure, never undone."""

    def _retrying(self, migration_id, fn, *args):
        conf = self.conf.conductor
        for attempt in range(1, conf.post_migration_attempts + 1):
            try:
                return fn(*args)
            except Exception as exc:
                if attempt == conf.post_migration_attempts:
                    raise
                LOG.warning('Migration %s: %s failed (attempt %d): %s',
                            migration_id, self.name, attempt, exc)
                time.sleep(conf.post_migration_retry_delay)


class PostMigrationSource(_ForwardOnly):
    """Source: disconnect volumes, delete copied local disks, unplug ports."""
    runs_on = 'source'

    def __init__(self):
        super().__init__(c.POST_MIGRATION_SOURCE)

    def execute(self, migration_id, instance, source, subtype):
        self._retrying(migration_id, self.compute.post_migration_source, source,
                       instance, subtype)


class PostMigrationDestination(_ForwardOnly):
    """Destination: take ownership of the guest, activate its ports."""
    runs_on = 'destination'

    def __init__(self):
        super().__init__(c.POST_MIGRATION_DESTINATION)

    def execute(self, migration_id, instance, destination, subtype):
        guest = self._retrying(migration_id, self.compute.post_migration_destination,
                               destination, instance, subtype)
        # The destination's own account of the finished job is the true one.
        done = (guest or {}).get('completed_job')
        if done:
            stats = dict(self.db.migrations.get(migration_id)['stats'], **done)
            self.db.migrations.update(migration_id, stats=stats)


# Evacuation: the source is dead, so every step acts on the destination. --------------
class CheckRebuild(base.MigrationTask):
    """Destination: compatible, room, and the guest's storage as it was when
    the evacuation was accepted (its files seen here, or not)."""
    runs_on = 'destination'

    def __init__(self):
        super().__init__(c.CHECK_REBUILD)

    def execute(self, instance, source, destination, source_info,
                evacuation_storage):
        facts = self.compute.check_rebuild(destination, instance, source_info)
        found = selection.evacuation_storage(instance, facts, destination, source)
        if found != evacuation_storage:
            raise exception.CannotEvacuate(
                instance=instance['uuid'], host=source,
                reason='towards %s its storage now calls for %s, not %s' % (
                    destination, found, evacuation_storage))


class RebuildDisks(base.MigrationTask):
    """Local disks: made afresh on the destination from the guest's base image.
    What the dead host's disks held is lost, and the history says so."""
    runs_on = 'destination'

    def __init__(self):
        super().__init__(c.REBUILD_DISKS)

    def execute(self, migration_id, instance, source, destination):
        self.db.history.add(
            migration_id, c.REBUILD_DISKS, 'NOTE', host=destination, details={
                'what': 'the local disks of %s (%s) stayed on the dead host %s: '
                        'their contents are lost; rebuilt from image %s' % (
                            instance['name'], instance['uuid'], source,
                            instance.get('image'))})
        self.compute.rebuild_disks(destination, instance)

    def revert(self, migration_id, instance, destination, **kwargs):
        # Also after a failed execute: it may have made some disks first.
        if not self.switched_over(migration_id):
            self.best_effort(migration_id, 'delete rebuilt disks',
                             self.compute.delete_local_disks, destination, instance)


class DefineGuest(base.MigrationTask):
    """Destination: the guest defined (not started) on its disks or volumes."""
    runs_on = 'destination'

    def __init__(self):
        super().__init__(c.DEFINE_GUEST)

    def execute(self, migration_id, instance, destination):
        mig = self.db.migrations.get(migration_id)
        if states.allows(mig['subtype'], mig['status'], 'rebuild'):
            self.db.migrations.advance(migration_id, 'rebuild')
        self.compute.define_guest(destination, instance)

    def revert(self, migration_id, instance, destination, **kwargs):
        # Undefines only: the files and volumes stay (StartGuest's and the
        # preparation's reverts say what else goes).
        if not self.switched_over(migration_id):
            self.best_effort(migration_id, 'undefine guest on destination',
                             self.compute.undefine_guest, destination,
                             instance['uuid'])


class StartGuest(base.MigrationTask):
    """Destination: the guest started (a new boot) and its ports active; the
    switch-over of an evacuation, after which only forward."""
    runs_on = 'destination'

    def __init__(self):
        super().__init__(c.START_GUEST)

    def execute(self, migration_id, instance, destination):
        mig = self.db.migrations.get(migration_id)
        if mig['switchover_at'] is not None:
            return
        if mig['cancel_requested']:
            raise exception.MigrationCancelled(migration=migration_id)
        try:
            self.compute.start_guest(destination, instance)
        except messaging.MessagingTimeout:
            # The answer is lost, not necessarily the start.
            if not self.guest_runs_on(destination, instance['uuid']):
                raise
        self.db.migrations.started_on_destination(migration_id)

    def revert(self, migration_id, instance, destination, **kwargs):
        # A start whose answer was lost may have booted it: stop it there (it
        # runs nowhere else: its source is dead).
        if not self.switched_over(migration_id):
            self.best_effort(migration_id, 'stop guest on destination',
                             self.compute.stop_guest, destination, instance['uuid'])
