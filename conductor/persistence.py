"""TaskFlow's SQLAlchemy persistence, without its per-write schema rebuild.

The stock backend builds a new MetaData and Table set for every connection it hands
out, and storage asks for one on every write: that is most of its ~40 ms per task.
The tables never change while a process runs, so they are built once per backend.
"""

from taskflow.persistence.backends import impl_sqlalchemy
from taskflow.persistence.backends.sqlalchemy import tables

import sqlalchemy as sa


class _Connection(impl_sqlalchemy.Connection):

    def __init__(self, backend, upgrade_lock):
        # Deliberately not calling the parent __init__: it rebuilds the schema.
        self._backend = backend
        self._upgrade_lock = upgrade_lock
        self._engine = backend.engine
        self._metadata = backend.metadata
        self._tables = backend.tables
        self._converter = backend.converter


class Backend(impl_sqlalchemy.SQLAlchemyBackend):

    def __init__(self, conf, engine=None):
        super().__init__(conf, engine=engine)
        self.metadata = sa.MetaData()
        self.tables = tables.fetch(self.metadata)
        self.converter = impl_sqlalchemy._Alchemist(self.tables)

    def get_connection(self):
        conn = _Connection(self, self._upgrade_lock)
        if not self._validated:
            conn.validate(max_retries=self._max_retries)
            self._validated = True
        return conn
