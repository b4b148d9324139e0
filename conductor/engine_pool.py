"""Where migration flows run: TaskFlow engines on one long-lived thread pool, at
most ``[conductor] max_outbound_per_host`` outbound migrations per source host
at once, every atom transition recorded in the task history."""

import collections
import functools
import threading

import futurist
from oslo_log import log as logging

import flows
from conductor import history

LOG = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def _subtype_runs_on(subtype, kwargs=()):
    # Building a flow costs a few ms (atoms inspect their signatures); which
    # side each atom acts on is fixed by the subtype's factory (and its
    # arguments, an evacuation's).
    return {task.name: getattr(task, 'runs_on', 'conductor')
            for task in flows.iter_tasks(flows.build(subtype, **dict(kwargs)))}


def _atom_hosts(runs_on, store):
    """Atom name -> the host it acts on, for the task history; destination-side
    atoms get history.DESTINATION, resolved when recorded (each attempt of the
    retry over candidates has its own destination)."""
    where = {'conductor': 'conductor', 'source': store['source'],
             'destination': history.DESTINATION}
    hosts = {None: 'conductor'}
    hosts.update((name, where[side]) for name, side in runs_on.items())
    return hosts


class EnginePool(object):

    def __init__(self, conf, db):
        self.conf = conf
        self.db = db
        self.executor = futurist.ThreadPoolExecutor(
            max_workers=conf.conductor.workers)
        cap = conf.conductor.max_outbound_per_host
        self._slots = collections.defaultdict(
            lambda: threading.BoundedSemaphore(cap))
        self._slots_lock = threading.Lock()
        self._futures = {}  # migration id -> its run, queued or running here
        # Called with the migration id whenever a flow run here ends (however).
        self.on_finished = []

    def running(self):
        """Ids of the migrations run here (running, or queued for a slot)."""
        return set(self._futures.copy())

    def runs(self, migration_id):
        return migration_id in self._futures

    def full(self):
        return len(self._futures) >= self.conf.conductor.workers

    def run(self, migration_id, source, engine, store):
        """Run the engine in the pool once its source host has a slot; its future."""
        future = self.executor.submit(self._run_engine, migration_id, source,
                                      engine, store)
        self._futures[migration_id] = future
        future.add_done_callback(lambda _f: self._finished(migration_id))
        return future

    def _slot(self, host):
        with self._slots_lock:
            return self._slots[host]

    def _run_engine(self, migration_id, source, engine, store):
        with self._slot(source):
            if self.db.migrations.get(migration_id)['cancel_requested']:
                # Aborted while queued: nothing was claimed or changed yet.
                self.db.migrations.advance(migration_id, 'cancel', error='aborted on request')
                return
            hosts = _atom_hosts(_subtype_runs_on(
                store['subtype'], tuple(sorted(flows.factory_kwargs(store).items()))),
                store)
            with history.TaskHistoryListener(engine, self.db, migration_id, hosts,
                                             self.conf):
                try:
                    engine.run()
                except Exception as exc:
                    # The sentinel's revert has recorded the outcome.
                    LOG.info('Migration %s did not complete: %s', migration_id, exc)

    def _finished(self, migration_id):
        self._futures.pop(migration_id, None)
        for listener in self.on_finished:
            try:
                listener(migration_id)
            except Exception:
                LOG.exception('Listener of the end of migration %s failed',
                              migration_id)

    def wait(self, migration_id, timeout=None):
        future = self._futures.get(migration_id)
        if future is not None:
            futurist.waiters.wait_for_all([future], timeout)

    def shutdown(self):
        """Let the flows running here finish; take no more."""
        self.executor.shutdown(wait=True)
