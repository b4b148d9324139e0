"""Conductors on a Redis jobboard.

Two conductors and one PostgreSQL database, as processes: the conductor running a
migration is killed (SIGKILL) at a step; its claim on the job expires (claims
carry an expiry only its heartbeat renews), the other conductor claims the job and
resumes the saved flow, within the configured bound.

One conductor in process (the in-process cloud) on a real Redis board: jobs are
taken off when done, and the reaper posts a migration whose job is gone.
"""

import datetime
import os
import time
import uuid

import pytest

from conductor import jobboard
from ferryman import local
from ferryman.testing.cluster import Cluster
from ferryman.testing.servers import RedisServer
from tests.unit.test_jobboard import _orphan, _owner_violations, _wait_terminal

pytestmark = pytest.mark.functional

TERMINAL = ('completed', 'failed', 'cancelled', 'error')
EXPIRY = 4.0
BOARD = {'name': 'functional', 'claim_expiry': EXPIRY, 'heartbeat_interval': 0.5,
         'poll_interval': 0.2}
# What the rest of the flow may take after the takeover, on a loaded machine.
SLACK = 20.0


@pytest.fixture(scope='module')
def board_cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp('jobboard'), conductors=2,
                 jobboard=BOARD) as c:
        yield c


def _started(cluster, name):
    try:
        with open(os.path.join(cluster.base_dir, name + '.log')) as f:
            return f.read().count('listening on topic')
    except OSError:
        return 0


def _restart_conductors(cluster, **conductor):
    before = {n: _started(cluster, n) for n in cluster.conductors}
    for name in cluster.conductors:
        cluster.restart(name, conductor=conductor)
    # Every claim loop running before the request: the takeover is by a live one.
    cluster.wait_for(lambda: all(_started(cluster, n) > before[n]
                                 for n in cluster.conductors), 'conductors started')


def _claimed_at(cluster, name, migration_id):
    """When the conductor's log says it claimed the migration (epoch seconds)."""
    with open(os.path.join(cluster.base_dir, name + '.log')) as f:
        lines = [ln for ln in f if 'Claimed migration %s' % migration_id in ln]
    assert len(lines) == 1, lines
    return datetime.datetime.strptime(lines[0][:23],
                                      '%Y-%m-%d %H:%M:%S.%f').timestamp()


def _migration_of(cluster, guest_uuid):
    rc, migs = cluster.cli('migration', 'list', '--instance', guest_uuid, timeout=10)
    return migs[-1] if rc == 0 and migs else None


@pytest.mark.parametrize('crash_at', [
    'claim-resources:SUCCESS',
    'start-migration:SUCCESS',
    'post-migration-source:SUCCESS',
])
def test_killed_conductors_migration_is_taken_over(board_cluster, crash_at, timings):
    c = board_cluster
    name = 'board-%s' % uuid.uuid4().hex[:6]
    guest = c.seed(name, 'compute1', memory_mb=512, data='before %s' % name)
    # Both conductors die at the step: whichever claims the job dies there. The
    # step's SUCCESS is saved before it is announced, so the other one resumes
    # past it and lives.
    _restart_conductors(c, crash_at=crash_at)
    c.cli('live-migrate', name, '--host', 'compute2', timeout=10)
    deadline = time.monotonic() + 60
    dead = []
    while not dead:
        dead = [n for n in c.conductors if c.procs[n].poll() is not None]
        assert time.monotonic() < deadline, 'no conductor reached %s' % crash_at
        time.sleep(0.05)
    died, died_at = time.monotonic(), time.time()
    assert [c.exited(n) for n in dead] == [-9], dead  # one killed, by itself
    (alive,) = [n for n in c.conductors if n not in dead]

    deadline = died + EXPIRY + SLACK
    while True:
        assert c.procs[alive].poll() is None, c.logs()
        mig = _migration_of(c, guest['uuid'])
        if mig and mig['status'] in TERMINAL:
            break
        assert time.monotonic() < deadline, 'not taken over: %s\n%s' % (mig, c.logs())
        time.sleep(0.2)
    took = time.monotonic() - died
    timings['takeover+finish %s' % crash_at.split(':')[0]] = took
    assert mig['status'] == 'completed', mig
    # Claimed by the survivor once the dead one's claim expired (its last renewal
    # was at most a heartbeat before its death), not before: nobody else may run
    # it meanwhile; and soon after: the bound is the expiry plus a poll.
    claimed = _claimed_at(c, alive, mig['id']) - died_at
    timings['claim after death %s' % crash_at.split(':')[0]] = claimed
    assert EXPIRY - BOARD['heartbeat_interval'] - 0.3 <= claimed, claimed
    assert claimed <= EXPIRY + BOARD['poll_interval'] + 2.0, claimed
    assert c.cloud.find_guest(guest['uuid']) == {'compute2': 'running'}
    assert c.cloud.leftovers('compute1', guest['uuid']) == []
    assert c.cloud.read_disk('compute2', guest['uuid']) == 'before %s' % name
    rc, report = c.cli('audit')
    assert (rc, report['violations']) == (0, []), report
    _restart_conductors(c)


@pytest.fixture(scope='module')
def redis_server():
    with RedisServer() as server:
        yield server


def _new_guest(cloud):
    name = 'b-%s' % uuid.uuid4().hex[:8]
    g = cloud.cloud.create_guest('compute1', name, storage='local', data=name,
                                 disks=[{'name': 'root', 'size_gb': 1,
                                         'format': 'qcow2'}])
    cloud.refresh()
    return g


@pytest.fixture(scope='module')
def board_cloud(redis_server):
    with local.LocalCloud(overrides={
            'jobboard.backend_url': redis_server.url,
            'jobboard.name': 'cloud-%s' % uuid.uuid4().hex[:6],
            'jobboard.claim_expiry': 2.0, 'jobboard.heartbeat_interval': 0.5,
            'jobboard.poll_interval': 0.1,
            'conductor.reaper_interval': 3600.0}) as cl:
        yield cl


def test_with_a_board_a_migration_is_posted_claimed_and_taken_off(board_cloud):
    g = _new_guest(board_cloud)
    mig = board_cloud.api.live_migrate(g['name'], host='compute2')
    assert _wait_terminal(board_cloud, mig['id'])['status'] == 'completed'
    board = board_cloud.conductor.manager.runner.board
    deadline = time.monotonic() + 5
    while [j for j in board.jobs() if jobboard.migration_of(j) == mig['id']]:
        assert time.monotonic() < deadline, 'job left on the board'
        time.sleep(0.05)
    assert board_cloud.api.audit()['violations'] == []


def test_with_a_board_the_reaper_posts_a_migration_that_has_no_job(board_cloud):
    g = _new_guest(board_cloud)
    mig = _orphan(board_cloud, g)  # saved, never posted: as if killed in between
    runner = board_cloud.conductor.manager.runner
    assert _owner_violations(board_cloud, mig['id'])
    now = time.monotonic()
    runner.reap(now)
    assert runner.reap(now + board_cloud.conductor_conf.conductor.orphan_timeout + 1) \
        == [mig['id']]
    assert _wait_terminal(board_cloud, mig['id'])['status'] == 'completed'
    assert board_cloud.cloud.find_guest(g['uuid']) == {'compute2': 'running'}
    assert board_cloud.api.audit()['violations'] == []
