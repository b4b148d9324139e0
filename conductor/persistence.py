"""TaskFlow's SQLAlchemy persistence, at one statement per state change.

The stock backend pays four ways for the writes TaskFlow's storage makes (four per
task): it builds a new MetaData and Table set for every connection; it reads an
atom's row back before writing it (to merge what another writer might have saved);
on every flow state change it rewrites every atom of the flow; and the engine's
automatic progress (0.0 as a task starts, 1.0 as it ends) is a write of its own
right after each state write. Here the tables are built once per backend, an atom
write is a single UPDATE (of a statement built once: building one per write and
computing its cache key cost more than running it), a flow write updates the flow's
row and inserts, in one executemany, only the atoms not saved yet (listing the saved
ones only when this process has not yet seen the flow saved), and a state write
carries the progress the engine is about to set, so that progress write finds the
row as it would leave it and is skipped.

All of this rests on one engine owning a flow detail at a time (one conductor, or
the jobboard's claim holder): TaskFlow's storage hands over the whole atom detail,
already merged in memory, so the stock read-merge-write stores the same values, and
every change to an atom goes through update_atom_details, so the atoms a flow write
would rewrite are in the database already. What this process last stored for an
atom is remembered (bounded) and forgotten whenever the atom is read back, as a
resume does, so a row another conductor changed meanwhile is never taken as known.
"""

import collections
import json
import threading

from taskflow import exceptions as tf_exc
from taskflow import states as tf_states
from taskflow import storage as tf_storage
from taskflow.persistence.backends import impl_sqlalchemy
from taskflow.persistence.backends.sqlalchemy import tables
from taskflow.persistence import models as tf_models
from taskflow.types import failure as tf_failure

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

# The progress TaskFlow's task actions set right after entering these states (the
# injector, a TaskDetail holding the store, is saved by storage, not by an action).
_ENGINE_PROGRESS = {tf_states.RUNNING: 0.0, tf_states.REVERTING: 0.0,
                    tf_states.SUCCESS: 1.0, tf_states.REVERTED: 1.0}
_REMEMBERED = 4096  # atoms; forgetting one costs one write, never correctness


class _Converter(impl_sqlalchemy._Alchemist):

    @staticmethod
    def convert_atom_detail(row):
        row = dict(row.items())
        detail = impl_sqlalchemy._Alchemist.convert_atom_detail(row)
        if isinstance(detail, tf_models.RetryDetail):
            # TaskFlow's RetryDetail.from_dict lets a loop variable shadow each
            # result with its last failure: a retry whose attempts failed would
            # hand its tasks a failure as the value it provides once resumed
            # (say, mid-rollback after a crash). Decode its history here.
            detail.results = [
                (data, {name: tf_failure.Failure.from_dict(failure)
                        for name, failure in (failures or {}).items()})
                for data, failures in (row.get('results') or [])]
        return detail


class _Connection(impl_sqlalchemy.Connection):

    def __init__(self, backend, upgrade_lock):
        # Deliberately not calling the parent __init__: it rebuilds the schema.
        self._backend = backend
        self._upgrade_lock = upgrade_lock
        self._engine = backend.engine
        self._metadata = backend.metadata
        self._tables = backend.tables
        self._converter = backend.converter

    def update_atom_details(self, atom_detail):
        row = atom_detail.to_dict()
        row['meta'] = dict(row['meta'] or {})
        progress = _ENGINE_PROGRESS.get(row['state'])
        if progress is not None and isinstance(atom_detail, tf_models.TaskDetail) \
                and atom_detail.name != tf_storage.Storage.injector_name:
            row['meta']['progress'] = progress
        try:
            # A snapshot: storage's clones share results with the live detail
            # (inject() updates them in place), so a kept reference would change.
            snapshot = json.dumps(row, sort_keys=True)
        except (TypeError, ValueError):
            snapshot = None  # not comparable: always written
        if snapshot is not None and self._backend.stored(atom_detail.uuid) == snapshot:
            return atom_detail
        try:
            with self._engine.begin() as conn:
                found = conn.execute(self._backend.statement('update_atom'),
                                     dict(row, _uuid=atom_detail.uuid)).rowcount
        except sa_exc.SQLAlchemyError:
            self._backend.forget([atom_detail.uuid])
            tf_exc.raise_with_cause(
                tf_exc.StorageFailure,
                "Failed updating atom details with uuid '%s'" % atom_detail.uuid)
        if not found:
            self._backend.forget([atom_detail.uuid])
            raise tf_exc.NotFound("No atom details found with uuid '%s'"
                                  % atom_detail.uuid)
        self._backend.remember(atom_detail.uuid, snapshot)
        return atom_detail

    def update_flow_details(self, flow_detail):
        atoms = self._tables.atomdetails
        row = flow_detail.to_dict()
        known = self._backend.saved_atoms(flow_detail.uuid)
        try:
            with self._engine.begin() as conn:
                found = conn.execute(self._backend.statement('update_flow'),
                                     dict(row, _uuid=flow_detail.uuid)).rowcount
                new = [ad for ad in flow_detail if ad.uuid not in (known or ())]
                if found and new:
                    saved = known if known is not None else set(conn.scalars(
                        sa.select(atoms.c.uuid).where(
                            atoms.c.parent_uuid == flow_detail.uuid)))
                    rows = [dict(ad.to_dict(), parent_uuid=flow_detail.uuid,
                                 atom_type=tf_models.atom_detail_type(ad))
                            for ad in new if ad.uuid not in saved]
                    if rows:
                        # One executemany for the atoms a new flow brings.
                        conn.execute(sa.insert(atoms), rows)
        except sa_exc.SQLAlchemyError:
            self._backend.forget_flow(flow_detail.uuid)
            tf_exc.raise_with_cause(
                tf_exc.StorageFailure,
                "Failed updating flow details with uuid '%s'" % flow_detail.uuid)
        if not found:
            self._backend.forget_flow(flow_detail.uuid)
            raise tf_exc.NotFound("No flow details found with uuid '%s'"
                                  % flow_detail.uuid)
        self._backend.saw_atoms(flow_detail.uuid, [ad.uuid for ad in flow_detail])
        return flow_detail

    # Reads: whatever they return may differ from what this process stored.
    def get_logbook(self, book_uuid, lazy=False):
        book = super().get_logbook(book_uuid, lazy=lazy)
        self._backend.forget(ad.uuid for fd in book for ad in fd)
        for fd in book:
            self._backend.forget_flow(fd.uuid)
        return book

    def get_flows_for_book(self, book_uuid, lazy=False):
        for fd in super().get_flows_for_book(book_uuid, lazy=lazy):
            self._backend.forget(ad.uuid for ad in fd)
            self._backend.forget_flow(fd.uuid)
            yield fd

    def get_flow_details(self, fd_uuid, lazy=False):
        fd = super().get_flow_details(fd_uuid, lazy=lazy)
        self._backend.forget(ad.uuid for ad in fd)
        self._backend.forget_flow(fd_uuid)
        return fd

    def get_atom_details(self, ad_uuid):
        self._backend.forget([ad_uuid])
        return super().get_atom_details(ad_uuid)

    def get_atoms_for_flow(self, fd_uuid):
        for ad in super().get_atoms_for_flow(fd_uuid):
            self._backend.forget([ad.uuid])
            yield ad


class Backend(impl_sqlalchemy.SQLAlchemyBackend):

    def __init__(self, conf, engine=None):
        super().__init__(conf, engine=engine)
        self.metadata = sa.MetaData()
        self.tables = tables.fetch(self.metadata)
        self.converter = _Converter(self.tables)
        self._stored = collections.OrderedDict()  # atom uuid -> JSON last stored
        self._stored_lock = threading.Lock()
        # Flow uuid -> atom uuids known to have rows (saved or seen saved here):
        # a flow write then inserts without first listing the flow's atoms.
        self._saved_atoms = collections.OrderedDict()
        self._statements = {
            kind: sa.update(table).where(table.c.uuid == sa.bindparam('_uuid'))
            for kind, table in (('update_atom', self.tables.atomdetails),
                                ('update_flow', self.tables.flowdetails))}

    def statement(self, kind):
        """UPDATE of a flow's or atom's row by ``_uuid``, built once: its SET
        clause comes from the parameters' keys, so SQLAlchemy neither rebuilds
        the statement nor recomputes its cache key on every write."""
        return self._statements[kind]

    def saved_atoms(self, flow_uuid):
        """The flow's atoms that have rows; None when this process does not know."""
        with self._stored_lock:
            return self._saved_atoms.get(flow_uuid)

    def saw_atoms(self, flow_uuid, atom_uuids):
        with self._stored_lock:
            self._saved_atoms[flow_uuid] = frozenset(atom_uuids)
            self._saved_atoms.move_to_end(flow_uuid)
            while len(self._saved_atoms) > _REMEMBERED // 16:
                self._saved_atoms.popitem(last=False)

    def forget_flow(self, flow_uuid):
        with self._stored_lock:
            self._saved_atoms.pop(flow_uuid, None)

    def stored(self, uuid):
        with self._stored_lock:
            return self._stored.get(uuid)

    def remember(self, uuid, snapshot):
        if snapshot is None:
            return self.forget([uuid])
        with self._stored_lock:
            self._stored[uuid] = snapshot
            self._stored.move_to_end(uuid)
            while len(self._stored) > _REMEMBERED:
                self._stored.popitem(last=False)

    def forget(self, uuids):
        with self._stored_lock:
            for uuid in uuids:
                self._stored.pop(uuid, None)

    def get_connection(self):
        conn = _Connection(self, self._upgrade_lock)
        if not self._validated:
            conn.validate(max_retries=self._max_retries)
            self._validated = True
        return conn
