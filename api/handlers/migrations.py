"""Migrations: a server's in-progress ones (show, abort, force complete) and
the os-migrations listing.

Nova numbers migrations; Ferryman names them by uuid. ``id`` is a number derived
from the uuid (common.number), and a path accepts either.
"""

from api import body as req_body
from api import faults
from api import policies
from api.handlers import common
from api.handlers import servers
from ferryman.common import exception

MIB = 1024 * 1024
FORCE_COMPLETE = {'type': 'object', 'required': ['force_complete'],
                  'additionalProperties': False,
                  'properties': {'force_complete': {'type': 'null'}}}
MIGRATION_TYPES = ('migration', 'resize', 'live-migration', 'evacuation')
NOVA_STATUSES = set(common.MIGRATION_STATUS.values())


def figures(mig):
    progress = mig.get('progress') or {}
    total = int((progress.get('memory_total_mb') or 0) * MIB)
    remaining = int((progress.get('memory_remaining_mb') or 0) * MIB)
    return {'memory_total_bytes': total,
            'memory_processed_bytes': max(0, total - remaining),
            'memory_remaining_bytes': remaining,
            # The agents report the copy as a whole, not disks apart.
            'disk_total_bytes': 0, 'disk_processed_bytes': 0,
            'disk_remaining_bytes': 0}


def _owner(ctx, out):
    if ctx.at_least('2.80'):
        out.update({'user_id': '', 'project_id': ''})
    return out


def server_view(ctx, mig):
    out = {'id': common.number(mig['id']), 'server_uuid': mig['instance_uuid'],
           'status': common.MIGRATION_STATUS[mig['status']],
           'source_compute': mig['source'], 'source_node': mig['source'],
           'dest_compute': mig['destination'], 'dest_node': mig['destination'],
           'dest_host': '', 'created_at': mig['created_at'],
           'updated_at': mig['updated_at']}
    out.update(figures(mig))
    if ctx.at_least('2.59'):
        out['uuid'] = mig['id']
    return _owner(ctx, out)


def list_view(ctx, mig):
    status = common.MIGRATION_STATUS[mig['status']]
    out = {'id': common.number(mig['id']), 'instance_uuid': mig['instance_uuid'],
           'status': status, 'source_compute': mig['source'],
           'source_node': mig['source'], 'dest_compute': mig['destination'],
           'dest_node': mig['destination'], 'dest_host': '',
           'old_instance_type_id': None, 'new_instance_type_id': None,
           'created_at': mig['created_at'], 'updated_at': mig['updated_at']}
    if ctx.at_least('2.23'):
        out['migration_type'] = _migration_type(mig)
        if status in common.IN_PROGRESS:
            out['links'] = ctx.link('/servers/%s/migrations/%s' % (
                mig['instance_uuid'], out['id']))
    if ctx.at_least('2.59'):
        out['uuid'] = mig['id']
    return _owner(ctx, out)


def _migration_type(mig):
    return 'evacuation' if mig['subtype'] == 'evacuation' else 'live-migration'


def _require(ctx, version):
    if not ctx.at_least(version):
        raise faults.not_found('This resource needs microversion %s or later.'
                               % version)


def _in_progress(ctx, server_id, rule):
    inst = servers.get(ctx, server_id, rule)
    # A server's migrations are its live migrations (Nova's), not evacuations.
    return inst, [m for m in ctx.conductor.list_migrations(instance=inst['uuid'])
                  if common.MIGRATION_STATUS[m['status']] in common.IN_PROGRESS
                  and _migration_type(m) == 'live-migration']


def _find(ctx, server_id, migration_id, rule, in_progress=True):
    """The server and its migration named by number or uuid, once ``rule``
    allows the caller on the server."""
    inst = servers.get(ctx, server_id, rule)
    migs = ctx.conductor.list_migrations(instance=inst['uuid'])
    found = [m for m in migs if migration_id in (m['id'], str(common.number(m['id'])))
             and _migration_type(m) == 'live-migration']
    if not found or (in_progress and common.MIGRATION_STATUS[found[0]['status']]
                     not in common.IN_PROGRESS):
        raise faults.not_found('Instance %s is not migrating by migration %s.' % (
            inst['uuid'], migration_id[:80]))
    return inst, found[0]


def server_index(ctx, req, server_id):
    _require(ctx, '2.23')
    _inst, migs = _in_progress(ctx, server_id, policies.SERVER_MIGRATIONS % 'index')
    return 200, {'migrations': [server_view(ctx, m) for m in migs]}


def server_show(ctx, req, server_id, migration_id):
    _require(ctx, '2.23')
    _inst, mig = _find(ctx, server_id, migration_id,
                       policies.SERVER_MIGRATIONS % 'show')
    return 200, {'migration': server_view(ctx, mig)}


def abort(ctx, req, server_id, migration_id):
    """DELETE: stop the migration; the guest stays on its source."""
    _require(ctx, '2.24')
    inst, mig = _find(ctx, server_id, migration_id,
                      policies.SERVER_MIGRATIONS % 'delete', in_progress=False)
    status = common.MIGRATION_STATUS[mig['status']]
    allowed = ('queued', 'preparing', 'running') if ctx.at_least('2.65') \
        else ('running',)
    if status not in allowed:
        raise faults.bad_request(
            'Migration %s state of instance %s is %s. Cannot abort live migration '
            'while the migration is in this state.' % (
                migration_id, inst['uuid'], status))
    _call(ctx.conductor.abort_migration, mig['id'])
    return 202, None


def server_action(ctx, req, server_id, migration_id):
    """POST {"force_complete": null}: finish the copy now."""
    _require(ctx, '2.22')
    req_body.read(ctx, req, FORCE_COMPLETE)
    inst, mig = _find(ctx, server_id, migration_id,
                      policies.SERVER_MIGRATIONS % 'force_complete', in_progress=False)
    if not inst['migration_id']:
        raise faults.conflict("Cannot 'force_complete' instance %s while it is in "
                              "task_state None" % inst['uuid'])
    if common.MIGRATION_STATUS[mig['status']] != 'running':
        raise faults.bad_request(
            'Migration %s state of instance %s is %s. Cannot force complete while '
            'the migration is in this state.' % (
                migration_id, inst['uuid'], common.MIGRATION_STATUS[mig['status']]))
    _call(ctx.conductor.force_complete_migration, mig['id'])
    return 202, None


def _call(fn, migration):
    try:
        fn(migration)
    except (exception.CannotAbort, exception.CannotForceComplete) as exc:
        # It moved on between the look and the request (Nova: invalid state).
        raise faults.bad_request(exc.message)


def index(ctx, req):
    """GET /os-migrations: newest first, with Nova's filters and (2.59) paging."""
    ctx.authorize(policies.MIGRATIONS_INDEX)
    host = common.host_query(req, 'host')
    source = common.host_query(req, 'source_compute')
    instance = common.query(req, 'instance_uuid')
    status = common.query(req, 'status')
    kind = common.query(req, 'migration_type')
    if instance is not None and not common.is_uuid(instance):
        raise faults.bad_request('Invalid instance_uuid %r: expected a lowercase '
                                 'uuid.' % instance[:80])
    if status is not None and status not in NOVA_STATUSES:
        # Nova matches any text; a status no migration can have finds none.
        return 200, {'migrations': []}
    if kind is not None and kind not in MIGRATION_TYPES:
        raise faults.bad_request('Invalid migration_type %r: expected one of %s.' % (
            kind[:40], ', '.join(MIGRATION_TYPES)))
    try:
        migs = ctx.conductor.list_migrations(instance=instance, host=host)
    except exception.InstanceNotFound:
        migs = []
    if kind is not None:
        migs = [m for m in migs if _migration_type(m) == kind]
    if source is not None:
        migs = [m for m in migs if m['source'] == source]
    if status is not None:
        migs = [m for m in migs if common.MIGRATION_STATUS[m['status']] == status]
    migs.sort(key=lambda m: (m['created_at'], m['id']), reverse=True)
    links = None
    if ctx.at_least('2.59'):
        migs, links = common.page(ctx, req, migs, lambda m: m['id'],
                                  '/os-migrations')
    out = {'migrations': [list_view(ctx, m) for m in migs]}
    if links:
        out['migrations_links'] = links
    return 200, out
