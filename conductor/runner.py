"""Runs migration flows: TaskFlow engines with SQLAlchemy persistence, on one
long-lived thread pool, at most N outbound migrations per source host.

Without a jobboard this conductor runs every flow it accepts and resumes them on
restart. With one, accepting a migration saves its flow and posts a job; a claim
loop in every conductor claims jobs (with an expiry its heartbeat renews) and runs
them, so a dead conductor's migrations go on elsewhere once its claims expire.
Either way a reaper resumes migrations left with no live owner.
"""

import collections
import contextlib
import functools
import random
import threading
import time

import futurist
from oslo_log import log as logging
import taskflow.engines
from taskflow import exceptions as tf_exc
from taskflow import states as tf_states
from taskflow import storage as tf_storage
from taskflow.persistence.backends import impl_memory
from taskflow.persistence import models as tf_models

import flows
from conductor import history
from conductor import jobboard
from conductor import persistence
from flows import constants
from flows import states
from flows.tasks import base as task_base

LOG = logging.getLogger(__name__)


def atom_hosts(flow, store):
    """Atom name -> the host it acts on, for the task history; destination-side
    atoms get history.DESTINATION, resolved when recorded (each attempt of the
    retry over candidates has its own destination)."""
    return _atom_hosts(_runs_on(flow), store)


@functools.lru_cache(maxsize=None)
def _subtype_runs_on(subtype):
    # Building a flow costs a few ms (atoms inspect their signatures); which
    # side each atom acts on is fixed by the subtype's factory.
    return _runs_on(flows.build(subtype))


def _saved_store(flow_detail, mig):
    """The store a flow was saved with; ValueError when it holds no usable one."""
    stores = [ad.results for ad in flow_detail
              if ad.name == tf_storage.Storage.injector_name]
    if len(stores) != 1 or not isinstance(stores[0], dict):
        raise ValueError('no store was saved')
    store = stores[0]
    missing = sorted(set(constants.STORE_KEYS) - set(store))
    if missing:
        raise ValueError('its store lacks %s' % ', '.join(missing))
    if store[constants.MIGRATION_ID] != mig['id'] \
            or store[constants.SUBTYPE] not in flows.FACTORIES:
        raise ValueError('its store names migration %r, subtype %r' % (
            store[constants.MIGRATION_ID], store[constants.SUBTYPE]))
    return store


def _runs_on(flow):
    return {task.name: getattr(task, 'runs_on', 'conductor')
            for task in flows.iter_tasks(flow)}


def _atom_hosts(runs_on, store):
    where = {'conductor': 'conductor', 'source': store['source'],
             'destination': history.DESTINATION}
    hosts = {None: 'conductor'}
    hosts.update((name, where[side]) for name, side in runs_on.items())
    return hosts


class FlowRunner(object):

    def __init__(self, conf, db, services):
        self.conf = conf
        self.db = db
        # What this runner's flows use: bound to each flow as its engine loads.
        self.services = services
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
        spec = jobboard.board_conf(conf)  # raises on a bad [jobboard] first
        self.board = jobboard.Board(conf, self.backend, spec) if spec else None
        self._stopping = threading.Event()
        self._threads = []
        self._orphans = {}  # migration id -> monotonic time first seen ownerless
        # Called with the migration id whenever a flow run here ends (however).
        self.on_finished = []

    def start(self):
        """Take up work left by earlier conductors, then keep looking for it."""
        loops = [self._reaper]
        if self.board is None:
            self.resume_all()
        else:
            loops.append(self._claim_loop)
        for loop in loops:
            t = threading.Thread(target=loop, daemon=True, name=loop.__name__)
            t.start()
            self._threads.append(t)

    def _slot(self, host):
        with self._slots_lock:
            return self._slots[host]

    def save(self, migration, store):
        """Save the migration's flow (so it outlives this process); its engine.

        All of it in one transaction: TaskFlow's load_from_factory writes the
        book and flow, then the factory, then the store, and a conductor killed
        between them left a flow no restart could run. Built first by TaskFlow
        in memory, the book is saved whole, so a crash leaves either the whole
        flow or none (then the migration, recorded just before, had done
        nothing: _load fails it). The engine is loaded from what was saved,
        as a resume loads it.
        """
        factory = flows.FACTORIES[migration['subtype']]
        # The book is named and keyed by the migration: found again on resume.
        book = tf_models.LogBook('migration-%s' % migration['id'],
                                 uuid=migration['id'])
        taskflow.engines.load_from_factory(
            factory, store=store, book=book,
            backend=impl_memory.MemoryBackend(), engine='serial')
        with contextlib.closing(self.backend.get_connection()) as conn:
            conn.save_logbook(book)
        (flow_detail,) = book
        return book, self.engine(flow_detail)

    def engine(self, flow_detail):
        """The saved flow's engine, its atoms bound to this runner's services.

        As TaskFlow's load_from_detail, with the flow rebuilt by its factory
        bound before the engine is made.
        """
        flow = task_base.bind(taskflow.engines.flow_from_detail(flow_detail),
                              self.services)
        return taskflow.engines.load(flow, flow_detail=flow_detail,
                                     backend=self.backend, engine='serial')

    def submit(self, migration, store):
        """Save the flow, then run it in the pool, or post it for any conductor."""
        book, engine = self.save(migration, store)
        if self.board is not None:
            self.board.post(migration['id'], book, migration['source'])
            return None
        return self._start(migration['id'], migration['source'], engine, store)

    def _start(self, migration_id, source, engine, store):
        future = self.executor.submit(self._run, migration_id, source, engine, store)
        self.futures[migration_id] = future
        future.add_done_callback(lambda _f: self._finished(migration_id))
        return future

    def _finished(self, migration_id):
        self.futures.pop(migration_id, None)
        for listener in self.on_finished:
            try:
                listener(migration_id)
            except Exception:
                LOG.exception('Listener of the end of migration %s failed',
                              migration_id)

    def _load(self, conn, mig):
        """(engine, store) from the migration's saved flow; None when it cannot
        run from it, and the migration has ended (see _unreadable)."""
        try:
            book = conn.get_logbook(mig['id'])
        except tf_exc.NotFound:
            book = None
        if book is None or not len(book):
            return self._unreadable(mig, None, 'the conductor stopped before its '
                                    'flow was saved')
        try:
            (flow_detail,) = book
            store = _saved_store(flow_detail, mig)
            engine = self.engine(flow_detail)
        except Exception as exc:
            # Saved by an older conductor (in several writes) or damaged: not
            # worth a crash loop that would hold every other migration too.
            return self._unreadable(mig, book, 'its saved flow cannot be read '
                                    '(%s)' % (str(exc) or type(exc).__name__))
        return engine, store

    def _unreadable(self, mig, book, why):
        """End a migration that cannot run from its saved flow; None.

        Nothing done (no step of its flow began): failed, the guest unlocked and
        any claim released. Otherwise nothing can tell what to undo or finish:
        error, for an operator.
        """
        begun = mig['status'] != states.ACCEPTED or any(
            ad.state not in (None, tf_states.PENDING)
            for fd in (book or ()) for ad in fd
            if ad.name != tf_storage.Storage.injector_name)
        if begun:
            event, error = 'error', '%s; it had begun: check its hosts' % why
        else:
            event, error = 'fail', '%s; nothing had been done' % why
        LOG.error('Migration %s (%s): %s', mig['id'], mig['status'], error)
        if not begun:
            self.db.allocations.unclaim(mig['id'])
        self.db.history.add(mig['id'], constants.MIGRATION_SENTINEL,
                            tf_states.FAILURE, host='conductor', error=error)
        self.db.migrations.advance(mig['id'], event, error=error)
        return None

    def resume(self, mig):
        """Run a migration from its saved flow here; False if it cannot be."""
        with contextlib.closing(self.backend.get_connection()) as conn:
            loaded = self._load(conn, mig)
        if loaded is None:
            return False
        LOG.info('Resuming migration %s (%s) from its saved flow',
                 mig['id'], mig['status'])
        self._start(mig['id'], mig['source'], *loaded)
        return True

    def resume_all(self):
        """Run on every unfinished migration this database knows (after a restart).

        A flow resumes where its saved state left it: the task that was running
        runs again (tasks ask the agents what is true before acting), a rollback
        that was under way goes on. A migration whose flow was never saved had
        changed nothing yet: it fails. One that cannot be resumed now (the
        database failing, say) never stops the others: the reaper tries again.
        """
        resumed = []
        for mig in self.db.migrations.list():
            if mig['status'] in states.TERMINAL or mig['id'] in self.futures:
                continue
            try:
                if self.resume(mig):
                    resumed.append(mig['id'])
            except Exception:
                LOG.exception('Cannot resume migration %s; the reaper will try '
                              'again', mig['id'])
        return resumed

    # Jobboard. ----------------------------------------------------------------------
    def _claim_loop(self):
        interval = self.conf.jobboard.poll_interval
        # Jittered: conductors racing for one slot do not collide in step.
        while not self._stopping.wait(interval * random.uniform(0.5, 1.0)):
            try:
                self.claim_jobs()
            except Exception:
                LOG.exception('Cannot look for jobs on the board')

    def _claims_by_source(self, jobs=None):
        jobs = self.board.jobs() if jobs is None else jobs
        owners = {j.uuid: self.board.owner_of(j) for j in jobs}
        return owners, collections.Counter(
            j.details.get('source') for j in jobs if owners[j.uuid] is not None)

    def claim_jobs(self):
        """Claim what this conductor has room for, oldest first; ids started.

        The outbound cap counts claims on the board, so it holds across
        conductors; two racing for a host's last slot both see the excess after
        claiming and let go, to try again after a jittered pause.
        """
        started = []
        cap = self.conf.conductor.max_outbound_per_host
        jobs = self.board.jobs()
        owners, claimed = self._claims_by_source(jobs)
        for job in jobs:
            if len(self.futures) >= self.conf.conductor.workers \
                    or self._stopping.is_set():
                break
            mid, source = jobboard.migration_of(job), job.details.get('source')
            if mid is None or mid in self.futures or owners[job.uuid] is not None \
                    or claimed[source] >= cap:
                continue
            engine_box = []
            if not self.board.claim(job, lambda: [e.suspend() for e in engine_box]):
                continue
            if self._claims_by_source()[1][source] > cap:
                self.board.abandon(job)
                continue
            claimed[source] += 1
            if self._start_job(job, mid, source, engine_box) is not None:
                started.append(mid)
        return started

    def _start_job(self, job, mid, source, engine_box):
        mig = self.db.migrations.get(mid)
        if mig['status'] in states.TERMINAL:
            # Finished, but its conductor died before taking the job off.
            self.board.consume(job)
            return None
        if any(jobboard.migration_of(j) == mid and j.sequence < job.sequence
               for j in self.board.jobs()):
            # Posted twice (two reapers at once): only the oldest job runs it.
            self.board.consume(job)
            return None
        with contextlib.closing(self.backend.get_connection()) as conn:
            loaded = self._load(conn, mig)
        if loaded is None:
            self.board.consume(job)
            return None
        engine, store = loaded
        engine_box.append(engine)
        LOG.info('Claimed migration %s (%s) as %s', mid, mig['status'],
                 self.board.owner)
        future = self._start(mid, source, engine, store)
        future.add_done_callback(lambda _f: self._finish_job(job, mid))
        return future

    def _finish_job(self, job, mid):
        try:
            if not self.board.holds(job):
                return  # lost to another conductor: not ours to finish
            if self.db.migrations.get(mid)['status'] in states.TERMINAL:
                self.board.consume(job)
            else:
                # Stopped short (stopping, a database outage): anyone may go on.
                self.board.abandon(job)
        except Exception:
            # The claim expires by itself; the next owner finds the state.
            LOG.exception('Cannot hand back the job of migration %s', mid)
            self.board.forget(job)

    # Reaper. ------------------------------------------------------------------------
    def owners(self):
        """Migration id -> who is responsible for it right now: this conductor
        (running or queued for a slot), a board owner, or the board's queue."""
        owners = {mid: 'here' for mid in self.futures.copy()}
        if self.board is not None:
            for job in self.board.jobs():
                owner = self.board.owner_of(job)
                owners.setdefault(jobboard.migration_of(job),
                                  owner or 'queued on the jobboard')
        return owners

    def _reaper(self):
        while not self._stopping.wait(self.conf.conductor.reaper_interval):
            try:
                self.reap()
            except Exception:
                LOG.exception('Reaper pass failed')

    def reap(self, now=None):
        """Resume (or fail, when no flow was saved) every migration that has had
        no live owner for ``orphan_timeout`` seconds; their ids."""
        now = time.monotonic() if now is None else now
        owners = self.owners()
        reaped = []
        seen = set()
        for mig in self.db.migrations.list():
            if mig['status'] in states.TERMINAL or mig['id'] in owners:
                continue
            seen.add(mig['id'])
            since = self._orphans.setdefault(mig['id'], now)
            if now - since < self.conf.conductor.orphan_timeout:
                continue
            LOG.warning('Migration %s has been %s with no owner for %.0f s; '
                        'taking it up', mig['id'], mig['status'], now - since)
            if self.board is None:
                self.resume(mig)
            else:
                self._repost(mig)
            reaped.append(mig['id'])
        self._orphans = {k: v for k, v in self._orphans.items()
                         if k in seen and k not in reaped}
        return reaped

    def _repost(self, mig):
        with contextlib.closing(self.backend.get_connection()) as conn:
            try:
                book = conn.get_logbook(mig['id'])
            except tf_exc.NotFound:
                book = None
        if book is None or not len(book):
            # Whoever claims the job would find no flow to run either.
            self._unreadable(mig, None, 'the conductor stopped before its flow '
                             'was saved')
            return
        self.board.post(mig['id'], book, mig['source'])

    def _run(self, migration_id, source, engine, store):
        with self._slot(source):
            if self.db.migrations.get(migration_id)['cancel_requested']:
                # Aborted while queued: nothing was claimed or changed yet.
                self.db.migrations.advance(migration_id, 'cancel',
                                           error='aborted on request')
                return
            hosts = _atom_hosts(_subtype_runs_on(store['subtype']), store)
            with history.TaskHistoryListener(engine, self.db, migration_id, hosts,
                                             self.conf):
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
        self._stopping.set()
        for t in self._threads:
            t.join()
        # Running flows finish first; the heartbeat keeps their claims meanwhile.
        self.executor.shutdown(wait=True)
        if self.board is not None:
            self.board.close()
        self.backend.close()
