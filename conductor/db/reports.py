"""Agents' reports: each records its host's capacity, nested providers and guests,
finds guests not known before, and forgets those gone from it."""

from oslo_log import log as logging
import sqlalchemy as sa

from conductor import placement
from conductor.db import hosts
from conductor.db import models
from conductor.db import rows
from ferryman.common import schemas

LOG = logging.getLogger(__name__)

HOST_FIELDS = ('hypervisor_type', 'cpu_model', 'cpu_features', 'vcpus', 'memory_mb',
               'disk_gb', 'instances_path')
GUEST_FIELDS = ('name', 'vcpus', 'memory_mb', 'disk_gb', 'storage', 'disks',
                'volumes', 'sla_class', 'power_state')


def _owns(s, host, guest, inst):
    """Whether ``host``'s report may describe the guest: one not known yet, or
    recorded on ``host``. A guest arriving in a migration the conductor knows is
    expected there and left to the migration; any other is logged and left as it
    is (the audit checks where it runs)."""
    if inst is None:
        if s.get(models.Migration, guest['uuid']) is None:
            return True
        LOG.warning('Host %s reports a guest %s, the id of a migration: ignored',
                    host, guest['uuid'])
        return False
    if inst.host == host:
        return True
    mig = inst.migration_id and s.get(models.Migration, inst.migration_id)
    if not (mig and mig.destination == host):
        LOG.warning('Host %s reports guest %s (%s), which is recorded on %s: its '
                    'record is left as it is', host, inst.uuid, inst.name, inst.host)
    return False


def _sync_providers(s, host, reported):
    known = {p.name: p for p in s.scalars(sa.select(models.Provider).where(
        models.Provider.host == host))}
    for values in reported:
        row = known.pop(values['name'], None)
        if row is None:
            s.add(models.Provider(host=host, **values))
        else:
            row.kind, row.inventory, row.traits = (
                values['kind'], values['inventory'], values['traits'])
    for gone in known.values():
        s.delete(gone)


def _place_found_guest(s, host, inst):
    """A guest found running: count it on the cells and devices it needs, where
    they fit (the agent knows no better than the host's own view here)."""
    host_row = rows.to_dict(s.get(models.Host, host))
    try:
        plan = placement.fit_nested(host_row, hosts.providers(s, host)[host],
                                    inst.numa_topology, inst.pci_requests)
    except placement.Misfit as exc:
        LOG.warning('Guest %s on %s: its NUMA/PCI use cannot be counted: %s',
                    inst.uuid, host, exc.reason)
        return
    for provider, resources in plan:
        s.add(models.NestedAllocation(consumer=inst.uuid, host=host,
                                      provider=provider, resources=resources))


class Reports(object):

    def __init__(self, session):
        self.session = session
        # Guest uuid -> when its host's reports first lacked it (this process).
        self._missing_since = {}

    def record(self, name, info, guests, vanish_after=None):
        """Record what an agent reports (checked against its schema already):
        capacity, nested providers, its guests, and guests not known before
        (with their allocations).

        A report speaks for its own host only: it never moves a known guest (a
        report gathered before a switch-over could arrive after it; only
        migrations change an instance's host), nor rewrites one recorded on
        another host.
        """
        try:
            self._record(name, info, guests, vanish_after)
        except sa.exc.IntegrityError:
            # Two first reports raced (an agent's cast and another RPC worker, or
            # a refresh): the other one inserted the host or guest; apply this
            # report over what it stored.
            self._record(name, info, guests, vanish_after)

    def _record(self, name, info, guests, vanish_after):
        now = rows.utcnow()
        with self.session.begin() as s:
            host = s.get(models.Host, name)
            if host is None:
                host = models.Host(name=name, enabled=True)
                s.add(host)
            for key in HOST_FIELDS:
                setattr(host, key, info[key])
            host.features = info.get('features', {})
            host.reserved = info.get('reserved') or {}
            host.allocation_ratios = info.get('allocation_ratios') or {}
            host.last_seen = now
            _sync_providers(s, name, placement.providers_from_report(name, info))
            for guest in guests:
                inst = s.get(models.Instance, guest['uuid'])
                new = inst is None
                if not _owns(s, name, guest, inst):
                    continue
                if new:
                    inst = models.Instance(uuid=guest['uuid'], host=name)
                    s.add(inst)
                    s.add(models.Allocation(
                        consumer=guest['uuid'], host=name,
                        **{r: guest[r] for r in schemas.RESOURCES}))
                for key in GUEST_FIELDS:
                    setattr(inst, key, guest[key])
                inst.numa_topology = guest.get('numa_topology') or None
                inst.pci_requests = guest.get('pci_requests') or []
                inst.project_id = guest.get('project_id') or None
                inst.user_id = guest.get('user_id') or None
                inst.image = guest.get('image') or None
                if new and (inst.numa_topology or inst.pci_requests):
                    s.flush()
                    _place_found_guest(s, name, inst)
            if vanish_after is not None:
                self._forget_vanished(s, name, {g['uuid'] for g in guests},
                                      vanish_after)

    def _forget_vanished(self, s, host, reported, vanish_after):
        """Guests gone from their host (deleted outside Ferryman) stop holding
        resources there once every report for ``vanish_after`` seconds has lacked
        them. A guest in a migration is never forgotten, nor one whose last
        migration ended within that time: a report gathered before a switch-over
        can arrive after it."""
        now = rows.utcnow()
        known = s.scalars(sa.select(models.Instance).where(
            models.Instance.host == host, models.Instance.migration_id.is_(None)))
        for inst in known:
            if inst.uuid in reported:
                self._missing_since.pop(inst.uuid, None)
                continue
            since = self._missing_since.setdefault(inst.uuid, now)
            last_move = s.scalar(sa.select(sa.func.max(models.Migration.updated_at))
                                 .where(models.Migration.instance_uuid == inst.uuid))
            if (now - since).total_seconds() < vanish_after or (
                    last_move is not None and
                    (now - last_move).total_seconds() < vanish_after):
                continue
            LOG.warning('Instance %s (%s) has not been on %s for %.0f s: forgetting '
                        'it and its allocations there', inst.uuid, inst.name, host,
                        (now - since).total_seconds())
            for table in (models.Allocation, models.NestedAllocation):
                s.execute(sa.delete(table).where(table.consumer == inst.uuid))
            s.delete(inst)
            self._missing_since.pop(inst.uuid, None)
