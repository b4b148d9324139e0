"""Tasks that call one compute agent; each undo stands beside its step.

Undo steps before switch-over ask first whether the guest has moved: once it runs on
the destination, removing what it uses there would destroy it, so they do nothing.
"""

import time

from oslo_log import log as logging

from ferryman import exception
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

    def execute(self, instance, destination):
        self.compute.connect_volumes(destination, instance)

    def revert(self, migration_id, instance, destination, **kwargs):
        # Disconnects only; volume data is never touched.
        if not self.switched_over(migration_id):
            self.best_effort(migration_id, 'disconnect destination volumes',
                             self.compute.disconnect_volumes, destination, instance)


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


class StartMigration(base.MigrationTask):
    """Source: the hypervisor starts copying, in the background."""
    runs_on = 'source'

    def __init__(self):
        super().__init__(c.START_MIGRATION)

    def execute(self, migration_id, instance, source, destination, subtype):
        mig = self.db.get_migration(migration_id)
        if mig['cancel_requested']:
            raise exception.MigrationCancelled(migration=migration_id)
        if mig['status'] == states.PREPARING:
            self.db.advance(migration_id, 'start')
        self.compute.start_migration(source, instance, destination, subtype, {})

    def revert(self, migration_id, instance, source, **kwargs):
        if not self.switched_over(migration_id):
            # The guest keeps running on the source; its half-made copy goes.
            self.best_effort(migration_id, 'abort migration job',
                             self.compute.abort_migration, source, instance['uuid'])


class MonitorMigration(base.MigrationTask):
    """Conductor, asking the source: waits for the job, records its progress, and
    commits the switch-over the moment the hypervisor reports it."""

    def __init__(self):
        super().__init__(c.MONITOR_MIGRATION)

    def execute(self, migration_id, instance, source, subtype):
        if self.switched_over(migration_id):
            return
        conf = self.conf.conductor
        gib = instance['memory_mb'] / 1024.0
        if subtype == states.BLOCK:
            gib += instance['disk_gb']
        timeout = conf.completion_timeout_per_gib * max(gib, 1.0)
        while True:
            if self.db.get_migration(migration_id)['cancel_requested']:
                job = self.compute.abort_migration(source, instance['uuid'])
                if job['status'] != 'completed':
                    raise exception.MigrationCancelled(migration=migration_id)
            else:
                job = self.compute.get_migration_job(source, instance['uuid'])
            status = job['status']
            if status == 'completed':
                self.db.switch_over(migration_id, _stats(job))
                return
            if status in ('failed', 'cancelled', 'none'):
                raise exception.MigrationJobFailed(
                    instance=instance['uuid'],
                    reason=job.get('error') or 'job %s on %s' % (status, source))
            self.db.update_migration(migration_id, progress=_progress(job))
            # The job's own clock: simulated for the fake driver, real for libvirt.
            if job.get('elapsed_s', 0) > timeout:
                self.compute.abort_migration(source, instance['uuid'])
                raise exception.MigrationTimeout(migration=migration_id,
                                                 seconds=round(timeout))
            time.sleep(conf.monitor_interval)


def _progress(job):
    total = job.get('data_total_mb') or 0
    done = job.get('data_processed_mb') or 0
    return {'percent': round(100.0 * done / total, 1) if total else 0.0,
            'iteration': job.get('iteration'),
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
        self._retrying(migration_id, self.compute.post_migration_destination,
                       destination, instance, subtype)
