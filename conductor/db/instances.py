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

    def describe(self, host=None, instance=None):
        """Instances as list gives them, each with its newest migration
        (``last_migration``, None if it never moved) and when its host last
        reported (``reported_at``): three queries whatever their number.
        ``instance``: only that one (a uuid), InstanceNotFound if unknown."""
        with self.session() as s:
            q = sa.select(models.Instance).order_by(models.Instance.name)
            if host is not None:
                q = q.where(models.Instance.host == host)
            if instance is not None:
                q = q.where(models.Instance.uuid == instance)
            found = [rows.to_dict(i) for i in s.scalars(q)]
            if instance is not None and not found:
                raise exception.InstanceNotFound(instance=instance)
            uuids = [i['uuid'] for i in found]
            newest = sa.select(
                models.Migration.instance_uuid,
                sa.func.max(models.Migration.created_at).label('created_at')
            ).group_by(models.Migration.instance_uuid)
            if instance is not None or host is not None:
                newest = newest.where(models.Migration.instance_uuid.in_(uuids))
            newest = newest.subquery()
            last = {m.instance_uuid: rows.to_dict(m) for m in s.scalars(
                sa.select(models.Migration).join(newest, sa.and_(
                    models.Migration.instance_uuid == newest.c.instance_uuid,
                    models.Migration.created_at == newest.c.created_at)))}
            seen = dict(s.execute(sa.select(models.Host.name, models.Host.last_seen)
                                  ).all())
        for inst in found:
            inst['last_migration'] = last.get(inst['uuid'])
            when = seen.get(inst['host'])
            inst['reported_at'] = when.isoformat() + 'Z' if when else None
        return found
