"""Servers: the guests the conductor knows, in Nova's words.

Status: MIGRATING while a migration holds the guest, ERROR when its newest
migration ended in error (where the guest runs is then an operator's question),
else from its power state. Ferryman records no creation time: ``created`` and
``updated`` are when the guest's host last reported it.
"""

from api import faults
from api import policies
from api.handlers import common
from ferryman.common import vocabulary as words

# Power state -> (Nova's power_state number, vm_state, status).
POWER = {'running': (1, 'active', 'ACTIVE'), 'blocked': (1, 'active', 'ACTIVE'),
         'paused': (3, 'paused', 'PAUSED'), 'shutdown': (4, 'stopped', 'SHUTOFF'),
         'shutoff': (4, 'stopped', 'SHUTOFF'), 'crashed': (6, 'stopped', 'SHUTOFF'),
         'suspended': (7, 'suspended', 'SUSPENDED'),
         'unknown': (0, 'active', 'UNKNOWN')}
EPOCH = '1970-01-01T00:00:00Z'


def state(inst):
    """(status, vm_state, task_state, power_state number, progress) of a guest."""
    power, vm_state, status = POWER.get(inst['power_state'], POWER['unknown'])
    last = inst.get('last_migration') or {}
    if inst['migration_id']:
        if last.get('subtype') == words.EVACUATION:
            # Nova's evacuate: the server is rebuilt elsewhere.
            return 'REBUILD', vm_state, 'rebuilding', power, 0
        progress = (last.get('progress') or {}).get('percent') or 0
        return 'MIGRATING', vm_state, 'migrating', power, int(progress)
    if last.get('status') == 'error':
        return 'ERROR', 'error', None, power, 0
    return status, vm_state, None, power, 0


def owner(inst):
    """A server as the policy's target: its owner."""
    return {'project_id': inst.get('project_id') or '',
            'user_id': inst.get('user_id') or ''}


def view(ctx, inst, shown=False, extended=True):
    """``shown``: for GET /servers/{id}, which alone lists server groups;
    ``extended``: with the OS-EXT-SRV-ATTR fields (where it runs), which
    only the extended-attributes rule's callers see."""
    status, vm_state, task_state, power, progress = state(inst)
    when = inst.get('reported_at') or EPOCH
    fid = common.flavor_id(inst)
    server = {
        'id': inst['uuid'], 'name': inst['name'], 'status': status,
        'tenant_id': inst.get('project_id') or '',
        'user_id': inst.get('user_id') or '', 'metadata': {}, 'addresses': {},
        'created': when, 'updated': when,
        'hostId': common.host_id(inst['host']),
        'image': '',  # none known: clients show it as booted from volume
        'links': ctx.link('/servers/%s' % inst['uuid']),
        'accessIPv4': '', 'accessIPv6': '', 'OS-DCF:diskConfig': 'MANUAL',
        'progress': progress, 'key_name': None, 'config_drive': '',
        'OS-EXT-AZ:availability_zone': common.ZONE,
        'OS-SRV-USG:launched_at': None, 'OS-SRV-USG:terminated_at': None,
        'OS-EXT-STS:vm_state': vm_state, 'OS-EXT-STS:task_state': task_state,
        'OS-EXT-STS:power_state': power,
        'OS-EXT-SRV-ATTR:host': inst['host'],
        'OS-EXT-SRV-ATTR:hypervisor_hostname': inst['host'],
        'OS-EXT-SRV-ATTR:instance_name': inst['name'],
        'os-extended-volumes:volumes_attached': [
            {'id': v} for v in inst.get('volumes') or []],
    }
    if status == 'ERROR':
        last = inst['last_migration']
        server['fault'] = {'code': 500, 'created': last['updated_at'],
                           'message': (last.get('error') or 'migration %s ended in '
                                       'error' % last['id'])[:255]}
    if ctx.at_least('2.47'):
        server['flavor'] = {'original_name': fid, 'vcpus': inst['vcpus'],
                            'ram': inst['memory_mb'], 'disk': inst['disk_gb'],
                            'ephemeral': 0, 'swap': 0, 'extra_specs': {}}
    else:
        server['flavor'] = {'id': fid, 'links': [
            {'rel': 'bookmark', 'href': '%s/flavors/%s' % (ctx.base_url, fid)}]}
    if ctx.at_least('2.3'):
        for volume in server['os-extended-volumes:volumes_attached']:
            volume['delete_on_termination'] = False
        server.update({'OS-EXT-SRV-ATTR:hostname': inst['name'],
                       'OS-EXT-SRV-ATTR:reservation_id': '',
                       'OS-EXT-SRV-ATTR:launch_index': 0,
                       'OS-EXT-SRV-ATTR:kernel_id': '',
                       'OS-EXT-SRV-ATTR:ramdisk_id': '',
                       'OS-EXT-SRV-ATTR:root_device_name': None,
                       'OS-EXT-SRV-ATTR:user_data': None})
    if ctx.at_least('2.9'):
        server['locked'] = False
    if ctx.at_least('2.16'):
        server['host_status'] = 'UP'
    if ctx.at_least('2.19'):
        server['description'] = None
    if ctx.at_least('2.26'):
        server['tags'] = []
    if ctx.at_least('2.63'):
        server['trusted_image_certificates'] = None
    if shown and ctx.at_least('2.71'):
        server['server_groups'] = []
    if ctx.at_least('2.73'):
        server['locked_reason'] = None
    if not extended:
        for key in [k for k in server if k.startswith('OS-EXT-SRV-ATTR:')]:
            del server[key]
        server.pop('host_status', None)
    return server


def get(ctx, server_id, rule):
    """The guest of a path's server id, once ``rule`` allows the caller on
    it (403 naming the rule); 404 for anything but a known uuid."""
    if not common.is_uuid(server_id):
        raise faults.not_found('Instance %s could not be found.' % server_id[:80])
    inst = ctx.conductor.describe_instances(instance=server_id)[0]
    ctx.authorize(rule, owner(inst))
    return inst


def _listed(ctx, req, kind):
    """The servers a listing shows: every project's to those the
    get_all_tenants rule allows, else the caller's project's."""
    ctx.authorize(policies.SERVERS % kind)
    host = common.host_query(req, 'host') or common.host_query(req, 'node')
    if host is not None and not ctx.can(policies.EXTENDED_ATTRIBUTES):
        # As Nova: a filter on where servers run is ignored for those who may
        # not see where they run (it would tell them).
        host = None
    found = ctx.conductor.describe_instances(host=host)
    if not ctx.can(policies.ALL_TENANTS % kind):
        found = [i for i in found if owner(i)['project_id'] == ctx.project_id]
    name = common.query(req, 'name')
    if name is not None:
        # Nova takes a regular expression; a caller's pattern could backtrack
        # for minutes, so only its literal text is looked for (all that clients
        # finding a server by name need).
        found = [i for i in found if name in i['name']]
    status = common.query(req, 'status')
    if status is not None:
        found = [i for i in found if state(i)[0] == status.upper()]
    if common.boolish(req, 'deleted'):
        found = []  # Ferryman forgets deleted guests
    limit = common.limit_query(req)
    marker = common.query(req, 'marker')
    if marker is not None:
        ids = [i['uuid'] for i in found]
        if marker not in ids:
            raise faults.bad_request('marker [%s] not found' % marker[:80])
        found = found[ids.index(marker) + 1:]
    if limit is not None:
        found = found[:limit]
    return found


def index(ctx, req):
    return 200, {'servers': [{'id': i['uuid'], 'name': i['name'],
                              'links': ctx.link('/servers/%s' % i['uuid'])}
                             for i in _listed(ctx, req, 'index')]}


def detail(ctx, req):
    extended = ctx.can(policies.EXTENDED_ATTRIBUTES)
    return 200, {'servers': [view(ctx, i, extended=extended)
                             for i in _listed(ctx, req, 'detail')]}


def show(ctx, req, server_id):
    inst = get(ctx, server_id, policies.SERVERS % 'show')
    return 200, {'server': view(ctx, inst, shown=True, extended=ctx.can(
        policies.EXTENDED_ATTRIBUTES, owner(inst)))}
