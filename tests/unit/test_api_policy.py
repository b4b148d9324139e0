"""Who may do what through ferryman-api: the policy's defaults per route for an
administrator, the server's owner, another project and a bad token; an
operator's policy file over the defaults; refusals that change nothing; and the
keystone strategy's real auth_token middleware where no Keystone is needed.
"""

import json
import socket
import time

import pytest
import webob
import yaml

from api import auth
from api import policies
from api import routes
from api import service as api_service
from ferryman.common import conf as ferryman_conf
from ferryman.sim import cloud as sim
from flows import states
from tests.unit import test_api

ADMIN = 'admin:admin'
OWNER = 'u1:p1'
OTHER = 'u2:p2'
BAD = 'no-colon'
OWNED = {'project_id': 'p1', 'user_id': 'u1'}


def call(app, method, path, version='2.88', body=None, token=ADMIN, roles=None):
    req_headers = {'X-Roles': roles} if roles is not None else {}
    return _call(app, method, path, version, body, token, req_headers)


def _call(app, method, path, version, body, token, headers):
    req = webob.Request.blank(path, method=method)
    if token is not None:
        req.headers['X-Auth-Token'] = token
    req.headers.update(headers)
    req.headers['OpenStack-API-Version'] = 'compute %s' % version
    if body is not None:
        req.body = json.dumps(body).encode()
        req.content_type = 'application/json'
    resp = req.get_response(app)
    # auth_token's 503 is not JSON.
    return resp.status_int, (resp.json if resp.body and resp.content_type ==
                             'application/json' else resp.text), resp.headers


def refused(result, rule):
    status, body, _ = result
    assert (status, body) == (403, {'forbidden': {
        'code': 403, 'message': "Policy doesn't allow %s to be performed." % rule}})


@pytest.fixture(scope='module')
def cloud():
    """This module's own cloud (see test_api.cloud)."""
    with sim.SimCloud() as c:
        yield c


@pytest.fixture(scope='module')
def api(cloud):
    service = api_service.APIService(test_api._api_conf(cloud)).start()
    yield service
    service.stop()


def _conf(cloud, conf_file, strategy):
    """The API's configuration from a file, as an operator writes it."""
    return ferryman_conf.make_conf(config_files=[str(conf_file)], overrides={
        'transport_url': cloud.overrides['transport_url'],
        'oslo_messaging_rabbit.heartbeat_timeout_threshold': 0,
        'api.port': 0, 'api.auth_strategy': strategy,
        'auth.operator_key_file': cloud.operator_key('ferryman-api')})


def _state(cloud, uuid):
    """What a refused request must leave as it was."""
    return {'migrations': cloud.db.migrations.list(instance=uuid),
            'where': cloud.cloud.find_guest(uuid),
            'hosts': [(h['name'], h['enabled'], h['disabled_reason'],
                       h.get('forced_down')) for h in cloud.db.hosts.list()]}


def test_owner_reads_its_server_others_do_not(cloud, guest, api):
    g = guest('compute1', **OWNED)
    path = '/v2.1/servers/%s' % g['uuid']
    status, body, _ = call(api.app, 'GET', path, token=OWNER)
    server = body['server']
    assert (status, server['tenant_id'], server['user_id']) == (200, 'p1', 'u1')
    # Where it runs is an administrator's to see (Nova's extended attributes).
    assert not [k for k in server if k.startswith('OS-EXT-SRV-ATTR:')]
    status, body, _ = call(api.app, 'GET', path)
    assert (status, body['server']['OS-EXT-SRV-ATTR:host']) == (200, 'compute1')
    assert body['server']['tenant_id'] == 'p1'
    refused(call(api.app, 'GET', path, token=OTHER),
            policies.SERVERS % 'show')
    assert call(api.app, 'GET', path, token=BAD)[0] == 401
    assert call(api.app, 'GET', path, token=None)[0] == 401


@pytest.mark.parametrize('kind', ['servers', 'servers/detail'])
def test_listings_show_a_project_its_own_servers(cloud, guest, api, kind):
    mine, theirs = guest('compute1', **OWNED), guest('compute2')
    path = '/v2.1/%s' % kind
    listed = {t: {s['id'] for s in call(api.app, 'GET', path, token=t)[1]['servers']}
              for t in (ADMIN, OWNER, OTHER)}
    assert {mine['uuid'], theirs['uuid']} <= listed[ADMIN]
    assert mine['uuid'] in listed[OWNER] and theirs['uuid'] not in listed[OWNER]
    assert not {mine['uuid'], theirs['uuid']} & listed[OTHER]
    assert call(api.app, 'GET', path, token=BAD)[0] == 401


# Routes any authenticated caller may use: nothing in them is a project's.
OPEN = {('/', 'GET'), ('/flavors', 'GET'), ('/flavors/detail', 'GET'),
        ('/flavors/{flavor_id}', 'GET'), ('/images', 'GET'),
        ('/images/detail', 'GET'), ('/images/{image_id}', 'GET')}
# Listings every project may ask for, showing each its own servers only.
OWN = {('/servers', 'GET'), ('/servers/detail', 'GET')}
BODIES = {('/servers/{server_id}/action', 'POST'): test_api.live(),
          ('/servers/{server_id}/migrations/{migration_id}/action', 'POST'):
          {'force_complete': None},
          ('/os-services/{service_id}', 'PUT'): {'status': 'disabled'}}


def test_every_route_asks_the_policy(cloud, guest, api):
    """Each route of the table refuses another project's caller (403), but
    the open ones and the listings of one's own: a route added without a
    policy check fails here."""
    g = guest('compute1', **OWNED)
    before = _state(cloud, g['uuid'])
    seen = set()
    for template, methods in routes.ROUTES:
        path = '/v2.1' + template.format(
            server_id=g['uuid'], migration_id='1', request_id='req-1',
            hypervisor_id='1', service_id='1', flavor_id='1', image_id='1')
        for method in methods:
            status, body, _ = call(api.app, method, path.rstrip('/') or '/v2.1',
                                   body=BODIES.get((template, method)), token=OTHER)
            if (template, method) in OWN:
                assert status == 200 and g['uuid'] not in str(body), template
            else:
                assert (status == 403) == ((template, method) not in OPEN), (
                    method, template, status, body)
            seen.add((template, method))
    assert OPEN | OWN <= seen
    assert _state(cloud, g['uuid']) == before


V1_OPEN = {('/openapi.json', 'GET')}


def test_every_task_api_route_asks_the_policy(cloud, guest, api):
    """/v1 too: another project's caller is refused (403) on every route but
    the OpenAPI document, at a task of a server it does not own."""
    g = guest('compute1', **OWNED)
    mig = cloud.wait(cloud.api.live_migrate(g['uuid'], host='compute2')['id'])
    assert mig['status'] == states.COMPLETED, mig
    before = _state(cloud, g['uuid'])
    seen = set()
    for template, methods in routes.V1_ROUTES:
        path = '/v1' + template.format(
            server_id=g['uuid'], task_id=mig['id'], host='compute2',
            drain_id='00000000-0000-4000-8000-000000000000')
        for method in methods:
            body = {'server': g['uuid']} if template == '/moves' else None
            status, answer, _ = call(api.app, method, path, body=body, token=OTHER)
            assert (status == 403) == ((template, method) not in V1_OPEN), (
                method, template, status, answer)
            seen.add((template, method))
    assert V1_OPEN <= seen
    assert _state(cloud, g['uuid']) == before
    # The owner reads its server's tasks, and changes nothing.
    assert call(api.app, 'GET', '/v1/tasks/%s' % mig['id'], token=OWNER)[0] == 200
    refused(call(api.app, 'DELETE', '/v1/tasks/%s' % mig['id'], token=OWNER),
            policies.SERVER_MIGRATIONS % 'delete')


def test_a_host_filter_is_an_admins(cloud, guest, api):
    mine, there = guest('compute1', **OWNED), guest('compute2', **OWNED)
    for token, found in ((OWNER, {mine['uuid'], there['uuid']}),
                         (ADMIN, {mine['uuid']})):
        listed = call(api.app, 'GET', '/v2.1/servers?host=compute1', token=token)[1]
        assert {s['id'] for s in listed['servers']} & {
            mine['uuid'], there['uuid']} == found


def test_an_admin_role_makes_an_admin(cloud, guest, api):
    """noauth as Placement's: roles from X-Roles, the admin role an admin's."""
    assert call(api.app, 'GET', '/v2.1/os-hypervisors', token='ops:p3',
                roles='reader, admin')[0] == 200
    refused(call(api.app, 'GET', '/v2.1/os-hypervisors', token='ops:p3',
                 roles='reader,member'), policies.HYPERVISORS % 'list')


# Routes only administrators may use, with what a non-admin's request sends.
ADMIN_ONLY = [
    ('GET', '/v2.1/os-migrations', None, policies.MIGRATIONS_INDEX),
    ('GET', '/v2.1/os-hypervisors', None, policies.HYPERVISORS % 'list'),
    ('GET', '/v2.1/os-hypervisors/detail', None, policies.HYPERVISORS % 'list-detail'),
    ('GET', '/v2.1/os-hypervisors/{hypervisor}', None, policies.HYPERVISORS % 'show'),
    ('GET', '/v2.1/os-services', None, policies.SERVICES % 'list'),
    ('PUT', '/v2.1/os-services/{service}', {'status': 'disabled',
                                            'disabled_reason': 'mine now'},
     policies.SERVICES % 'update'),
    ('PUT', '/v2.1/os-services/{service}', {'forced_down': True},
     policies.SERVICES % 'update'),
]


@pytest.mark.parametrize('method, template, body, rule', ADMIN_ONLY)
def test_admin_only_routes(cloud, guest, api, method, template, body, rule):
    g = guest('compute3', **OWNED)
    admin = {'hypervisor': call(api.app, 'GET', '/v2.1/os-hypervisors')[1],
             'service': call(api.app, 'GET', '/v2.1/os-services?host=compute3')[1]}
    path = template.format(
        hypervisor=admin['hypervisor']['hypervisors'][0]['id'],
        service=admin['service']['services'][0]['id'])
    before = _state(cloud, g['uuid'])
    for token in (OWNER, OTHER):
        refused(call(api.app, method, path, body=body, token=token), rule)
    assert call(api.app, method, path, body=body, token=BAD)[0] == 401
    assert _state(cloud, g['uuid']) == before
    if method == 'GET':
        assert call(api.app, method, path)[0] == 200


def test_legacy_service_changes_are_admin_only(cloud, api):
    before = cloud.db.hosts.get('compute3')
    for action, body in (('disable', {}), ('disable-log-reason',
                                           {'disabled_reason': 'x'}),
                         ('force-down', {'forced_down': True})):
        body = dict(body, host='compute3', binary='nova-compute')
        refused(call(api.app, 'PUT', '/v2.1/os-services/%s' % action, '2.11', body,
                     token=OWNER), policies.SERVICES % 'update')
    after = cloud.db.hosts.get('compute3')
    assert (after['enabled'], after['disabled_reason'], after['forced_down']) == \
        (before['enabled'], before['disabled_reason'], before['forced_down'])


@pytest.mark.parametrize('version', ['2.30', '2.34'])
def test_only_an_admin_moves_a_server(cloud, guest, api, version):
    g = guest('compute1', **OWNED)
    path = '/v2.1/servers/%s/action' % g['uuid']
    before = _state(cloud, g['uuid'])
    for token in (OWNER, OTHER):
        refused(call(api.app, 'POST', path, version, test_api.live(), token=token),
                policies.MIGRATE_LIVE)
    assert call(api.app, 'POST', path, version, test_api.live(), token=BAD)[0] == 401
    time.sleep(0.2)  # a 2.34 request would start its move in the background
    assert _state(cloud, g['uuid']) == before
    assert call(api.app, 'POST', path, version, test_api.live())[0] == 202
    deadline = time.monotonic() + 30
    while not cloud.db.migrations.list(instance=g['uuid']) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    (mig,) = cloud.db.migrations.list(instance=g['uuid'])
    assert cloud.wait(mig['id'])['status'] == states.COMPLETED


def test_a_running_migration_read_by_its_owner_stopped_by_an_admin(cloud, stuck, api):
    g = stuck(**OWNED)
    base = '/v2.1/servers/%s/migrations' % g['uuid']
    assert call(api.app, 'POST', '/v2.1/servers/%s/action' % g['uuid'], '2.30',
                test_api.live())[0] == 202
    mig = test_api._running(cloud, g['uuid'])
    assert mig['status'] == states.RUNNING
    for path, rule in ((base, 'index'), ('%s/%s' % (base, mig['id']), 'show')):
        status, body, _ = call(api.app, 'GET', path, token=OWNER)
        assert status == 200, body
        refused(call(api.app, 'GET', path, token=OTHER),
                policies.SERVER_MIGRATIONS % rule)
        assert call(api.app, 'GET', path, token=BAD)[0] == 401
    one = '%s/%s' % (base, mig['id'])
    for token in (OWNER, OTHER):
        refused(call(api.app, 'DELETE', one, token=token),
                policies.SERVER_MIGRATIONS % 'delete')
        refused(call(api.app, 'POST', one + '/action', body={'force_complete': None},
                     token=token), policies.SERVER_MIGRATIONS % 'force_complete')
    assert call(api.app, 'DELETE', one, token=BAD)[0] == 401
    # Still running where it was, untouched by the refusals.
    now = cloud.db.migrations.get(mig['id'])
    assert (now['status'], now['cancel_requested']) == (states.RUNNING, False)
    assert call(api.app, 'DELETE', one)[0] == 202
    assert cloud.wait(mig['id'])['status'] == states.CANCELLED


def test_instance_actions_for_the_owner_hosts_for_an_admin(cloud, guest, api):
    g = guest('compute1', **OWNED)
    mig = cloud.api.live_migrate(g['uuid'], host='compute2')
    cloud.wait(mig['id'])
    base = '/v2.1/servers/%s/os-instance-actions' % g['uuid']
    one = '%s/req-%s' % (base, mig['id'])
    status, body, _ = call(api.app, 'GET', base, token=OWNER)
    assert status == 200 and len(body['instanceActions']) == 1
    status, body, _ = call(api.app, 'GET', one, token=OWNER)
    events = body['instanceAction']['events']
    assert status == 200 and events
    assert not [e for e in events if 'host' in e or 'traceback' in e]
    events = call(api.app, 'GET', one)[1]['instanceAction']['events']
    assert all('host' in e and 'traceback' in e for e in events)
    refused(call(api.app, 'GET', base, token=OTHER), policies.INSTANCE_ACTIONS % 'list')
    refused(call(api.app, 'GET', one, token=OTHER), policies.INSTANCE_ACTIONS % 'show')
    assert call(api.app, 'GET', one, token=BAD)[0] == 401


def test_a_policy_file_overrides_the_defaults(cloud, guest, tmp_path):
    g = guest('compute1', **OWNED)
    rules = tmp_path / 'policy.yaml'
    rules.write_text(yaml.safe_dump({
        # Observers may list hypervisors; a server's owner may no longer read it.
        policies.HYPERVISORS % 'list': 'role:observer',
        policies.SERVERS % 'show': 'rule:admin_api'}))
    conf_file = tmp_path / 'api.conf'
    conf_file.write_text('[oslo_policy]\npolicy_file = %s\n' % rules)
    service = api_service.APIService(_conf(cloud, conf_file, 'noauth'))
    try:
        app = service.app
        assert call(app, 'GET', '/v2.1/os-hypervisors', token=OTHER,
                    roles='observer')[0] == 200
        refused(call(app, 'GET', '/v2.1/os-hypervisors', token=OTHER),
                policies.HYPERVISORS % 'list')
        path = '/v2.1/servers/%s' % g['uuid']
        refused(call(app, 'GET', path, token=OWNER), policies.SERVERS % 'show')
        assert call(app, 'GET', path)[0] == 200
        # Rules the file leaves out keep their defaults.
        refused(call(app, 'GET', '/v2.1/os-services', token=OTHER,
                     roles='observer'), policies.SERVICES % 'list')
    finally:
        service.app.stop()


def test_the_version_document_needs_no_token(api):
    assert call(api.app, 'GET', '/v2.1/', token=None)[0] == 200


def test_auth_strategy_none_is_an_admin(cloud):
    service = api_service.APIService(test_api._api_conf(cloud, auth_strategy='none'))
    try:
        assert call(service.app, 'GET', '/v2.1/os-services', token=None)[0] == 200
    finally:
        service.app.stop()


# The keystone strategy: keystonemiddleware's auth_token, really, configured
# against an identity URL where nothing listens. Without a Keystone server no
# token can be validated, so what is proven is every refusal path, and that the
# application reads the identity headers auth_token sets (test_keystone_headers).

def _closed_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _keystone_api(cloud, tmp_path, delay=False):
    identity = 'http://127.0.0.1:%d/identity' % _closed_port()
    conf_file = tmp_path / 'api.conf'
    conf_file.write_text(
        '[keystone_authtoken]\n'
        'www_authenticate_uri = %(u)s\n'
        'auth_url = %(u)s\n'
        'auth_type = password\n'
        'username = ferryman\npassword = secret\nproject_name = service\n'
        'user_domain_id = default\nproject_domain_id = default\n'
        'http_connect_timeout = 2\nhttp_request_max_retries = 0\n'
        'delay_auth_decision = %(d)s\n' % {'u': identity, 'd': delay})
    return api_service.APIService(_conf(cloud, conf_file, 'keystone')), identity


def test_keystone_refuses_without_a_valid_token(cloud, guest, tmp_path):
    g = guest('compute1', **OWNED)
    service, identity = _keystone_api(cloud, tmp_path)
    try:
        app = service.wsgi_app
        path = '/v2.1/servers/%s/action' % g['uuid']
        before = _state(cloud, g['uuid'])
        status, body, headers = call(app, 'POST', path, '2.30', test_api.live(),
                                     token=None)
        assert status == 401 and identity in headers['WWW-Authenticate']
        # Identity headers a client sends itself are stripped, never believed.
        spoofed = {'X-Identity-Status': 'Confirmed', 'X-User-Id': 'admin',
                   'X-Project-Id': 'admin', 'X-Roles': 'admin'}
        status, _, _ = _call(app, 'POST', path, '2.30', test_api.live(), None,
                             spoofed)
        assert status == 401
        # A token auth_token cannot check: Keystone unreachable is a prompt
        # 503, not a hang and not a pass.
        started = time.monotonic()
        status, _, _ = call(app, 'POST', path, '2.30', test_api.live(),
                            token='gAAAAABnot-a-real-token')
        assert status == 503 and time.monotonic() - started < 10
        assert _state(cloud, g['uuid']) == before
        # The version documents need no token.
        assert call(app, 'GET', '/v2.1/', token=None)[0] == 200
    finally:
        service.app.stop()


def test_keystone_delayed_decision_is_refused_by_the_app(cloud, guest, tmp_path):
    """delay_auth_decision: auth_token passes unauthenticated requests on,
    marked Invalid, and the application refuses them."""
    g = guest('compute1', **OWNED)
    service, _ = _keystone_api(cloud, tmp_path, delay=True)
    try:
        app = service.wsgi_app
        path = '/v2.1/servers/%s' % g['uuid']
        status, body, _ = call(app, 'GET', path, token=None)
        assert status == 401 and 'Keystone token' in body['unauthorized']['message']
        status, body, _ = _call(app, 'GET', path, '2.88', None, None, {
            'X-Identity-Status': 'Confirmed', 'X-User-Id': 'u1',
            'X-Project-Id': 'p1', 'X-Roles': 'admin'})
        assert status == 401
    finally:
        service.app.stop()


def test_keystone_headers(cloud):
    """What auth_token sets on a request it confirmed, read as credentials."""
    conf = test_api._api_conf(cloud, auth_strategy='keystone')
    req = webob.Request.blank('/v2.1/servers', headers={
        'X-Identity-Status': 'Confirmed', 'X-User-Id': 'u1', 'X-Project-Id': 'p1',
        'X-Roles': 'member,reader'})
    assert auth.credentials(conf, req) == ('u1', 'p1', ['member', 'reader'])
    for missing in ('X-Project-Id', 'X-User-Id'):
        req = webob.Request.blank('/v2.1/servers', headers={
            'X-Identity-Status': 'Confirmed', 'X-User-Id': 'u1',
            'X-Project-Id': 'p1'})
        del req.headers[missing]
        with pytest.raises(Exception) as raised:
            auth.credentials(conf, req)
        assert raised.value.code == 401
