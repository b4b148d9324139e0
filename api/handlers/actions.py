"""POST /servers/{id}/action: live migration and evacuation; the other move
actions answer that they are not offered yet.

Below 2.34 the conductor's checks answer the request (no valid host: 400);
from 2.34 the request is accepted once the guest can be moved at all, and the
conductor's answer comes later: a refusal is recorded by the conductor under
the request id, and os-instance-actions shows it as an action with an Error
event.
"""

from oslo_log import log as logging

from api import faults
from api import body as req_body
from api import policies
from api.handlers import common
from api.handlers import servers
from ferryman.common import exception

LOG = logging.getLogger(__name__)

LIVE_MIGRATE = 'os-migrateLive'
EVACUATE = 'evacuate'
# Move actions Nova offers that the conductor does not yet.
NOT_OFFERED = ('migrate', 'resize', 'confirmResize', 'revertResize')

ANY_ACTION = {'type': 'object', 'minProperties': 1, 'maxProperties': 1}
_BOOLEAN = {'type': ['boolean', 'string'],
            'pattern': r'^(?i:true|false|1|0|yes|no|on|off|t|f|y|n)\Z'}
_BOOLEAN_OR_AUTO = {'type': ['boolean', 'string'],
                    'pattern': r'^(?i:auto|true|false|1|0|yes|no|on|off|t|f|y|n)\Z'}
_HOST = {'type': ['string', 'null'], 'minLength': 1, 'maxLength': 255,
         'pattern': common.HOST_RE.pattern}


def live_migrate_schema(ctx):
    """os-migrateLive's body at the request's microversion."""
    props = {'host': _HOST}
    if ctx.at_least('2.25'):
        props['block_migration'] = _BOOLEAN_OR_AUTO
        required = ['block_migration', 'host']
    else:
        props['block_migration'] = _BOOLEAN
        props['disk_over_commit'] = _BOOLEAN
        required = ['block_migration', 'disk_over_commit', 'host']
    if ctx.at_least('2.30') and not ctx.at_least('2.68'):
        props['force'] = _BOOLEAN
    return {'type': 'object', 'required': [LIVE_MIGRATE], 'additionalProperties': False,
            'properties': {LIVE_MIGRATE: {
                'type': 'object', 'properties': props, 'required': required,
                'additionalProperties': False}}}


def evacuate_schema(ctx):
    """evacuate's body at the request's microversion. ``adminPass`` is taken
    only to be refused by name: Ferryman sets no guest's password."""
    props = {'host': _HOST, 'adminPass': {'type': 'string', 'maxLength': 255}}
    required = []
    if not ctx.at_least('2.14'):
        # Ferryman finds out what is shared itself; the caller's word is not needed.
        props['onSharedStorage'] = _BOOLEAN
        required.append('onSharedStorage')
    if ctx.at_least('2.29') and not ctx.at_least('2.68'):
        props['force'] = _BOOLEAN
    return {'type': 'object', 'required': [EVACUATE], 'additionalProperties': False,
            'properties': {EVACUATE: {
                'type': 'object', 'properties': props, 'required': required,
                'additionalProperties': False}}}


def evacuate(ctx, body, server_id):
    """Rebuild the server of a dead (or forced-down) host elsewhere: 200, and
    from 2.14 no body; the conductor's refusal (its host is up, no room) is a
    400 naming why."""
    args = req_body.validate(body, evacuate_schema(ctx))[EVACUATE]
    if 'adminPass' in args:
        raise faults.bad_request('adminPass is not offered: Ferryman rebuilds a '
                                 'guest from its own disks or image and sets no '
                                 'password; leave adminPass out.')
    host = args.get('host')
    force = _bool(args.get('force', False))
    if force and host is None:
        raise faults.bad_request("Can't force to a non-provided destination")
    inst = servers.get(ctx, server_id, policies.EVACUATE)
    if servers.state(inst)[2] is not None:
        raise faults.conflict("Cannot '%s' instance %s while it is in task_state "
                              "%s" % (EVACUATE, inst['uuid'],
                                      servers.state(inst)[2]))
    try:
        ctx.conductor.evacuate(inst['uuid'], host=host, force=force)
    except exception.InstanceNotFound as exc:
        raise faults.not_found(exc.message)
    except exception.FerrymanError as exc:
        if exc.code >= 500:
            raise
        raise faults.bad_request(exc.message)
    return (200, None) if ctx.at_least('2.14') else (200, {})


def _bool(value):
    if isinstance(value, bool):
        return value
    return value.lower() in ('true', '1', 'yes', 'on', 't', 'y')


def act(ctx, req, server_id):
    body = req_body.read(ctx, req, ANY_ACTION)
    (action, _args), = body.items()
    if action in NOT_OFFERED:
        raise faults.bad_request('The %s action is not offered by Ferryman yet; it '
                                 'moves servers with os-migrateLive (and rebuilds '
                                 'those of a dead host with evacuate).' % action)
    if action == EVACUATE:
        return evacuate(ctx, body, server_id)
    if action != LIVE_MIGRATE:
        raise faults.bad_request('There is no such action: %s' % action[:80])
    args = req_body.validate(body, live_migrate_schema(ctx))[LIVE_MIGRATE]
    host = args['host']
    block = args['block_migration']
    block = 'auto' if isinstance(block, str) and block.lower() == 'auto' else \
        str(_bool(block)).lower()
    force = _bool(args.get('force', False))
    if force and host is None:
        raise faults.bad_request("Can't force to a non-provided destination")
    inst = servers.get(ctx, server_id, policies.MIGRATE_LIVE)
    _check_state(inst)
    call = (ctx.conductor.live_migrate, inst['uuid'])
    kwargs = {'host': host, 'block_migration': block, 'force': force}
    if ctx.at_least('2.34'):
        kwargs['request_id'] = ctx.request_id
        ctx.background(_started_later, ctx.request_id, call, kwargs)
        return 202, None
    try:
        call[0](*call[1:], **kwargs)
    except exception.InstanceNotFound as exc:
        raise faults.not_found(exc.message)
    except (exception.InstanceNotRunning, exception.InstanceAlreadyMigrating):
        _check_state(servers.get(ctx, server_id, policies.MIGRATE_LIVE))
        raise
    except exception.FerrymanError as exc:
        # Nova's pre-check failures (no valid host, incompatible, full) are 400s.
        raise faults.bad_request(exc.message)
    return 202, None


def _check_state(inst):
    """409 as Nova words it when the guest is not active with no task."""
    status, vm_state, task_state, _power, _progress = servers.state(inst)
    if task_state is not None:
        raise faults.conflict("Cannot '%s' instance %s while it is in task_state "
                              "%s" % (LIVE_MIGRATE, inst['uuid'], task_state))
    if vm_state not in ('active', 'paused') or status == 'UNKNOWN':
        raise faults.conflict("Cannot '%s' instance %s while it is in vm_state "
                              "%s" % (LIVE_MIGRATE, inst['uuid'], vm_state))


def _started_later(request_id, call, kwargs):
    try:
        mig = call[0](*call[1:], **kwargs)
    except exception.FerrymanError as exc:
        LOG.warning('%s: live migration of %s refused: %s', request_id, call[1],
                    exc.message)
    except Exception:
        LOG.exception('%s: live migration of %s not started', request_id, call[1])
    else:
        LOG.info('%s: live migration %s of %s started', request_id, mig['id'],
                 call[1])
