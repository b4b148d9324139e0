"""/v1: moves as tasks. A task is one of the conductor's migrations, shown with
its flow's steps (from the task history), the policy's decisions and the running
job's figures; a drain is the conductor's drain of a host.

Only live moves exist: ``mode`` auto is live while nothing asks for the guest to
be stopped, and a cold move or a new size is refused (400) until the conductor
offers them. No state waits for a person: every task runs to an end state.
"""

from api import body as req_body
from api import faults
from api import policies
from api.handlers import common
from api.handlers import instance_actions
from api.handlers import migrations
from api.handlers import servers
from ferryman.common import exception
from ferryman.common import vocabulary as words

PREFIX = '/v1'
KIND = 'live'
MODES = ('live', 'cold', 'auto')
# Past switch-over the guest runs on the destination: too late to cancel, and a
# force-complete has nothing left to force.
BEFORE_SWITCH_OVER = tuple(s for s in words.ACTIVE
                           if s not in (words.POST_COPY, words.FINISHING))
_RESULTS = {'Success': 'success', 'Error': 'error', None: None}

_HOST = {'type': 'string', 'minLength': 1, 'maxLength': 255,
         'pattern': common.HOST_RE.pattern}
MOVE = {
    'type': 'object', 'required': ['server'], 'additionalProperties': False,
    'properties': {
        'server': {'type': 'string', 'pattern': common.UUID_RE.pattern},
        'host': {'anyOf': [_HOST, {'type': 'null'}]},
        'mode': {'enum': list(MODES)},
        'importance': {'enum': list(words.IMPORTANCE)},
        'size': {'type': 'object', 'additionalProperties': False,
                 'minProperties': 1,
                 'properties': {'vcpus': {'type': 'integer', 'minimum': 1},
                                'memory_mb': {'type': 'integer', 'minimum': 1},
                                'disk_gb': {'type': 'integer', 'minimum': 0}}},
    }}
NO_ARGUMENTS = {'type': 'object', 'additionalProperties': False}
DRAIN = {'type': 'object', 'additionalProperties': False,
         'properties': {'max_parallel': {'type': 'integer', 'minimum': 1,
                                         'maximum': 1000}}}


def _optional_body(ctx, req, schema):
    """An absent body counts as ``{}``: these requests need no arguments. (A
    body of unknown length is read as any other: within the size bound.)"""
    if not req.is_body_readable:
        return req_body.validate({}, schema)
    return req_body.read(ctx, req, schema)


def _link(ctx, path):
    return [{'rel': 'self', 'href': ctx.base_url + PREFIX + path}]


def _steps(history, started):
    out = []
    for event in instance_actions.events(history, started):
        out.append({'name': event['event'], 'phase': event['phase'],
                    'host': event['host'], 'started_at': event['start_time'],
                    'finished_at': event['finish_time'],
                    'result': _RESULTS[event['result']], 'error': event['error'],
                    'notes': event['notes']})
    return out


def _decisions(history):
    out = []
    for row in history:
        if row['state'] != 'DECISION':
            continue
        details = dict(row.get('details') or {})
        out.append({'step': row['atom'], 'host': row['host'],
                    'at': row.get('started_at') or row.get('ended_at'),
                    'action': details.pop('action', None),
                    'why': details.pop('why', None), 'details': details})
    return out


def _progress(mig):
    figures = migrations.figures(mig)
    figures['percent'] = (mig.get('progress') or {}).get('percent')
    return figures


def summary(ctx, mig):
    kind = words.EVACUATION if mig['subtype'] == words.EVACUATION else KIND
    return {'id': mig['id'], 'kind': kind, 'subtype': mig['subtype'],
            'state': mig['status'], 'server': mig['instance_uuid'],
            'source': mig['source'], 'destination': mig['destination'],
            'importance': mig['importance'], 'created_at': mig['created_at'],
            'updated_at': mig['updated_at'], 'error': mig['error'],
            'links': _link(ctx, '/tasks/%s' % mig['id'])}


def view(ctx, mig, history):
    out = summary(ctx, mig)
    out.update(switchover_at=mig['switchover_at'],
               steps=_steps(history, mig['created_at']),
               decisions=_decisions(history), progress=_progress(mig))
    return out


def _get(ctx, task_id, rule):
    """The task, once ``rule`` allows the caller on its server (Nova's rule for
    the same look or change at a server's migration)."""
    if not common.is_uuid(task_id):
        raise faults.not_found('Task %s could not be found.' % task_id[:80])
    try:
        mig = ctx.conductor.get_migration(task_id)
    except exception.MigrationNotFound:
        raise faults.not_found('Task %s could not be found.' % task_id)
    # A server gone since has no owner left: administrators' alone.
    found = ctx.conductor.describe_instances(instance=mig['instance_uuid'])
    ctx.authorize(rule, servers.owner(found[0] if found else {}))
    return mig


def _shown(ctx, mig, code=200):
    return code, {'task': view(ctx, mig, ctx.conductor.get_task_history(mig['id']))}


def move(ctx, req):
    """POST /v1/moves: start a move; 202 and its task."""
    args = req_body.read(ctx, req, MOVE)
    if args.get('mode') == 'cold':
        raise faults.bad_request("mode 'cold' is not offered yet: Ferryman moves "
                                 "servers live only; ask for mode 'live' or "
                                 "'auto'.")
    if 'size' in args:
        raise faults.bad_request('size %s is not offered yet: Ferryman moves '
                                 'servers at the size they have; leave size '
                                 'out.' % _said(args['size']))
    inst = servers.get(ctx, args['server'], policies.MIGRATE_LIVE)
    mig = ctx.conductor.live_migrate(
        inst['uuid'], host=args.get('host'), block_migration='auto', force=False,
        importance=args.get('importance', 'medium'))
    return _shown(ctx, mig, 202)


def _said(size):
    return ', '.join('%s=%s' % kv for kv in sorted(size.items()))


def show(ctx, req, task_id):
    return _shown(ctx, _get(ctx, task_id, policies.SERVER_MIGRATIONS % 'show'))


def server_index(ctx, req, server_id):
    """Every move of a server, newest first."""
    inst = servers.get(ctx, server_id, policies.SERVER_MIGRATIONS % 'index')
    migs = ctx.conductor.list_migrations(instance=inst['uuid'])
    migs.sort(key=lambda m: (m['created_at'], m['id']), reverse=True)
    return 200, {'tasks': [summary(ctx, m) for m in migs]}


def cancel(ctx, req, task_id):
    """DELETE: abort; the guest stays on its source."""
    mig = _get(ctx, task_id, policies.SERVER_MIGRATIONS % 'delete')
    if mig['status'] not in BEFORE_SWITCH_OVER:
        raise faults.conflict('Task %s is %s; only a task that has not switched '
                              'over (%s) can be cancelled.' % (
                                  task_id, mig['status'],
                                  ', '.join(BEFORE_SWITCH_OVER)))
    ctx.conductor.abort_migration(mig['id'])
    return _shown(ctx, ctx.conductor.get_migration(mig['id']), 202)


def complete(ctx, req, task_id):
    """POST .../complete: finish the copy now (post-copy or a pause)."""
    _optional_body(ctx, req, NO_ARGUMENTS)
    mig = _get(ctx, task_id, policies.SERVER_MIGRATIONS % 'force_complete')
    if mig['status'] not in BEFORE_SWITCH_OVER:
        raise faults.conflict('Task %s is %s; only a task that has not switched '
                              'over (%s) can be forced to complete.' % (
                                  task_id, mig['status'],
                                  ', '.join(BEFORE_SWITCH_OVER)))
    return _shown(ctx, ctx.conductor.force_complete_migration(mig['id']), 202)


def drain_view(ctx, drain):
    guests = [{'server': uuid, 'name': g['name'], 'state': g['status'],
               'task': g['migration'], 'destination': g['destination'],
               'error': g['error']}
              for uuid, g in sorted(drain['guests'].items())]
    return {'id': drain['id'], 'host': drain['host'], 'state': drain['status'],
            'max_parallel': drain['max_parallel'], 'total': drain['total'],
            'counts': drain['counts'], 'servers': guests,
            'created_at': drain['created_at'], 'updated_at': drain['updated_at'],
            'links': _link(ctx, '/drains/%s' % drain['id'])}


def drain(ctx, req, host):
    """POST /v1/hosts/{host}/drain: move every server off the host."""
    ctx.authorize(policies.HOSTS_DRAIN)
    args = _optional_body(ctx, req, DRAIN)
    if not common.HOST_RE.match(host):
        raise faults.not_found('Host %s could not be found.' % host[:80])
    found = ctx.conductor.drain_host(host, max_parallel=args.get('max_parallel'))
    return 202, {'drain': drain_view(ctx, found)}


def show_drain(ctx, req, drain_id):
    if not common.is_uuid(drain_id):
        raise faults.not_found('Drain %s could not be found.' % drain_id[:80])
    ctx.authorize(policies.DRAINS_SHOW)
    return 200, {'drain': drain_view(ctx, ctx.conductor.get_drain(drain_id))}
