"""os-services: each host's agent, as the nova-compute service of its host."""

from api.handlers import common

BINARY = 'nova-compute'


def view(ctx, host):
    out = {'id': common.host_uuid('service', host['name']) if ctx.at_least('2.53')
           else common.number('service:' + host['name']),
           'binary': BINARY, 'host': host['name'], 'zone': common.ZONE,
           'status': 'enabled' if host['enabled'] else 'disabled',
           'state': 'up' if host['up'] else 'down',
           'updated_at': host['last_seen'],
           'disabled_reason': host.get('disabled_reason')}
    if ctx.at_least('2.11'):
        out['forced_down'] = False
    return out


def index(ctx, req):
    host = common.host_query(req, 'host')
    binary = common.query(req, 'binary')
    if binary is not None and binary != BINARY:
        return 200, {'services': []}
    hosts = ctx.conductor.list_hosts()
    if host is not None:
        hosts = [h for h in hosts if h['name'] == host]
    return 200, {'services': [view(ctx, h) for h in hosts]}
