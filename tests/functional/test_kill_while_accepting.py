"""Chaos while accepting: batches of concurrent migration requests, the conductor
killed (SIGKILL) at seeded random moments, from its first half second on (while
it accepts and saves flows) to mid-run, sometimes again as it resumes; restarted
as a supervisor would. It must start every time, every migration must end within
a bound, each guest run on exactly one host, and ``audit`` stay clean.

Set FERRYMAN_CHAOS_SEED to replay a run; the seed and the counts are printed.
"""

import collections
import concurrent.futures
import os
import random
import signal
import time
import uuid

import oslo_messaging as messaging
import pytest

from conductor import rpcapi as conductor_rpcapi
from ferryman.common import conf as ferryman_conf
from ferryman.common import rpc
from ferryman.testing.cluster import Cluster, answering

pytestmark = pytest.mark.functional

TERMINAL = ('completed', 'failed', 'cancelled', 'error')
RPC_TIMEOUT = 3
BOUND_S = 45  # from the restart to every migration of the round ended
ROUNDS = 6
BATCH = 6
# Source -> the destination asked for (None: the scheduler picks).
ROUTES = [('compute1', 'compute2'), ('compute2', 'compute3'), ('compute1', None),
          ('compute3', 'compute1'), ('compute2', None), ('compute3', 'compute2')]


@pytest.fixture(scope='module')
def cloud(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp('kill-accepting'), options={
            'DEFAULT': {'rpc_response_timeout': RPC_TIMEOUT},
            'fake': {'vcpus': 1024}}) as c:
        conf = ferryman_conf.make_conf(config_files=[], overrides={
            'transport_url': c.rabbit.url, 'rpc_response_timeout': RPC_TIMEOUT,
            'auth.operator_key_file': c.operator_options('test')['operator_key_file']})
        c.api = conductor_rpcapi.ConductorAPI(conf)
        try:
            yield c
        finally:
            rpc.cleanup(conf)


def _request(c, guest, dest):
    try:
        c.api.live_migrate(guest['name'], host=dest)
        return 'answered'
    except (messaging.MessagingTimeout, messaging.MessageDeliveryFailure):
        return 'lost'  # to the kill; whether it was recorded is seen below
    except messaging.RemoteError as exc:
        return 'refused: %s' % exc.exc_type


def _kill(c):
    proc = c.procs['conductor']
    c.kill('conductor', sig=signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, proc.returncode


def _restart(c):
    """Restart the conductor; return once it listens (raises, with its log, if it
    exits instead: a crash loop)."""
    before = c._starts('conductor')
    c.restart('conductor')
    c.wait_for(lambda: c._starts('conductor') > before, 'conductor started again')


def _migrations(c, guest):
    return answering(BOUND_S, c.api.list_migrations, instance=guest['uuid'])


def _settled(c, guests, since):
    """Each guest's migrations, once all have ended (within the bound)."""
    while True:
        migs = {g['uuid']: _migrations(c, g) for g in guests}
        active = [m for ms in migs.values() for m in ms if m['status'] not in TERMINAL]
        if not active:
            return migs
        assert time.monotonic() - since < BOUND_S, 'migrations not ended: %s\n%s' % (
            active, c.logs())
        time.sleep(0.2)


def test_conductor_killed_while_accepting_always_starts_again(cloud, capsys):
    c = cloud
    seed = int(os.environ.get('FERRYMAN_CHAOS_SEED') or random.randrange(2 ** 32))
    rng = random.Random(seed)
    with capsys.disabled():
        print('\nkill while accepting: seed %d' % seed)
    counts = collections.Counter()
    pool = concurrent.futures.ThreadPoolExecutor(BATCH)
    try:
        for rnd in range(ROUNDS):
            batch = [ROUTES[i % len(ROUTES)] for i in range(BATCH)]
            guests = []
            for source, _dest in batch:
                guests.append(c.cloud.create_guest(
                    source, 'kill-%s' % uuid.uuid4().hex[:8], memory_mb=64,
                    data='data', disks=[{'name': 'root', 'size_gb': 1,
                                         'format': 'qcow2'}]))
            wanted = {g['uuid'] for g in guests}
            c.wait_for(lambda: wanted <= {
                i['uuid'] for i in answering(BOUND_S, c.api.list_instances)},
                'guests reported')
            # Half the rounds die in the first half second of the batch.
            delay = rng.uniform(0, 0.5) if rnd % 2 == 0 else rng.uniform(0.5, 2.5)
            requests = [pool.submit(_request, c, g, dest)
                        for g, (_source, dest) in zip(guests, batch)]
            time.sleep(delay)
            _kill(c)
            counts['kills'] += 1
            if rng.random() < 0.5:
                # Again while it starts and resumes what the first kill left.
                c.restart('conductor')
                time.sleep(rng.uniform(0, 1.5))
                _kill(c)
                counts['kills'] += 1
            _restart(c)
            counts['starts'] += 1
            for r in requests:
                counts[r.result().split(':')[0]] += 1
            migs = _settled(c, guests, time.monotonic())
            assert c.procs['conductor'].poll() is None, c.logs()
            for g, (source, _dest) in zip(guests, batch):
                ended = migs[g['uuid']]
                counts['migrations'] += len(ended)
                counts.update(m['status'] for m in ended)
                assert len(ended) <= 1, ended
                assert all(m['status'] in ('completed', 'failed') for m in ended), \
                    (ended, c.logs())
                where = ended[0]['destination'] if ended and \
                    ended[0]['status'] == 'completed' else source
                assert c.cloud.find_guest(g['uuid']) == {where: 'running'}, (
                    g, ended)
            report = answering(BOUND_S, c.api.audit)
            assert report['violations'] == [], report
    finally:
        pool.shutdown(wait=True)
        with capsys.disabled():
            print('kill while accepting: seed %d, rounds %d: %s' % (
                seed, ROUNDS, ', '.join('%s %d' % kv for kv in sorted(counts.items()))))
