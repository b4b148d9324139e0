"""Runs migration flows, saved so they outlive the conductor that accepted them.

Without a jobboard this conductor runs every flow it accepts (engine_pool) and
resumes them on restart. With one, accepting a migration saves its flow and
posts a job; the claim loop of every conductor claims jobs and runs them
(claim_loop). Either way a reaper takes up migrations left with no live owner
(reaper).
"""

from oslo_log import log as logging

from conductor import claim_loop
from conductor import engine_pool
from conductor import jobboard
from conductor import reaper
from conductor import saved_flows
from flows import states

LOG = logging.getLogger(__name__)


class FlowRunner(object):

    def __init__(self, conf, db, services):
        self.conf = conf
        self.db = db
        self.services = services  # of this runner's flows
        self.saved = saved_flows.SavedFlows(conf, db, services)
        self.backend = self.saved.backend
        self.pool = engine_pool.EnginePool(conf, db)
        spec = jobboard.board_conf(conf)  # raises on a bad [jobboard] first
        self.board = jobboard.Board(conf, self.backend, spec) if spec else None
        self.claims = None if self.board is None else claim_loop.ClaimLoop(
            conf, db, self.board, self.pool, self.saved)
        self.reaper = reaper.Reaper(conf, db, self.owners, self._take_up)

    @property
    def on_finished(self):
        """Called with the migration id whenever a flow run here ends (however)."""
        return self.pool.on_finished

    def start(self):
        """Take up work left by earlier conductors, then keep looking for it."""
        if self.board is None:
            self.resume_all()
        else:
            self.claims.start()
        self.reaper.start()

    def save(self, migration, store):
        return self.saved.save(migration, store)

    def submit(self, migration, store):
        """Save the flow, then run it in the pool, or post it for any conductor."""
        book, engine = self.save(migration, store)
        if self.board is not None:
            self.board.post(migration['id'], book, migration['source'])
            return None
        return self.pool.run(migration['id'], migration['source'], engine, store)

    def resume(self, mig):
        """Run a migration from its saved flow here; False if it cannot be."""
        loaded = self.saved.load(mig)
        if loaded is None:
            return False
        LOG.info('Resuming migration %s (%s) from its saved flow',
                 mig['id'], mig['status'])
        self.pool.run(mig['id'], mig['source'], *loaded)
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
            if mig['status'] in states.TERMINAL or self.pool.runs(mig['id']):
                continue
            try:
                if self.resume(mig):
                    resumed.append(mig['id'])
            except Exception:
                LOG.exception('Cannot resume migration %s; the reaper will try '
                              'again', mig['id'])
        return resumed

    def claim_jobs(self):
        return self.claims.claim_jobs()

    def owners(self):
        """Migration id -> who is responsible for it right now: this conductor
        (running or queued for a slot), a board owner, or the board's queue."""
        owners = dict.fromkeys(self.pool.running(), 'here')
        if self.board is not None:
            for job in self.board.jobs():
                owner = self.board.owner_of(job)
                owners.setdefault(jobboard.migration_of(job),
                                  owner or 'queued on the jobboard')
        return owners

    def reap(self, now=None):
        return self.reaper.reap(now)

    def _take_up(self, mig):
        """An orphan goes on: resumed here, or posted again for any conductor
        (unless it was never saved: whoever claimed it would find no flow)."""
        if self.board is None:
            self.resume(mig)
            return
        book = self.saved.book(mig)
        if book is not None:
            self.board.post(mig['id'], book, mig['source'])

    def wait(self, migration_id, timeout=None):
        self.pool.wait(migration_id, timeout)

    def stop(self):
        if self.claims is not None:
            self.claims.stop()
        self.reaper.stop()
        # Running flows finish first; the heartbeat keeps their claims meanwhile.
        self.pool.shutdown()
        if self.board is not None:
            self.board.close()
        self.saved.close()
