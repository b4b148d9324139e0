"""Task history: every atom transition of a migration's flow, stored as it happens."""

import os
import signal

from oslo_log import log as logging
from taskflow import states as tf_states
from taskflow.listeners import base as listener_base
from taskflow.types import failure as tf_failure

from conductor.db import api as db_api
from flows.tasks import base as task_base

LOG = logging.getLogger(__name__)

_STARTS = (tf_states.RUNNING, tf_states.REVERTING)
# Stands for the destination of the migration's current attempt.
DESTINATION = object()


class TaskHistoryListener(listener_base.Listener):

    def __init__(self, engine, db, migration_id, hosts, crash_at=None):
        super().__init__(engine)
        self.crash_at = crash_at
        self.db = db
        self.migration_id = migration_id
        self.hosts = hosts  # atom name -> host it acts on
        self._started = {}

    def _record(self, atom, state, details, host):
        now = db_api.utcnow()
        started = None
        if state in _STARTS:
            self._started[atom] = started = now
            ended = None
        else:
            started = self._started.pop(atom, None)
            ended = now
        result = details.get('result')
        error = None
        if isinstance(result, tf_failure.Failure):
            error = task_base.failure_text(result)
        try:
            if host is DESTINATION:
                host = self.db.get_migration(self.migration_id)['destination']
            self.db.add_task_event(self.migration_id, atom, state, host=host,
                                   started_at=started, ended_at=ended, error=error)
        except Exception:  # history must never break the migration itself
            LOG.exception('Cannot record %s %s of migration %s', atom, state,
                          self.migration_id)
        if self.crash_at == '%s:%s' % (atom, state):
            # Crash tests: die as kill -9 would, with the transition just stored.
            LOG.warning('crash_at %s reached: killing this conductor', self.crash_at)
            os.kill(os.getpid(), signal.SIGKILL)

    def _task_receiver(self, state, details):
        name = details['task_name']
        self._record(name, state, details, self.hosts.get(name))

    def _retry_receiver(self, state, details):
        name = details['retry_name']
        self._record(name, state, details, self.hosts.get(name))

    def _flow_receiver(self, state, details):
        self._record(details['flow_name'], state, details, self.hosts.get(None))
