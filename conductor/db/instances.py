"""Guests as the conductor knows them (their hosts' reports record them)."""

import sqlalchemy as sa

from conductor.db import models
from conductor.db import rows
from ferryman.common import exception


class Instances(object):

    def __init__(self, session):
        self.session = session

    def get(self, ref):
        """By uuid, or by name when the name is unique."""
        with self.session() as s:
            inst = s.get(models.Instance, ref)
            if inst is None:
                found = s.scalars(sa.select(models.Instance).where(
                    models.Instance.name == ref)).all()
                if len(found) != 1:
                    raise exception.InstanceNotFound(instance=ref)
                inst = found[0]
            return rows.to_dict(inst)

    def list(self, host=None):
        with self.session() as s:
            q = sa.select(models.Instance).order_by(models.Instance.name)
            if host is not None:
                q = q.where(models.Instance.host == host)
            return [rows.to_dict(i) for i in s.scalars(q)]
