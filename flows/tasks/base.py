"""What every migration task shares: the services of the conductor running it.

Tasks get no live clients in their constructors: a resumed flow is rebuilt from
its factory's name. The conductor that loads a flow's engine binds its own
services to the rebuilt flow's atoms (bind), so two conductors, or a benchmark and
a test cloud, can run flows in one process. (A transient store value would reach
only the atoms whose execute asks for it, and put it in every signature.)
"""

import functools

from oslo_log import log as logging
from oslo_utils import reflection
from taskflow import task

from conductor import crash
from ferryman.common import exception
from flows import constants as c

LOG = logging.getLogger(__name__)


class Services(object):
    """The conductor's database, compute client and configuration."""

    def __init__(self, conf, db, compute):
        self.conf = conf
        self.db = db
        self.compute = compute


def iter_atoms(flow):
    """Every task and retry controller of the flow, through nested subflows."""
    if flow.retry is not None:
        yield flow.retry
    for node, _ in flow.iter_nodes():
        if hasattr(node, 'iter_nodes'):
            yield from iter_atoms(node)
        else:
            yield node


def bind(flow, services):
    """Give the flow's atoms the services of the conductor about to run it."""
    for atom in iter_atoms(flow):
        if isinstance(atom, UsesServices):
            atom.services = services
    return flow


class UsesServices(object):
    """An atom reaching the conductor's database, agents and configuration."""

    services = None  # set by bind() when its engine is loaded

    def _bound(self):
        if self.services is None:
            raise exception.FerrymanError(
                'atom %s has no conductor services: its flow was not bound to a '
                'conductor (flows.tasks.base.bind)' % self.name)
        return self.services

    @property
    def db(self):
        return self._bound().db

    @property
    def compute(self):
        return self._bound().compute

    @property
    def conf(self):
        return self._bound().conf


def failure_text(failure):
    """A failure's message without the remote traceback oslo.messaging appends
    (``Failure.exception`` is None once the failure was loaded from storage)."""
    return getattr(failure.exception, 'message', None) or failure.exception_str


@functools.lru_cache(maxsize=None)
def _execute_args(cls):
    # Every migration builds its flow; inspecting signatures is most of that.
    return tuple(reflection.get_callable_args(cls.execute))


class MigrationTask(UsesServices, task.Task):
    # Where the step acts: 'conductor', 'source' or 'destination' (task history).
    runs_on = 'conductor'

    def __init__(self, name, **kwargs):
        if c.DESTINATION in _execute_args(type(self)):
            # The attempt's destination, which the retry over candidates provides:
            # the store's (the first candidate) would shadow it under its own name.
            kwargs.setdefault('rebind', {c.DESTINATION: c.PLACED_DESTINATION})
        super().__init__(name=name, **kwargs)

    def post_execute(self):
        # Crash tests: the step's work is done and its result not yet saved.
        crash.reached(self.conf, self.name, crash.EXECUTED)

    def guest_runs_on(self, host, uuid):
        """Whether the host's agent says the guest runs there."""
        return any(g['uuid'] == uuid and g['power_state'] == 'running'
                   for g in self.compute.list_guests(host))

    def switched_over(self, migration_id):
        return self.db.get_migration(migration_id)['switchover_at'] is not None

    def best_effort(self, migration_id, what, fn, *args, **kwargs):
        """Run one undo step; a failure is recorded on the migration, never raised,
        so the rest of the rollback still runs (and the sentinel sees it)."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            LOG.exception('Migration %s: %s failed during rollback', migration_id,
                          what)
            try:
                self.db.add_rollback_error(migration_id, '%s: %s' % (what, exc))
            except Exception:
                LOG.exception('Migration %s: cannot record rollback error',
                              migration_id)
