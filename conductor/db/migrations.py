"""Live migrations' records: each locks its guest from acceptance to its end, and
moves through its subtype's state machine one transaction per event."""

import sqlalchemy as sa

from conductor.db import models
from conductor.db import rows
from ferryman.common import exception
from flows import states

_GET = sa.select(models.Migration.__table__).where(
    models.Migration.__table__.c.id == sa.bindparam('id'))


def add(s, values, now):
    """Lock the guest to a new migration in ``s``; refused if it has one."""
    locked = s.execute(sa.update(models.Instance).where(
        models.Instance.uuid == values['instance_uuid'],
        models.Instance.migration_id.is_(None)).values(
        migration_id=values['id'])).rowcount
    if not locked:
        holder = s.get(models.Instance, values['instance_uuid']).migration_id
        raise exception.InstanceAlreadyMigrating(
            instance=values['instance_uuid'], migration=holder)
    mig = models.Migration(status=states.ACCEPTED, created_at=now,
                           updated_at=now, rollback_errors=[], progress={},
                           stats={}, last_known_host=values['source'], **values)
    s.add(mig)
    return mig


def active_by_source(s, sources=None):
    """Source host -> migrations leaving it that are not finished yet (of the hosts
    in ``sources``, when given)."""
    q = sa.select(models.Migration.source, sa.func.count()).where(
        models.Migration.status.in_(states.ACTIVE)).group_by(models.Migration.source)
    if sources is not None:
        q = q.where(models.Migration.source.in_(sources))
    return dict(s.execute(q).all())


def _moved(s, mig, now):
    mig.switchover_at = mig.switchover_at or now
    mig.last_known_host = mig.destination
    s.execute(sa.update(models.Instance).where(
        models.Instance.uuid == mig.instance_uuid).values(host=mig.destination))


def _drop_held(s, migration_id):
    """What a migration holds on its source, released."""
    for table in (models.Allocation, models.NestedAllocation):
        s.execute(sa.delete(table).where(table.consumer == migration_id))


class Migrations(object):

    def __init__(self, engine, session):
        self.engine = engine
        self.session = session

    def create(self, values):
        """Record an accepted migration and lock its guest to it, atomically."""
        now = rows.utcnow()
        with self.session.begin() as s:
            mig = add(s, values, now)
        return rows.to_dict(mig)

    def get(self, migration_id):
        # Flows read their migration several times per step: a prebuilt Core
        # SELECT costs a fraction of an ORM session's get.
        with self.engine.connect() as conn:
            row = conn.execute(_GET, {'id': migration_id}).first()
        if row is None:
            raise exception.MigrationNotFound(migration=migration_id)
        return rows.row_dict(row)

    def get_many(self, ids):
        with self.session() as s:
            return [rows.to_dict(m) for m in s.scalars(
                sa.select(models.Migration).where(models.Migration.id.in_(ids)))]

    def list(self, instance=None, status=None, host=None):
        with self.session() as s:
            q = sa.select(models.Migration).order_by(models.Migration.created_at)
            if instance is not None:
                q = q.where(models.Migration.instance_uuid == instance)
            if status is not None:
                q = q.where(models.Migration.status == status)
            if host is not None:
                q = q.where(sa.or_(models.Migration.source == host,
                                   models.Migration.destination == host))
            return [rows.to_dict(m) for m in s.scalars(q)]

    def active_by_source(self):
        """Source host -> migrations leaving it that are not finished yet."""
        with self.session() as s:
            return active_by_source(s)

    def update(self, migration_id, **values):
        with self.session.begin() as s:
            mig = s.get(models.Migration, migration_id)
            for key, value in values.items():
                setattr(mig, key, value)
            mig.updated_at = rows.utcnow()
            return rows.to_dict(mig)

    def add_rollback_error(self, migration_id, text):
        with self.session.begin() as s:
            mig = s.get(models.Migration, migration_id)
            mig.rollback_errors = list(mig.rollback_errors) + [text]

    def advance(self, migration_id, event, **values):
        """Apply a state machine event (and other values) in one transaction."""
        with self.session.begin() as s:
            mig = s.get(models.Migration, migration_id, with_for_update=True)
            new = states.advance(mig.subtype, mig.status, event)
            mig.status = new
            for key, value in values.items():
                setattr(mig, key, value)
            mig.updated_at = rows.utcnow()
            if new in states.TERMINAL:
                s.execute(sa.update(models.Instance).where(
                    models.Instance.uuid == mig.instance_uuid,
                    models.Instance.migration_id == mig.id).values(migration_id=None))
            return rows.to_dict(mig)

    def _switch(self, migration_id, event, **values):
        """An event after which the guest runs on the destination."""
        now = rows.utcnow()
        with self.session.begin() as s:
            mig = s.get(models.Migration, migration_id, with_for_update=True)
            mig.status = states.advance(mig.subtype, mig.status, event)
            mig.updated_at = now
            for key, value in values.items():
                setattr(mig, key, value)
            _moved(s, mig, now)
            return rows.to_dict(mig)

    def started_on_destination(self, migration_id):
        """Evacuation: the guest was started on the destination (its
        switch-over); from here only forward."""
        return self._switch(migration_id, 'switch_over')

    # Evacuation and fencing. ---------------------------------------------------
    def to_fence(self, host):
        """Evacuations away from ``host`` whose guest it has not destroyed yet:
        every one that may start the guest elsewhere (in flight) or has (past
        its start, completed or in error); not those rolled back."""
        with self.session() as s:
            q = sa.select(models.Migration).where(
                models.Migration.subtype == states.EVACUATION,
                models.Migration.source == host,
                models.Migration.fenced_at.is_(None),
                sa.or_(models.Migration.status.in_(
                    states.ACTIVE + (states.COMPLETED,)),
                    models.Migration.switchover_at.isnot(None)))
            return [rows.to_dict(m) for m in s.scalars(
                q.order_by(models.Migration.created_at))]

    def fenced(self, host, migration_ids):
        """``host`` destroyed the guests of these evacuations: each is marked,
        and one that has ended releases the source allocation it held (one in
        flight releases it as it completes). Ids of another host, or not
        evacuations, are ignored: an agent speaks for its own host only."""
        now = rows.utcnow()
        done = []
        with self.session.begin() as s:
            for mig in s.scalars(sa.select(models.Migration).where(
                    models.Migration.id.in_(list(migration_ids)),
                    models.Migration.subtype == states.EVACUATION,
                    models.Migration.source == host).with_for_update()):
                if mig.fenced_at is not None:
                    continue
                mig.fenced_at = now
                mig.updated_at = now
                if mig.status in states.TERMINAL:
                    _drop_held(s, mig.id)
                done.append(mig.id)
        return done

    def complete_evacuation(self, migration_id):
        """The evacuation completes; its source allocation goes now only if the
        source has fenced the guest already (else at fencing)."""
        with self.session.begin() as s:
            mig = s.get(models.Migration, migration_id, with_for_update=True)
            if mig.status != states.COMPLETED:
                mig.status = states.advance(mig.subtype, mig.status, 'complete')
                mig.updated_at = rows.utcnow()
                s.execute(sa.update(models.Instance).where(
                    models.Instance.uuid == mig.instance_uuid,
                    models.Instance.migration_id == mig.id).values(
                    migration_id=None))
            if mig.fenced_at is not None:
                _drop_held(s, mig.id)
            return rows.to_dict(mig)

    def enter_post_copy(self, migration_id):
        """The guest now runs on the destination, its memory still arriving."""
        return self._switch(migration_id, 'post_copy')

    def switch_over(self, migration_id, stats):
        """The hypervisor's job completed: the guest runs on the destination."""
        return self._switch(migration_id, 'switch_over', stats=stats)
