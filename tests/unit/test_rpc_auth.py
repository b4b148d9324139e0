"""Signed RPC messages (ferryman.common.rpc_auth): what is refused, and that a refused
message changes nothing."""

import os
import subprocess
import sys
import time
import uuid

import oslo_messaging as messaging
from oslo_messaging.rpc import dispatcher as rpc_dispatcher
import pytest

from compute_agent import service as agent_service
from conductor import service as conductor_service
from ferryman.common import conf as ferryman_conf
from ferryman.common import exception
from ferryman.common import rpc
from ferryman.common import rpc_auth
from ferryman.common import schemas

BIN = os.path.dirname(sys.executable)
SECRET = b'0123456789abcdef' * 4
ARGS = {'host': 'h1', 'info': {'vcpus': 4, 'ratio': 1.5},
        'guests': [{'uuid': 'u1', 'name': 'g'}]}


class Clock(object):
    def __init__(self, now=1000000.0):
        self.now = now

    def __call__(self):
        return self.now


def _pair(sender_keys=None, window=60):
    clock = Clock()
    conductor = rpc_auth.Auth(rpc_auth.ConductorKeys(SECRET), window=window,
                              clock=clock)
    agent = rpc_auth.Auth(sender_keys or rpc_auth.AgentKeys(
        'h1', rpc_auth.derive_key(SECRET, 'h1')), window=window, clock=clock)
    return agent, conductor, clock


def _refusal(auth, *args):
    with pytest.raises(exception.NotAuthenticated) as err:
        auth.check(*args)
    return err.value.kwargs['reason']


# The scheme. ----------------------------------------------------------------------
def test_host_keys_are_derived_from_the_secret_one_per_host():
    k1, k2 = rpc_auth.derive_key(SECRET, 'h1'), rpc_auth.derive_key(SECRET, 'h2')
    assert k1 != k2 and len(k1) == 32
    assert k1 == rpc_auth.derive_key(SECRET, 'h1')
    assert k1 != rpc_auth.derive_key(SECRET[::-1], 'h1')


def test_a_signed_message_is_accepted_once():
    agent, conductor, _clock = _pair()
    ctxt = agent.context('t', 'report_host', 'h1', ARGS)
    conductor.check('t', 'report_host', 'h1', ARGS, ctxt)
    assert 'replayed' in _refusal(conductor, 't', 'report_host', 'h1', ARGS, ctxt)


def test_the_signature_covers_method_topic_arguments_and_host():
    agent, conductor, _clock = _pair()
    ctxt = agent.context('t', 'report_host', 'h1', ARGS)
    changed = dict(ARGS, info={'vcpus': 400, 'ratio': 1.5})
    assert _refusal(conductor, 't', 'report_host', 'h1', changed, ctxt) == \
        'bad signature'
    assert _refusal(conductor, 't', 'other', 'h1', ARGS, ctxt) == 'bad signature'
    assert _refusal(conductor, 'u', 'report_host', 'h1', ARGS, ctxt) == \
        'bad signature'
    assert 'signed for host' in _refusal(conductor, 't', 'report_host', 'h2',
                                         ARGS, ctxt)
    # Still good as sent: none of the refusals above used up its nonce.
    conductor.check('t', 'report_host', 'h1', ARGS, ctxt)


def test_arguments_are_signed_as_the_receiver_sees_them():
    # A tuple arrives as a list, an int key as a string: same signature.
    agent, conductor, _clock = _pair()
    sent = {'host': 'h1', 'pair': (1, 2.5), 'by_id': {3: 'x'}}
    ctxt = agent.context('t', 'm', 'h1', sent)
    conductor.check('t', 'm', 'h1', {'host': 'h1', 'pair': [1, 2.5],
                                     'by_id': {'3': 'x'}}, ctxt)


def test_unsigned_and_malformed_messages_are_refused():
    _agent, conductor, _clock = _pair()
    assert _refusal(conductor, 't', 'm', 'h1', ARGS, {}) == 'unsigned'
    for proof in ('x', {}, {'host': 'h1', 'ts': 'now', 'nonce': 'n' * 32,
                            'sig': 'f' * 64},
                  {'host': 'h1', 'ts': float('nan'), 'nonce': 'n' * 32,
                   'sig': 'f' * 64},
                  {'host': 'h1', 'ts': 1e6, 'nonce': 'n', 'sig': 'f' * 64}):
        assert _refusal(conductor, 't', 'm', 'h1', ARGS,
                        {rpc_auth.CONTEXT_KEY: proof}) == 'malformed signature'


def test_a_refusal_shows_a_huge_or_odd_host_name_cut_and_escaped():
    _agent, conductor, _clock = _pair()
    host = 'h' * 100000 + '\x1b[2J'
    with pytest.raises(exception.NotAuthenticated) as err:
        conductor.check('t', 'm', host, ARGS, {})
    message = str(err.value)
    assert len(message) < 400 and '(100009 characters)' in message
    assert '\x1b' not in message


def test_a_wrong_key_is_refused():
    other = rpc_auth.AgentKeys('h1', rpc_auth.derive_key(b'x' * 64, 'h1'))
    agent, conductor, _clock = _pair(other)
    ctxt = agent.context('t', 'm', 'h1', ARGS)
    assert _refusal(conductor, 't', 'm', 'h1', ARGS, ctxt) == 'bad signature'


def test_one_agent_cannot_speak_for_another_host():
    agent, conductor, _clock = _pair()
    with pytest.raises(exception.NotAuthenticated):
        agent.context('t', 'report_host', 'h2', dict(ARGS, host='h2'))
    # Its own key, passed off as h2's:
    thief = rpc_auth.Auth(rpc_auth.AgentKeys('h2', rpc_auth.derive_key(SECRET,
                                                                       'h1')))
    ctxt = thief.context('t', 'report_host', 'h2', dict(ARGS, host='h2'))
    assert _refusal(conductor, 't', 'report_host', 'h2', dict(ARGS, host='h2'),
                    ctxt) == 'bad signature'
    # And an agent checks calls with its own key only.
    with_h2 = rpc_auth.Auth(rpc_auth.ConductorKeys(SECRET)).context(
        't', 'm', 'h2', ARGS)
    assert 'no key' in _refusal(agent, 't', 'm', 'h2', ARGS, with_h2)


def test_stale_and_future_timestamps_are_refused():
    agent, conductor, clock = _pair(window=60)
    old = agent.context('t', 'm', 'h1', ARGS)
    clock.now += 61
    assert 'timestamp' in _refusal(conductor, 't', 'm', 'h1', ARGS, old)
    early = agent.context('t', 'm', 'h1', ARGS)
    clock.now -= 122
    assert 'timestamp' in _refusal(conductor, 't', 'm', 'h1', ARGS, early)


def test_nonces_are_forgotten_once_their_window_has_passed():
    agent, conductor, clock = _pair(window=60)
    for _ in range(50):
        conductor.check('t', 'm', 'h1', ARGS, agent.context('t', 'm', 'h1', ARGS))
    assert len(conductor._seen) == 50
    clock.now += 61
    conductor.check('t', 'm', 'h1', ARGS, agent.context('t', 'm', 'h1', ARGS))
    assert len(conductor._seen) == 1


def test_insecure_mode_accepts_unsigned_but_not_wrongly_signed():
    clock = Clock()
    conductor = rpc_auth.Auth(rpc_auth.ConductorKeys(SECRET), allow_unsigned=True,
                              clock=clock)
    conductor.check('t', 'm', 'h1', ARGS, {})
    forged = rpc_auth.Auth(rpc_auth.ConductorKeys(b'y' * 64), clock=clock).context(
        't', 'm', 'h1', ARGS)
    assert _refusal(conductor, 't', 'm', 'h1', ARGS, forged) == 'bad signature'


# Key files. -----------------------------------------------------------------------
def _conf(**overrides):
    return ferryman_conf.make_conf(config_files=[], overrides=dict(
        {'transport_url': rpc.IN_PROCESS_URL}, **overrides))


def test_key_files_open_to_others_are_refused_naming_path_and_mode(tmp_path):
    secret = rpc_auth.write_private(str(tmp_path / 'secret'), rpc_auth.new_secret())
    assert os.stat(secret).st_mode & 0o777 == 0o600
    rpc_auth.conductor_auth(_conf(**{'auth.secret_file': secret}))
    for mode in (0o644, 0o640, 0o604, 0o620):
        os.chmod(secret, mode)
        with pytest.raises(exception.InvalidArgument) as err:
            rpc_auth.conductor_auth(_conf(**{'auth.secret_file': secret}))
        assert secret in str(err.value) and '%04o' % mode in str(err.value)
    os.chmod(secret, 0o600)
    key = rpc_auth.write_agent_key(secret, 'h1', str(tmp_path / 'h1.key'))
    rpc_auth.agent_auth(_conf(**{'auth.key_file': key}), 'h1')
    os.chmod(key, 0o644)
    with pytest.raises(exception.InvalidArgument, match='0644'):
        rpc_auth.agent_auth(_conf(**{'auth.key_file': key}), 'h1')


def test_missing_short_and_garbled_key_files_are_refused(tmp_path):
    missing = str(tmp_path / 'nope')
    with pytest.raises(exception.InvalidArgument, match='nope.*no such file'):
        rpc_auth.conductor_auth(_conf(**{'auth.secret_file': missing}))
    short = rpc_auth.write_private(str(tmp_path / 'short'), b'abc')
    with pytest.raises(exception.InvalidArgument, match='at least 32'):
        rpc_auth.conductor_auth(_conf(**{'auth.secret_file': short}))
    with pytest.raises(exception.InvalidArgument, match='hex digits'):
        rpc_auth.agent_auth(_conf(**{'auth.key_file': short}), 'h1')


def test_without_key_files_only_the_insecure_option_lets_a_service_start(tmp_path):
    with pytest.raises(exception.InvalidArgument, match=r'\[auth\] secret_file'):
        rpc_auth.conductor_auth(_conf())
    with pytest.raises(exception.InvalidArgument, match=r'\[auth\] key_file'):
        rpc_auth.agent_auth(_conf(), 'h1')
    insecure = _conf(**{'auth.insecure_allow_unsigned': True})
    assert rpc_auth.conductor_auth(insecure).context('t', 'm', 'h1', {}) == {}
    assert rpc_auth.agent_auth(insecure, 'h1').allow_unsigned


def test_services_refuse_to_start_without_their_key_and_create_nothing(tmp_path):
    conf = _conf(state_path=str(tmp_path))
    with pytest.raises(exception.InvalidArgument, match='secret_file'):
        conductor_service.ConductorService(conf)
    with pytest.raises(exception.InvalidArgument, match='key_file'):
        agent_service.ComputeService(_conf(state_path=str(tmp_path), host='h1'))
    assert list(tmp_path.iterdir()) == []  # no database, no simulated host


def test_the_conductor_command_says_which_file_is_open_to_others(tmp_path):
    secret = rpc_auth.write_private(str(tmp_path / 'secret'), rpc_auth.new_secret())
    os.chmod(secret, 0o644)
    conf = tmp_path / 'c.conf'
    conf.write_text('[DEFAULT]\ntransport_url = %s\nstate_path = %s\n'
                    '[auth]\nsecret_file = %s\n' % (rpc.IN_PROCESS_URL,
                                                    tmp_path, secret))
    res = subprocess.run([os.path.join(BIN, 'ferryman-conductor'), '--config-file', str(conf)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert secret in res.stderr and '0644' in res.stderr
    assert 'Traceback' not in res.stderr


def test_the_cli_derives_an_agent_key_file_from_the_secret(tmp_path):
    secret, key = str(tmp_path / 'secret'), str(tmp_path / 'h1.key')
    for argv in (['auth', 'new-secret', '--output', secret],
                 ['auth', 'agent-key', 'h1', '--secret-file', secret,
                  '--output', key]):
        res = subprocess.run([os.path.join(BIN, 'ferryman')] + argv, capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, res.stderr
    for path in (secret, key):
        assert os.stat(path).st_mode & 0o777 == 0o600
    assert rpc_auth.load_agent_key(key) == rpc_auth.derive_key(
        rpc_auth.load_secret(secret), 'h1')
    again = subprocess.run([os.path.join(BIN, 'ferryman'), 'auth', 'new-secret',
                            '--output', secret],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and 'invalidates every agent key' in again.stderr


# Over the wire: the shared in-process cloud, forged by a bare client. ---------------
@pytest.fixture
def bare(cloud):
    """A bare oslo.messaging client's transport (no Ferryman client code)."""
    conf = _conf(**{'auth.insecure_allow_unsigned': True,
                    'oslo_messaging_rabbit.heartbeat_timeout_threshold': 0,
                    # The shared cloud's own in-process broker.
                    'transport_url': cloud.overrides['transport_url']})
    yield rpc.get_transport(conf)
    rpc.cleanup(conf)


def _key_of(cloud, host):
    secret = rpc_auth.load_secret(cloud.conductor_conf.auth.secret_file)
    return rpc_auth.derive_key(secret, host)


def _wait_refused(caplog, method, host, count=1, timeout=10):
    text = 'Refused RPC %s for host %r' % (method, host)
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in caplog.records if text in r.getMessage()]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, 'no refusal logged: %s' % text
        time.sleep(0.02)


def _report_state(cloud, host):
    return sorted((i['uuid'], i['name'], i['power_state'], i['memory_mb'])
                  for i in cloud.db.instances.list(host=host))


def test_forged_reports_are_refused_logged_and_change_nothing(
        cloud, bare, guest, caplog):
    g = guest('compute1')
    before = _report_state(cloud, 'compute1')
    hosts_before = sorted(h['name'] for h in cloud.db.hosts.list())
    agent = cloud.agents['compute1'].manager
    forged_guests = [dict(x, name='forged', memory_mb=1) if x['uuid'] == g['uuid']
                     else x for x in agent.driver.list_guests()]
    forged_guests.append(dict(forged_guests[0], uuid=str(uuid.uuid4()),
                              name='phantom'))
    args = {'host': 'compute1', 'info': agent.host_info(), 'guests': forged_guests}
    client = messaging.get_rpc_client(bare, messaging.Target(
        topic=rpc.CONDUCTOR_TOPIC, version='1.3'))
    topic = rpc.CONDUCTOR_TOPIC
    k2 = _key_of(cloud, 'compute2')
    attempts = [
        ('unsigned', {}),
        ('wrong secret', rpc_auth.Auth(rpc_auth.ConductorKeys(b'z' * 64)).context(
            topic, 'report_host', 'compute1', args)),
        ('compute2 for compute1', rpc_auth.Auth(rpc_auth.AgentKeys(
            'compute2', k2)).context(topic, 'report_host', 'compute2', args)),
        ('compute2 key as compute1', rpc_auth.Auth(rpc_auth.AgentKeys(
            'compute1', k2)).context(topic, 'report_host', 'compute1', args)),
    ]
    caplog.set_level('ERROR', logger='ferryman.common.rpc_auth')
    for n, (_what, ctxt) in enumerate(attempts, 1):
        client.cast(ctxt, 'report_host', **args)
        _wait_refused(caplog, 'report_host', 'compute1', count=n)
    # A phantom host, in its own name but without its key:
    client.cast({}, 'report_host', **dict(args, host='phantom-host'))
    _wait_refused(caplog, 'report_host', 'phantom-host')
    assert _report_state(cloud, 'compute1') == before
    assert sorted(h['name'] for h in cloud.db.hosts.list()) == hosts_before


def test_a_replayed_report_is_refused(cloud, bare, guest, caplog):
    guest('compute1')
    agent = cloud.agents['compute1'].manager
    args = {'host': 'compute1', 'info': agent.host_info(),
            'guests': agent.driver.list_guests()}
    ctxt = rpc_auth.Auth(rpc_auth.AgentKeys(
        'compute1', _key_of(cloud, 'compute1'))).context(
            rpc.CONDUCTOR_TOPIC, 'report_host', 'compute1', args)
    client = messaging.get_rpc_client(bare, messaging.Target(
        topic=rpc.CONDUCTOR_TOPIC, version='1.3'))
    caplog.set_level('ERROR', logger='ferryman.common.rpc_auth')
    client.cast(ctxt, 'report_host', **args)
    client.cast(ctxt, 'report_host', **args)
    refused = _wait_refused(caplog, 'report_host', 'compute1')
    assert 'replayed' in refused[0].getMessage()
    time.sleep(0.2)  # the first was taken, the second alone refused
    assert len(_wait_refused(caplog, 'report_host', 'compute1')) == 1


def test_agents_act_only_on_calls_signed_with_their_host_key(cloud, bare, caplog):
    new = {'uuid': str(uuid.uuid4()), 'disks': [{'name': 'root', 'size_gb': 1,
                                                 'format': 'qcow2'}]}
    client = messaging.get_rpc_client(bare, messaging.Target(
        topic=rpc.COMPUTE_TOPIC, version='1.0', server='compute1'), timeout=10)
    topic = rpc.COMPUTE_TOPIC
    conductor_keys = rpc_auth.ConductorKeys(rpc_auth.load_secret(
        cloud.conductor_conf.auth.secret_file))
    args = {'guest': new}
    attempts = [
        {},
        rpc_auth.Auth(rpc_auth.ConductorKeys(b'z' * 64)).context(
            topic, 'create_local_disks', 'compute1', args),
        # The conductor's signature, but for compute2:
        rpc_auth.Auth(conductor_keys).context(topic, 'create_local_disks',
                                              'compute2', args),
        # compute2's agent passing its key off as compute1's:
        rpc_auth.Auth(rpc_auth.AgentKeys('compute1', _key_of(
            cloud, 'compute2'))).context(topic, 'create_local_disks', 'compute1',
                                         args),
    ]
    caplog.set_level('ERROR', logger='ferryman.common.rpc_auth')
    for ctxt in attempts:
        with pytest.raises(exception.NotAuthenticated):
            client.call(ctxt, 'create_local_disks', **args)
    assert len(_wait_refused(caplog, 'create_local_disks', 'compute1')) == 4
    assert cloud.cloud.leftovers('compute1', new['uuid']) == []
    # Signed by the conductor for compute1: done, once; a replay is refused.
    ctxt = rpc_auth.Auth(conductor_keys).context(topic, 'create_local_disks',
                                                 'compute1', args)
    client.call(ctxt, 'create_local_disks', **args)
    try:
        assert cloud.cloud.leftovers('compute1', new['uuid']) == ['instance-dir']
        with pytest.raises(exception.NotAuthenticated, match='replayed'):
            client.call(ctxt, 'create_local_disks', **args)
    finally:
        cloud.conductor.manager.compute.delete_local_disks('compute1', new)
    assert cloud.cloud.leftovers('compute1', new['uuid']) == []


# The dispatcher: what reaches an endpoint at all. ---------------------------------
class _Endpoint(object):
    """An endpoint as the managers are: RPC methods beside helpers and state."""
    target = messaging.Target(version='1.3')

    def __init__(self, conf):
        self.conf = conf
        self.stopped = False
        self.done = []

    @property
    def busy(self):
        self.done.append('busy read')
        return False

    def stop(self, *args, **kwargs):
        self.stopped = True

    def start_migration(self, *args, **kwargs):
        self.done.append(('start_migration', args, kwargs))

    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def list_hosts(self, ctxt):
        return ['h1']

    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def get_drain(self, ctxt, drain):
        raise exception.DrainNotFound(drain=drain)

    @schemas.checked(schemas.CONDUCTOR_SERVICE)
    def list_drains(self, ctxt, host=None):
        raise exception.FerrymanError('a fault of ours')


class _Incoming(object):
    def __init__(self, message, ctxt=None):
        self.message = message
        self.ctxt = ctxt or {}
        self.client_timeout = None


@pytest.fixture
def endpoint(tmp_path):
    path = tmp_path / 'endpoint.conf'
    path.write_text('[DEFAULT]\nhost = from-the-file\n')
    conf = ferryman_conf.make_conf(config_files=[str(path)])
    return _Endpoint(conf)


def _dispatch(endpoint, **message):
    dispatcher = rpc_auth.AuthDispatcher(
        [endpoint], rpc_auth.Auth(None, allow_unsigned=True), 'topic',
        lambda method, args: rpc_auth.OPERATOR)
    return dispatcher.dispatch(_Incoming(dict({'args': {}}, **message)))


def _refused(endpoint, **message):
    """The error a caller of ``message`` gets; the log shows no traceback."""
    with pytest.raises(rpc_dispatcher.ExpectedException) as err:
        _dispatch(endpoint, **message)
    return err.value.exc_info[1]


@pytest.mark.parametrize('method', ['conf', 'stop', 'start_migration', 'busy',
                                    'target', '_Endpoint__x', '__init__',
                                    '__class__', 'no_such', '', 7, None, ['x']])
def test_only_checked_methods_can_be_called(endpoint, method):
    error = _refused(endpoint, method=method, args={})
    assert isinstance(error, exception.InvalidArgument), error
    assert 'method' in str(error) and repr(method) in str(error), error
    # Nothing ran: calling conf(ctxt) would reload the configuration without
    # its files (any file a caller names, with default_config_files).
    assert endpoint.conf.host == 'from-the-file'
    assert not endpoint.stopped and endpoint.done == []
    assert _dispatch(endpoint, method='list_hosts') == ['h1']


@pytest.mark.parametrize('field, message', [
    ('version', {'version': '2.0'}), ('version', {'version': '1.4'}),
    ('version', {'version': '1.3.1'}), ('version', {'version': 'abc'}),
    ('version', {'version': '1'}), ('version', {'version': 7}),
    ('namespace', {'namespace': 'evil'}), ('arguments', {'args': ['x']}),
    ('arguments', {'args': None})])
def test_a_bad_envelope_is_refused_naming_the_value(endpoint, field, message):
    error = _refused(endpoint, method='list_hosts', **message)
    assert isinstance(error, exception.InvalidArgument), error
    value = next(iter(message.values()))
    assert str(error).startswith('Invalid value %r for %s' % (value, field)), error
    assert _dispatch(endpoint, method='list_hosts', version='1.2') == ['h1']


def test_a_callers_fault_is_expected_and_ours_is_not(endpoint):
    error = _refused(endpoint, method='get_drain', args={'drain': 'd1'})
    assert isinstance(error, exception.DrainNotFound)
    error = _refused(endpoint, method='get_drain', args={'drain': 'd1', 'ctxt': 1})
    assert isinstance(error, exception.InvalidArgument) and 'ctxt' in str(error)
    with pytest.raises(exception.FerrymanError, match='a fault of ours'):
        _dispatch(endpoint, method='list_drains')


def test_the_managers_expose_their_schemas_methods_and_nothing_else():
    from compute_agent import manager as agent_manager
    from conductor import manager as conductor_manager

    def exposed(cls):
        return {n for n, v in vars(cls).items() if getattr(v, 'exposed', False)}
    assert exposed(conductor_manager.ConductorManager) == set(schemas.CONDUCTOR)
    assert exposed(agent_manager.ComputeManager) == set(schemas.AGENT)


def test_a_proof_for_a_host_no_key_can_be_made_for_is_refused():
    _agent, conductor, clock = _pair()
    host = 'h\ud800'
    proof = {rpc_auth.CONTEXT_KEY: {'host': host, 'ts': clock(), 'nonce': 'n' * 32,
                                    'sig': '0' * 64}}
    assert _refusal(conductor, 'topic', 'report_host', host, ARGS, proof) == \
        'no key for this host'


# Operators' calls: signed with an operator key, derived from the secret. ---------
def _operator_state(cloud):
    return (sorted((h['name'], h['enabled'], h['forced_down'])
                   for h in cloud.db.hosts.list()),
            sorted(d['id'] for d in cloud.db.drains.list()))


def test_operators_calls_are_refused_unless_signed_with_an_operator_key(
        cloud, bare, caplog):
    topic = rpc.CONDUCTOR_TOPIC
    args = {'host': 'compute2', 'enabled': False, 'reason': 'forged'}
    client = messaging.get_rpc_client(bare, messaging.Target(
        topic=topic, version='1.3'), timeout=10)
    secret = rpc_auth.load_secret(cloud.conductor_conf.auth.secret_file)
    cloud.refresh()  # every host known: a report landing later is no change
    before = _operator_state(cloud)
    attempts = [
        ('unsigned', {}),
        # An agent's own key is no operator's:
        ('signed for host', rpc_auth.Auth(rpc_auth.AgentKeys(
            'compute1', _key_of(cloud, 'compute1'))).context(
                topic, 'set_host_enabled', 'compute1', args)),
        ('bad signature', rpc_auth.Auth(rpc_auth.ConductorKeys(b'z' * 64)).context(
            topic, 'set_host_enabled', 'operator:alice', args)),
        # An operator's key passed off as another operator's:
        ('bad signature', rpc_auth.Auth(rpc_auth.AgentKeys(
            'operator:bob', rpc_auth.derive_key(secret, 'operator:alice'))).context(
                topic, 'set_host_enabled', 'operator:bob', args)),
    ]
    caplog.set_level('ERROR', logger='ferryman.common.rpc_auth')
    for why, ctxt in attempts:
        with pytest.raises(exception.NotAuthenticated, match=why):
            client.call(ctxt, 'set_host_enabled', **args)
        with pytest.raises(exception.NotAuthenticated, match=why):
            client.call(ctxt, 'drain_host', host='compute1')
    assert _operator_state(cloud) == before
    ctxt = rpc_auth.Auth(rpc_auth.AgentKeys(
        'operator:alice', rpc_auth.derive_key(secret, 'operator:alice'))).context(
            topic, 'set_host_enabled', 'operator:alice', args)
    client.call(ctxt, 'set_host_enabled', **args)
    try:
        assert cloud.db.hosts.get('compute2')['enabled'] is False
        with pytest.raises(exception.NotAuthenticated, match='replayed'):
            client.call(ctxt, 'set_host_enabled', **args)
    finally:
        cloud.api.set_host_enabled('compute2', True)


def test_the_cli_derives_an_operator_key_its_calls_are_signed_with(tmp_path):
    secret = str(tmp_path / 'secret')
    rpc_auth.write_private(secret, SECRET)
    key = str(tmp_path / 'alice.key')
    res = subprocess.run([os.path.join(BIN, 'ferryman'), 'auth', 'operator-key',
                          'alice', '--secret-file', secret, '--output', key],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert os.stat(key).st_mode & 0o777 == 0o600
    conf = _conf(**{'auth.operator_key_file': key})
    auth, principal = rpc_auth.operator_signer(conf)
    assert principal == 'operator:alice'
    ctxt = auth.context('t', 'drain_host', principal, {'host': 'h1'})
    conductor = rpc_auth.Auth(rpc_auth.ConductorKeys(SECRET))
    conductor.check('t', 'drain_host', 'operator:alice', {'host': 'h1'}, ctxt)
    bad = subprocess.run([os.path.join(BIN, 'ferryman'), 'auth', 'operator-key',
                          'al:ice', '--secret-file', secret, '--output',
                          str(tmp_path / 'x.key')],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "'al:ice'" in bad.stderr
    assert not os.path.exists(tmp_path / 'x.key')
