"""os-hypervisors: one per host the conductor knows."""

import json
import re

from api import faults
from api import policies
from api.handlers import common


def _id(ctx, host):
    return common.host_uuid('hypervisor', host) if ctx.at_least('2.53') \
        else common.number(host)


def _service_id(ctx, host):
    return common.host_uuid('service', host) if ctx.at_least('2.53') \
        else common.number('service:' + host)


def _summary(ctx, host):
    return {'id': _id(ctx, host['name']), 'hypervisor_hostname': host['name'],
            'state': 'up' if host['up'] else 'down',
            'status': 'enabled' if host['enabled'] else 'disabled'}


def _detail(ctx, host, guests):
    out = _summary(ctx, host)
    out.update({
        'hypervisor_type': host['hypervisor_type'], 'hypervisor_version': 0,
        'host_ip': None,  # hosts are known by name; no address is kept
        'service': {'host': host['name'], 'id': _service_id(ctx, host['name']),
                    'disabled_reason': host.get('disabled_reason')}})
    if not ctx.at_least('2.88'):
        cpu = {'model': host.get('cpu_model') or '',
               'features': host.get('cpu_features') or []}
        used = host['used']
        size = {r: host[r] for r in ('vcpus', 'memory_mb', 'disk_gb')}
        out.update({
            'cpu_info': cpu if ctx.at_least('2.28') else json.dumps(cpu),
            'current_workload': 0, 'running_vms': len(guests),
            'vcpus': size['vcpus'], 'vcpus_used': used['vcpus'],
            'memory_mb': size['memory_mb'], 'memory_mb_used': used['memory_mb'],
            'free_ram_mb': size['memory_mb'] - used['memory_mb'],
            'local_gb': size['disk_gb'], 'local_gb_used': used['disk_gb'],
            'free_disk_gb': size['disk_gb'] - used['disk_gb'],
            'disk_available_least': size['disk_gb'] - used['disk_gb']})
    return out


def _hosts(ctx, req):
    """(hosts matching the request's filters, guests by host)."""
    hosts = ctx.conductor.list_hosts()
    pattern = common.query(req, 'hypervisor_hostname_pattern')
    if pattern is not None:
        if not ctx.at_least('2.53'):
            raise faults.bad_request('hypervisor_hostname_pattern needs '
                                     'microversion 2.53.')
        hosts = [h for h in hosts if re.search(re.escape(pattern), h['name'])]
        if not hosts:
            raise faults.not_found('No hypervisor matching %r could be found.' %
                                   pattern[:80])
    guests = {}
    for inst in ctx.conductor.list_instances():
        guests.setdefault(inst['host'], []).append(inst)
    return hosts, guests


def _with_servers(ctx, req, out, guests):
    if ctx.at_least('2.53') and common.boolish(req, 'with_servers'):
        out['servers'] = [{'name': g['name'], 'uuid': g['uuid']} for g in guests]
    return out


def index(ctx, req):
    ctx.authorize(policies.HYPERVISORS % 'list')
    hosts, guests = _hosts(ctx, req)
    return 200, {'hypervisors': [
        _with_servers(ctx, req, _summary(ctx, h), guests.get(h['name'], []))
        for h in hosts]}


def detail(ctx, req):
    ctx.authorize(policies.HYPERVISORS % 'list-detail')
    hosts, guests = _hosts(ctx, req)
    return 200, {'hypervisors': [
        _with_servers(ctx, req, _detail(ctx, h, guests.get(h['name'], [])),
                      guests.get(h['name'], []))
        for h in hosts]}


def show(ctx, req, hypervisor_id):
    ctx.authorize(policies.HYPERVISORS % 'show')
    hosts, guests = _hosts(ctx, req)
    for host in hosts:
        if hypervisor_id == str(_id(ctx, host['name'])):
            on = guests.get(host['name'], [])
            return 200, {'hypervisor': _with_servers(ctx, req,
                                                     _detail(ctx, host, on), on)}
    raise faults.not_found('Hypervisor with ID %s could not be found.' %
                           hypervisor_id[:80])
