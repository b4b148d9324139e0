"""Host drains with two conductors (processes) on one PostgreSQL database, a Redis
jobboard and a private RabbitMQ: each conductor holds the drain it was asked for;
together they keep the per-host and cluster-wide limits, whichever of them started
the migrations; when one is killed (SIGKILL), the other takes its drain over once
the lease lapses and finishes it.

In-flight migrations are sampled straight from the database.
"""

import os
import signal
import time
import uuid

import pytest

from conductor import rpcapi
from ferryman.common import conf as ferryman_conf
from ferryman.common import rpc
from ferryman.testing.cluster import Cluster
from tests.functional.test_drain import sampling

pytestmark = pytest.mark.functional

HOSTS = {'src1': None, 'src2': None, 'dst1': None, 'dst2': None, 'dst3': None}
BOARD = {'name': 'drains', 'claim_expiry': 4.0, 'heartbeat_interval': 0.5,
         'poll_interval': 0.2}
LEASE = 3.0
PER_HOST, CLUSTER = 2, 3
GUESTS = 4


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp('drain-conductors'), hosts=HOSTS,
                 conductors=2, jobboard=BOARD) as c:
        yield c


@pytest.fixture
def client_conf(cluster):
    conf = ferryman_conf.make_conf(config_files=[cluster.client_conf])
    yield conf
    rpc.cleanup(conf)


def _drain_on(conf, conductor, host):
    """Ask one conductor in particular (not whichever takes the call)."""
    api = rpcapi.ConductorAPI(conf, timeout=30)
    args = {'host': host, 'max_parallel': PER_HOST}
    signer, principal = api.operator
    return api.client.prepare(server=conductor, version='1.3').call(
        signer.context(rpc.CONDUCTOR_TOPIC, 'drain_host', principal, args),
        'drain_host', **args)


def test_two_conductors_share_the_limits_and_take_over_a_dead_ones_drain(
        cluster, db, client_conf):
    cluster.restart_conductors(drain_max_cluster=CLUSTER, drain_interval=0.1,
                               drain_lease_expiry=LEASE)
    tag = uuid.uuid4().hex[:4]
    guests = {}
    for host in ('src1', 'src2'):
        guests[host] = cluster.seed_many(
            ['%s-%s-%d' % (host, tag, i) for i in range(GUESTS)], host,
            storage='volume', memory_mb=512)
        # Each copy holds its source a while: the limits show.
        cluster.cloud.inject_fault(host, 'start_migration', delay_s=0.5)
    # Neither source takes the other's guests.
    assert cluster.cli('host', 'disable', 'src2')[0] == 0
    owners = {}
    with sampling(db, ['src1', 'src2']) as seen:
        drains = {'src1': _drain_on(client_conf, 'conductor', 'src1')['id'],
                  'src2': _drain_on(client_conf, 'conductor2', 'src2')['id']}
        for host, drain_id in drains.items():
            owners[host] = db.drains.get(drain_id)['owner']
        # Each conductor holds the drain it was asked for (owner: HOST.PID.X).
        assert owners['src1'].split('.')[0] == 'conductor', owners
        assert owners['src2'].split('.')[0] == 'conductor2', owners
        cluster.wait_for(lambda: db.drains.get(drains['src1'])['guests'] and sum(
            g['status'] == 'moved' for g in db.drains.get(drains['src1'])[
                'guests'].values()) >= 1, 'a first guest of src1 moved',
            interval=0.05)
        # The first conductor dies mid-drain: its lease is never handed back.
        proc = cluster.procs.pop('conductor')
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        died = time.monotonic()
        assert db.drains.get(drains['src1'])['status'] == 'running'

        def taken_over():
            return db.drains.get(drains['src1'])['owner'] == owners['src2']
        cluster.wait_for(taken_over, 'src1 drain taken over by conductor2',
                         timeout=LEASE + 20, interval=0.05)
        took = time.monotonic() - died
        ends = {h: cluster.cli('drain', 'show', d, '--wait', timeout=120)[1]
                for h, d in drains.items()}
    assert [ends[h]['status'] for h in drains] == ['done', 'done'], ends
    assert [ends[h]['counts']['moved'] for h in drains] == [GUESTS, GUESTS], ends
    # Not before the lease could lapse (renewed every pass, 0.1 s), nor long
    # after.
    assert LEASE - 0.5 <= took <= LEASE + 15, took
    # The limits held whichever conductor started the migrations; both sources
    # were drained at once up to the cluster limit.
    assert seen['src1'] == PER_HOST and seen['src2'] == PER_HOST, seen
    assert seen['cluster'] == CLUSTER, seen
    for host, gs in guests.items():
        for g in gs:
            (where,) = cluster.cloud.find_guest(g['uuid'])
            assert where.startswith('dst'), (g, where)
    rc, report = cluster.cli('audit')
    assert (rc, report['violations']) == (0, []), report
    cluster.restart_conductors()
