"""The conductor on PostgreSQL: its own tables and TaskFlow's in one private cluster.

The in-process cloud (ferryman.sim.cloud) with ``database.connection`` pointed at a
throwaway PostgreSQL server: whole migrations, a rollback, the task history, where
TaskFlow keeps its books, and two conductors racing for the last room on a host.
"""

import socket
import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from conductor.db import api as db_api
from ferryman.common import exception
from ferryman.sim import cloud as sim
from ferryman.testing.servers import PostgreSQLServer
from flows import constants as c
from flows import states

pytestmark = pytest.mark.functional

# Where each subtype goes (the demo cloud: compute2 and compute3 share storage).
ROUTES = {
    'block': ('compute1', 'compute2', 'local'),
    'file-level': ('compute2', 'compute3', 'local'),
    'block-storage': ('compute1', 'compute3', 'volume'),
}


@pytest.fixture(scope='module')
def pg():
    with PostgreSQLServer() as server:
        yield server


@pytest.fixture(scope='module')
def cloud(pg):
    with sim.SimCloud(overrides={'database.connection': pg.url}) as cl:
        yield cl


@pytest.fixture
def engine(pg):
    eng = sa.create_engine(pg.url)
    yield eng
    eng.dispose()


@pytest.fixture
def guest(cloud):
    def make(host, storage, **kwargs):
        name = 'pg-%s' % uuid.uuid4().hex[:8]
        g = cloud.cloud.create_guest(host, name, storage=storage,
                                     data='data of %s' % name, **kwargs)
        cloud.refresh()
        return g

    yield make
    for host in cloud.hosts:
        cloud.cloud.clear_faults(host)


def _usage(cloud):
    return {h['name']: h['used'] for h in cloud.api.list_hosts()}


def _allocations(cloud, consumer):
    return [(a['host'], a['memory_mb']) for a in cloud.db.allocations.list(consumer)]


def test_server_in_a_given_dir_restarts_and_reports_failure(tmp_path):
    # tmp_path sits under a root-only directory: the cluster must still start.
    server = PostgreSQLServer(base_dir=str(tmp_path / 'pg'))
    try:
        server.start()
        eng = sa.create_engine(server.url)
        try:
            with eng.begin() as conn:
                conn.execute(sa.text('CREATE TABLE kept (x int)'))
            server.restart()
            eng.dispose()  # the pool's connections died with the old server
            with eng.connect() as conn:
                assert conn.execute(sa.text('SELECT current_database()')).scalar() \
                    == 'ferryman'
                assert conn.execute(sa.text('SELECT count(*) FROM kept')).scalar() == 0
        finally:
            eng.dispose()
        pids = server.pids
        assert pids
    finally:
        server.stop()
    assert not server.running and not server.pids
    assert (tmp_path / 'pg').exists()  # the caller's directory is left alone

    # A port someone else holds: a RuntimeError with the server's log, no skip.
    busy = PostgreSQLServer()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(('127.0.0.1', busy.port))
    holder.listen(1)
    try:
        with pytest.raises(RuntimeError) as err:
            busy.start(timeout=20)
    finally:
        holder.close()
    assert 'postgresql failed to start' in str(err.value)
    assert str(busy.port) in str(err.value)  # from the log tail
    assert not busy.pids and busy.base_dir is None


def test_conductor_uses_postgresql(cloud, pg):
    assert cloud.db.engine.dialect.name == 'postgresql'
    assert cloud.db.engine.url.port == pg.port
    assert cloud.conductor.manager.runner.backend.engine is cloud.db.engine


@pytest.mark.parametrize('subtype', sorted(ROUTES))
def test_each_subtype_completes(cloud, guest, subtype):
    src, dest, storage = ROUTES[subtype]
    g = guest(src, storage, memory_mb=2048, dirty_rate_mibps=100.0)
    before = _usage(cloud)
    mig = cloud.api.live_migrate(g['name'], host=dest)
    assert mig['status'] == states.ACCEPTED
    mig = cloud.wait(mig['id'])
    assert mig['status'] == states.COMPLETED, mig['error']
    assert mig['subtype'] == subtype
    assert cloud.cloud.find_guest(g['uuid']) == {dest: 'running'}
    assert cloud.db.instances.get(g['uuid'])['host'] == dest
    assert not cloud.db.instances.get(g['uuid'])['migration_id']
    if storage == 'local':
        assert cloud.cloud.read_disk(dest, g['uuid']) == 'data of %s' % g['name']
    # Counted once, on the destination.
    assert _allocations(cloud, g['uuid']) == [(dest, 2048)]
    assert _allocations(cloud, mig['id']) == []
    after = _usage(cloud)
    assert after[src]['memory_mb'] == before[src]['memory_mb'] - 2048
    assert after[dest]['memory_mb'] == before[dest]['memory_mb'] + 2048


def test_failure_rolls_back(cloud, guest):
    src, dest, storage = ROUTES['block']
    g = guest(src, storage, memory_mb=1024, dirty_rate_mibps=10.0)
    before = _usage(cloud)
    cloud.cloud.inject_fault(dest, 'create_local_disks')
    mig = cloud.wait(cloud.api.live_migrate(g['name'], host=dest)['id'])
    assert mig['status'] == states.FAILED, (mig['status'], mig['error'])
    assert 'create_local_disks' in mig['error']
    assert mig['last_known_host'] == src
    assert cloud.cloud.find_guest(g['uuid']) == {src: 'running'}
    assert cloud.cloud.leftovers(dest, g['uuid']) == []
    assert _usage(cloud) == before
    assert _allocations(cloud, g['uuid']) == [(src, 1024)]
    assert _allocations(cloud, mig['id']) == []
    assert not cloud.db.instances.get(g['uuid'])['migration_id']
    seen = {(e['atom'], e['state'])
            for e in cloud.api.get_task_history(mig['id'])}
    assert (c.MIGRATION_SENTINEL, 'REVERTED') in seen
    assert (c.CLAIM_RESOURCES, 'REVERTED') in seen
    assert any(s == 'FAILURE' for _, s in seen)


def test_task_history_and_taskflow_books_are_in_postgresql(cloud, guest, engine):
    src, dest, storage = ROUTES['file-level']
    g = guest(src, storage, memory_mb=512)
    mig = cloud.wait(cloud.api.live_migrate(g['name'], host=dest)['id'])
    assert mig['status'] == states.COMPLETED, mig['error']

    events = cloud.api.get_task_history(mig['id'])
    done = [e['atom'] for e in events if e['state'] == 'SUCCESS']
    assert c.FINISH_MIGRATION in done and c.MIGRATION_SENTINEL in done
    assert all(e['ended_at'] for e in events if e['state'] == 'SUCCESS')
    hosts = {e['atom']: e['host'] for e in events}
    assert hosts[c.START_MIGRATION] == src
    assert hosts[c.PLUG_NETWORKING] == dest

    # Read back straight from the server, not through the conductor.
    with engine.connect() as conn:
        stored = conn.execute(sa.text(
            'SELECT count(*) FROM ferryman_task_events WHERE migration_id = :m'),
            {'m': mig['id']}).scalar()
        assert stored == len(events)
        tables = set(sa.inspect(conn).get_table_names())
        assert {'logbooks', 'flowdetails', 'atomdetails'} <= tables
        flow = conn.execute(sa.text(
            'SELECT f.state, count(a.uuid) FROM logbooks l'
            ' JOIN flowdetails f ON f.parent_uuid = l.uuid'
            ' JOIN atomdetails a ON a.parent_uuid = f.uuid'
            ' WHERE l.name = :name GROUP BY f.uuid, f.state'),
            {'name': 'migration-%s' % mig['id']}).all()
    assert len(flow) == 1, flow
    state, atoms = flow[0]
    assert state == 'SUCCESS'
    assert atoms >= len(set(done))


def _claim_setup(db, capacity_mb, wanted_mb, guests):
    """A destination with room for one guest, and ``guests`` migrations to it."""
    tag = uuid.uuid4().hex[:8]
    info = {'hypervisor_type': 'fake', 'cpu_model': 'x', 'cpu_features': [],
            'vcpus': 64, 'memory_mb': capacity_mb, 'disk_gb': 1000,
            'instances_path': None}
    dest = 'race-dest-%s' % tag
    db.reports.record(dest, info, [])
    migrations = []
    for i in range(guests):
        src = 'race-src-%s-%d' % (tag, i)
        g = {'uuid': str(uuid.uuid4()), 'name': 'race-%s-%d' % (tag, i),
             'vcpus': 1, 'memory_mb': wanted_mb, 'disk_gb': 0, 'storage': 'volume',
             'disks': [], 'volumes': ['v%d' % i], 'sla_class': 'pet',
             'power_state': 'running'}
        db.reports.record(src, dict(info, memory_mb=wanted_mb * 2), [g])
        migrations.append(db.migrations.create({
            'id': str(uuid.uuid4()), 'instance_uuid': g['uuid'], 'source': src,
            'destination': dest, 'subtype': states.BLOCK_STORAGE,
            'block_migration': 'false', 'force': False}))
    return dest, migrations


def test_two_conductors_cannot_both_claim_the_last_room(pg, cloud):
    # Two conductors: separate engines and separate in-process locks, so only the
    # database's row lock stands between their claims.
    dbs = [db_api.Database(pg.url), db_api.Database(pg.url)]
    try:
        dest, migs = _claim_setup(dbs[0], capacity_mb=4096, wanted_mb=3072,
                                  guests=2)
        # Widen the check-then-write window: a conductor that has read the
        # destination's usage waits before writing its claim, so without the
        # lock the other one would read the same usage and claim too.
        racing = threading.local()

        def slow_usage(conn, cursor, statement, *args):
            if getattr(racing, 'on', False) and 'sum(' in statement.lower():
                time.sleep(0.5)

        for db in dbs:
            sa.event.listen(db.engine, 'after_cursor_execute', slow_usage)
        barrier = threading.Barrier(2)
        results = [None, None]

        def claim(i):
            racing.on = True
            barrier.wait()
            try:
                dbs[i].allocations.claim(migs[i]['id'])
                results[i] = 'claimed'
            except exception.InsufficientCapacity as exc:
                results[i] = exc
            except Exception as exc:  # surfaces in the assertion below
                results[i] = repr(exc)

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        elapsed = time.monotonic() - started
        assert not any(t.is_alive() for t in threads)
        assert results.count('claimed') == 1, results
        loser = results[results.index('claimed') ^ 1]
        assert isinstance(loser, exception.InsufficientCapacity), results
        assert 'memory_mb' in str(loser) and dest in str(loser)
        # The second claim really waited for the first one's transaction.
        assert elapsed >= 0.9, elapsed
        claims = dbs[1].allocations.list(host=dest)
        assert [a['memory_mb'] for a in claims] == [3072]
        assert claims[0]['consumer'] == migs[results.index('claimed')]['instance_uuid']
        assert dbs[1].hosts.get(dest)['used']['memory_mb'] == 3072
    finally:
        for db in dbs:
            db.engine.dispose()
