"""Resource accounting: what a host and its nested providers can still take, and
where a guest's request lands on them.

A host is the root provider of VCPU, MEMORY_MB and DISK_GB (``vcpus``,
``memory_mb``, ``disk_gb``), each with a reserved amount and an allocation ratio:
capacity = (total - reserved) * ratio. Nested under it are NUMA cells (their own
VCPU and MEMORY_MB, same ratios) and PCI devices (PCI_DEVICE, with traits). Every
guest allocates on the host; a guest whose flavor has a NUMA topology also
allocates one cell per guest cell, and one whose flavor asks for PCI devices one
device per request unit. Pure functions on plain dicts: the database calls them
inside its claim transaction, the scheduler on its snapshot of every host.
"""

import itertools

from ferryman.common import exception
from ferryman.common import schemas
from ferryman.common import vocabulary

VCPU = 'VCPU'
MEMORY_MB = 'MEMORY_MB'
PCI_DEVICE = 'PCI_DEVICE'
NUMA = 'numa'
PCI = 'pci'
# A NUMA cell's classes, and the host resource whose ratio and reserve they share.
CELL_CLASSES = {VCPU: 'vcpus', MEMORY_MB: 'memory_mb'}
# Beyond this many guest cells the exact search is not tried (no flavor has it).
MAX_GUEST_CELLS = 8


class Misfit(Exception):
    """A request that does not fit: ``kind`` is the filter (capacity, numa, pci)."""

    def __init__(self, kind, resource, requested, free, reason):
        super().__init__(reason)
        self.kind = kind
        self.resource = resource
        self.requested = requested
        self.free = free
        self.reason = reason


def misfit_error(misfit, host, instance):
    """InsufficientCapacity for a request that does not fit, naming the filter."""
    return exception.InsufficientCapacity(
        message='Host %r lacks capacity for instance %r: %s (refused by filter '
                '%s)' % (host, instance, misfit.reason, misfit.kind),
        host=host, instance=instance, resource=misfit.resource,
        requested=misfit.requested, free=misfit.free)


def requested(instance, subtype):
    """What the guest (a dict) needs on a destination: local disk only when
    copied."""
    wanted = {r: instance[r] for r in schemas.RESOURCES}
    if subtype != vocabulary.BLOCK:
        wanted['disk_gb'] = 0
    return wanted


def placed_as(subtype, block_migration):
    """The subtype whose needs a migration has on its destination: an
    evacuation that rebuilds local disks (block_migration 'true') needs their
    room there, as a block migration does; one onto shared files or volumes
    none."""
    if subtype != vocabulary.EVACUATION:
        return subtype
    return vocabulary.BLOCK if block_migration == 'true' else vocabulary.FILE_LEVEL


def ratio(host, resource):
    return float((host.get('allocation_ratios') or {}).get(resource, 1.0))


def reserved(host, resource):
    return int((host.get('reserved') or {}).get(resource, 0))


def capacity(host, resource):
    return int((host[resource] - reserved(host, resource)) * ratio(host, resource))


def check_root(host, used, wanted):
    """Raise Misfit when ``wanted`` (resource -> amount) exceeds what is free."""
    for resource in schemas.RESOURCES:
        free = capacity(host, resource) - used.get(resource, 0)
        if wanted.get(resource, 0) > free:
            raise Misfit('capacity', resource, wanted[resource], free,
                         '%s needs %s, %s free' % (resource, wanted[resource], free))


def cell_capacity(host, provider, klass):
    resource = CELL_CLASSES[klass]
    return int(provider['inventory'].get(klass, 0) * ratio(host, resource))


def provider_capacity(host, provider, klass):
    """What a nested provider can hold of ``klass``: a NUMA cell its inventory
    at the host's ratio; a PCI device exactly its inventory."""
    if provider['kind'] == NUMA:
        return cell_capacity(host, provider, klass)
    return provider['inventory'].get(klass, 0)


def _free(host, provider, klass):
    used = (provider.get('used') or {}).get(klass, 0)
    return provider_capacity(host, provider, klass) - used


def fit_nested(host, providers, numa_topology, pci_requests):
    """[(provider name, resources)] placing the guest's NUMA cells (each on a
    cell of its own) and PCI requests on ``providers`` (dicts with name, kind,
    inventory, traits and used); raise Misfit when they cannot be placed."""
    plan = []
    cells = [p for p in providers if p['kind'] == NUMA]
    wanted_cells = list(numa_topology or [])
    if wanted_cells:
        placed = _place_cells(host, cells, wanted_cells)
        if placed is None:
            biggest = max((_free(host, p, MEMORY_MB) for p in cells), default=0)
            raise Misfit('numa', 'numa_cells', len(wanted_cells), len(cells),
                         'no %d distinct NUMA cells with room for %s (host has %d '
                         'cells, the largest %s MiB free)' % (
                             len(wanted_cells), _cells_text(wanted_cells),
                             len(cells), biggest))
        plan.extend(placed)
    taken = {}
    for request in pci_requests or []:
        trait, count = request.get('trait'), int(request['count'])
        devices = [p for p in providers if p['kind'] == PCI and
                   (trait is None or trait in p['traits'])]
        got = 0
        for dev in sorted(devices, key=lambda p: p['name']):
            free = _free(host, dev, PCI_DEVICE) - taken.get(dev['name'], 0)
            while free > 0 and got < count:
                taken[dev['name']] = taken.get(dev['name'], 0) + 1
                free -= 1
                got += 1
        if got < count:
            have = sum(max(0, _free(host, d, PCI_DEVICE)) for d in devices)
            raise Misfit('pci', 'pci_devices', count, have,
                         '%d PCI device(s)%s needed, %d free' % (
                             count, ' with trait %s' % trait if trait else '',
                             have))
    plan.extend((name, {PCI_DEVICE: n}) for name, n in sorted(taken.items()))
    return plan


def _cells_text(wanted):
    return ', '.join('%s vCPU/%s MiB' % (c['vcpus'], c['memory_mb']) for c in wanted)


def _place_cells(host, cells, wanted):
    """Guest cell i -> a distinct host cell with room, tightest fit first."""
    if len(wanted) > len(cells) or len(wanted) > MAX_GUEST_CELLS:
        return None

    def fits(cell, w):
        return (_free(host, cell, VCPU) >= w['vcpus'] and
                _free(host, cell, MEMORY_MB) >= w['memory_mb'])

    # Fullest cells first: leaves large cells whole for large guests.
    ordered = sorted(cells, key=lambda p: (_free(host, p, MEMORY_MB), p['name']))
    for combo in itertools.permutations(ordered, len(wanted)):
        if all(fits(cell, w) for cell, w in zip(combo, wanted)):
            return [(cell['name'], {VCPU: w['vcpus'], MEMORY_MB: w['memory_mb']})
                    for cell, w in zip(combo, wanted)]
    return None


def providers_from_report(host, info):
    """Nested providers as an agent reports them: numa_cells [{id, vcpus,
    memory_mb}], pci_devices [{address, traits, count}]."""
    out = []
    for cell in info.get('numa_cells') or []:
        out.append({'name': '%s/numa%s' % (host, cell['id']), 'kind': NUMA,
                    'inventory': {VCPU: int(cell['vcpus']),
                                  MEMORY_MB: int(cell['memory_mb'])},
                    'traits': []})
    for dev in info.get('pci_devices') or []:
        out.append({'name': '%s/pci/%s' % (host, dev['address']), 'kind': PCI,
                    'inventory': {PCI_DEVICE: int(dev.get('count', 1))},
                    'traits': sorted(dev.get('traits') or [])})
    return out
