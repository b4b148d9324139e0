"""Runs migration flows: TaskFlow engines with SQLAlchemy persistence, on one
long-lived thread pool, at most N outbound migrations per source host."""

import collections
import contextlib
import threading

import futurist
from oslo_log import log as logging
import taskflow.engines
from taskflow import exceptions as tf_exc
from taskflow.persistence import models as tf_models

import flows
from conductor import history
from conductor import persistence
from flows import states

LOG = logging.getLogger(__name__)


def atom_hosts(flow, store):
    """Atom name -> the host it acts on, for the task history."""
    where = {'conductor': 'conductor', 'source': store['source'],
             'destination': store['destination']}
    hosts = {None: 'conductor'}
    for task in flows.iter_tasks(flow):
        hosts[task.name] = where[getattr(task, 'runs_on', 'conductor')]
    return hosts


class FlowRunner(object):

    def __init__(self, conf, db):
        self.conf = conf
        self.db = db
        # Shares the conductor database's engine (and its sqlite settings).
        self.backend = persistence.Backend(
            {'connection': conf.database.connection}, engine=db.engine)
        with contextlib.closing(self.backend.get_connection()) as conn:
            conn.upgrade()
        self.executor = futurist.ThreadPoolExecutor(
            max_workers=conf.conductor.workers)
        cap = conf.conductor.max_outbound_per_host
        self._slots = collections.defaultdict(lambda: threading.BoundedSemaphore(cap))
        self._slots_lock = threading.Lock()
        self.futures = {}

    def _slot(self, host):
        with self._slots_lock:
            return self._slots[host]

    def submit(self, migration, store):
        """Save the flow (so it outlives this process), then run it in the pool."""
        factory = flows.FACTORIES[migration['subtype']]
        # The book is named and keyed by the migration: found again on resume.
        book = tf_models.LogBook('migration-%s' % migration['id'],
                                 uuid=migration['id'])
        engine = taskflow.engines.load_from_factory(
            factory, store=store, book=book, backend=self.backend, engine='serial')
        return self._start(migration['id'], migration['source'], engine, store)

    def _start(self, migration_id, source, engine, store):
        future = self.executor.submit(self._run, migration_id, source, engine, store)
        self.futures[migration_id] = future
        future.add_done_callback(lambda _f: self.futures.pop(migration_id, None))
        return future

    def resume_all(self):
        """Run on every unfinished migration this database knows (after a restart).

        A flow resumes where its saved state left it: the task that was running
        runs again (tasks ask the agents what is true before acting), a rollback
        that was under way goes on. A migration whose flow was never saved had
        changed nothing yet: it fails.
        """
        resumed = []
        with contextlib.closing(self.backend.get_connection()) as conn:
            for mig in self.db.list_migrations():
                if mig['status'] in states.TERMINAL or mig['id'] in self.futures:
                    continue
                try:
                    book = conn.get_logbook(mig['id'])
                    (flow_detail,) = list(book)
                except (tf_exc.NotFound, ValueError):
                    LOG.warning('Migration %s has no saved flow; failing it', mig['id'])
                    self.db.advance(mig['id'], 'fail',
                                    error='the conductor stopped before its flow '
                                          'was saved; nothing had been done')
                    continue
                store = flow_detail.find(
                    [ad.uuid for ad in flow_detail
                     if ad.name.startswith('_TaskFlow_')][0]).results
                engine = taskflow.engines.load_from_detail(
                    flow_detail, backend=self.backend, engine='serial')
                LOG.info('Resuming migration %s (%s) from its saved flow',
                         mig['id'], mig['status'])
                self._start(mig['id'], mig['source'], engine, store)
                resumed.append(mig['id'])
        return resumed

    def _run(self, migration_id, source, engine, store):
        with self._slot(source):
            if self.db.get_migration(migration_id)['cancel_requested']:
                # Aborted while queued: nothing was claimed or changed yet.
                self.db.advance(migration_id, 'cancel', error='aborted on request')
                return
            hosts = atom_hosts(flows.build(store['subtype']), store)
            with history.TaskHistoryListener(engine, self.db, migration_id, hosts,
                                             self.conf.conductor.crash_at):
                try:
                    engine.run()
                except Exception as exc:
                    # The sentinel's revert has recorded the outcome.
                    LOG.info('Migration %s did not complete: %s', migration_id, exc)

    def wait(self, migration_id, timeout=None):
        future = self.futures.get(migration_id)
        if future is not None:
            futurist.waiters.wait_for_all([future], timeout)

    def stop(self):
        self.executor.shutdown(wait=True)
        self.backend.close()
