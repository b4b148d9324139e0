"""Runs migration flows: TaskFlow engines with SQLAlchemy persistence, on one
long-lived thread pool, at most N outbound migrations per source host."""

import collections
import contextlib
import threading

import futurist
from oslo_log import log as logging
import taskflow.engines
from taskflow.persistence import models as tf_models

import flows
from conductor import history
from conductor import persistence

LOG = logging.getLogger(__name__)


def atom_hosts(flow, store):
    """Atom name -> the host it acts on, for the task history."""
    where = {'conductor': 'conductor', 'source': store['source'],
             'destination': store['destination']}
    hosts = {None: 'conductor'}
    for atom, _ in flow.iter_nodes():
        _collect(atom, where, hosts)
    return hosts


def _collect(node, where, hosts):
    if hasattr(node, 'iter_nodes'):
        for child, _ in node.iter_nodes():
            _collect(child, where, hosts)
    else:
        hosts[node.name] = where[getattr(node, 'runs_on', 'conductor')]


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
        book = tf_models.LogBook('migration-%s' % migration['id'])
        engine = taskflow.engines.load_from_factory(
            factory, store=store, book=book, backend=self.backend, engine='serial')
        future = self.executor.submit(self._run, migration['id'],
                                      migration['source'], engine, store)
        self.futures[migration['id']] = future
        future.add_done_callback(lambda _f: self.futures.pop(migration['id'], None))
        return future

    def _run(self, migration_id, source, engine, store):
        with self._slot(source):
            if self.db.get_migration(migration_id)['cancel_requested']:
                # Aborted while queued: nothing was claimed or changed yet.
                self.db.advance(migration_id, 'cancel', error='aborted on request')
                return
            hosts = atom_hosts(flows.build(store['subtype']), store)
            with history.TaskHistoryListener(engine, self.db, migration_id, hosts):
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
