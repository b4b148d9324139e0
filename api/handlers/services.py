"""os-services: each host's agent, as the nova-compute service of its host;
enabling and disabling one (the scheduler then leaves its host out), forcing
it down (its host then counts as down whatever its agent reports)."""

from api import body as req_body
from api import faults
from api import policies
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
        # A conductor older than RPC 1.5 has no such flag.
        out['forced_down'] = bool(host.get('forced_down'))
    return out


def index(ctx, req):
    ctx.authorize(policies.SERVICES % 'list')
    host = common.host_query(req, 'host')
    binary = common.query(req, 'binary')
    if binary is not None and binary != BINARY:
        return 200, {'services': []}
    hosts = ctx.conductor.list_hosts()
    if host is not None:
        hosts = [h for h in hosts if h['name'] == host]
    return 200, {'services': [view(ctx, h) for h in hosts]}


_REASON = {'type': 'string', 'minLength': 1, 'maxLength': 255,
           'pattern': r'^[^\x00-\x1f\x7f]*\Z'}
UPDATE = {'type': 'object', 'minProperties': 1, 'additionalProperties': False,
          'properties': {'status': {'enum': ['enabled', 'disabled']},
                         'disabled_reason': _REASON,
                         'forced_down': {'type': 'boolean'}}}
# Before 2.53 the path names the change and the body the service (and the
# fields the change needs besides).
LEGACY = {'enable': {}, 'disable': {}, 'disable-log-reason': {
    'disabled_reason': _REASON}}
# From 2.11 to 2.52.
FORCE_DOWN = 'force-down'
FORCE_DOWN_FIELDS = {'forced_down': {'type': 'boolean'}}


def _legacy_schema(fields):
    props = dict({'host': {'type': 'string', 'minLength': 1, 'maxLength': 255,
                           'pattern': common.HOST_RE.pattern},
                  'binary': {'type': 'string', 'minLength': 1, 'maxLength': 255}},
                 **fields)
    return {'type': 'object', 'additionalProperties': False, 'properties': props,
            'required': sorted(props)}


def _legacy_change(ctx, req, fields):
    change = req_body.read(ctx, req, _legacy_schema(fields))
    if change['binary'] != BINARY:
        raise faults.bad_request('Only %s services can be changed, not %s.' % (
            BINARY, change['binary'][:80]))
    return change


def _set(ctx, host, enabled, reason):
    return ctx.conductor.set_host_enabled(host, enabled, reason)


def update(ctx, req, service_id):
    """PUT /os-services/{id}: from 2.53 by id; before, /enable, /disable,
    /disable-log-reason and (from 2.11) /force-down with host and binary in
    the body."""
    ctx.authorize(policies.SERVICES % 'update')
    if not ctx.at_least('2.53'):
        return _legacy(ctx, req, service_id)
    change = req_body.read(ctx, req, UPDATE)
    if 'disabled_reason' in change and change.get('status') != 'disabled':
        raise faults.bad_request('Specifying a disabled reason is not supported '
                                 'when the status is enabled.')
    host = next((h for h in ctx.conductor.list_hosts()
                 if common.host_uuid('service', h['name']) == service_id), None)
    if host is None:
        raise faults.not_found('Service %s not found.' % service_id[:80])
    if 'status' in change:
        host = _set(ctx, host['name'], change['status'] == 'enabled',
                    change.get('disabled_reason'))
    if 'forced_down' in change:
        host = ctx.conductor.force_down(host['name'], change['forced_down'])
    return 200, {'service': view(ctx, host)}


def _legacy(ctx, req, action):
    if action == FORCE_DOWN and ctx.at_least('2.11'):
        return _force_down(ctx, req)
    if action not in LEGACY:
        raise faults.not_found('Unknown action %s.' % action[:80])
    change = _legacy_change(ctx, req, LEGACY[action])
    host = _set(ctx, change['host'], action == 'enable',
                change.get('disabled_reason'))
    out = {'host': host['name'], 'binary': BINARY,
           'status': 'enabled' if host['enabled'] else 'disabled'}
    if LEGACY[action]:
        out['disabled_reason'] = host.get('disabled_reason')
    return 200, {'service': out}


def _force_down(ctx, req):
    """PUT /os-services/force-down (2.11 to 2.52): host, binary, forced_down."""
    change = _legacy_change(ctx, req, FORCE_DOWN_FIELDS)
    host = ctx.conductor.force_down(change['host'], change['forced_down'])
    return 200, {'service': {'host': host['name'], 'binary': BINARY,
                             'forced_down': host['forced_down']}}
