"""Destination filters and weighers, shared by scheduled and admin-chosen requests."""

from ferryman import exception
from flows import states


def expected_subtype(instance, source, host):
    if source['instances_path'] and source['instances_path'] == host['instances_path']:
        return states.FILE_LEVEL
    if instance['storage'] == 'volume':
        return states.BLOCK_STORAGE
    return states.BLOCK


def needs(instance, subtype):
    return {'vcpus': instance['vcpus'], 'memory_mb': instance['memory_mb'],
            'disk_gb': instance['disk_gb'] if subtype == states.BLOCK else 0}


def refusal(instance, source, host, force=False):
    """Why ``host`` cannot take the guest (filter name, error), or None.

    ``force`` skips capacity, as an operator who forces a host takes that risk;
    availability and compatibility still hold.
    """
    if host['name'] == source['name']:
        return 'same-host', exception.DestinationSameAsSource(host=host['name'])
    if not host['enabled']:
        return 'enabled', exception.HostUnavailable(
            host=host['name'], reason='disabled (%s)' % (
                host['disabled_reason'] or 'no reason given'))
    if not host['up']:
        return 'up', exception.HostUnavailable(
            host=host['name'], reason='its agent has not reported recently')
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
    if not force:
        wanted = needs(instance, expected_subtype(instance, source, host))
        for resource, amount in wanted.items():
            free = host[resource] - host['used'][resource]
            if amount > free:
                return 'capacity', exception.InsufficientCapacity(
                    host=host['name'], instance=instance['uuid'],
                    resource=resource, requested=amount, free=free)
    return None


def candidates(instance, source, hosts):
    """Hosts that pass every filter, best first: most free memory, then fewest
    migrations in flight."""
    passed, refused = [], {}
    for host in hosts:
        why = refusal(instance, source, host)
        if why is None:
            passed.append(host)
        elif host['name'] != source['name']:
            refused[host['name']] = why[0]
    passed.sort(key=lambda h: (-(h['memory_mb'] - h['used']['memory_mb']),
                               h['migrations_out'], h['name']))
    return passed, refused
