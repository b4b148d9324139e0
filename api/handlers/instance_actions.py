"""os-instance-actions: a server's live migrations as Nova's actions, each step
of its flow (from the conductor's task history) an event.

An action's request id is ``req-<migration uuid>``; a path takes that, the bare
uuid or the migration's number (common.number), as the migrations paths do.
A request the conductor refused after the API had accepted it (2.34 and later)
is an action of its own under the API's request id, with one event, the
conductor's check, whose result is Error.
"""

from api import faults
from api import policies
from api.handlers import common
from api.handlers import servers

ACTION = 'live-migration'
REQUEST_PREFIX = 'req-'
# How each TaskFlow state the history records bears on an event.
_STARTS = {'RUNNING': 'execute', 'REVERTING': 'revert'}
_ENDS = ('SUCCESS', 'FAILURE', 'REVERTED', 'REVERT_FAILURE')
# A migration in these states went wrong (Nova's action message then: Error).
_WENT_WRONG = ('failed', 'error')
# The event of a refused request: the conductor's checks before any migration.
REFUSED_EVENT = 'check-request'


def request_id_of(mig):
    return REQUEST_PREFIX + mig['id']


def _view(ctx, inst, mig):
    out = {'action': ACTION, 'instance_uuid': inst['uuid'],
           'request_id': request_id_of(mig), 'user_id': '', 'project_id': '',
           'start_time': mig['created_at'],
           'message': 'Error' if mig['status'] in _WENT_WRONG else None}
    if ctx.at_least('2.58'):
        out['updated_at'] = mig['updated_at']
    return out


def _refused_view(ctx, inst, refused):
    out = {'action': refused['action'], 'instance_uuid': inst['uuid'],
           'request_id': refused['request_id'], 'user_id': '', 'project_id': '',
           'start_time': refused['created_at'], 'message': 'Error'}
    if ctx.at_least('2.58'):
        out['updated_at'] = refused['created_at']
    return out


def _refused_event(refused):
    event = _event(REFUSED_EVENT, 'execute', refused['created_at'], 'conductor')
    event.update(finish_time=refused['created_at'], result='Error',
                 error=refused['error'], traceback=refused['error'])
    return event


def _actions(ctx, inst):
    """Every action of a guest, newest first: {request_id, updated_at (what
    paging filters on), view}."""
    out = []
    for mig in ctx.conductor.list_migrations(instance=inst['uuid']):
        out.append({'sort': (mig['created_at'], mig['id']),
                    'request_id': request_id_of(mig),
                    'updated_at': mig['updated_at'], 'view': _view(ctx, inst, mig)})
    for refused in ctx.conductor.list_refused_requests(inst['uuid']):
        out.append({'sort': (refused['created_at'], refused['request_id']),
                    'request_id': refused['request_id'],
                    'updated_at': refused['created_at'],
                    'view': _refused_view(ctx, inst, refused)})
    return sorted(out, key=lambda a: a['sort'], reverse=True)


def _result(event, state):
    if state in ('FAILURE', 'REVERT_FAILURE'):
        return 'Error'
    if state == 'REVERTED' and event['phase'] == 'execute':
        # Undone without a revert of its own (the flow as a whole): it failed.
        return 'Error'
    return 'Success'


def _note(row):
    details = row.get('details') or {}
    if row['state'] == 'DECISION':
        text = '%s: %s' % (details.get('action'), details.get('why'))
    elif row['state'] == 'ATTEMPT':
        text = 'attempt %s on %s of %s' % (details.get('attempt'), row['host'],
                                           ', '.join(details.get('candidates') or ()))
    else:
        text = row['state'] if not row.get('error') else '%s: %s' % (
            row['state'], row['error'])
    return text


def _event(name, phase, start, host):
    return {'event': name, 'phase': phase, 'start_time': start,
            'finish_time': None, 'result': None, 'host': host, 'notes': [],
            'error': None, 'traceback': None}


def events(history, started):
    """Events (Ferryman's fields) of a migration's history rows, in the order
    they began: one per run of an atom forward, one per revert of it."""
    out, open_, last = [], {}, started
    for row in history:
        atom, state = row['atom'], row['state']
        when = row.get('ended_at') or row.get('started_at') or last
        last = when
        if state in _STARTS:
            phase = _STARTS[state]
            event = _event(atom if phase == 'execute' else 'revert-%s' % atom,
                           phase, row.get('started_at') or when, row['host'])
            open_[atom] = event
            out.append(event)
            continue
        if state in _ENDS:
            event = open_.pop(atom, None)
            if event is None:
                # An end with no start recorded (the conductor marking a flow
                # it could not resume): an event of its own.
                event = _event(atom, 'execute', when, row['host'])
                out.append(event)
            event.update(finish_time=when, result=_result(event, state),
                         error=row.get('error'))
            event['traceback'] = (row.get('details') or {}).get('traceback') or \
                row.get('error')
            continue
        # A decision or attempt taken within a step: said in its details.
        event = open_.get(atom) or next(
            (e for e in reversed(out) if e['event'] == atom), None)
        if event is None:
            event = _event(atom, 'execute', when, row['host'])
            out.append(event)
        event['notes'].append(_note(row))
    return out


def _event_view(ctx, event, privileged):
    """``privileged``: the caller may see hosts and tracebacks."""
    out = {'event': event['event'], 'start_time': event['start_time'],
           'finish_time': event['finish_time'], 'result': event['result']}
    if privileged:
        # Nova shows tracebacks to administrators only.
        out['traceback'] = event['traceback'] if event['result'] == 'Error' \
            else None
    if ctx.at_least('2.62'):
        host = event['host'] or ''
        out['hostId'] = common.host_id(host) if host else ''
        if privileged:
            out['host'] = host
    if ctx.at_least('2.84'):
        said = ([event['error']] if event['error'] else []) + event['notes']
        out['details'] = '; '.join(said) if said else None
    return out


def _find(ctx, server_id, request_id):
    inst = servers.get(ctx, server_id, policies.INSTANCE_ACTIONS % 'show')
    migs = ctx.conductor.list_migrations(instance=inst['uuid'])
    ref = request_id[len(REQUEST_PREFIX):] if request_id.startswith(
        REQUEST_PREFIX) else request_id
    for mig in migs:
        if ref in (mig['id'], str(common.number(mig['id']))):
            return inst, mig, None
    for refused in ctx.conductor.list_refused_requests(inst['uuid']):
        if request_id == refused['request_id']:
            return inst, None, refused
    raise faults.not_found('Action for request_id %s on instance %s not found' % (
        request_id[:80], inst['uuid']))


def index(ctx, req, server_id):
    """Newest first; from 2.58 with limit, marker and changes-since (2.66
    changes-before) as os-migrations takes them."""
    inst = servers.get(ctx, server_id, policies.INSTANCE_ACTIONS % 'list')
    actions = _actions(ctx, inst)
    links = None
    if ctx.at_least('2.58'):
        actions, links = common.page(
            ctx, req, actions, lambda a: a['request_id'],
            '/servers/%s/os-instance-actions' % inst['uuid'])
    out = {'instanceActions': [a['view'] for a in actions]}
    if links:
        out['links'] = links
    return 200, out


def show(ctx, req, server_id, request_id):
    inst, mig, refused = _find(ctx, server_id, request_id)
    privileged = ctx.can(policies.INSTANCE_ACTION_EVENTS, servers.owner(inst))
    if refused is not None:
        action = _refused_view(ctx, inst, refused)
        action['events'] = [_event_view(ctx, _refused_event(refused), privileged)]
        return 200, {'instanceAction': action}
    action = _view(ctx, inst, mig)
    history = ctx.conductor.get_task_history(mig['id'])
    action['events'] = [_event_view(ctx, e, privileged)
                        for e in events(history, mig['created_at'])]
    return 200, {'instanceAction': action}
