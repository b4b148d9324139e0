"""Move requests refused before any migration was recorded (see
models.RefusedRequest)."""

import sqlalchemy as sa

from conductor.db import models
from conductor.db import rows


class Refusals(object):

    def __init__(self, session):
        self.session = session

    def add(self, request_id, instance_uuid, action, host, error):
        with self.session.begin() as s:
            row = models.RefusedRequest(
                request_id=request_id, instance_uuid=instance_uuid, action=action,
                host=host, error=error, created_at=rows.utcnow())
            s.add(row)
            s.flush()
            return rows.to_dict(row)

    def list(self, instance_uuid):
        """A guest's refused requests, newest first."""
        with self.session() as s:
            q = sa.select(models.RefusedRequest).where(
                models.RefusedRequest.instance_uuid == instance_uuid).order_by(
                models.RefusedRequest.id.desc())
            return [rows.to_dict(r) for r in s.scalars(q)]
