"""Forged and malformed messages over real RabbitMQ, from a bare oslo.messaging
client (no client-side checks): each is refused where it lands, naming the field
and value; the conductor's records stay as they were and ``ferryman host list``
keeps working. They are signed with the keys of the hosts they speak for, as a
compromised or broken agent (or conductor) would send them: what authentication
lets through must still be validated (tests/functional/test_auth.py covers the
unsigned and wrongly signed)."""

import copy
import os
import subprocess
import uuid

import oslo_messaging as messaging
import pytest
import sqlalchemy as sa

from conductor.db import models
from conductor.db import rows
from ferryman.common import conf as ferryman_conf
from ferryman.common import rpc
from ferryman.common import rpc_auth

pytestmark = pytest.mark.functional


@pytest.fixture
def bare(cluster):
    """Bare RPC clients of the conductor and of compute1's agent."""
    conf = ferryman_conf.make_conf(config_files=[cluster.client_conf])
    transport = messaging.get_rpc_transport(conf)
    conductor = messaging.get_rpc_client(transport, messaging.Target(
        topic=rpc.CONDUCTOR_TOPIC, version='1.3'), timeout=30)
    agent = messaging.get_rpc_client(transport, messaging.Target(
        topic=rpc.COMPUTE_TOPIC, server='compute1', version='1.0'), timeout=30)
    yield conductor, agent
    transport.cleanup()


def _state(db):
    """What reports and RPC methods could change; hosts without last_seen (the
    real agents report every half second)."""
    with db.session() as s:
        out = {table.__tablename__: sorted(
            (rows.to_dict(row) for row in s.scalars(sa.select(table))), key=repr)
            for table in (models.Host, models.Instance, models.Allocation,
                          models.Provider, models.NestedAllocation,
                          models.Migration)}
    for host in out['ferryman_hosts']:
        del host['last_seen']
    return out


def _signer(cluster):
    """sign(topic, method, host, args): the context a holder of the conductors'
    secret (and so of every host's key) would send."""
    auth = rpc_auth.Auth(rpc_auth.ConductorKeys(rpc_auth.load_secret(
        os.path.join(cluster.base_dir, 'keys', 'secret'))))
    return auth.context


def _log(cluster):
    with open(os.path.join(cluster.base_dir, 'conductor.log')) as f:
        return f.read()


def test_forged_and_malformed_messages_change_nothing(cluster, db, bare):
    conductor, agent = bare
    name = 'forged-%s' % uuid.uuid4().hex[:6]
    victim = cluster.seed(name, 'compute1')
    rc, hosts = cluster.cli('host', 'list')
    assert rc == 0, hosts
    info = {k: v for k, v in next(h for h in hosts if h['name'] == 'compute2').items()
            if k in ('hypervisor_type', 'cpu_model', 'cpu_features', 'vcpus',
                     'memory_mb', 'disk_gb', 'instances_path', 'features',
                     'reserved', 'allocation_ratios')}
    stolen = dict(cluster.cloud.load('compute1')['guests'][victim['uuid']],
                  name='stolen', power_state='shutoff', vcpus=64, disk_gb=1)
    phantom = 'phantom-%s' % uuid.uuid4().hex[:6]
    before = _state(db)
    log_before = len(_log(cluster))

    # Casts: refused where they land, with a log line naming field and value.
    reports = [
        # (what the log names, host, info, guests)
        (phantom, phantom, dict(info, reserved={'vcpus': 'lots'}), []),
        ("'lots'", phantom, dict(info, reserved={'vcpus': 'lots'}), []),
        ('guests[0].uuid', 'compute2', info,
         [dict(stolen, uuid='../../etc/passwd')]),
        ('guests[0].name', 'compute2', info, [dict(stolen, name='x' * 100000)]),
        ('info.evil', 'compute2', dict(info, evil=1), []),
        ("'compute2/../compute1'", 'compute2/../compute1', info, []),
    ]
    sign = _signer(cluster)

    def report(host, host_info, guests):
        args = {'host': host, 'info': copy.deepcopy(host_info), 'guests': guests}
        conductor.cast(sign(rpc.CONDUCTOR_TOPIC, 'report_host', host, args),
                       'report_host', **args)
    for _word, host, host_info, guests in reports:
        report(host, host_info, guests)
    # Well formed, but speaks for compute1's guest: compute2's report is taken
    # in, the guest's record is not rewritten.
    report('compute2', info, [stolen])
    cluster.wait_for(lambda: all(w in _log(cluster)[log_before:]
                                 for w, *_ in reports) and
                     victim['uuid'] in _log(cluster)[log_before:],
                     'the refusals logged', timeout=30)

    # Calls: refused with an error naming the field and value.
    refused = 0
    for client, method, kwargs, field in [
            (conductor, 'set_host_enabled', {'host': 'compute1', 'enabled': False,
                                             'reason': 'x\x1b[2J'}, 'reason'),
            (conductor, 'live_migrate', {'instance': name, 'host': 'compute2',
                                         'evil': True}, 'evil'),
            (conductor, 'list_instances', {'host': 'compute1\n'}, 'host'),
            (agent, 'delete_local_disks', {'guest': {'uuid': victim['uuid'],
                                                     'disks': '../..'}},
             'guest.disks'),
            (agent, 'start_migration', {'guest': {'uuid': victim['uuid']},
                                        'destination': 'compute2?evil=1',
                                        'subtype': 'block', 'params': {}},
             'destination')]:
        # Signed as they should be (an operator's calls as an operator's):
        # what is checked here is the arguments.
        ctxt = (sign(rpc.COMPUTE_TOPIC, method, 'compute1', kwargs)
                if client is agent else
                sign(rpc.CONDUCTOR_TOPIC, method, 'operator:admin', kwargs))
        with pytest.raises(messaging.RemoteError) as err:
            client.call(ctxt, method, **kwargs)
        assert err.value.exc_type == 'InvalidArgument', err.value
        assert field in err.value.value, err.value.value
        refused += 1

    assert _state(db) == before
    guests = cluster.cloud.load('compute1')['guests']
    assert guests[victim['uuid']]['power_state'] == 'running'
    rc, hosts = cluster.cli('host', 'list')
    assert rc == 0, hosts
    assert phantom not in {h['name'] for h in hosts}
    assert not [h['problems'] for h in hosts if h['problems']], hosts
    print('%d malformed messages sent, %d refused; 1 report naming another '
          "host's guest taken in without touching that guest" % (
              len(reports) + 5, len(reports) + refused))


def test_host_list_survives_an_uninterpretable_stored_value(cluster, db):
    phantom = 'junk-%s' % uuid.uuid4().hex[:6]
    with db.session.begin() as s:
        s.add(models.Host(name=phantom, enabled=True, hypervisor_type='fake',
                          cpu_features=[], vcpus=8, memory_mb=8192, disk_gb=10,
                          instances_path='/x', reserved={'vcpus': 'lots'},
                          last_seen=rows.utcnow()))
    try:
        rc, hosts = cluster.cli('host', 'list')
        assert rc == 0, hosts
        junk = next(h for h in hosts if h['name'] == phantom)
        assert any("reserved.vcpus 'lots'" in p for p in junk['problems']), junk
        res = subprocess.run(['ferryman', 'host', 'list', '--config-file',
                              cluster.client_conf], capture_output=True, text=True,
                             timeout=90)
        assert res.returncode == 0, res.stderr
        assert 'Traceback' not in res.stdout + res.stderr
        assert phantom in res.stdout and 'lots' in res.stdout
    finally:
        with db.session.begin() as s:
            s.execute(sa.delete(models.Host).where(models.Host.name == phantom))
