"""The API's policy rules and their defaults, named as Nova names the same
checks (so an operator's Nova policy overrides read the same here).

Every change (a move, an abort, a force-complete, a service change) is an
administrator's; reads of a server and of what happened to it are for
administrators and the server's owner (its project); listings across the cloud
(migrations, hypervisors, services) are an administrator's.
"""

from oslo_policy import policy

ADMIN = 'rule:context_is_admin'
ADMIN_OR_OWNER = 'rule:admin_or_owner'

SERVERS = 'os_compute_api:servers:%s'
MIGRATE_LIVE = 'os_compute_api:os-migrate-server:migrate_live'
EVACUATE = 'os_compute_api:os-evacuate'
SERVER_MIGRATIONS = 'os_compute_api:servers:migrations:%s'
INSTANCE_ACTIONS = 'os_compute_api:os-instance-actions:%s'
# Who sees an event's host and traceback (Nova's rule of the same name).
INSTANCE_ACTION_EVENTS = 'os_compute_api:os-instance-actions:events'
EXTENDED_ATTRIBUTES = 'os_compute_api:os-extended-server-attributes'
MIGRATIONS_INDEX = 'os_compute_api:os-migrations:index'
HYPERVISORS = 'os_compute_api:os-hypervisors:%s'
SERVICES = 'os_compute_api:os-services:%s'
# The task API's own (/v1): a host's drain, and looking at one.
HOSTS_DRAIN = 'ferryman:hosts:drain'
DRAINS_SHOW = 'ferryman:drains:show'
# Servers of every project in a listing, not only the caller's.
ALL_TENANTS = 'os_compute_api:servers:%s:get_all_tenants'

_SERVER = '/servers/{server_id}'

BASE = [
    policy.RuleDefault('context_is_admin', 'role:admin',
                       description='Who is an administrator: checked once per '
                                   'request, and its answer is what is_admin:True '
                                   'means in the other rules.'),
    policy.RuleDefault('admin_or_owner', 'is_admin:True or project_id:%(project_id)s',
                       description='An administrator, or a member of the project '
                                   'that owns the server.'),
    policy.RuleDefault('admin_api', 'is_admin:True',
                       description='Administrators only.'),
]


def _rule(name, check, description, *operations):
    return policy.DocumentedRuleDefault(
        name=name, check_str=check, description=description,
        operations=[{'method': m, 'path': p} for m, p in operations])


RULES = [
    _rule(SERVERS % 'index', ADMIN_OR_OWNER, 'List servers (of the caller\'s '
          'project).', ('GET', '/servers')),
    _rule(SERVERS % 'detail', ADMIN_OR_OWNER, 'List servers with details (of the '
          'caller\'s project).', ('GET', '/servers/detail')),
    _rule(ALL_TENANTS % 'index', ADMIN, 'List the servers of every project.',
          ('GET', '/servers')),
    _rule(ALL_TENANTS % 'detail', ADMIN, 'List the servers of every project with '
          'details.', ('GET', '/servers/detail')),
    _rule(SERVERS % 'show', ADMIN_OR_OWNER, 'Show a server.', ('GET', _SERVER)),
    _rule(EXTENDED_ATTRIBUTES, ADMIN, 'See a server\'s host, hypervisor and '
          'instance name (OS-EXT-SRV-ATTR fields).', ('GET', _SERVER),
          ('GET', '/servers/detail')),
    _rule(MIGRATE_LIVE, ADMIN, 'Live-migrate a server (os-migrateLive).',
          ('POST', _SERVER + '/action (os-migrateLive)')),
    _rule(EVACUATE, ADMIN, 'Rebuild a server of a dead host elsewhere '
          '(evacuate).', ('POST', _SERVER + '/action (evacuate)')),
    _rule(SERVER_MIGRATIONS % 'index', ADMIN_OR_OWNER, 'List a server\'s '
          'migrations in progress.', ('GET', _SERVER + '/migrations')),
    _rule(SERVER_MIGRATIONS % 'show', ADMIN_OR_OWNER, 'Show a server\'s migration '
          'in progress.', ('GET', _SERVER + '/migrations/{migration_id}')),
    _rule(SERVER_MIGRATIONS % 'delete', ADMIN, 'Abort a server\'s migration.',
          ('DELETE', _SERVER + '/migrations/{migration_id}')),
    _rule(SERVER_MIGRATIONS % 'force_complete', ADMIN, 'Force a server\'s live '
          'migration to complete.',
          ('POST', _SERVER + '/migrations/{migration_id}/action (force_complete)')),
    _rule(INSTANCE_ACTIONS % 'list', ADMIN_OR_OWNER, 'List a server\'s actions.',
          ('GET', _SERVER + '/os-instance-actions')),
    _rule(INSTANCE_ACTIONS % 'show', ADMIN_OR_OWNER, 'Show a server\'s action and '
          'its events.', ('GET', _SERVER + '/os-instance-actions/{request_id}')),
    _rule(INSTANCE_ACTION_EVENTS, ADMIN, 'See the host and traceback of each '
          'event of an action.',
          ('GET', _SERVER + '/os-instance-actions/{request_id}')),
    _rule(MIGRATIONS_INDEX, ADMIN, 'List the migrations of every server.',
          ('GET', '/os-migrations')),
    _rule(HYPERVISORS % 'list', ADMIN, 'List hypervisors.',
          ('GET', '/os-hypervisors')),
    _rule(HYPERVISORS % 'list-detail', ADMIN, 'List hypervisors with details.',
          ('GET', '/os-hypervisors/detail')),
    _rule(HYPERVISORS % 'show', ADMIN, 'Show a hypervisor.',
          ('GET', '/os-hypervisors/{hypervisor_id}')),
    _rule(SERVICES % 'list', ADMIN, 'List compute services.',
          ('GET', '/os-services')),
    _rule(SERVICES % 'update', ADMIN, 'Enable, disable or force down a compute '
          'service.', ('PUT', '/os-services/{service_id}'),
          ('PUT', '/os-services/{enable,disable,disable-log-reason,force-down}')),
    _rule(HOSTS_DRAIN, ADMIN, 'Drain a host: move every server off it (the '
          'task API).', ('POST', '/v1/hosts/{host}/drain')),
    _rule(DRAINS_SHOW, ADMIN, 'Show a host\'s drain (the task API).',
          ('GET', '/v1/drains/{drain_id}')),
]


def list_rules():
    """Every rule with its default (the oslo.policy.policies entry point)."""
    return BASE + RULES
