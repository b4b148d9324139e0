"""Destination filters and weighers, shared by scheduled and admin-chosen requests.

Filters run in order on a host snapshot (``Hosts.list``); the first that
refuses names itself in the error, so an operator who chose a host learns why it
was refused. Weighers order what passes.
"""

from conductor import placement
from ferryman.common import exception
from flows import states

# In the order they run; a forced host skips those in CAPACITY_FILTERS.
FILTERS = ('same-host', 'record', 'enabled', 'up', 'hypervisor', 'cpu', 'capacity',
           'numa', 'pci')
CAPACITY_FILTERS = ('capacity', 'numa', 'pci')


def expected_subtype(instance, source, host):
    if instance['storage'] == 'volume':  # as selection.choose_subtype
        return states.BLOCK_STORAGE
    if source['instances_path'] and source['instances_path'] == host['instances_path']:
        return states.FILE_LEVEL
    return states.BLOCK


def why_down(host):
    """Why a host that is not up counts as down, in an error's words."""
    if host['forced_down']:
        return 'forced down by an operator'
    return 'its agent has not reported recently'


def _named(name, error):
    error.message = '%s (refused by filter %s)' % (error.message.rstrip('.'), name)
    error.args = (error.message,)
    return error


def refusal(instance, source, host, force=False):
    """Why ``host`` cannot take the guest (filter name, error), or None.

    ``force`` skips capacity, NUMA and PCI fit, as an operator who forces a host
    takes that risk; availability and compatibility still hold.
    """
    name, error = _refusal(instance, source, host, force)
    if name is None:
        return None
    # Placement's errors name their filter already.
    return name, error if name in CAPACITY_FILTERS else _named(name, error)


def _refusal(instance, source, host, force):
    if host['name'] == source['name']:
        return 'same-host', exception.DestinationSameAsSource(host=host['name'])
    if host.get('problems'):
        # Nothing else can be judged on values that cannot be interpreted.
        return 'record', exception.HostUnavailable(
            host=host['name'], reason='its record cannot be interpreted: %s' %
            '; '.join(host['problems']))
    if not host['enabled']:
        return 'enabled', exception.HostUnavailable(
            host=host['name'], reason='disabled (%s)' % (
                host['disabled_reason'] or 'no reason given'))
    if not host['up']:
        return 'up', exception.HostUnavailable(host=host['name'],
                                               reason=why_down(host))
    if host['hypervisor_type'] != source['hypervisor_type']:
        return 'hypervisor', exception.IncompatibleHost(
            host=host['name'], instance=instance['uuid'],
            reason='hypervisor %s, source has %s' % (host['hypervisor_type'],
                                                     source['hypervisor_type']))
    missing = sorted(set(source['cpu_features']) - set(host['cpu_features']))
    if missing:
        return 'cpu', exception.IncompatibleHost(
            host=host['name'], instance=instance['uuid'],
            reason='CPU lacks features %s' % ', '.join(missing))
    if force:
        return None, None
    wanted = placement.requested(instance, expected_subtype(instance, source, host))
    try:
        placement.check_root(host, host['used'], wanted)
        placement.fit_nested(host, host.get('providers') or [],
                             instance.get('numa_topology'),
                             instance.get('pci_requests'))
    except placement.Misfit as misfit:
        return misfit.kind, placement.misfit_error(misfit, host['name'],
                                                   instance['uuid'])
    return None, None


def weigh(host):
    """Sort key, best first: most free memory, then fewest migrations leaving it."""
    free = placement.capacity(host, 'memory_mb') - host['used']['memory_mb']
    return (-free, host['migrations_out'], host['name'])


def candidates(instance, source, hosts):
    """Hosts that pass every filter, best first; and host -> refusing filter."""
    passed, refused = [], {}
    for host in hosts:
        name, _error = _refusal(instance, source, host, False)
        if name is None:
            passed.append(host)
        elif host['name'] != source['name']:
            refused[host['name']] = name
    passed.sort(key=weigh)
    return passed, refused
