"""Conductors on a jobboard, Redis and ZooKeeper alike.

Two conductors and one PostgreSQL database, as processes: the conductor running a
migration is killed (SIGKILL) at a step; its claim on the job expires (on Redis,
claims carry an expiry only its heartbeat renews; on ZooKeeper, a claim is an
ephemeral node that goes with its session, whose timeout is the expiry), the
other conductor claims the job and resumes the saved flow, within the configured
bound.

One conductor in process (the in-process cloud) on a real board: jobs are taken
off when done, and the reaper posts a migration whose job is gone.
"""

import contextlib
import datetime
import json
import os
import socket
import threading
import time
import uuid

import pytest
from taskflow.persistence import backends as tf_backends
from taskflow.persistence import models as tf_models

from conductor import jobboard
from ferryman.common import conf as ferryman_conf
from ferryman.common import exception
from ferryman.sim import cloud as sim
from ferryman.testing.cluster import Cluster
from ferryman.testing.servers import RedisServer, ZooKeeperServer
from tests.unit.test_jobboard import _orphan, _owner_violations

pytestmark = pytest.mark.functional

TERMINAL = ('completed', 'failed', 'cancelled', 'error')
EXPIRY = 4.0
BOARD = {'name': 'functional', 'claim_expiry': EXPIRY, 'heartbeat_interval': 0.5,
         'poll_interval': 0.2}
# What the rest of the flow may take after the takeover, on a loaded machine.
SLACK = 20.0
# What claiming a lapsed job and loading its flow (board and database round trips)
# may take before the survivor logs the claim, on a loaded machine.
CLAIM_SLACK = 3.0
BACKENDS = ['redis', 'zookeeper']


@pytest.fixture(scope='module', params=BACKENDS)
def board_server(request):
    with {'redis': RedisServer, 'zookeeper': ZooKeeperServer}[request.param]() \
            as server:
        yield server


def _new_guest(cloud):
    name = 'b-%s' % uuid.uuid4().hex[:8]
    g = cloud.cloud.create_guest('compute1', name, storage='local', data=name,
                                 disks=[{'name': 'root', 'size_gb': 1,
                                         'format': 'qcow2'}])
    cloud.refresh()
    return g


@pytest.fixture(scope='module')
def board_cloud(board_server):
    with sim.SimCloud(overrides={
            'jobboard.backend_url': board_server.url,
            'jobboard.name': 'cloud-%s' % uuid.uuid4().hex[:6],
            'jobboard.claim_expiry': 2.0, 'jobboard.heartbeat_interval': 0.5,
            'jobboard.poll_interval': 0.1,
            'conductor.reaper_interval': 3600.0}) as cl:
        yield cl


def test_with_a_board_a_migration_is_posted_claimed_and_taken_off(board_cloud):
    g = _new_guest(board_cloud)
    mig = board_cloud.api.live_migrate(g['name'], host='compute2')
    assert board_cloud.wait(mig['id'])['status'] == 'completed'
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
    assert board_cloud.wait(mig['id'])['status'] == 'completed'
    assert board_cloud.cloud.find_guest(g['uuid']) == {'compute2': 'running'}
    assert board_cloud.api.audit()['violations'] == []


# Claims the board's server cannot hear renewed. -------------------------------------
class _Relay(object):
    """A TCP relay to a server that can go silent, as a network partition does:
    connections stay open, nothing gets through (new ones neither) until it heals."""

    def __init__(self, port):
        self.target = port
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        self.passing = threading.Event()
        self.passing.set()
        self._socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _addr = self.listener.accept()
                upstream = socket.create_connection(('127.0.0.1', self.target), 5)
            except OSError:
                return
            self._socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst),
                                 daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                self.passing.wait()
                data = src.recv(65536)
                if not data:
                    break
                self.passing.wait()  # what was read as the partition began waits too
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self):
        self.listener.close()
        self.passing.set()
        for sock in self._socks:
            sock.close()


@pytest.fixture
def boards(board_server):
    """Board factory: conductors on one fresh board, with memory persistence;
    ``port`` is where the conductor reaches the server (a relay)."""
    made = []
    name = 'part-%s' % uuid.uuid4().hex[:6]
    persistence = tf_backends.fetch({'connection': 'memory://'})
    scheme = board_server.url.split(':', 1)[0]

    def make(host, expiry, interval, port=None):
        conf = ferryman_conf.make_conf(config_files=[], overrides={
            'host': host, 'jobboard.name': name,
            'jobboard.backend_url': '%s://127.0.0.1:%d' % (
                scheme, port or board_server.port),
            'jobboard.claim_expiry': expiry, 'jobboard.heartbeat_interval': interval})
        made.append(jobboard.Board(conf, persistence))
        return made[-1]

    yield make
    for board in made:
        board.close()


def _cut_off(boards, board_server, expiry, interval):
    """Conductor ``a`` (behind a relay) holding a claim, conductor ``b``, the job,
    the relay and the times ``a`` reported the claim lost."""
    relay = _Relay(board_server.port)
    a = boards('a', expiry, interval, port=relay.port)
    b = boards('b', expiry, interval)
    book = tf_models.LogBook('b', uuid=str(uuid.uuid4()))
    job = b.post(book.uuid, book, 'compute1')
    (mine,) = [j for j in a.jobs() if j.uuid == job.uuid]
    lost = []
    assert a.claim(mine, on_lost=lambda: lost.append(time.monotonic()))
    time.sleep(expiry * 1.5)  # renewed past its expiry
    assert a.owner_of(mine) == a.owner and not lost
    return a, b, job, mine, relay, lost


def test_a_claim_cut_off_from_its_server_is_given_up_before_it_lapses(
        board_server, boards, timings):
    expiry, interval = 3.0, 0.2
    a, b, job, mine, relay, lost = _cut_off(boards, board_server, expiry, interval)
    try:
        relay.passing.clear()
        cut = time.monotonic()
        # Given up no later than the claim can lapse for others (a renewal at most
        # a heartbeat before the cut; ZooKeeper: the session's last ping): until
        # then nobody else may run the job, and after it this one must not.
        while not b.claim(job, on_lost=lambda: None):
            assert time.monotonic() - cut < expiry + 5, 'claim never lapsed'
            time.sleep(0.05)
        taken = time.monotonic()
        assert lost and lost[0] < taken, (lost, taken - cut)
        assert not a.holds(mine)
        timings['given up after cut %s' % b.kind] = lost[0] - cut
        timings['taken over after cut %s' % b.kind] = taken - cut
        relay.passing.set()
        time.sleep(expiry * 1.5)
        assert b.owner_of(job) == b.owner  # never renewed, or released, by ``a``
        assert lost == lost[:1]
    finally:
        relay.close()


@pytest.mark.parametrize('board_server', ['zookeeper'], indirect=True)
def test_zookeeper_claim_given_up_but_kept_by_its_session_is_released(
        board_server, boards):
    # Given up after half the expiry (3 s) without a renewal; the session lasts
    # 6 s: the relay heals in between, the session survives, and with it the
    # claim, which ``a`` must then release itself. (On Redis a claim given up
    # lapses by its own expiry.)
    expiry, interval = 6.0, 0.2
    a, b, job, mine, relay, lost = _cut_off(boards, board_server, expiry, interval)
    try:
        relay.passing.clear()
        cut = time.monotonic()
        while not lost:
            assert time.monotonic() - cut < expiry, 'claim never given up'
            time.sleep(0.02)
        relay.passing.set()
        assert lost[0] - cut < expiry - 1.0, lost[0] - cut
        assert not a.holds(mine)
        while not b.claim(job, on_lost=lambda: None):
            # Released by ``a``, well before its session could have expired.
            assert time.monotonic() - cut < expiry - 0.2, a.owner_of(mine)
            time.sleep(0.05)
    finally:
        relay.close()


# Conductor processes killed with a job claimed. ---------------------------------


def _earliest_takeover(kind):
    """Seconds after its owner's death before a claim can lapse.

    Redis: the last renewal was at most a heartbeat before the death. ZooKeeper:
    the session expires once its client has been silent for the timeout, and
    the client pings every third of it (kazoo: half its read timeout of 2/3).
    """
    if kind == 'redis':
        return EXPIRY - BOARD['heartbeat_interval']
    return EXPIRY * 2 / 3


@pytest.fixture(scope='module')
def board_cluster(tmp_path_factory):
    """Two conductors on a board of the kind asked for: one cluster at a time
    (an idle one would load the machine under the next one's timings)."""
    live = {}

    def get(kind):
        if kind not in live:
            for stack in live.values():
                stack.close()
            live.clear()
            base = tmp_path_factory.mktemp('jobboard-%s' % kind)
            crash_file = os.path.join(str(base), 'crash.json')
            board = dict(BOARD, backend_url='%s://' % kind)
            stack = contextlib.ExitStack()
            c = stack.enter_context(Cluster(
                base, conductors=2, jobboard=board,
                options={'conductor': {'crash_file': crash_file}}))
            c.crash_file = crash_file
            live[kind] = stack
            get.cluster = c
        return get.cluster

    yield get
    for stack in live.values():
        stack.close()


def _claimed_at(cluster, name, migration_id):
    """When the conductor's log says it claimed the migration (epoch seconds)."""
    return _logged_at(cluster, name, 'Claimed migration %s' % migration_id)


def _logged_at(cluster, name, text):
    with open(os.path.join(cluster.base_dir, name + '.log')) as f:
        lines = [ln for ln in f if text in ln]
    assert len(lines) == 1, lines
    return datetime.datetime.strptime(lines[0][:23],
                                      '%Y-%m-%d %H:%M:%S.%f').timestamp()


def _migration_of(cluster, guest_uuid):
    rc, migs = cluster.cli('migration', 'list', '--instance', guest_uuid, timeout=10)
    return migs[-1] if rc == 0 and migs else None


@pytest.mark.parametrize('crash_at', ['claim-resources:SUCCESS',
                                      'start-migration:SUCCESS',
                                      'post-migration-source:SUCCESS'])
def test_killed_conductors_migration_is_taken_over_on_redis(board_cluster, crash_at,
                                                            timings):
    _taken_over(board_cluster('redis'), crash_at, timings)


def test_killed_conductors_migration_is_taken_over_on_zookeeper(board_cluster,
                                                                timings):
    # The takeover does not depend on the step: killed mid-copy only.
    _taken_over(board_cluster('zookeeper'), 'start-migration:SUCCESS', timings)


def _taken_over(c, crash_at, timings):
    name = 'board-%s' % uuid.uuid4().hex[:6]
    guest = c.seed(name, 'compute1', memory_mb=512, data='before %s' % name)
    # Both conductors read the crash file: whichever claims the job dies at the
    # step. The step's SUCCESS is saved before it is announced, so the other one
    # resumes past it and lives.
    with open(c.crash_file, 'w') as f:
        json.dump({crash_at: 'self'}, f)
    try:
        c.cli('live-migrate', name, '--host', 'compute2', timeout=10)
        deadline = time.monotonic() + 60
        dead = []
        while not dead:
            dead = [n for n in c.conductors if c.procs[n].poll() is not None]
            assert time.monotonic() < deadline, 'no conductor reached %s' % crash_at
            time.sleep(0.05)
    finally:
        os.unlink(c.crash_file)
    died, died_at = time.monotonic(), time.time()
    assert [c.exited(n) for n in dead] == [-9], dead  # one killed, by itself
    (alive,) = [n for n in c.conductors if n not in dead]
    # Died when its log says so: the live-migrate CLI above may return after
    # the conductor had already reached the step and died.
    died_at = _logged_at(c, dead[0], 'crash point %s reached' % crash_at)

    deadline = died + EXPIRY + SLACK
    while True:
        assert c.procs[alive].poll() is None, c.logs()
        mig = _migration_of(c, guest['uuid'])
        if mig and mig['status'] in TERMINAL:
            break
        assert time.monotonic() < deadline, 'not taken over: %s\n%s' % (mig, c.logs())
        time.sleep(0.2)
    took = time.monotonic() - died
    step = '%s %s' % (c.board_kind, crash_at.split(':')[0])
    timings['takeover+finish %s' % step] = took
    assert mig['status'] == 'completed', mig
    # Claimed by the survivor once the dead one's claim expired, not before:
    # nobody else may run it meanwhile; and soon after: the bound is the expiry
    # plus a poll.
    claimed = _claimed_at(c, alive, mig['id']) - died_at
    timings['claim after death %s' % step] = claimed
    assert _earliest_takeover(c.board_kind) - 0.3 <= claimed, claimed
    assert claimed <= EXPIRY + BOARD['poll_interval'] + CLAIM_SLACK, claimed
    assert c.cloud.find_guest(guest['uuid']) == {'compute2': 'running'}
    assert c.cloud.leftovers('compute1', guest['uuid']) == []
    assert c.cloud.read_disk('compute2', guest['uuid']) == 'before %s' % name
    rc, report = c.cli('audit')
    assert (rc, report['violations']) == (0, []), report
    c.restart_conductors(only=dead)


def test_zookeeper_sessions_are_checked_against_the_claim_expiry(caplog):
    """The server bounds session timeouts (6 to 10 s here): a claim expiry below
    them is refused, naming it, since claims would outlive a dead conductor
    longer than promised; one above them is taken with a warning."""
    persistence = tf_backends.fetch({'connection': 'memory://'})
    with ZooKeeperServer(min_session=6.0, max_session=10.0) as server:
        def board(expiry):
            conf = ferryman_conf.make_conf(config_files=[], overrides={
                'host': 'zk-bounds', 'jobboard.name': 'bounds',
                'jobboard.backend_url': server.url,
                'jobboard.claim_expiry': expiry,
                'jobboard.heartbeat_interval': 1.0})
            return jobboard.Board(conf, persistence)

        within = board(8.0)
        assert within.session_s == 8.0
        within.close()
        with pytest.raises(exception.InvalidArgument) as err:
            board(2.0)
        assert "Invalid value 2.0 for [jobboard] claim_expiry" in str(err.value)
        assert 'no less than 6.0 s' in str(err.value)
        caplog.clear()
        above = board(20.0)
        assert above.session_s == 10.0
        above.close()
        assert 'grants sessions of at most 10.0 s' in caplog.text
