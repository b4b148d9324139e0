"""ferryman-api against the simulated cloud: served by cheroot on loopback and
driven by tempest.lib's compute clients, which check every response against
Nova's per-microversion schemas; refusals checked through the WSGI application.
"""

import json
import subprocess
import time
import types

import oslo_messaging as messaging
import pytest
from tempest.lib import exceptions as tempest_exc
from tempest.lib.services.compute import base_compute_client
from tempest.lib.services.compute import flavors_client
from tempest.lib.services.compute import hypervisor_client
from tempest.lib.services.compute import migrations_client
from tempest.lib.services.compute import servers_client
from tempest.lib.services.compute import services_client
import webob

from api import service as api_service
from ferryman.common import conf as ferryman_conf
from ferryman.common import exception
from ferryman.sim import cloud as sim
from flows import states

VERSIONS = ('2.1', '2.25', '2.30', '2.47', '2.53', '2.59', '2.65', '2.80', '2.88')


class StubAuth(object):
    """What tempest's clients ask of an auth provider, without Keystone."""

    credentials = types.SimpleNamespace(username='admin', user_id='admin',
                                        tenant_name='admin', tenant_id='admin',
                                        password='')

    def __init__(self, endpoint, token='admin:admin'):
        self.endpoint = endpoint
        self.token = token

    def auth_request(self, method, url, headers=None, body=None, filters=None):
        headers = dict(headers or {}, **{'X-Auth-Token': self.token})
        return '%s/%s' % (self.endpoint, url.lstrip('/')), headers, body

    def base_url(self, filters=None):
        return self.endpoint

    def get_token(self):
        return self.token


def _api_conf(cloud, **overrides):
    options = {'transport_url': cloud.overrides['transport_url'],
               'oslo_messaging_rabbit.heartbeat_timeout_threshold': 0,
               'api.port': 0, 'api.auth_strategy': 'noauth',
               'auth.operator_key_file': cloud.operator_key('ferryman-api')}
    options.update(('api.' + k, v) for k, v in overrides.items())
    return ferryman_conf.make_conf(config_files=[], overrides=options)


@pytest.fixture(scope='module')
def cloud():
    """A cloud of this module's own, gone when it ends: test_audit's (next,
    alphabetically) must not meet what these tests leave in the shared one."""
    with sim.SimCloud() as c:
        yield c


@pytest.fixture(scope='module')
def api(cloud):
    service = api_service.APIService(_api_conf(cloud)).start()
    yield service
    service.stop()


@pytest.fixture
def compute(api, monkeypatch):
    """compute(ClientClass, version): a tempest client at that microversion."""
    endpoint = 'http://127.0.0.1:%d/v2.1' % api.port

    def make(cls, version):
        monkeypatch.setattr(base_compute_client, 'COMPUTE_MICROVERSION', version)
        return cls(StubAuth(endpoint), 'compute', 'RegionOne')
    return make


def call(app, method, path, version=None, body=None, token='admin:admin',
         raw=None):
    """(status, JSON body or None, headers) of a request to the application."""
    req = webob.Request.blank(path, method=method)
    if token is not None:
        req.headers['X-Auth-Token'] = token
    if version is not None:
        req.headers['OpenStack-API-Version'] = 'compute %s' % version
    if body is not None or raw is not None:
        req.body = raw if raw is not None else json.dumps(body).encode()
        req.content_type = 'application/json'
    resp = req.get_response(app)
    return resp.status_int, (resp.json if resp.body else None), resp.headers


def live(host='compute2', block='auto', **extra):
    return {'os-migrateLive': dict({'host': host, 'block_migration': block}, **extra)}


def wait_server(client, uuid, status, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        server = client.show_server(uuid)['server']
        if server['status'] == status or time.monotonic() > deadline:
            return server
        time.sleep(0.05)


def test_live_migration_through_the_api(cloud, guest, compute):
    g = guest('compute1')
    servers = compute(servers_client.ServersClient, '2.30')
    assert servers.show_server(g['uuid'])['server']['status'] == 'ACTIVE'
    servers.live_migrate_server(g['uuid'], host='compute2', block_migration='auto')
    mig = cloud.db.migrations.list(instance=g['uuid'])[0]
    assert cloud.wait(mig['id'])['status'] == states.COMPLETED
    server = wait_server(servers, g['uuid'], 'ACTIVE')
    assert (server['OS-EXT-SRV-ATTR:host'], server['OS-EXT-STS:task_state']) == \
        ('compute2', None)
    assert cloud.cloud.find_guest(g['uuid']) == {'compute2': 'running'}


@pytest.mark.parametrize('version', VERSIONS)
def test_responses_fit_tempest_schemas(cloud, guest, compute, version):
    """Every read clients make, validated by tempest at each microversion."""
    g = guest('compute1', storage='volume')
    mig = cloud.api.live_migrate(g['uuid'], host='compute2')
    cloud.wait(mig['id'])
    servers = compute(servers_client.ServersClient, version)
    listed = servers.list_servers(detail=True)['servers']
    assert g['uuid'] in [s['id'] for s in listed]
    assert servers.list_servers()['servers']
    assert servers.show_server(g['uuid'])['server']['OS-EXT-SRV-ATTR:host'] == \
        'compute2'
    migrations = compute(migrations_client.MigrationsClient, version)
    found = migrations.list_migrations(instance_uuid=g['uuid'])['migrations']
    assert [m['status'] for m in found] == ['completed']
    # tempest's newest hypervisor schema is 2.53's; 2.88 drops its statistics
    # (test_hypervisors_at_2_88).
    hypervisors = compute(hypervisor_client.HypervisorClient,
                          version if version != '2.88' else '2.87')
    detail = hypervisors.list_hypervisors(detail=True)['hypervisors']
    assert {h['hypervisor_hostname'] for h in detail} == set(cloud.hosts)
    hypervisors.list_hypervisors()
    shown = hypervisors.show_hypervisor(detail[0]['id'])['hypervisor']
    assert shown['hypervisor_hostname'] == detail[0]['hypervisor_hostname']
    services = compute(services_client.ServicesClient, version)
    listed = services.list_services(binary='nova-compute')['services']
    assert {s['host'] for s in listed} == set(cloud.hosts)
    flavors = compute(flavors_client.FlavorsClient, version)
    assert flavors.list_flavors(detail=True)['flavors']


def test_hypervisors_at_2_88(cloud, guest, api):
    g = guest('compute1')
    status, body, _ = call(api.app, 'GET', '/v2.1/os-hypervisors/detail?'
                           'with_servers=true&hypervisor_hostname_pattern=compute1',
                           '2.88')
    (hyp,) = body['hypervisors']
    assert set(hyp) == {'id', 'hypervisor_hostname', 'state', 'status', 'servers',
                        'hypervisor_type', 'hypervisor_version', 'host_ip',
                        'service'}
    assert g['uuid'] in [s['uuid'] for s in hyp['servers']]
    status, body, _ = call(api.app, 'GET', '/v2.1/os-hypervisors?'
                           'hypervisor_hostname_pattern=nosuch', '2.88')
    assert status == 404


def test_services_disable_and_enable(cloud, compute, api):
    # tempest's microversion is process-wide: a client is made for each use.
    def new():
        return compute(services_client.ServicesClient, '2.53')

    def old():
        return compute(services_client.ServicesClient, '2.1')
    (svc,) = new().list_services(host='compute3')['services']
    try:
        shown = new().update_service(svc['id'], status='disabled',
                                     disabled_reason='maintenance')['service']
        assert (shown['status'], shown['disabled_reason']) == ('disabled',
                                                               'maintenance')
        host = cloud.db.hosts.get('compute3')
        assert (host['enabled'], host['disabled_reason']) == (False, 'maintenance')
        old().enable_service(host='compute3', binary='nova-compute')
        assert cloud.db.hosts.get('compute3')['enabled'] is True
        old().disable_log_reason(host='compute3', binary='nova-compute',
                                 disabled_reason='again')
        assert cloud.db.hosts.get('compute3')['disabled_reason'] == 'again'
        shown = new().update_service(svc['id'], status='enabled')['service']
        assert (shown['status'], shown['disabled_reason']) == ('enabled', None)
    finally:
        cloud.api.set_host_enabled('compute3', True)
    path = '/v2.1/os-services/%s' % svc['id']
    for change, words in (({'status': 'enabled', 'disabled_reason': 'x'},
                           'disabled reason'),
                          ({'status': 'off'}, 'status'),
                          ({}, 'body')):
        status, body, _ = call(api.app, 'PUT', path, '2.53', change)
        assert status == 400 and words in body['badRequest']['message'], body
    assert cloud.db.hosts.get('compute3')['enabled'] is True
    status, body, _ = call(api.app, 'PUT', '/v2.1/os-services/disable', '2.1',
                           {'host': 'nosuch', 'binary': 'nova-compute'})
    assert status == 404 and 'nosuch' in body['itemNotFound']['message']


def test_services_forced_down_and_back_up(cloud, compute, api):
    def client(version):
        return compute(services_client.ServicesClient, version)
    (svc,) = client('2.53').list_services(host='compute2')['services']
    assert (svc['forced_down'], svc['state']) == (False, 'up')
    try:
        shown = client('2.53').update_service(svc['id'],
                                              forced_down=True)['service']
        assert (shown['forced_down'], shown['state']) == (True, 'down')
        assert cloud.db.hosts.get('compute2')['forced_down'] is True
        (listed,) = client('2.11').list_services(host='compute2')['services']
        assert (listed['forced_down'], listed['state']) == (True, 'down')
        assert 'forced_down' not in client('2.10').list_services(
            host='compute2')['services'][0]
        shown = client('2.11').update_forced_down(
            host='compute2', binary='nova-compute', forced_down=False)['service']
        assert shown == {'host': 'compute2', 'binary': 'nova-compute',
                         'forced_down': False}
        assert cloud.db.hosts.get('compute2')['up'] is True
        shown = client('2.52').update_forced_down(
            host='compute2', binary='nova-compute', forced_down=True)['service']
        assert shown['forced_down'] is True
        shown = client('2.53').update_service(svc['id'], status='enabled',
                                              forced_down=False)['service']
        assert (shown['forced_down'], shown['state']) == (False, 'up')
    finally:
        cloud.api.force_down('compute2', False)


def test_services_forced_down_refusals_change_nothing(cloud, api):
    _status, body, _ = call(api.app, 'GET', '/v2.1/os-services?host=compute2',
                            '2.53')
    path = '/v2.1/os-services/%s' % body['services'][0]['id']
    legacy = '/v2.1/os-services/force-down'
    for method, where, version, change, code, words in (
            ('PUT', path, '2.53', {'forced_down': 'yes'}, 400, "'yes'"),
            ('PUT', path, '2.53', {'forced_down': 1}, 400, 'forced_down'),
            ('PUT', legacy, '2.11', {'host': 'compute2', 'binary': 'nova-compute',
                                     'forced_down': 'true'}, 400, "'true'"),
            ('PUT', legacy, '2.11', {'host': 'compute2',
                                     'binary': 'nova-compute'}, 400, 'forced_down'),
            ('PUT', legacy, '2.11', {'host': 'compute2', 'binary': 'nova-scheduler',
                                     'forced_down': True}, 400, 'nova-scheduler'),
            ('PUT', legacy, '2.11', {'host': 'nosuch', 'binary': 'nova-compute',
                                     'forced_down': True}, 404, 'nosuch'),
            # Before 2.11 there is no such action; from 2.53 no such service.
            ('PUT', legacy, '2.10', {'host': 'compute2', 'binary': 'nova-compute',
                                     'forced_down': True}, 404, 'force-down'),
            ('PUT', legacy, '2.53', {'forced_down': True}, 404, 'force-down')):
        status, body, _ = call(api.app, method, where, version, change)
        assert status == code, (where, version, change, body)
        assert words in json.dumps(body), (where, version, change, body)
    assert cloud.db.hosts.get('compute2')['forced_down'] is False


def test_server_is_migrating_then_error(cloud, guest, api, monkeypatch):
    """MIGRATING while moving, ERROR once its migration ended in error."""
    g = guest('compute1')

    def fail(*args, **kwargs):
        raise exception.FerrymanError('post-migration failed for the test')
    monkeypatch.setattr(cloud.conductor.manager.compute,
                        'post_migration_destination', fail)
    status, _, _ = call(api.app, 'POST', '/v2.1/servers/%s/action' % g['uuid'],
                        '2.30', live())
    assert status == 202
    status, body, _ = call(api.app, 'GET', '/v2.1/servers/%s' % g['uuid'])
    assert body['server']['status'] == 'MIGRATING'
    assert body['server']['OS-EXT-STS:task_state'] == 'migrating'
    mig = cloud.db.migrations.list(instance=g['uuid'])[0]
    assert cloud.wait(mig['id'])['status'] == states.ERROR
    status, body, _ = call(api.app, 'GET', '/v2.1/servers/%s' % g['uuid'])
    assert body['server']['status'] == 'ERROR'
    assert 'failed for the test' in body['server']['fault']['message']


def test_failed_migration_leaves_server_active(cloud, guest, api):
    g = guest('compute1')
    cloud.cloud.inject_fault('compute2', 'create_local_disks')
    call(api.app, 'POST', '/v2.1/servers/%s/action' % g['uuid'], '2.30', live())
    mig = cloud.db.migrations.list(instance=g['uuid'])[0]
    assert cloud.wait(mig['id'])['status'] == states.FAILED
    status, body, _ = call(api.app, 'GET', '/v2.1/servers/%s' % g['uuid'])
    assert (body['server']['status'], body['server']['OS-EXT-SRV-ATTR:host']) == \
        ('ACTIVE', 'compute1')


@pytest.mark.parametrize('version, args, field', [
    ('2.1', {'host': 'compute2', 'block_migration': False}, 'disk_over_commit'),
    ('2.1', {'host': 'compute2', 'block_migration': 'auto',
             'disk_over_commit': False}, 'block_migration'),
    ('2.25', {'host': 'compute2', 'block_migration': 'auto',
              'disk_over_commit': False}, 'disk_over_commit'),
    ('2.25', {'host': 'compute2', 'block_migration': 'auto', 'force': True},
     'force'),
    ('2.30', {'host': 'compute2'}, 'block_migration'),
    ('2.30', {'host': 'bad host!', 'block_migration': 'auto'}, 'host'),
    ('2.30', {'host': 'compute2', 'block_migration': 7}, 'block_migration'),
    ('2.68', {'host': 'compute2', 'block_migration': 'auto', 'force': True},
     'force'),
])
def test_live_migrate_body_per_microversion(cloud, guest, api, version, args, field):
    g = guest('compute1')
    status, body, _ = call(api.app, 'POST', '/v2.1/servers/%s/action' % g['uuid'],
                           version, {'os-migrateLive': args})
    assert status == 400, body
    assert field in body['badRequest']['message']
    assert cloud.db.migrations.list(instance=g['uuid']) == []


@pytest.mark.parametrize('version, args', [
    ('2.1', {'host': 'compute2', 'block_migration': 'true',
             'disk_over_commit': 'False'}),
    ('2.25', {'host': None, 'block_migration': 'auto'}),
    ('2.30', {'host': 'compute2', 'block_migration': True, 'force': False}),
    ('2.68', {'host': 'compute2', 'block_migration': 'auto'}),
])
def test_live_migrate_accepted_shapes(cloud, guest, api, version, args):
    g = guest('compute1')
    status, body, _ = call(api.app, 'POST', '/v2.1/servers/%s/action' % g['uuid'],
                           version, {'os-migrateLive': args})
    assert (status, body) == (202, None)
    deadline = time.monotonic() + 10
    while not cloud.db.migrations.list(instance=g['uuid']):
        assert time.monotonic() < deadline, 'no migration started'
        time.sleep(0.05)
    mig = cloud.wait(cloud.db.migrations.list(instance=g['uuid'])[0]['id'])
    assert mig['status'] == states.COMPLETED, mig['error']


def test_refused_destination_is_400_below_2_34_and_202_from_it(cloud, guest, api):
    g = guest('compute1')
    status, body, _ = call(api.app, 'POST', '/v2.1/servers/%s/action' % g['uuid'],
                           '2.30', live(host='compute1'))
    assert status == 400 and 'compute1' in body['badRequest']['message']
    status, body, _ = call(api.app, 'POST', '/v2.1/servers/%s/action' % g['uuid'],
                           '2.30', live(host='nosuchhost'))
    assert status == 400 and 'nosuchhost' in body['badRequest']['message']
    status, body, headers = call(api.app, 'POST', '/v2.1/servers/%s/action' %
                                 g['uuid'], '2.34', live(host='nosuchhost'))
    assert (status, body) == (202, None)
    request_id = headers['x-openstack-request-id']
    # From 2.34 the refusal is seen as the request's action, its event an Error.
    base = '/v2.1/servers/%s/os-instance-actions' % g['uuid']
    deadline = time.monotonic() + 10
    while True:
        status, body, _ = call(api.app, 'GET', base, '2.84')
        if body['instanceActions'] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [(a['action'], a['request_id'], a['message'])
            for a in body['instanceActions']] == [
        ('live-migration', request_id, 'Error')]
    status, body, _ = call(api.app, 'GET', '%s/%s' % (base, request_id), '2.84')
    assert status == 200
    (event,) = body['instanceAction']['events']
    assert (event['event'], event['result'], event['host']) == (
        'check-request', 'Error', 'conductor')
    assert 'nosuchhost' in event['details'] and 'nosuchhost' in event['traceback']
    assert cloud.db.migrations.list(instance=g['uuid']) == []
    assert cloud.db.instances.get(g['uuid'])['host'] == 'compute1'
    # Below 2.34 the answer was the refusal: nothing more to record.
    assert [r['request_id'] for r in cloud.api.list_refused_requests(g['uuid'])] \
        == [request_id]


@pytest.mark.parametrize('version', ['2.34', '2.58', '2.62', '2.84', '2.88'])
def test_refused_request_action_fits_tempest_schemas(
        cloud, guest, api, compute, version):
    g = guest('compute1')
    status, _, headers = call(api.app, 'POST', '/v2.1/servers/%s/action' % g['uuid'],
                              version, live(host='compute1'))
    assert status == 202
    servers = compute(servers_client.ServersClient, version)
    deadline = time.monotonic() + 10
    while not servers.list_instance_actions(g['uuid'])['instanceActions']:
        assert time.monotonic() < deadline, 'refusal not recorded'
        time.sleep(0.05)
    shown = servers.show_instance_action(g['uuid'], headers['x-openstack-request-id'])
    assert [e['result'] for e in shown['instanceAction']['events']] == ['Error']


def test_force_without_host_is_refused(cloud, guest, api):
    g = guest('compute1')
    status, body, _ = call(api.app, 'POST', '/v2.1/servers/%s/action' % g['uuid'],
                           '2.30', live(host=None, force=True))
    assert status == 400 and 'force' in body['badRequest']['message']


def test_migrating_server_cannot_be_moved_again(cloud, stuck, api):
    g = stuck()
    assert call(api.app, 'POST', '/v2.1/servers/%s/action' % g['uuid'], '2.30',
                live())[0] == 202
    status, body, _ = call(api.app, 'POST', '/v2.1/servers/%s/action' % g['uuid'],
                           '2.30', live(host='compute3'))
    assert status == 409
    assert "Cannot 'os-migrateLive' instance %s while it is in task_state " \
        "migrating" % g['uuid'] == body['conflictingRequest']['message']
    mig = cloud.db.migrations.list(instance=g['uuid'])[0]
    cloud.api.abort_migration(mig['id'])
    assert cloud.wait(mig['id'])['status'] == states.CANCELLED


def _running(cloud, uuid, timeout=30):
    """The guest's migration once running with a progress sample taken."""
    deadline = time.monotonic() + timeout
    while True:
        mig = cloud.db.migrations.list(instance=uuid)[0]
        if mig['status'] == states.RUNNING and \
                mig['progress'].get('memory_total_mb') or \
                time.monotonic() > deadline:
            return mig
        time.sleep(0.02)


def test_server_migrations_show_abort(cloud, stuck, api):
    g = stuck()
    base = '/v2.1/servers/%s/migrations' % g['uuid']
    assert call(api.app, 'GET', base, '2.22')[0] == 404
    call(api.app, 'POST', '/v2.1/servers/%s/action' % g['uuid'], '2.30', live())
    mig = _running(cloud, g['uuid'])
    status, body, _ = call(api.app, 'GET', base, '2.80')
    assert status == 200
    (shown,) = body['migrations']
    assert (shown['uuid'], shown['status'], shown['source_compute'],
            shown['dest_compute']) == (mig['id'], 'running', 'compute1', 'compute2')
    assert shown['memory_total_bytes'] > 0
    for ref in (str(shown['id']), mig['id']):
        status, body, _ = call(api.app, 'GET', '%s/%s' % (base, ref), '2.59')
        assert (status, body['migration']['uuid']) == (200, mig['id'])
    assert call(api.app, 'GET', '%s/12345' % base, '2.59')[0] == 404
    assert call(api.app, 'DELETE', '%s/%s' % (base, shown['id']), '2.23')[0] == 404
    assert call(api.app, 'DELETE', '%s/%s' % (base, shown['id']), '2.24')[0] == 202
    assert cloud.wait(mig['id'])['status'] == states.CANCELLED
    status, body, _ = call(api.app, 'GET', base, '2.80')
    assert (status, body) == (200, {'migrations': []})
    status, body, _ = call(api.app, 'DELETE', '%s/%s' % (base, shown['id']), '2.80')
    assert status == 400 and 'cancelled' in body['badRequest']['message']


def test_force_complete(cloud, stuck, api):
    g = stuck()
    call(api.app, 'POST', '/v2.1/servers/%s/action' % g['uuid'], '2.30', live())
    mig = _running(cloud, g['uuid'])
    path = '/v2.1/servers/%s/migrations/%s/action' % (g['uuid'], mig['id'])
    status, body, _ = call(api.app, 'POST', path, '2.22', {'force_complete': {}})
    assert status == 400 and 'force_complete' in body['badRequest']['message']
    assert call(api.app, 'POST', path, '2.22', {'force_complete': None})[0] == 202
    assert cloud.wait(mig['id'])['status'] == states.COMPLETED
    status, body, _ = call(api.app, 'POST', path, '2.22', {'force_complete': None})
    assert status == 409


def test_os_migrations_filters_and_paging(cloud, guest, api):
    g = guest('compute1', storage='volume')
    ids = []
    for dest in ('compute2', 'compute3'):
        ids.append(cloud.wait(cloud.api.live_migrate(g['uuid'], host=dest)['id'])['id'])
    path = '/v2.1/os-migrations?instance_uuid=%s' % g['uuid']
    status, body, _ = call(api.app, 'GET', path, '2.59')
    assert [m['uuid'] for m in body['migrations']] == ids[::-1]  # newest first
    status, body, _ = call(api.app, 'GET', path + '&limit=1', '2.59')
    assert [m['uuid'] for m in body['migrations']] == [ids[1]]
    assert 'marker=%s' % ids[1] in body['migrations_links'][0]['href']
    status, body, _ = call(api.app, 'GET', path + '&marker=%s' % ids[1], '2.59')
    assert [m['uuid'] for m in body['migrations']] == [ids[0]]
    status, body, _ = call(api.app, 'GET', path + '&source_compute=compute2', '2.59')
    assert [m['uuid'] for m in body['migrations']] == [ids[1]]
    status, body, _ = call(api.app, 'GET', path + '&migration_type=resize', '2.59')
    assert body['migrations'] == []
    status, body, _ = call(api.app, 'GET', path + '&migration_type=bogus', '2.59')
    assert status == 400 and 'bogus' in body['badRequest']['message']


@pytest.mark.parametrize('action', ['migrate', 'resize'])
def test_other_moves_are_not_offered(cloud, guest, api, action):
    g = guest('compute1')
    status, body, _ = call(api.app, 'POST', '/v2.1/servers/%s/action' % g['uuid'],
                           '2.56', {action: None})
    assert status == 400
    assert body['badRequest']['message'].startswith(
        'The %s action is not offered by Ferryman yet' % action)


@pytest.mark.parametrize('raw, code, words', [
    (b'{"os-migrateLive": ', 400, 'Malformed request body'),
    (b'[]', 400, 'body'),
    (b'{"a": 1, "b": 2}', 400, 'body'),
    (b'{"reboot": {"type": "HARD"}}', 400, 'There is no such action: reboot'),
    (b'{"x": "' + b'a' * 70000 + b'"}', 413, 'larger than'),
])
def test_bad_bodies(cloud, guest, api, raw, code, words):
    g = guest('compute1')
    status, body, _ = call(api.app, 'POST', '/v2.1/servers/%s/action' % g['uuid'],
                           '2.30', raw=raw)
    assert status == code
    (fault,) = body.values()
    assert fault['code'] == code and words in fault['message']
    assert cloud.db.migrations.list(instance=g['uuid']) == []


def test_server_name_filter_is_literal(cloud, guest, api):
    g = guest('compute1')
    status, body, _ = call(api.app, 'GET', '/v2.1/servers/detail?name=%s' %
                           g['name'][2:])
    assert [s['id'] for s in body['servers']] == [g['uuid']]
    # A pattern (one that could backtrack for ages) is only text here: "."
    # matches no name, since none has a dot.
    status, body, _ = call(api.app, 'GET', '/v2.1/servers/detail?name=.')
    assert (status, body['servers']) == (200, [])
    status, body, _ = call(api.app, 'GET', '/v2.1/servers/detail?host=bad%20host')
    assert status == 400 and "'bad host'" in body['badRequest']['message']


def test_versions_and_headers(api):
    status, body, headers = call(api.app, 'GET', '/', token=None)
    assert status == 200
    (version,) = body['versions']
    assert (version['id'], version['min_version'], version['version']) == \
        ('v2.1', '2.1', '2.88')
    status, body, headers = call(api.app, 'GET', '/v2.1/', token=None)
    assert body['version']['id'] == 'v2.1'
    assert headers['OpenStack-API-Version'] == 'compute 2.1'
    status, body, headers = call(api.app, 'GET', '/v2.1/os-services', 'latest')
    assert headers['OpenStack-API-Version'] == 'compute 2.88'
    assert headers['X-OpenStack-Nova-API-Version'] == '2.88'
    assert 'OpenStack-API-Version' in headers['Vary']
    assert headers['x-openstack-request-id'].startswith('req-')
    req = webob.Request.blank('/v2.1/os-services')
    req.headers.update({'X-Auth-Token': 'admin:admin',
                        'X-OpenStack-Nova-API-Version': '2.53'})
    assert req.get_response(api.app).headers['OpenStack-API-Version'] == \
        'compute 2.53'


@pytest.mark.parametrize('version', ['2.0', '2.89', '3.1'])
def test_version_out_of_range_is_406(api, version):
    status, body, _ = call(api.app, 'GET', '/v2.1/servers/detail', version)
    assert status == 406
    assert body['notAcceptable']['message'] == (
        'Version %s is not supported by the API. Minimum is 2.1 and maximum is '
        '2.88.' % version)


def test_unknown_paths_and_methods(cloud, guest, api):
    assert call(api.app, 'GET', '/v2.1/images/detail')[1]['itemNotFound']
    assert call(api.app, 'GET', '/v2.1/servers/not-a-uuid')[0] == 404
    assert call(api.app, 'GET', '/v2.1/servers/%s' % (
        '00000000-0000-4000-8000-000000000000'))[0] == 404
    status, body, headers = call(api.app, 'DELETE', '/v2.1/os-services')
    assert (status, headers['Allow']) == (405, 'GET')
    assert body['badMethod']['code'] == 405


def test_noauth_needs_a_token_and_an_admin(cloud, guest, api):
    g = guest('compute1')
    path = '/v2.1/servers/%s/action' % g['uuid']
    status, body, _ = call(api.app, 'POST', path, '2.30', live(), token=None)
    assert status == 401 and 'user:project' in body['unauthorized']['message']
    status, body, _ = call(api.app, 'POST', path, '2.30', live(), token='demo:demo')
    assert status == 403 and 'migrate_live' in body['forbidden']['message']
    # Not the owner (test_api_policy has the owners' and others' views).
    status, body, _ = call(api.app, 'GET', '/v2.1/servers/detail', token='demo:demo')
    assert status == 200 and g['uuid'] not in [s['id'] for s in body['servers']]
    assert cloud.db.migrations.list(instance=g['uuid']) == []


def test_auth_strategy_none_takes_any_request(cloud, guest):
    service = api_service.APIService(_api_conf(cloud, auth_strategy='none'))
    try:
        status, body, _ = call(service.app, 'GET', '/v2.1/os-hypervisors',
                               token='notused')
        assert status == 200 and len(body['hypervisors']) == len(cloud.hosts)
    finally:
        service.app.stop()


class _Unanswered(object):
    """A conductor client whose calls meet the given oslo.messaging error."""

    def __init__(self, error):
        self.error = error

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise self.error
        return fail


@pytest.mark.parametrize('error, words', [
    (messaging.MessagingTimeout('no reply'), 'did not answer in time'),
    (messaging.MessageDeliveryFailure('broker gone'), 'cannot be reached'),
])
def test_conductor_unreachable_is_503(cloud, error, words):
    service = api_service.APIService(_api_conf(cloud), conductor=_Unanswered(error))
    try:
        status, body, headers = call(service.app, 'GET', '/v2.1/servers/detail')
        assert status == 503 and words in body['serviceUnavailable']['message']
        assert headers['x-openstack-request-id'].startswith('req-')
    finally:
        service.app.stop()


def test_tempest_refuses_what_it_should(compute):
    """The contract check can fail: a wrong microversion header is caught."""
    servers = compute(servers_client.ServersClient, '2.89')
    with pytest.raises(tempest_exc.NotAcceptable):
        servers.list_servers(detail=True)


def _moved_then_failed(cloud, guest):
    """A guest with two migrations to compute2: one refused by its disks (failed,
    rolled back), then one completed."""
    g = guest('compute1')
    cloud.cloud.inject_fault('compute2', 'create_local_disks', times=1)
    failed = cloud.wait(cloud.api.live_migrate(g['uuid'], host='compute2')['id'])
    assert failed['status'] == states.FAILED
    done = cloud.wait(cloud.api.live_migrate(g['uuid'], host='compute2')['id'])
    assert done['status'] == states.COMPLETED, done['error']
    return g, done, failed


@pytest.mark.parametrize('version', ['2.1', '2.51', '2.58', '2.62', '2.80', '2.84',
                                     '2.88'])
def test_instance_actions_fit_tempest_schemas(cloud, guest, compute, version):
    g, done, failed = _moved_then_failed(cloud, guest)
    servers = compute(servers_client.ServersClient, version)
    actions = servers.list_instance_actions(g['uuid'])['instanceActions']
    assert [(a['action'], a['request_id'], a['message']) for a in actions] == [
        ('live-migration', 'req-%s' % done['id'], None),
        ('live-migration', 'req-%s' % failed['id'], 'Error')]
    assert ('updated_at' in actions[0]) == (version >= '2.58')
    shown = servers.show_instance_action(g['uuid'], actions[0]['request_id'])
    events = shown['instanceAction']['events']
    steps = [e['event'] for e in events]
    assert steps[0] == 'block-live-migration'
    for step in ('claim-resources', 'create-local-disks', 'start-migration',
                 'monitor-migration', 'post-migration-destination'):
        assert step in steps
    assert {e['result'] for e in events} == {'Success'}
    assert all(e['finish_time'] >= e['start_time'] for e in events)
    by_step = {e['event']: e for e in events}
    if version >= '2.62':
        assert by_step['create-local-disks']['host'] == 'compute2'
        assert by_step['start-migration']['host'] == 'compute1'
        assert by_step['start-migration']['hostId'] != \
            by_step['create-local-disks']['hostId']
    else:
        assert 'host' not in by_step['start-migration']

    shown = servers.show_instance_action(g['uuid'], actions[1]['request_id'])
    events = shown['instanceAction']['events']
    (broken,) = [e for e in events if e['event'] == 'create-local-disks']
    assert broken['result'] == 'Error'
    # The agent's traceback and the conductor's, as the history kept them.
    assert 'injected fault' in broken['traceback']
    assert broken['traceback'].count('Traceback (most recent call last)') == 2
    assert 'compute_agent/virt/fake.py' in broken['traceback']
    assert [e['result'] for e in events if e['event'] == 'revert-claim-resources'] \
        == ['Success']
    assert [e['result'] for e in events
            if e['event'] == 'block-live-migration'] == ['Error']
    if version >= '2.84':
        assert broken['details'] == ('Step create_local_disks failed on host '
                                     'compute2: injected fault')
        assert by_step['claim-resources']['details'] is None
    else:
        assert 'details' not in broken


def test_instance_actions_addressed_by_request_id_uuid_or_number(cloud, guest, api):
    g, done, _failed = _moved_then_failed(cloud, guest)
    base = '/v2.1/servers/%s/os-instance-actions' % g['uuid']
    status, body, _ = call(api.app, 'GET', base, '2.80')
    number = [m['id'] for m in call(api.app, 'GET', '/v2.1/os-migrations?'
                                    'instance_uuid=%s' % g['uuid'], '2.80')[1][
        'migrations'] if m['uuid'] == done['id']][0]
    for ref in ('req-%s' % done['id'], done['id'], str(number)):
        status, body, _ = call(api.app, 'GET', '%s/%s' % (base, ref), '2.84')
        assert (status, body['instanceAction']['request_id']) == \
            (200, 'req-%s' % done['id'])


def test_instance_actions_not_found(cloud, guest, api):
    g = guest('compute1')
    base = '/v2.1/servers/%s/os-instance-actions' % g['uuid']
    assert call(api.app, 'GET', base, '2.84')[1] == {'instanceActions': []}
    status, body, _ = call(api.app, 'GET', base + '/req-nosuch', '2.84')
    assert status == 404
    assert body['itemNotFound']['message'] == (
        'Action for request_id req-nosuch on instance %s not found' % g['uuid'])
    for server in ('00000000-0000-4000-8000-000000000000', 'not-a-uuid'):
        status, body, _ = call(api.app, 'GET', '/v2.1/servers/%s/os-instance-actions'
                               % server, '2.84')
        assert status == 404 and server in body['itemNotFound']['message']
        status, body, _ = call(api.app, 'GET', '/v2.1/servers/%s/os-instance-actions'
                               '/req-x' % server, '2.84')
        assert status == 404 and server in body['itemNotFound']['message']


def test_instance_actions_paging(cloud, guest, api):
    g, done, failed = _moved_then_failed(cloud, guest)
    base = '/v2.1/servers/%s/os-instance-actions' % g['uuid']
    status, body, _ = call(api.app, 'GET', base + '?limit=1', '2.58')
    assert [a['request_id'] for a in body['instanceActions']] == \
        ['req-%s' % done['id']]
    assert body['links'][0]['rel'] == 'next'
    assert 'marker=req-%s' % done['id'] in body['links'][0]['href']
    status, body, _ = call(api.app, 'GET', base + '?marker=req-%s' % done['id'],
                           '2.58')
    assert [a['request_id'] for a in body['instanceActions']] == \
        ['req-%s' % failed['id']]
    assert 'links' not in body
    status, body, _ = call(api.app, 'GET', base + '?changes-since=%s' %
                           done['updated_at'], '2.58')
    assert [a['request_id'] for a in body['instanceActions']] == \
        ['req-%s' % done['id']]
    status, body, _ = call(api.app, 'GET', base + '?marker=req-nosuch', '2.58')
    assert status == 400 and 'req-nosuch' in body['badRequest']['message']
    status, body, _ = call(api.app, 'GET', base + '?changes-before=%s' %
                           done['updated_at'], '2.58')
    assert status == 400 and 'changes-before' in body['badRequest']['message']
    status, body, _ = call(api.app, 'GET', base + '?changes-before=%s' %
                           failed['updated_at'], '2.66')
    assert [a['request_id'] for a in body['instanceActions']] == \
        ['req-%s' % failed['id']]
    # Before 2.58 there is no paging: every action, whatever the query says.
    status, body, _ = call(api.app, 'GET', base + '?limit=1', '2.57')
    assert len(body['instanceActions']) == 2


def test_instance_action_events_of_a_history():
    """Decisions and attempts within a step are its details; a flow ended with
    no start recorded (the conductor could not resume it) is an event too."""
    from api.handlers import instance_actions
    t = ['2026-01-01T00:00:0%dZ' % i for i in range(6)]
    history = [
        {'atom': 'claim-resources', 'state': 'RUNNING', 'host': 'conductor',
         'started_at': t[0], 'ended_at': None, 'error': None, 'details': None},
        {'atom': 'claim-resources', 'state': 'ATTEMPT', 'host': 'compute3',
         'started_at': None, 'ended_at': None, 'error': None,
         'details': {'attempt': 2, 'candidates': ['compute2', 'compute3']}},
        {'atom': 'claim-resources', 'state': 'SUCCESS', 'host': 'conductor',
         'started_at': t[0], 'ended_at': t[1], 'error': None, 'details': None},
        {'atom': 'monitor-migration', 'state': 'RUNNING', 'host': 'conductor',
         'started_at': t[2], 'ended_at': None, 'error': None, 'details': None},
        {'atom': 'monitor-migration', 'state': 'DECISION', 'host': 'conductor',
         'started_at': None, 'ended_at': None, 'error': None,
         'details': {'action': 'post-copy', 'why': 'not converging'}},
        {'atom': 'migration-sentinel', 'state': 'FAILURE', 'host': 'conductor',
         'started_at': None, 'ended_at': None, 'error': 'conductor lost it',
         'details': None},
    ]
    events = instance_actions.events(history, t[5])
    assert [(e['event'], e['start_time'], e['finish_time'], e['result'],
             e['notes']) for e in events] == [
        ('claim-resources', t[0], t[1], 'Success',
         ['attempt 2 on compute3 of compute2, compute3']),
        ('monitor-migration', t[2], None, None,
         ['post-copy: not converging']),
        ('migration-sentinel', t[2], t[2], 'Error', [])]
    assert events[2]['traceback'] == 'conductor lost it'


def test_instance_action_event_view_hides_host_and_traceback_from_others():
    """Nova shows an event's host and traceback to administrators only."""
    from api import microversion
    from api.handlers import instance_actions
    event = {'event': 'create-local-disks', 'start_time': 't0', 'finish_time': 't1',
             'result': 'Error', 'host': 'compute2', 'error': 'it broke',
             'traceback': 'Traceback ...', 'notes': []}
    for admin in (True, False):
        ctx = types.SimpleNamespace(
            at_least=lambda v: microversion.MAX_VERSION >= microversion.parse(v))
        shown = instance_actions._event_view(ctx, event, admin)
        assert ('host' in shown, 'traceback' in shown) == (admin, admin)
        assert shown['hostId'] and shown['details'] == 'it broke'


def test_an_api_without_an_operator_key_says_so_and_blames_no_client(cloud):
    conf = _api_conf(cloud)
    conf.set_override('operator_key_file', None, group='auth')
    service = api_service.APIService(conf)
    status, body, _headers = call(service.app, 'GET', '/v2.1/servers/detail')
    assert status == 500, body
    assert 'not signed by an operator' in body['computeFault']['message']


def test_every_migration_status_has_novas():
    # Found by ferryman-bench api: GET /os-migrations answered 500 while a
    # volume-backed guest's migration was connecting-volumes.
    from api.handlers import common
    from ferryman.common import vocabulary
    for status in vocabulary.ACTIVE + vocabulary.TERMINAL:
        assert common.MIGRATION_STATUS[status] in common.IN_PROGRESS + (
            'completed', 'failed', 'cancelled', 'error'), status
    assert common.MIGRATION_STATUS['connecting-volumes'] == 'preparing'
    assert common.MIGRATION_STATUS['copying-disks'] == 'running'


def test_the_api_listens_with_room_for_many_clients_connecting_at_once(cloud):
    # cheroot's own default backlog is 5: with 200 clients connecting at once,
    # the kernel dropped their SYNs and some waited out their retries (seen by
    # ferryman-bench api as requests timing out with nothing in the API log).
    service = api_service.APIService(_api_conf(cloud)).start()
    try:
        out = subprocess.run(['ss', '-ltnH', 'sport = :%d' % service.port],
                             capture_output=True, text=True, check=True).stdout
        (line,) = out.splitlines()
        backlog = int(line.split()[2])  # a listening socket's Send-Q
        with open('/proc/sys/net/core/somaxconn') as f:
            assert backlog == min(1024, int(f.read()))
    finally:
        service.stop()
