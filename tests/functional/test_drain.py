"""Host drains through the ``ferryman`` CLI against a conductor and simulated agents
in separate processes over a private RabbitMQ: the per-host and cluster-wide
limits hold while the drain runs, and a restarted conductor finishes a drain.

In-flight migrations are sampled straight from the conductor's database while the
CLI follows the drain.
"""

import contextlib
import threading
import time
import uuid

import pytest

from ferryman.testing.cluster import Cluster

pytestmark = pytest.mark.functional

HOSTS = {'src1': None, 'src2': None, 'dst1': None, 'dst2': None, 'dst3': None}


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp('drain-cluster'), hosts=HOSTS) as c:
        yield c


def _seed(cluster, host, n):
    tag = uuid.uuid4().hex[:4]
    return cluster.seed_many(['%s-%s-%d' % (host, tag, i) for i in range(n)], host,
                             storage='volume', memory_mb=512)


@contextlib.contextmanager
def sampling(db, hosts):
    """Most migrations seen in flight at once: per source host, and in all."""
    seen = {'cluster': 0, **dict.fromkeys(hosts, 0)}
    stop = threading.Event()

    def run():
        while not stop.is_set():
            by_source = db.migrations.active_by_source()
            seen['cluster'] = max(seen['cluster'], sum(by_source.values()))
            for h in hosts:
                seen[h] = max(seen[h], by_source.get(h, 0))
            time.sleep(0.01)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield seen
    finally:
        stop.set()
        t.join()


def _conductor(cluster, **conductor):
    cluster.restart('conductor', conductor=conductor)
    cluster.wait_for(lambda: cluster.cli('host', 'list', timeout=3)[0] == 0,
                     'conductor answering')


def test_drain_keeps_the_per_host_limit(cluster, db):
    guests = _seed(cluster, 'src1', 5)
    # src2 is the next test's: nothing lands there.
    cluster.cli('host', 'disable', 'src2')
    # Every copy off src1 takes a while: the limit is visible.
    cluster.cloud.inject_fault('src1', 'start_migration', delay_s=0.4)
    with sampling(db, ['src1']) as seen:
        rc, drain = cluster.cli('host', 'drain', 'src1', '--max-parallel', '2',
                                timeout=120)
    assert rc == 0, drain
    assert drain['status'] == 'done'
    assert drain['counts']['moved'] == 5, drain
    assert seen['src1'] == 2, seen
    for g in guests:
        (where,) = cluster.cloud.find_guest(g['uuid'])
        assert where.startswith('dst')
    rc, hosts = cluster.cli('host', 'list')
    assert not next(h for h in hosts if h['name'] == 'src1')['enabled']
    for host in ('src1', 'src2'):
        cluster.cli('host', 'enable', host)


def test_drains_keep_the_cluster_limit_and_survive_a_restart(cluster, db):
    _conductor(cluster, drain_max_cluster=2, drain_interval=0.1)
    for host in ('src1', 'src2'):
        _seed(cluster, host, 3)
        cluster.cloud.inject_fault(host, 'start_migration', delay_s=0.4)
    # Neither takes the other's guests.
    cluster.cli('host', 'disable', 'src2')
    with sampling(db, ['src1', 'src2']) as seen:
        drains = []
        for host in ('src1', 'src2'):
            rc, drain = cluster.cli('host', 'drain', host, '--max-parallel', '3',
                                    '--no-wait')
            assert rc == 0, drain
            drains.append(drain['id'])
        # The conductor stops mid-drain; the next one carries on from the
        # database.
        cluster.wait_for(lambda: cluster.cli('drain', 'show', drains[0])[1][
            'counts']['moved'] >= 1, 'a first guest moved')
        _conductor(cluster, drain_max_cluster=2, drain_interval=0.1)
        ends = [cluster.cli('drain', 'show', d, '--wait', timeout=120)[1]
                for d in drains]
    assert [d['status'] for d in ends] == ['done', 'done'], ends
    assert [d['counts']['moved'] for d in ends] == [3, 3], ends
    assert seen['cluster'] <= 2, seen
    assert seen['cluster'] == 2, seen  # both slots were used
    rc, report = cluster.cli('audit')
    assert rc == 0, report


def test_bench_drain_places_every_guest_without_overcommit():
    from ferryman.bench import drain as bench_drain
    report = bench_drain.run(hosts=6, guests=12, max_parallel=2, max_cluster=3,
                             as_json=True, rabbitmq=True)
    assert report['migrations_completed'] == 12, report
    assert report['overcommitted_providers'] == [], report
    assert report['guests_misplaced'] == 0 and report['audit_violations'] == 0
    assert report['ok'] is True
    assert report['request_to_completed_s']['p99'] >= \
        report['request_to_completed_s']['median'] > 0
