"""ferryman-api as a process, in front of a conductor and agents over RabbitMQ,
driven by the unmodified python-openstackclient, openstacksdk and the
python-novaclient library from PyPI with no Keystone (auth_type none, and
keystoneauth1's noauth plugin for novaclient, as nova-api.md records)."""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid

from keystoneauth1 import noauth
from keystoneauth1 import session as ks_session
from novaclient import api_versions
from novaclient import client as nova_client
from novaclient import exceptions as nova_exc
import openstack
import pytest

from ferryman.testing.servers import _tail, _terminate, free_ports

pytestmark = pytest.mark.functional


@pytest.fixture(scope='module')
def api_url(cluster):
    """ferryman-api started with its own configuration file; its /v2.1 URL."""
    port = free_ports(1)[0]
    log = os.path.join(cluster.base_dir, 'api.log')
    conf = cluster._write_conf('api', {
        'DEFAULT': {'transport_url': cluster.rabbit.url, 'log_file': log},
        'oslo_messaging_rabbit': cluster.broker_options(),
        'api': {'port': port, 'auth_strategy': 'none'},
        'auth': cluster.operator_options('ferryman-api')})
    with open(os.path.join(cluster.base_dir, 'api.out'), 'ab') as out:
        proc = subprocess.Popen(['ferryman-api', '--config-file', conf],
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = 'http://127.0.0.1:%d' % port
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, _tail([log])
            try:
                with urllib.request.urlopen(url + '/', timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, _tail([log])
                time.sleep(0.2)
        yield url + '/v2.1'
    finally:
        _terminate(proc)


def openstack_cli(api_url, *args):
    """Run ``openstack ARGS`` as a user would: (exit code, JSON or text, stderr)."""
    env = dict(os.environ, OS_AUTH_TYPE='none', OS_ENDPOINT=api_url,
               OS_IDENTITY_API_VERSION='3')
    res = subprocess.run(['openstack'] + [str(a) for a in args], env=env,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=180)
    out = res.stdout
    if '-f' in args and res.returncode == 0:
        out = json.loads(out)
    return res.returncode, out, res.stderr


def test_openstackclient_moves_a_guest(cluster, api_url):
    name = 'osc-%s' % uuid.uuid4().hex[:6]
    guest = cluster.seed(name, 'compute1', data='moved by openstack')

    rc, servers, err = openstack_cli(api_url, 'server', 'list', '--long', '-f', 'json')
    assert rc == 0, err
    row = next(s for s in servers if s['ID'] == guest['uuid'])
    assert (row['Name'], row['Status'], row['Host']) == (name, 'ACTIVE', 'compute1')

    # A refused destination answers at once (os-migrateLive at 2.30).
    rc, _out, err = openstack_cli(api_url, 'server', 'migrate', '--live-migration',
                                  '--host', 'compute1', name)
    assert rc != 0 and "is the instance's current host" in err

    rc, out, err = openstack_cli(api_url, '--os-compute-api-version', '2.30',
                                 'server', 'migrate', '--live-migration', '--host',
                                 'compute2', '--wait', name)
    assert rc == 0, err
    assert cluster.cloud.find_guest(guest['uuid']) == {'compute2': 'running'}
    assert cluster.cloud.read_disk('compute2', guest['uuid']) == 'moved by openstack'

    rc, shown, err = openstack_cli(api_url, 'server', 'show', name, '-f', 'json')
    assert rc == 0, err
    assert (shown['status'], shown['OS-EXT-SRV-ATTR:host']) == ('ACTIVE', 'compute2')

    rc, migs, err = openstack_cli(api_url, 'server', 'migration', 'list', '--server',
                                  name, '-f', 'json')
    assert rc == 0, err
    assert [(m['Source Compute'], m['Dest Compute'], m['Status'], m['Type'])
            for m in migs] == [('compute1', 'compute2', 'completed', 'live-migration')]

    # The migration as a server event (os-instance-actions at 2.84), its flow's
    # steps the event's events.
    rc, actions, err = openstack_cli(api_url, 'server', 'event', 'list', name,
                                     '-f', 'json')
    assert rc == 0, err
    assert [(a['Action'], a['Server ID']) for a in actions] == [
        ('live-migration', guest['uuid'])]
    request_id = actions[0]['Request ID']
    rc, shown, err = openstack_cli(api_url, 'server', 'event', 'show', name,
                                   request_id, '-f', 'json')
    assert rc == 0, err
    assert (shown['action'], shown['request_id'], shown['message']) == (
        'live-migration', request_id, None)
    steps = {e['event']: e for e in shown['events']}
    for step, host in (('claim-resources', 'conductor'),
                       ('check-destination', 'compute2'),
                       ('check-source', 'compute1'),
                       ('start-migration', 'compute1'),
                       ('monitor-migration', 'conductor'),
                       ('post-migration-destination', 'compute2'),
                       ('finish-migration', 'conductor')):
        assert (steps[step]['host'], steps[step]['result']) == (host, 'Success'), \
            steps[step]
        assert steps[step]['finish_time'] >= steps[step]['start_time']
    assert {e['result'] for e in shown['events']} == {'Success'}

    rc, hypervisors, err = openstack_cli(api_url, 'hypervisor', 'list', '-f', 'json')
    assert rc == 0, err
    assert {h['Hypervisor Hostname']: h['State'] for h in hypervisors} == \
        dict.fromkeys(cluster.hosts, 'up')

    rc, services, err = openstack_cli(api_url, 'compute', 'service', 'list',
                                      '-f', 'json')
    assert rc == 0, err
    assert {(s['Host'], s['Binary'], s['State']) for s in services} == {
        (h, 'nova-compute', 'up') for h in cluster.hosts}


def test_openstacksdk_moves_a_guest(cluster, api_url):
    name = 'sdk-%s' % uuid.uuid4().hex[:6]
    guest = cluster.seed(name, 'compute2', storage='volume')
    conn = openstack.connect(auth_type='none', auth={'endpoint': api_url},
                             identity_api_version='3', load_yaml_config=False,
                             load_envvars=False)
    server = conn.compute.find_server(name)
    assert (server.id, server.compute_host) == (guest['uuid'], 'compute2')
    conn.compute.live_migrate_server(server, host='compute3',
                                     block_migration='auto')
    # Accepted at 2.30 only once the migration is recorded: from the first look
    # on, the server is MIGRATING until it has moved.
    deadline = time.monotonic() + 120
    while True:
        server = conn.compute.get_server(guest['uuid'])
        if server.status != 'MIGRATING' or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (server.status, server.compute_host) == ('ACTIVE', 'compute3')
    assert cluster.cloud.find_guest(guest['uuid']) == {'compute3': 'running'}
    migs = list(conn.compute.migrations(instance_uuid=guest['uuid']))
    assert [(m.source_compute, m.dest_compute, m.status) for m in migs] == \
        [('compute2', 'compute3', 'completed')]
    hosts = {h.name for h in conn.compute.hypervisors(details=True)}
    assert hosts == set(cluster.hosts)


def test_openstackclient_forces_a_service_down_and_up(cluster, api_url):
    host = sorted(cluster.hosts)[-1]

    def listed(version):
        rc, services, err = openstack_cli(
            api_url, '--os-compute-api-version', version, 'compute', 'service',
            'list', '--long', '--host', host, '-f', 'json')
        assert rc == 0, err
        (row,) = services
        return row['State'], row['Forced Down']

    try:
        # From 2.53 by the service's id; 2.11 to 2.52 by /os-services/force-down.
        rc, _out, err = openstack_cli(api_url, '--os-compute-api-version', '2.53',
                                      'compute', 'service', 'set', '--down', host,
                                      'nova-compute')
        assert rc == 0, err
        assert listed('2.53') == ('down', True)
        assert listed('2.11') == ('down', True)
        rc, hosts = cluster.cli('host', 'list')
        assert rc == 0
        assert {h['name']: (h['up'], h['forced_down']) for h in hosts}[host] == \
            (False, True)
        rc, _out, err = openstack_cli(api_url, '--os-compute-api-version', '2.11',
                                      'compute', 'service', 'set', '--up', host,
                                      'nova-compute')
        assert rc == 0, err
        assert listed('2.53') == ('up', False)
    finally:
        cluster.cli('host', 'force-down', '--undo', host)


def _v1(api_url, method, path, body=None):
    """(status, JSON body) of a /v1 request (auth_strategy none)."""
    url = api_url[:-len('/v2.1')] + '/v1' + path
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_task_api_moves_a_guest(cluster, api_url):
    name = 'v1-%s' % uuid.uuid4().hex[:6]
    guest = cluster.seed(name, 'compute1', data='moved by /v1')
    status, body = _v1(api_url, 'POST', '/moves', {
        'server': guest['uuid'], 'mode': 'cold'})
    assert status == 400 and "mode 'cold'" in body['badRequest']['message']
    status, body = _v1(api_url, 'POST', '/moves', {
        'server': guest['uuid'], 'mode': 'auto', 'importance': 'high'})
    assert status == 202, body
    task_id = body['task']['id']
    deadline = time.monotonic() + 120
    while True:
        status, body = _v1(api_url, 'GET', '/tasks/%s' % task_id)
        assert status == 200, body
        task = body['task']
        if task['state'] in ('completed', 'failed', 'cancelled', 'error') or \
                time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (task['state'], task['kind'], task['source']) == (
        'completed', 'live', 'compute1'), task
    destination = task['destination']
    assert destination != 'compute1'
    assert cluster.cloud.find_guest(guest['uuid']) == {destination: 'running'}
    assert cluster.cloud.read_disk(destination, guest['uuid']) == 'moved by /v1'
    steps = {s['name']: s for s in task['steps']}
    for step, host in (('claim-resources', 'conductor'),
                       ('check-destination', destination),
                       ('start-migration', 'compute1'),
                       ('finish-migration', 'conductor')):
        assert (steps[step]['host'], steps[step]['result']) == (host, 'success')
    status, body = _v1(api_url, 'GET', '/servers/%s/tasks' % guest['uuid'])
    assert status == 200 and [t['id'] for t in body['tasks']] == [task_id]


def novaclient_at(api_url, version=None):
    """A novaclient Client as its library users make one without Keystone: a
    noauth session, and the version discovered (the newest both sides know)
    unless ``version`` is given."""
    sess = ks_session.Session(auth=noauth.NoAuth(endpoint=api_url))
    if version is None:
        version = api_versions.discover_version(
            nova_client.Client('2.1', session=sess),
            api_versions.APIVersion('2.latest'))
    return nova_client.Client(version, session=sess)


def _wait_active_off(nova, uuids, host, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        found = {u: nova.servers.get(u) for u in uuids}
        where = {u: (s.status, getattr(s, 'OS-EXT-SRV-ATTR:host'))
                 for u, s in found.items()}
        if all(st == 'ACTIVE' and h != host for st, h in where.values()) or \
                time.monotonic() > deadline:
            return where
        time.sleep(0.5)


def test_novaclient_host_evacuate_live(cluster, api_url):
    """novaclient's host-evacuate-live, as its shell does it: the hypervisors
    matching the host with their servers (2.53+), then one live migration per
    server, no destination, block_migration auto."""
    host = 'compute1'
    tag = uuid.uuid4().hex[:6]
    seeded = cluster.seed_many(['evac-%s-%d' % (tag, i) for i in range(2)], host)
    seeded += [cluster.seed('evac-%s-vol' % tag, host, storage='volume')]
    nova = novaclient_at(api_url)
    assert nova.api_version == api_versions.APIVersion('2.88')

    hypervisors = nova.hypervisors.search(host, servers=True)
    assert [h.hypervisor_hostname for h in hypervisors] == [host]
    on_host = [s['uuid'] for h in hypervisors for s in getattr(h, 'servers', [])]
    assert {g['uuid'] for g in seeded} <= set(on_host)
    for server in on_host:
        nova.servers.live_migrate(server, None, 'auto')

    where = _wait_active_off(nova, on_host, host)
    assert all(st == 'ACTIVE' and h != host for st, h in where.values()), where
    for guest in seeded:
        assert cluster.cloud.find_guest(guest['uuid']) == {
            where[guest['uuid']][1]: 'running'}
    (after,) = nova.hypervisors.search(host, servers=True)
    assert not getattr(after, 'servers', [])
    migs = nova.migrations.list(host=host, migration_type='live-migration')
    done = {m.instance_uuid for m in migs if m.status == 'completed'}
    assert set(on_host) <= done


def test_refused_destination_400_at_2_30_error_event_from_2_34(cluster, api_url):
    name = 'refused-%s' % uuid.uuid4().hex[:6]
    guest = cluster.seed(name, 'compute2')

    # Below 2.34 the conductor's pre-check is the answer: 400, naming why.
    with pytest.raises(nova_exc.BadRequest) as err:
        novaclient_at(api_url, '2.30').servers.live_migrate(
            guest['uuid'], 'compute2', 'auto')
    assert err.value.http_status == 400
    assert "is the instance's current host" in str(err.value)

    # From 2.34 the request is accepted; the refusal shows in the server's
    # events (what `openstack server event show` prints), and nothing moved.
    nova = novaclient_at(api_url, '2.34')
    # (An error would raise; novaclient keeps the response's request id.)
    (request_id,) = nova.servers.live_migrate(guest['uuid'], 'compute2',
                                              'auto').request_ids
    deadline = time.monotonic() + 60
    while True:
        rc, actions, err = openstack_cli(api_url, 'server', 'event', 'list', name,
                                         '-f', 'json')
        assert rc == 0, err
        if actions or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [(a['Action'], a['Request ID']) for a in actions] == [
        ('live-migration', request_id)]
    rc, shown, err = openstack_cli(api_url, 'server', 'event', 'show', name,
                                   request_id, '-f', 'json')
    assert rc == 0, err
    assert shown['message'] == 'Error'
    (event,) = shown['events']
    assert (event['event'], event['result'], event['host']) == (
        'check-request', 'Error', 'conductor')
    assert "is the instance's current host" in event['details']
    assert cluster.cloud.find_guest(guest['uuid']) == {'compute2': 'running'}
    rc, migs, err = openstack_cli(api_url, 'server', 'migration', 'list', '--server',
                                  name, '-f', 'json')
    assert (rc, migs) == (0, []), err
