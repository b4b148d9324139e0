"""What guests and migrations hold on hosts and their nested providers, and the
claims that move it: a migration holds its guest's source allocation from its
claim on a destination to its end."""

import threading

import sqlalchemy as sa

from conductor import placement
from conductor.db import hosts
from conductor.db import models
from conductor.db import rows
from ferryman.common import exception
from ferryman.common import schemas


def _held(s, consumer, source):
    """The guest's allocation rows on its source (root and nested), unless the
    migration holds them already."""
    root = s.scalars(sa.select(models.Allocation).where(
        models.Allocation.consumer == consumer,
        models.Allocation.host == source)).first()
    nested = s.scalars(sa.select(models.NestedAllocation).where(
        models.NestedAllocation.consumer == consumer,
        models.NestedAllocation.host == source).order_by(
        models.NestedAllocation.provider)).all()
    return {'root': root, 'nested': list(nested)}


class Allocations(object):

    def __init__(self, session):
        self.session = session
        # Claims are check-then-write; the row lock (PostgreSQL) and this lock
        # (sqlite, one conductor process) make two racing claims serial.
        self._claim_lock = threading.Lock()

    def claim(self, migration_id, destination=None, force=False):
        """One transaction: claim ``destination`` (default: the migration's) for
        the guest and move the guest's source allocation to the migration, which
        holds it until the end; refuse when the destination lacks room.

        The destination becomes the migration's (an attempt on another candidate
        moves it). ``force`` copies the source allocation as it is, unchecked; a
        source allocation on nested providers cannot be copied and is refused.
        """
        with self._claim_lock, self.session.begin() as s:
            mig = s.get(models.Migration, migration_id)
            inst = s.get(models.Instance, mig.instance_uuid)
            dest = destination or mig.destination
            # The row lock serialises claims on one host across conductors.
            host = s.get(models.Host, dest, with_for_update=True)
            if host is None:
                raise exception.HostNotFound(host=dest)
            if mig.destination != dest:
                mig.destination = dest
                mig.updated_at = rows.utcnow()
            if s.scalars(sa.select(models.Allocation).where(
                    models.Allocation.consumer == inst.uuid,
                    models.Allocation.host == dest)).first():
                return  # claimed already (a task run again after a crash)
            held = _held(s, inst.uuid, mig.source)
            requested = placement.requested(
                rows.to_dict(inst),
                placement.placed_as(mig.subtype, mig.block_migration))
            if force:
                spans = 1 + len(held['nested'])
                if spans > 1:
                    raise exception.CannotForceNested(
                        instance=inst.uuid, host=dest, count=spans,
                        providers=', '.join([mig.source] + sorted(
                            n.provider for n in held['nested'])))
                root = held['root']
                wanted = ({r: getattr(root, r) for r in schemas.RESOURCES}
                          if root is not None else requested)
                plan = []
            else:
                wanted = requested
                host_dict = rows.to_dict(host)
                try:
                    placement.check_root(host_dict, hosts.usage(s, dest), wanted)
                    plan = placement.fit_nested(
                        host_dict, hosts.providers(s, dest)[dest],
                        inst.numa_topology, inst.pci_requests)
                except placement.Misfit as exc:
                    raise placement.misfit_error(exc, dest, inst.uuid)
            for row in [held['root']] + held['nested']:
                if row is not None:
                    row.consumer = mig.id
            s.add(models.Allocation(consumer=inst.uuid, host=dest, **wanted))
            for provider, resources in plan:
                s.add(models.NestedAllocation(consumer=inst.uuid, host=dest,
                                              provider=provider,
                                              resources=resources))

    def unclaim(self, migration_id, destination=None):
        """Undo claim() in one transaction: the guest's claim on ``destination``
        (default: the migration's) goes, what the migration held returns to the
        guest."""
        with self._claim_lock, self.session.begin() as s:
            mig = s.get(models.Migration, migration_id)
            dest = destination or mig.destination
            for table in (models.Allocation, models.NestedAllocation):
                s.execute(sa.delete(table).where(
                    table.consumer == mig.instance_uuid, table.host == dest))
                s.execute(sa.update(table).where(table.consumer == mig.id).values(
                    consumer=mig.instance_uuid))

    def drop_source(self, migration_id):
        """The migration completed: what it held on the source goes, at once."""
        with self.session.begin() as s:
            for table in (models.Allocation, models.NestedAllocation):
                s.execute(sa.delete(table).where(table.consumer == migration_id))

    def providers(self, consumer, host):
        """Providers the consumer's allocation on a host spans: the host itself
        and every nested provider it uses there."""
        with self.session() as s:
            held = _held(s, consumer, host)
            return ([host] if held['root'] is not None else []) + [
                n.provider for n in held['nested']]

    def list(self, consumer=None, host=None):
        with self.session() as s:
            q = sa.select(models.Allocation).order_by(models.Allocation.id)
            if consumer is not None:
                q = q.where(models.Allocation.consumer == consumer)
            if host is not None:
                q = q.where(models.Allocation.host == host)
            return [rows.to_dict(a) for a in s.scalars(q)]

    def nested(self, consumer=None, host=None):
        with self.session() as s:
            q = sa.select(models.NestedAllocation).order_by(
                models.NestedAllocation.provider)
            if consumer is not None:
                q = q.where(models.NestedAllocation.consumer == consumer)
            if host is not None:
                q = q.where(models.NestedAllocation.host == host)
            return [rows.to_dict(a) for a in s.scalars(q)]
