"""Migration flows saved in the conductor's database, and loaded back from it.

A flow is saved when its migration is accepted, so it outlives the conductor:
any conductor can load it and run it on from its saved state. One that cannot
be loaded ends its migration (failed if nothing had begun, else error).
"""

import contextlib

from oslo_log import log as logging
import taskflow.engines
from taskflow import exceptions as tf_exc
from taskflow import states as tf_states
from taskflow import storage as tf_storage
from taskflow.persistence.backends import impl_memory
from taskflow.persistence import models as tf_models

import flows
from conductor import persistence
from flows import constants
from flows import states
from flows.tasks import base as task_base

LOG = logging.getLogger(__name__)

NEVER_SAVED = 'the conductor stopped before its flow was saved'


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


class SavedFlows(object):

    def __init__(self, conf, db, services):
        self.db = db
        # What the flows loaded here use: bound to each flow as its engine loads.
        self.services = services
        # Shares the conductor database's engine (and its sqlite settings).
        self.backend = persistence.Backend(
            {'connection': conf.database.connection}, engine=db.engine)
        with contextlib.closing(self.backend.get_connection()) as conn:
            conn.upgrade()

    def close(self):
        self.backend.close()

    def save(self, migration, store):
        """Save the migration's flow (so it outlives this process); (book, engine).

        All of it in one transaction: TaskFlow's load_from_factory writes the
        book and flow, then the factory, then the store, and a conductor killed
        between them left a flow no restart could run. Built first by TaskFlow
        in memory, the book is saved whole, so a crash leaves either the whole
        flow or none (then the migration, recorded just before, had done
        nothing: load fails it). The engine is loaded from what was saved,
        as a resume loads it.
        """
        factory = flows.FACTORIES[migration['subtype']]
        # The book is named and keyed by the migration: found again on resume.
        book = tf_models.LogBook('migration-%s' % migration['id'],
                                 uuid=migration['id'])
        taskflow.engines.load_from_factory(
            factory, factory_kwargs=flows.factory_kwargs(store), store=store,
            book=book,
            backend=impl_memory.MemoryBackend(), engine='serial')
        with contextlib.closing(self.backend.get_connection()) as conn:
            conn.save_logbook(book)
        (flow_detail,) = book
        return book, self.engine(flow_detail)

    def engine(self, flow_detail):
        """The saved flow's engine, its atoms bound to this conductor's services.

        As TaskFlow's load_from_detail, with the flow rebuilt by its factory
        bound before the engine is made.
        """
        flow = task_base.bind(taskflow.engines.flow_from_detail(flow_detail),
                              self.services)
        return taskflow.engines.load(flow, flow_detail=flow_detail,
                                     backend=self.backend, engine='serial')

    def book(self, mig):
        """The migration's saved book; None, its migration ended, when its flow
        was never saved."""
        with contextlib.closing(self.backend.get_connection()) as conn:
            book = self._book(conn, mig)
        if book is None:
            return self._unreadable(mig, None, NEVER_SAVED)
        return book

    def load(self, mig):
        """(engine, store) from the migration's saved flow; None when it cannot
        run from it, and the migration has ended (see _unreadable)."""
        with contextlib.closing(self.backend.get_connection()) as conn:
            book = self._book(conn, mig)
            if book is None:
                return self._unreadable(mig, None, NEVER_SAVED)
            try:
                (flow_detail,) = book
                store = _saved_store(flow_detail, mig)
                engine = self.engine(flow_detail)
            except Exception as exc:
                # Saved by an older conductor (in several writes) or damaged:
                # not worth a crash loop that would hold every other migration.
                return self._unreadable(
                    mig, book, 'its saved flow cannot be read (%s)' % (
                        str(exc) or type(exc).__name__))
        return engine, store

    @staticmethod
    def _book(conn, mig):
        try:
            book = conn.get_logbook(mig['id'])
        except tf_exc.NotFound:
            return None
        return book if book is not None and len(book) else None

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
