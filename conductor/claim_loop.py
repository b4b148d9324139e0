"""The jobboard claim loop: every conductor claims posted migrations it has room
for (with an expiry the board's heartbeat renews) and runs them, so a dead
conductor's migrations go on elsewhere once its claims expire."""

import collections
import random
import threading

from oslo_log import log as logging

from conductor import jobboard
from flows import states

LOG = logging.getLogger(__name__)


class ClaimLoop(object):

    def __init__(self, conf, db, board, pool, saved):
        self.conf = conf
        self.db = db
        self.board = board
        self.pool = pool
        self.saved = saved
        self._stopping = threading.Event()
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name='claim_loop')
        self._thread.start()

    def stop(self):
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self):
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
            if self.pool.full() or self._stopping.is_set():
                break
            mid, source = jobboard.migration_of(job), job.details.get('source')
            if mid is None or self.pool.runs(mid) \
                    or owners[job.uuid] is not None or claimed[source] >= cap:
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
        loaded = self.saved.load(mig)
        if loaded is None:
            self.board.consume(job)
            return None
        engine, store = loaded
        engine_box.append(engine)
        LOG.info('Claimed migration %s (%s) as %s', mid, mig['status'],
                 self.board.owner)
        future = self.pool.run(mid, source, engine, store)
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
