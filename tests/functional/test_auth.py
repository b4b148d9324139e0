"""Signed messages and TLS over a real RabbitMQ broker.

Forgeries are sent with a bare oslo.messaging client (no Ferryman client code),
as anyone with access to the broker could.
"""

import os
import time
import uuid

import oslo_messaging as messaging
import pytest

from ferryman.common import conf as ferryman_conf
from ferryman.common import exception
from ferryman.common import rpc
from ferryman.common import rpc_auth
from ferryman.testing.cluster import Cluster

pytestmark = pytest.mark.functional


@pytest.fixture
def bare(cluster):
    conf = ferryman_conf.make_conf(config_files=[cluster.client_conf])
    yield rpc.get_transport(conf)
    rpc.cleanup(conf)


def _log(cluster, name):
    with open(os.path.join(cluster.base_dir, name + '.log'), errors='replace') as f:
        return f.read()


def _wait_refusals(cluster, name, method, host, count, timeout=20):
    text = 'Refused RPC %s for host %r' % (method, host)
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in _log(cluster, name).splitlines() if text in line]
        if len(lines) >= count:
            return lines
        assert time.monotonic() < deadline, '%s: no %r' % (name, text)
        time.sleep(0.1)


def _instances(cluster, host):
    rc, instances = cluster.cli('instance', 'list', '--host', host)
    assert rc == 0, instances
    return sorted((i['uuid'], i['name'], i['power_state'], i['memory_mb'])
                  for i in instances)


def _key(cluster, host):
    return rpc_auth.load_agent_key(os.path.join(cluster.base_dir, 'keys',
                                                host + '.key'))


def _signed_call(cluster, bare, host, method, **args):
    """A call signed as the conductor signs it (its secret): (result, context)."""
    auth = rpc_auth.Auth(rpc_auth.ConductorKeys(rpc_auth.load_secret(
        os.path.join(cluster.base_dir, 'keys', 'secret'))))
    ctxt = auth.context(rpc.COMPUTE_TOPIC, method, host, args)
    client = messaging.get_rpc_client(bare, messaging.Target(
        topic=rpc.COMPUTE_TOPIC, version='1.0', server=host), timeout=20)
    return client.call(ctxt, method, **args), ctxt, client


def test_forged_reports_change_nothing_and_a_replay_is_refused(cluster, bare):
    name = 'auth-%s' % uuid.uuid4().hex[:6]
    guest = cluster.seed(name, 'compute1')
    before = _instances(cluster, 'compute1')
    # The agent's own report, as the conductor would ask for it:
    info, ctxt, agent = _signed_call(cluster, bare, 'compute1', 'get_host_info')
    with pytest.raises(exception.NotAuthenticated, match='replayed'):
        agent.call(ctxt, 'get_host_info')
    guests, _ctxt, _agent = _signed_call(cluster, bare, 'compute1', 'list_guests')
    real = {'host': 'compute1', 'info': info, 'guests': guests}
    forged = dict(real, guests=[dict(g, name='forged', memory_mb=1)
                                for g in guests] + [dict(guests[0], uuid=str(
                                    uuid.uuid4()), name='phantom')])
    topic = rpc.CONDUCTOR_TOPIC
    client = messaging.get_rpc_client(bare, messaging.Target(topic=topic,
                                                             version='1.3'))
    already = len(_wait_refusals(cluster, 'conductor', 'report_host', 'compute1', 0))
    client.cast({}, 'report_host', **forged)
    client.cast(rpc_auth.Auth(rpc_auth.AgentKeys('compute1', _key(
        cluster, 'compute2'))).context(topic, 'report_host', 'compute1', forged),
        'report_host', **forged)
    _wait_refusals(cluster, 'conductor', 'report_host', 'compute1', already + 2)
    # The agent's own report, signed with its key and sent again: once it is
    # taken, twice it is refused as a replay.
    ctxt = rpc_auth.Auth(rpc_auth.AgentKeys('compute1', _key(
        cluster, 'compute1'))).context(topic, 'report_host', 'compute1', real)
    client.cast(ctxt, 'report_host', **real)
    client.cast(ctxt, 'report_host', **real)
    lines = _wait_refusals(cluster, 'conductor', 'report_host', 'compute1',
                           already + 3)
    assert 'replayed' in lines[-1] and 'unsigned' in lines[-3]
    time.sleep(1.0)  # the agent's own reports go on (every 0.5 s)
    assert _instances(cluster, 'compute1') == before
    cluster.cloud.destroy_guest(guest['uuid'])


def test_an_agent_refuses_unsigned_and_other_host_calls(cluster, bare):
    new = {'uuid': str(uuid.uuid4()), 'disks': [{'name': 'root', 'size_gb': 1,
                                                 'format': 'qcow2'}]}
    topic = rpc.COMPUTE_TOPIC
    client = messaging.get_rpc_client(bare, messaging.Target(
        topic=topic, version='1.0', server='compute1'), timeout=20)
    already = len(_wait_refusals(cluster, 'compute1', 'create_local_disks',
                                 'compute1', 0))
    stolen = rpc_auth.Auth(rpc_auth.AgentKeys('compute1', _key(cluster,
                                                               'compute2')))
    for ctxt in ({}, stolen.context(topic, 'create_local_disks', 'compute1',
                                    {'guest': new})):
        with pytest.raises(exception.NotAuthenticated):
            client.call(ctxt, 'create_local_disks', guest=new)
    _wait_refusals(cluster, 'compute1', 'create_local_disks', 'compute1',
                   already + 2)
    assert cluster.cloud.leftovers('compute1', new['uuid']) == []


def test_a_migration_over_rabbitmq_with_tls_only(tmp_path):
    """The broker listens over TLS alone, with a certificate from a CA made
    here; the conductor, the agents and the CLI trust that CA."""
    hosts = {'compute1': None, 'compute2': None}
    with Cluster(tmp_path, hosts=hosts, tls=True) as c:
        status = c.rabbit._ctl('status').stdout
        assert 'amqp/ssl' in status
        assert 'protocol: amqp,' not in status  # no plain listener
        name = 'tls-%s' % uuid.uuid4().hex[:6]
        c.seed(name, 'compute1', data='over TLS')
        rc, mig = c.cli('live-migrate', name, '--host', 'compute2', '--wait')
        assert rc == 0 and mig['status'] == 'completed', (mig, c.logs())
        conns = c.rabbit._ctl('list_connections', 'ssl').stdout.split()[1:]
        assert conns and set(conns) == {'true'}, conns  # (after the header)
