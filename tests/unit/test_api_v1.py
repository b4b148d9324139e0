"""ferryman-api's task API (/v1) against the simulated cloud, through the WSGI
application: every answer is checked against the OpenAPI document's schema for
its path, method and status, and the document against the route table."""

import re
import time
import uuid

import jsonschema
import openapi_schema_validator
import openapi_spec_validator
import pytest

from api import routes
from api import service as api_service
from api.handlers import openapi
from conductor import drain as conductor_drain
from ferryman.common import vocabulary
from ferryman.sim import cloud as sim
from tests.unit.test_api import _api_conf
from tests.unit.test_api import call

DOC = openapi.load()
METHODS = ('get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace')
# Steps of a live migration of a guest with local disks, compute1 to compute2,
# and where each runs.
STEPS = {'claim-resources': 'conductor', 'check-destination': 'compute2',
         'check-source': 'compute1', 'start-migration': 'compute1',
         'monitor-migration': 'conductor',
         'post-migration-source': 'compute1',
         'post-migration-destination': 'compute2',
         'finish-migration': 'conductor'}


@pytest.fixture(scope='module')
def cloud():
    """The module's own cloud (see tests/unit/test_api.py)."""
    with sim.SimCloud() as c:
        yield c


@pytest.fixture(scope='module')
def api(cloud):
    service = api_service.APIService(_api_conf(cloud))
    yield service
    service.app.stop()


def _template(path):
    """The document's path template matching a concrete /v1 path."""
    rest = path.split('?')[0][len('/v1'):]
    for template in DOC['paths']:
        pattern = re.sub(r'\\\{\w+\\\}', '[^/]+', re.escape(template))
        if re.fullmatch(pattern, rest):
            return template
    return None


def _schema(template, method, status):
    responses = DOC['paths'][template][method.lower()]['responses']
    assert str(status) in responses, (template, method, status)
    response = responses[str(status)]
    if '$ref' in response:
        response = DOC['components']['responses'][response['$ref'].split('/')[-1]]
    return response['content']['application/json']['schema']


def conforms(template, method, status, body):
    """Raises unless ``body`` fits the document's response schema."""
    schema = dict(_schema(template, method, status), components=DOC['components'])
    openapi_schema_validator.OAS31Validator(
        schema, format_checker=openapi_schema_validator.oas31_format_checker
    ).validate(body)


def v1(api, method, path, body=None, token='admin:admin', raw=None):
    """(status, body) of a /v1 request, its answer checked against the
    document."""
    status, found, headers = call(api.app, method, path, body=body, token=token,
                                  raw=raw)
    template = _template(path)
    if template is not None and method.lower() in DOC['paths'][template]:
        conforms(template, method, status, found)
    assert 'OpenStack-API-Version' not in headers
    return status, found


def message(body):
    (fault,) = body.values()
    return fault['message']


def wait_task(api, task_id, until, timeout=60):
    """Polls GET /v1/tasks/{id} (each answer checked) until ``until(task)``."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = v1(api, 'GET', '/v1/tasks/%s' % task_id)
        assert status == 200, body
        if until(body['task']) or time.monotonic() > deadline:
            return body['task']
        time.sleep(0.05)


def ended(task):
    return task['state'] in vocabulary.TERMINAL


def test_document_describes_exactly_the_routes():
    described = {(path, method.upper()) for path, item in DOC['paths'].items()
                 for method in item if method in METHODS}
    routed = {(template, method) for template, methods in routes.V1_ROUTES
              for method in methods}
    assert described == routed
    assert DOC['servers'] == [{'url': '/v1'}]


def test_document_is_valid_openapi():
    openapi_spec_validator.validate(DOC)
    assert DOC['openapi'].startswith('3.1.')


def test_answers_are_checked_against_the_document():
    """The check every test's answers pass refuses what the document does not
    allow."""
    task = {'id': 'x', 'kind': 'live', 'subtype': 'block', 'state': 'running',
            'server': 's', 'source': 'a', 'destination': None,
            'importance': 'low', 'created_at': '2026-12-02T09:39:10.347723Z',
            'updated_at': '2026-12-02T09:39:10Z', 'error': None, 'links': []}
    conforms('/servers/{server_id}/tasks', 'GET', 200, {'tasks': [task]})
    for bad in (dict(task, extra=1), dict(task, state='waiting'),
                dict(task, created_at='yesterday'),
                {k: v for k, v in task.items() if k != 'kind'}):
        with pytest.raises(jsonschema.ValidationError):
            conforms('/servers/{server_id}/tasks', 'GET', 200, {'tasks': [bad]})
    with pytest.raises(jsonschema.ValidationError):
        conforms('/tasks/{task_id}', 'GET', 200, {'task': task})  # no steps
    with pytest.raises(jsonschema.ValidationError):
        conforms('/tasks/{task_id}', 'GET', 404,
                 {'error': {'code': 404, 'message': 'x'}})


def test_document_names_every_state():
    schemas = DOC['components']['schemas']
    assert set(schemas['State']['enum']) == set(vocabulary.ACTIVE + vocabulary.TERMINAL)
    assert set(schemas['TaskFields']['properties']['subtype']['enum']) == \
        set(vocabulary.SUBTYPES + (vocabulary.EVACUATION,))
    assert set(schemas['DrainServer']['properties']['state']['enum']) == \
        set(conductor_drain.GUEST_STATES)
    assert schemas['MoveRequest']['properties']['importance']['enum'] == \
        list(vocabulary.IMPORTANCE)


def test_document_is_served_without_credentials(api):
    status, body = v1(api, 'GET', '/v1/openapi.json', token=None)
    assert (status, body) == (200, DOC)


def test_a_move_followed_to_completion(cloud, guest, api):
    g = guest('compute1')
    status, body = v1(api, 'POST', '/v1/moves', {
        'server': g['uuid'], 'host': 'compute2', 'mode': 'auto',
        'importance': 'high'})
    assert status == 202, body
    task = body['task']
    assert (task['kind'], task['server'], task['source'], task['destination'],
            task['importance'], task['subtype']) == (
        'live', g['uuid'], 'compute1', 'compute2', 'high', 'block')
    assert task['links'][0]['href'].endswith('/v1/tasks/%s' % task['id'])
    task = wait_task(api, task['id'], ended)
    assert task['state'] == 'completed', task
    steps = {s['name']: s for s in task['steps']}
    for name, host in STEPS.items():
        step = steps[name]
        assert (step['host'], step['phase'], step['result']) == (
            host, 'execute', 'success'), step
        assert step['started_at'] <= step['finished_at']
    assert {s['result'] for s in task['steps']} == {'success'}
    started = [s['started_at'] for s in task['steps']]
    assert started == sorted(started)
    assert task['progress']['memory_total_bytes'] > 0
    assert task['switchover_at'] is not None
    assert cloud.cloud.find_guest(g['uuid']) == {'compute2': 'running'}

    # A second move: the server's tasks come newest first.
    status, body = v1(api, 'POST', '/v1/moves', {'server': g['uuid']})
    assert status == 202, body
    second = wait_task(api, body['task']['id'], ended)
    assert (second['state'], second['source'], second['importance']) == (
        'completed', 'compute2', 'medium')
    status, body = v1(api, 'GET', '/v1/servers/%s/tasks' % g['uuid'])
    assert status == 200
    assert [t['id'] for t in body['tasks']] == [second['id'], task['id']]
    assert 'steps' not in body['tasks'][0]


def test_mode_live_is_a_live_move(cloud, guest, api):
    g = guest('compute2', storage='volume')
    status, body = v1(api, 'POST', '/v1/moves', {'server': g['uuid'],
                                                 'host': 'compute3',
                                                 'mode': 'live'})
    assert status == 202, body
    task = wait_task(api, body['task']['id'], ended)
    assert (task['state'], task['subtype']) == ('completed', 'block-storage')


@pytest.mark.parametrize('extra, words', [
    ({'mode': 'cold'}, "mode 'cold' is not offered yet"),
    ({'size': {'vcpus': 4}}, 'size vcpus=4 is not offered yet'),
    ({'mode': 'auto', 'size': {'memory_mb': 2048, 'disk_gb': 20}},
     'size disk_gb=20, memory_mb=2048 is not offered yet'),
])
def test_cold_moves_and_sizes_are_not_offered(cloud, guest, api, extra, words):
    g = guest('compute1')
    status, body = v1(api, 'POST', '/v1/moves', dict({'server': g['uuid']},
                                                     **extra))
    assert status == 400 and words in message(body), body
    assert cloud.db.migrations.list(instance=g['uuid']) == []


@pytest.mark.parametrize('raw, words', [
    (b'{"server": ', 'not JSON'),
    (b'[]', 'body'),
    (b'{}', 'server'),
    (b'{"server": 5}', 'server'),
    (b'{"server": "%(uuid)s", "speed": 1}', 'speed'),
    (b'{"server": "%(uuid)s", "mode": "fast"}', "'fast'"),
    (b'{"server": "%(uuid)s", "importance": "urgent"}', "'urgent'"),
    (b'{"server": "%(uuid)s", "host": "bad host!"}', 'host'),
    (b'{"server": "%(uuid)s", "size": {"vcpus": "4"}}', 'size/vcpus'),
    (b'{"server": "%(uuid)s", "size": {"cores": 4}}', 'size/cores'),
])
def test_bad_move_bodies(cloud, guest, api, raw, words):
    g = guest('compute1')
    status, body = v1(api, 'POST', '/v1/moves',
                      raw=raw.replace(b'%(uuid)s', g['uuid'].encode()))
    assert status == 400 and words in message(body), body
    assert cloud.db.migrations.list(instance=g['uuid']) == []


def test_unknown_things_are_404_naming_them(cloud, guest, api):
    nobody = str(uuid.uuid4())
    for method, path, body in (
            ('POST', '/v1/moves', {'server': nobody}),
            ('GET', '/v1/tasks/%s' % nobody, None),
            ('DELETE', '/v1/tasks/%s' % nobody, None),
            ('POST', '/v1/tasks/%s/complete' % nobody, None),
            ('GET', '/v1/servers/%s/tasks' % nobody, None),
            ('GET', '/v1/drains/%s' % nobody, None)):
        status, found = v1(api, method, path, body)
        assert status == 404 and nobody in message(found), (method, path, found)
    for path in ('/v1/tasks/nosuch', '/v1/drains/nosuch',
                 '/v1/servers/nosuch/tasks'):
        status, found = v1(api, 'GET', path)
        assert status == 404 and 'nosuch' in message(found), found
    status, found = v1(api, 'POST', '/v1/hosts/nosuch/drain')
    assert status == 404 and 'nosuch' in message(found), found
    status, found = v1(api, 'POST', '/v1/hosts/bad%20host!/drain')
    assert status == 404 and 'bad host!' in message(found), found
    g = guest('compute1')
    status, found = v1(api, 'POST', '/v1/moves', {'server': g['uuid'],
                                                  'host': 'nosuch'})
    assert status == 404 and 'nosuch' in message(found), found
    assert cloud.db.migrations.list(instance=g['uuid']) == []
    assert all(h['enabled'] for h in cloud.db.hosts.list())
    status, found, _ = call(api.app, 'GET', '/v1/nosuch')
    assert status == 404 and '/nosuch' in message(found)
    status, found, headers = call(api.app, 'PUT', '/v1/moves')
    assert (status, headers['Allow']) == (405, 'POST')


def test_conductor_refusals_keep_their_codes(cloud, guest, api):
    g = guest('compute1')
    status, body = v1(api, 'POST', '/v1/moves', {'server': g['uuid'],
                                                 'host': 'compute1'})
    assert status == 400 and "'compute1' is the instance's current host" in \
        message(body), body
    assert cloud.db.migrations.list(instance=g['uuid']) == []


def test_cancel_a_running_task(cloud, stuck, api):
    g = stuck()
    status, body = v1(api, 'POST', '/v1/moves', {'server': g['uuid'],
                                                 'host': 'compute2'})
    assert status == 202, body
    task_id = body['task']['id']
    task = wait_task(api, task_id, lambda t: t['state'] == 'running' and
                     t['progress']['memory_total_bytes'] > 0)
    assert task['progress']['memory_processed_bytes'] >= 0
    assert task['progress']['percent'] is not None
    status, body = v1(api, 'DELETE', '/v1/tasks/%s' % task_id)
    assert status == 202, body
    task = wait_task(api, task_id, ended)
    assert task['state'] == 'cancelled'
    assert cloud.cloud.find_guest(g['uuid']) == {'compute1': 'running'}
    for method, path, words in (('DELETE', '/v1/tasks/%s', 'cannot be cancelled'),
                                ('POST', '/v1/tasks/%s/complete',
                                 'cannot be forced to complete')):
        status, body = v1(api, method, path % task_id)
        assert status == 409, body
        assert 'is cancelled' in message(body) and words not in message(body)
    assert v1(api, 'GET', '/v1/tasks/%s' % task_id)[1]['task']['state'] == \
        'cancelled'


def test_force_complete_a_task(cloud, stuck, api):
    g = stuck()
    status, body = v1(api, 'POST', '/v1/moves', {'server': g['uuid'],
                                                 'host': 'compute2'})
    task_id = body['task']['id']
    wait_task(api, task_id, lambda t: t['state'] == 'running' and
              t['progress']['memory_total_bytes'] > 0)
    path = '/v1/tasks/%s/complete' % task_id
    status, body = v1(api, 'POST', path, {'now': True})
    assert status == 400 and 'now' in message(body)
    status, body = v1(api, 'POST', path, raw=b'{')
    assert status == 400 and 'not JSON' in message(body)
    status, body = v1(api, 'POST', path, raw=b'{"x": "%s"}' % (b'y' * 70000))
    assert status == 413 and '65536' in message(body)
    assert not cloud.db.migrations.get(task_id)['force_complete_requested']
    status, body = v1(api, 'POST', path)
    assert status == 202, body
    task = wait_task(api, task_id, ended)
    assert task['state'] == 'completed', task
    assert cloud.cloud.find_guest(g['uuid']) == {'compute2': 'running'}
    # The policy's answer to the request, among its decisions (no post-copy on
    # this host: a pause).
    (pause,) = [d for d in task['decisions'] if d['action'] == 'pause']
    assert (pause['step'], pause['host']) == ('monitor-migration', 'conductor')
    assert 'force-complete requested' in pause['why']
    status, body = v1(api, 'DELETE', '/v1/tasks/%s' % task_id)
    assert status == 409 and 'is completed' in message(body)


def test_drain_a_host(cloud, guest, api):
    g = guest('compute3', storage='volume')
    try:
        status, body = v1(api, 'POST', '/v1/hosts/compute3/drain',
                          {'max_parallel': 0})
        assert status == 400 and 'max_parallel' in message(body)
        status, body = v1(api, 'POST', '/v1/hosts/compute3/drain',
                          {'parallel': 2})
        assert status == 400 and 'parallel' in message(body)
        assert cloud.db.hosts.get('compute3')['enabled'] is True
        status, body = v1(api, 'POST', '/v1/hosts/compute3/drain',
                          {'max_parallel': 1})
        assert status == 202, body
        drain = body['drain']
        assert (drain['host'], drain['max_parallel'], drain['state']) == (
            'compute3', 1, 'running')
        assert g['uuid'] in [s['server'] for s in drain['servers']]
        status, body = v1(api, 'POST', '/v1/hosts/compute3/drain')
        assert status == 409 and drain['id'] in message(body), body
        deadline = time.monotonic() + 60
        while drain['state'] != 'done' and time.monotonic() < deadline:
            time.sleep(0.1)
            status, body = v1(api, 'GET', '/v1/drains/%s' % drain['id'])
            assert status == 200
            drain = body['drain']
        assert drain['state'] == 'done', drain
        (moved,) = [s for s in drain['servers'] if s['server'] == g['uuid']]
        assert moved['state'] == 'moved' and moved['destination'] != 'compute3'
        task = v1(api, 'GET', '/v1/tasks/%s' % moved['task'])[1]['task']
        assert (task['state'], task['importance']) == ('completed', 'high')
    finally:
        cloud.api.set_host_enabled('compute3', True)


def test_admins_only(cloud, guest, api):
    g = guest('compute1')
    for token, code in (('alice:demo', 403), (None, 401)):
        status, body = v1(api, 'POST', '/v1/moves', {'server': g['uuid']},
                          token=token)
        assert status == code, body
        status, body = v1(api, 'GET', '/v1/servers/%s/tasks' % g['uuid'],
                          token=token)
        assert status == code, body
    assert cloud.db.migrations.list(instance=g['uuid']) == []
