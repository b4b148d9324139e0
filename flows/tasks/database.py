"""Tasks on the conductor's own records: status, allocations."""

from oslo_log import log as logging
from taskflow import retry
from taskflow.types import failure as tf_failure

from ferryman.common import exception
from flows import constants as c
from flows import states
from flows.tasks import base

LOG = logging.getLogger(__name__)


class MigrationSentinel(base.MigrationTask):
    """Head of every flow: owns the migration's status when the flow fails.

    Its revert runs last, after every other undo, so it can tell failed (all undone,
    guest on the source) from error (an undo failed, or the guest had already moved:
    nothing may be rolled back past switch-over).
    """

    def __init__(self):
        super().__init__(c.MIGRATION_SENTINEL)

    def execute(self, migration_id):
        mig = self.db.migrations.get(migration_id)
        if mig['status'] == states.ACCEPTED:
            self.db.migrations.advance(migration_id, 'prepare')

    def revert(self, migration_id, flow_failures=None, **kwargs):
        try:
            failures = [f for f in (flow_failures or {}).values()
                        if isinstance(f, tf_failure.Failure)]
            text = '; '.join(base.failure_text(f) for f in failures) or 'flow failed'
            # What a drain acts on, whatever the message says.
            kind = next(filter(None, (exception.kind_named(f) for f in failures)),
                        None)
            mig = self.db.migrations.get(migration_id)
            if mig['status'] in states.TERMINAL:
                return
            if mig['switchover_at'] is not None:
                self.db.migrations.advance(migration_id, 'error', error=text,
                                           error_kind=kind,
                                           last_known_host=mig['destination'])
            elif mig['cancel_requested'] and not mig['rollback_errors']:
                self.db.migrations.advance(migration_id, 'cancel',
                                           error='aborted on request',
                                           last_known_host=mig['source'])
            elif mig['rollback_errors']:
                self.db.migrations.advance(migration_id, 'error',
                                           error=text + '; rollback incomplete: ' +
                                           '; '.join(mig['rollback_errors']),
                                           error_kind=kind,
                                           last_known_host=mig['source'])
            else:
                self.db.migrations.advance(migration_id, 'fail', error=text,
                                           error_kind=kind,
                                           last_known_host=mig['source'])
        except Exception:
            LOG.exception('Migration %s: cannot record its final status',
                          migration_id)


class DestinationRetry(base.UsesServices, retry.ParameterizedForEach):
    """Each candidate destination in turn, until one is claimed, checked and
    prepared; every failed attempt undoes itself first (its claim included).

    No further attempt once an abort was requested. Out of candidates, the whole
    flow rolls back (REVERT_ALL: a plain REVERT would undo only this subflow and
    leave the sentinel's revert unrun).
    """

    def __init__(self):
        super().__init__(name=c.DESTINATION_RETRY, provides=c.PLACED_DESTINATION,
                         requires=[c.MIGRATION_ID], rebind={'values': c.CANDIDATES},
                         revert_all=True)

    def on_failure(self, values, history, *args, **kwargs):
        migration_id = kwargs.get(c.MIGRATION_ID)
        try:
            if self.db.migrations.get(migration_id)['cancel_requested']:
                return retry.REVERT_ALL
        except Exception:
            LOG.exception('Migration %s: cannot read it; no further attempt',
                          migration_id)
            return retry.REVERT_ALL
        decision = super().on_failure(values, history, *args, **kwargs)
        if decision == retry.RETRY:
            LOG.info('Migration %s: attempt on %s failed; trying the next '
                     'candidate', migration_id, list(history.provided_iter())[-1])
        return decision


class ClaimResources(base.MigrationTask):
    """The attempt's destination claimed for the guest, the source held by the
    migration, in one transaction (Allocations.claim); the migration's destination
    follows the attempt."""

    def __init__(self):
        super().__init__(c.CLAIM_RESOURCES)

    def execute(self, migration_id, destination, candidates):
        mig = self.db.migrations.get(migration_id)
        if len(candidates) > 1:
            # The history shows which host each attempt went to.
            self.db.history.add(
                migration_id, c.CLAIM_RESOURCES, 'ATTEMPT', host=destination,
                details={'attempt': candidates.index(destination) + 1
                         if destination in candidates else None,
                         'candidates': list(candidates)})
        self.db.allocations.claim(migration_id, destination, force=mig['force'])

    def revert(self, migration_id, destination, result, **kwargs):
        if isinstance(result, tf_failure.Failure):
            return  # the claim transaction rolled back whole
        if self.switched_over(migration_id):
            # The guest lives on the destination: its claim there is its own now.
            # An evacuation's source allocation is held until its host fences
            # the guest (guests_fenced releases it).
            if self.db.migrations.get(migration_id).get('subtype') != \
                    states.EVACUATION:
                self.best_effort(migration_id, 'drop source allocation',
                                 self.db.allocations.drop_source, migration_id)
        else:
            self.best_effort(migration_id, 'release claim on %s' % destination,
                             self.db.allocations.unclaim, migration_id, destination)


class FinishMigration(base.MigrationTask):
    """The source's resources go back to the host; the migration completes."""

    def __init__(self):
        super().__init__(c.FINISH_MIGRATION)

    def execute(self, migration_id):
        self.db.allocations.drop_source(migration_id)
        if self.db.migrations.get(migration_id)['status'] != states.COMPLETED:
            self.db.migrations.advance(migration_id, 'complete')


class FinishEvacuation(base.MigrationTask):
    """The evacuation completes. Its source allocation stays held until the
    dead host returns and destroys the guest there (fencing): until then the
    host may still hold it, as Nova holds it."""

    def __init__(self):
        super().__init__(c.FINISH_EVACUATION)

    def execute(self, migration_id):
        mig = self.db.migrations.complete_evacuation(migration_id)
        if mig['fenced_at'] is None:
            self.db.history.add(
                migration_id, c.FINISH_EVACUATION, 'NOTE', host='conductor',
                details={'what': 'source allocation on %s held until that host '
                                 'returns and destroys the guest there'
                                 % mig['source']})
