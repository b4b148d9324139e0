"""Drains' records: one per host emptied, held by one drainer at a time under a
lease, and the migrations a drain starts only while the limits leave a slot."""

import threading

from oslo_log import log as logging
import sqlalchemy as sa

from conductor.db import migrations
from conductor.db import models
from conductor.db import rows
from ferryman.common import exception

LOG = logging.getLogger(__name__)

DRAIN_RUNNING = 'running'
DRAIN_DONE = 'done'
# pg_advisory_xact_lock key of drain starts (any 64-bit number nobody else uses).
DRAIN_SLOT_LOCK = 0x66657272794472


class NoDrainSlot(Exception):
    """A drain may not start a migration now (a limit is reached, or the drain
    is no longer this drainer's); the guest waits for a later pass."""


class Drains(object):

    def __init__(self, engine, session):
        self.engine = engine
        self.session = session
        # Drain starts: the advisory lock (PostgreSQL) and this one (sqlite).
        self._slot_lock = threading.Lock()

    def create(self, drain_id, host, max_parallel, guests, owner=None, lease=None):
        """Record a drain of ``host`` and disable the host for new placements, in
        one transaction; refuse while another drain of it runs. ``owner`` holds
        it for ``lease`` seconds (the drainer of the conductor asked)."""
        now = rows.utcnow()
        with self.session.begin() as s:
            row = s.get(models.Host, host, with_for_update=True)
            if row is None:
                raise exception.HostNotFound(host=host)
            running = s.scalars(sa.select(models.Drain).where(
                models.Drain.host == host,
                models.Drain.status == DRAIN_RUNNING)).first()
            if running is not None:
                raise exception.DrainInProgress(host=host, drain=running.id)
            row.enabled = False
            row.disabled_reason = 'draining (drain %s)' % drain_id
            drain = models.Drain(id=drain_id, host=host, status=DRAIN_RUNNING,
                                 max_parallel=max_parallel, guests=guests,
                                 created_at=now, updated_at=now, owner=owner,
                                 lease_expires_at=rows.later(now, lease))
            s.add(drain)
        return rows.to_dict(drain)

    def update(self, drain_id, owner=None, **values):
        """Change a drain; with ``owner``, only while that drainer still holds
        it (None, and nothing changed, once another one took it over)."""
        with self.session.begin() as s:
            drain = s.get(models.Drain, drain_id, with_for_update=True)
            if owner is not None and drain.owner != owner:
                return None
            for key, value in values.items():
                setattr(drain, key, value)
            drain.updated_at = rows.utcnow()
            return rows.to_dict(drain)

    def get(self, drain_id):
        with self.session() as s:
            drain = s.get(models.Drain, drain_id)
            if drain is None:
                raise exception.DrainNotFound(drain=drain_id)
            return rows.to_dict(drain)

    def list(self, host=None, status=None):
        with self.session() as s:
            q = sa.select(models.Drain).order_by(models.Drain.created_at)
            if host is not None:
                q = q.where(models.Drain.host == host)
            if status is not None:
                q = q.where(models.Drain.status == status)
            return [rows.to_dict(d) for d in s.scalars(q)]

    def lease(self, owner, lease):
        """The running drains ``owner`` holds now, each for ``lease`` more
        seconds: its own, unowned ones and those whose owner's lease ran out (a
        dead conductor's). Rows another conductor is leasing at this moment are
        skipped, not waited for."""
        now = rows.utcnow()
        with self.session.begin() as s:
            held = s.scalars(sa.select(models.Drain).where(
                models.Drain.status == DRAIN_RUNNING,
                sa.or_(models.Drain.owner.is_(None), models.Drain.owner == owner,
                       models.Drain.lease_expires_at < now)).order_by(
                models.Drain.created_at).with_for_update(skip_locked=True)).all()
            for row in held:
                if row.owner not in (None, owner):
                    LOG.warning('Drain %s of %s: taking it over from %s, whose '
                                'lease ran out at %s', row.id, row.host, row.owner,
                                row.lease_expires_at)
                row.owner = owner
                row.lease_expires_at = rows.later(now, lease)
            return [rows.to_dict(row) for row in held]

    def release(self, owner):
        """``owner`` stops: its drains are free for any drainer at once."""
        with self.session.begin() as s:
            return s.execute(sa.update(models.Drain).where(
                models.Drain.owner == owner).values(
                owner=None, lease_expires_at=None)).rowcount

    def create_migration(self, values, drain_id, owner, max_per_host, max_cluster,
                         lease=None):
        """Record a migration for a drain, only while there is room: in the same
        transaction, under one lock for every conductor, the migrations in flight
        leaving the source and in the whole cluster are counted and must stay
        below the limits, and the drain must still be ``owner``'s. Raise
        NoDrainSlot (nothing recorded) otherwise.

        With ``lease`` (seconds), a lease that ran out while no other drainer
        took the drain is renewed rather than refused: a pass slower than the
        lease (a loaded conductor, many drains) keeps its drains."""
        now = rows.utcnow()
        with self._slot_lock, self.session.begin() as s:
            if self.engine.dialect.name == 'postgresql':
                # Serialises the count and the insert across conductors; held
                # to the end of the transaction.
                s.execute(sa.text('SELECT pg_advisory_xact_lock(:key)'),
                          {'key': DRAIN_SLOT_LOCK})
            # Locked: a drainer taking it over waits for (or skips) this row.
            drain = s.get(models.Drain, drain_id, with_for_update=True)
            lapsed = drain is not None and (drain.lease_expires_at is None or
                                            drain.lease_expires_at < now)
            if drain is None or drain.owner != owner or (lapsed and not lease):
                raise NoDrainSlot('drain %s is no longer held by %s' % (
                    drain_id, owner))
            if lapsed:
                LOG.info('Drain %s of %s: lease ran out mid-pass and nobody took '
                         'it over; renewed', drain_id, drain.host)
                drain.lease_expires_at = rows.later(now, lease)
            by_source = migrations.active_by_source(s)
            leaving = by_source.get(values['source'], 0)
            if leaving >= max_per_host:
                raise NoDrainSlot('%d migrations leave %s, at most %d' % (
                    leaving, values['source'], max_per_host))
            total = sum(by_source.values())
            if total >= max_cluster:
                raise NoDrainSlot('%d migrations in flight in the cluster, at '
                                  'most %d' % (total, max_cluster))
            mig = migrations.add(s, values, now)
        return rows.to_dict(mig)
