"""Task history: one row per transition of a migration's flow atoms."""

import sqlalchemy as sa

from conductor.db import models
from conductor.db import rows

_INSERT = sa.insert(models.TaskEvent.__table__)


class TaskHistory(object):

    def __init__(self, engine, session):
        self.engine = engine
        self.session = session

    def add(self, migration_id, atom, state, host=None, started_at=None,
            ended_at=None, error=None, details=None):
        # One INSERT, no ORM unit of work, of a statement built once: the history
        # writes on every transition.
        with self.engine.begin() as conn:
            conn.execute(_INSERT, dict(
                migration_id=migration_id, atom=atom, state=state, host=host,
                started_at=started_at, ended_at=ended_at, error=error,
                details=details))

    def list(self, migration_id):
        with self.session() as s:
            q = sa.select(models.TaskEvent).where(
                models.TaskEvent.migration_id == migration_id).order_by(
                models.TaskEvent.id)
            return [rows.to_dict(e) for e in s.scalars(q)]
