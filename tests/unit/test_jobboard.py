"""[jobboard] options, claims that expire unless renewed, and the reaper.

Claims are checked against a real redis-server on loopback (started here): the
Redis board keeps a claim forever unless it carries an expiry, which is exactly
what these tests would miss with a fake.
"""

import time
import uuid

import pytest
import redis
from taskflow.persistence import backends as tf_backends
from taskflow.persistence import models as tf_models

from conductor import jobboard
from conductor import service as conductor_service
from ferryman.common import conf as ferryman_conf
from ferryman.common import exception
from ferryman.common import rpc
from ferryman.testing.servers import RedisServer


def _conf(**jobboard_opts):
    return ferryman_conf.make_conf(config_files=[], overrides={
        'jobboard.%s' % k: v for k, v in jobboard_opts.items()})


# Options. -----------------------------------------------------------------------
def test_no_board_by_default():
    assert jobboard.board_conf(_conf()) is None


def test_redis_url():
    spec = jobboard.board_conf(_conf(backend_url='redis://:s3cret@10.0.0.5:7000/2',
                                     name='prod', claim_expiry=20.0))
    assert spec == {'board': 'redis', 'host': '10.0.0.5', 'port': 7000, 'db': 2,
                    'namespace': 'prod', 'password': 's3cret',
                    'socket_timeout': 5.0, 'socket_connect_timeout': 5.0}


def test_zookeeper_url():
    spec = jobboard.board_conf(_conf(backend_url='zookeeper://zk1,zk2:2182/cloud',
                                     claim_expiry=12.0))
    assert spec == {'board': 'zookeeper', 'hosts': 'zk1:2181,zk2:2182',
                    'path': '/cloud/ferryman', 'timeout': 12.0,
                    'connection_timeout': 3.0, 'check_compatible': False}


@pytest.mark.parametrize('opts,option,shown', [
    ({'backend_url': 'mysql://db/x'}, 'backend_url', 'mysql://db/x'),
    ({'backend_url': 'redis://host:99999'}, 'backend_url', 'redis://host:99999'),
    ({'backend_url': 'redis://host/zero'}, 'backend_url', 'redis://host/zero'),
    ({'backend_url': 'redis://:pw@host?ssl=1'}, 'backend_url', 'redis://:***@host?ssl=1'),
    ({'backend_url': 'zookeeper://zk/a b'}, 'backend_url', 'zookeeper://zk/a b'),
    ({'name': 'a/b'}, 'name', 'a/b'),
    ({'claim_expiry': 10.0, 'heartbeat_interval': 6.0}, 'heartbeat_interval', 6.0),
])
def test_bad_options_are_refused_naming_the_value(opts, option, shown):
    with pytest.raises(exception.InvalidArgument) as err:
        jobboard.board_conf(_conf(**opts))
    text = str(err.value)
    # Both the option (with its section) and the value as given.
    assert 'for [jobboard] %s:' % option in text, text
    assert 'Invalid value %r ' % (shown,) in text, text
    assert 'pw' not in text  # passwords never reach an error message


def test_a_conductor_with_a_bad_board_does_not_start(tmp_path):
    conf = ferryman_conf.make_conf(config_files=[], overrides={
        'jobboard.backend_url': 'rediss://x', 'state_path': str(tmp_path),
        'transport_url': rpc.IN_PROCESS_URL})
    with pytest.raises(exception.InvalidArgument, match='rediss://x'):
        conductor_service.ConductorService(conf)
    assert list(tmp_path.iterdir()) == []  # not even a database was created


# Claims. ------------------------------------------------------------------------
@pytest.fixture(scope='module')
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture
def boards(redis_server, tmp_path):
    """Board factory: conductors on one fresh board, with memory persistence."""
    made = []
    name = 'unit-%s' % uuid.uuid4().hex[:6]
    persistence = tf_backends.fetch({'connection': 'memory://'})

    def make(host, expiry=1.0, interval=0.2):
        conf = ferryman_conf.make_conf(config_files=[], overrides={
            'host': host, 'jobboard.backend_url': redis_server.url,
            'jobboard.name': name, 'jobboard.claim_expiry': expiry,
            'jobboard.heartbeat_interval': interval})
        board = jobboard.Board(conf, persistence)
        made.append(board)
        return board

    yield make
    for board in made:
        if not board._stop.is_set():
            board.close()


def _post(board):
    book = tf_models.LogBook('b', uuid=str(uuid.uuid4()))
    return board.post(book.uuid, book, 'compute1')


def _ttl_ms(redis_server, job):
    client = redis.Redis(host='127.0.0.1', port=redis_server.port)
    try:
        return client.pttl(job.owner_key)
    finally:
        client.close()


def test_claim_carries_the_expiry(boards, redis_server):
    a = boards('a')
    job = _post(a)
    assert a.claim(job, on_lost=lambda: None)
    assert 0 < _ttl_ms(redis_server, job) <= 1000
    assert a.owner_of(job) == a.owner


def test_heartbeat_keeps_a_live_claim_past_its_expiry(boards):
    a, b = boards('a'), boards('b')
    job = _post(a)
    assert a.claim(job, on_lost=lambda: None)
    time.sleep(2.5)  # 2.5 expiries
    assert a.owner_of(job) == a.owner
    assert not b.claim(job, on_lost=lambda: None)


def test_a_dead_owners_claim_expires_and_another_takes_it(boards):
    a, b = boards('a'), boards('b')
    assert a.owner != b.owner
    job = _post(a)
    assert a.claim(job, on_lost=lambda: None)
    a.close()  # the heartbeat stops, the claim stays: as after kill -9
    assert not b.claim(job, on_lost=lambda: None)
    deadline = time.monotonic() + 1.5
    while b.owner_of(job) is not None:
        assert time.monotonic() < deadline, 'claim never expired'
        time.sleep(0.05)
    (again,) = [j for j in b.jobs() if j.uuid == job.uuid]
    assert b.claim(again, on_lost=lambda: None)
    assert b.owner_of(again) == b.owner


def test_a_lost_claim_is_reported_and_never_renewed_for_its_new_owner(
        boards, redis_server):
    a = boards('a', expiry=5.0, interval=0.1)
    job = _post(a)
    lost = []
    assert a.claim(job, on_lost=lambda: lost.append(job.uuid))
    client = redis.Redis(host='127.0.0.1', port=redis_server.port)
    try:
        client.set(job.owner_key, b'someone-else')  # as after a partition
        deadline = time.monotonic() + 2
        while not lost:
            assert time.monotonic() < deadline, 'loss not noticed'
            time.sleep(0.05)
        assert lost == [job.uuid] and not a.holds(job)
        time.sleep(0.3)
        assert client.pttl(job.owner_key) == -1  # their key, left as they set it
    finally:
        client.close()


def test_consume_takes_the_job_off_and_abandon_frees_it(boards):
    a, b = boards('a'), boards('b')
    done, again = _post(a), _post(a)
    assert a.claim(done, lambda: None) and a.claim(again, lambda: None)
    a.consume(done)
    a.abandon(again)
    assert [j.uuid for j in b.jobs()] == [again.uuid]
    assert b.owner_of(again) is None


# The reaper. ---------------------------------------------------------------------
def _orphan(cloud, guest, save=True):
    """A migration recorded (and its flow saved) that nobody runs."""
    runner = cloud.conductor.manager.runner
    real = runner.submit
    runner.submit = (lambda mig, store: runner.save(mig, store)) if save \
        else (lambda mig, store: None)
    try:
        return cloud.api.live_migrate(guest['name'], host='compute2')
    finally:
        runner.submit = real


def _owner_violations(cloud, mid):
    return [v for v in cloud.api.audit()['violations']
            if v['kind'] == 'owner' and mid in v['text']]


def test_reaper_resumes_a_migration_nobody_runs(cloud, guest):
    g = guest('compute1')
    mig = _orphan(cloud, g)
    runner = cloud.conductor.manager.runner
    assert _owner_violations(cloud, mig['id'])
    timeout = cloud.conductor_conf.conductor.orphan_timeout
    now = time.monotonic()
    assert runner.reap(now) == []  # seen ownerless: the clock starts
    assert runner.reap(now + timeout - 1) == []
    assert runner.reap(now + timeout + 0.1) == [mig['id']]
    assert cloud.wait(mig['id'])['status'] == 'completed'
    assert cloud.cloud.find_guest(g['uuid']) == {'compute2': 'running'}
    assert cloud.api.audit()['violations'] == []


def test_reaper_fails_a_migration_whose_flow_was_never_saved(cloud, guest):
    g = guest('compute1')
    mig = _orphan(cloud, g, save=False)
    runner = cloud.conductor.manager.runner
    now = time.monotonic()
    runner.reap(now)
    assert runner.reap(now + cloud.conductor_conf.conductor.orphan_timeout + 0.1) == [
        mig['id']]
    assert cloud.api.get_migration(mig['id'])['status'] == 'failed'
    assert cloud.cloud.find_guest(g['uuid']) == {'compute1': 'running'}
    assert cloud.api.audit()['violations'] == []
