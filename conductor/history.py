"""Task history: every atom transition of a migration's flow, stored as it happens."""

from oslo_log import log as logging
from taskflow import states as tf_states
from taskflow.listeners import base as listener_base
from taskflow.types import failure as tf_failure

from conductor import crash
from conductor.db import rows
from flows import constants
from flows.tasks import base as task_base

LOG = logging.getLogger(__name__)

_STARTS = (tf_states.RUNNING, tf_states.REVERTING)
# Characters of a failure's traceback kept (its end: the innermost frames).
TRACEBACK_MAX = 16384
# Stands for the destination of the migration's current attempt.
DESTINATION = object()


class TaskHistoryListener(listener_base.Listener):

    def __init__(self, engine, db, migration_id, hosts, conf=None):
        super().__init__(engine)
        self.conf = conf
        self.db = db
        self.migration_id = migration_id
        self.hosts = hosts  # atom name -> host it acts on
        self._started = {}

    def _record(self, atom, state, details, host):
        now = rows.utcnow()
        started = None
        if state in _STARTS:
            self._started[atom] = started = now
            ended = None
        else:
            started = self._started.pop(atom, None)
            ended = now
        result = details.get('result')
        error = extra = None
        if isinstance(result, tf_failure.Failure):
            error = task_base.failure_text(result)
            # For administrators (the API's event traceback): where it failed,
            # the agent's side included when the error came over RPC.
            extra = {'traceback': result.pformat(traceback=True)[-TRACEBACK_MAX:]}
        try:
            if host is DESTINATION:
                host = self._destination()
            self.db.history.add(self.migration_id, atom, state, host=host,
                                started_at=started, ended_at=ended, error=error,
                                details=extra)
        except Exception:  # history must never break the migration itself
            LOG.exception('Cannot record %s %s of migration %s', atom, state,
                          self.migration_id)
        # Crash tests: die as kill -9 would, with the transition just stored.
        crash.reached(self.conf, atom, state)

    def _destination(self):
        # The current attempt's, as the retry over candidates provided it: the
        # engine has it in memory (the migration row follows it once claimed).
        try:
            return self._engine.storage.fetch(constants.PLACED_DESTINATION)
        except Exception:
            return self.db.migrations.get(self.migration_id)['destination']

    def _task_receiver(self, state, details):
        name = details['task_name']
        self._record(name, state, details, self.hosts.get(name))

    def _retry_receiver(self, state, details):
        name = details['retry_name']
        self._record(name, state, details, self.hosts.get(name))

    def _flow_receiver(self, state, details):
        self._record(details['flow_name'], state, details, self.hosts.get(None))
