"""Host drains on the in-process cloud: limits per host and per cluster, the
summary of guests that could not move, a drain carried on by a new drainer (a
restarted conductor), bad input, and the CLI.

Each test drains a host of its own, added to the shared cloud for the test and
removed after it (a second cloud in this process would share its RPC topics).
"""

import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from compute_agent import service as agent_service
from conductor import drain as host_drain
from conductor.db import api as db_api
from conductor.db import models
from ferryman import exception
from ferryman import rpc
from ferryman.cmd import cli
from flows import states


@pytest.fixture
def host(cloud, doomed):
    """A fresh host (its own simulated agent) to drain, gone after the test with
    every guest it had, wherever they went."""
    name = 'drain-%s' % uuid.uuid4().hex[:6]
    agent = agent_service.ComputeService(cloud.conf(name)).start()
    cloud.agents[name] = agent
    cloud.refresh()
    conf = cloud.conductor_conf
    conf.set_override('drain_interval', 0.02, group='conductor')
    yield name
    conf.clear_override('drain_interval', group='conductor')
    conf.clear_override('drain_max_cluster', group='conductor')
    doomed.extend(i['uuid'] for i in cloud.db.list_instances()
                  if i['name'].startswith(name + '-'))
    del cloud.agents[name]
    agent.server.stop()
    agent.stop()
    rpc.cleanup(agent.conf)
    # What stays of it (guests that could not move) must not reach other tests.
    with cloud.db.session.begin() as s:
        uuids = [i.uuid for i in s.scalars(sa.select(models.Instance).where(
            models.Instance.host == name))]
        for table in (models.Allocation, models.NestedAllocation):
            s.execute(sa.delete(table).where(sa.or_(
                table.host == name, table.consumer.in_(uuids))))
        s.execute(sa.delete(models.Instance).where(models.Instance.host == name))
        s.execute(sa.delete(models.Provider).where(models.Provider.host == name))
        s.execute(sa.delete(models.Host).where(models.Host.name == name))


def _guests(cloud, host, n, **kwargs):
    out = []
    for i in range(n):
        kwargs.setdefault('disks', [{'name': 'root', 'size_gb': 1, 'format': 'qcow2'}])
        out.append(cloud.cloud.create_guest(host, '%s-g%d' % (host, i),
                                            memory_mb=512, **kwargs))
    cloud.refresh()
    return out


class Sampler(object):
    """Most migrations seen in flight at once, leaving ``host`` and anywhere."""

    def __init__(self, db, host):
        self.db, self.host = db, host
        self.max_host = self.max_cluster = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.max_host = max(self.max_host,
                                self.db.count_active_migrations(source=self.host))
            self.max_cluster = max(self.max_cluster, self.db.count_active_migrations())
            time.sleep(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _wait_done(cloud, drain_id, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        drain = cloud.api.get_drain(drain_id)
        if drain['status'] != 'running':
            return drain
        time.sleep(0.05)
    raise AssertionError('drain %s not done: %s' % (drain_id, drain))


@pytest.mark.parametrize('max_parallel', [1, 3])
def test_drain_moves_every_guest_within_the_per_host_limit(cloud, host, max_parallel):
    guests = _guests(cloud, host, 6)
    # Each migration holds its source for a while: the limit shows.
    cloud.cloud.inject_fault(host, 'start_migration', delay_s=0.2)
    with Sampler(cloud.db, host) as seen:
        drain = cloud.api.drain_host(host, max_parallel=max_parallel)
        assert drain['status'] == 'running' and drain['total'] == 6
        assert cloud.db.get_host(host)['enabled'] is False
        drain = _wait_done(cloud, drain['id'])
    assert drain['status'] == 'done'
    assert drain['counts'] == {'pending': 0, 'migrating': 0, 'moved': 6, 'failed': 0}
    assert seen.max_host == max_parallel, (seen.max_host, max_parallel)
    for g in guests:
        where = cloud.db.get_instance(g['uuid'])['host']
        assert where != host
        assert cloud.cloud.find_guest(g['uuid']) == {where: 'running'}
        assert drain['guests'][g['uuid']]['destination'] == where
        mig = cloud.api.get_migration(drain['guests'][g['uuid']]['migration'])
        assert mig['importance'] == 'high' and mig['status'] == states.COMPLETED
    assert cloud.db.allocations(host=host) == []
    # Still disabled: nothing is placed back on it.
    assert cloud.db.get_host(host)['enabled'] is False


def test_drain_respects_the_cluster_limit(cloud, host):
    _guests(cloud, host, 4)
    cloud.cloud.inject_fault(host, 'start_migration', delay_s=0.2)
    cloud.conductor_conf.set_override('drain_max_cluster', 1, group='conductor')
    with Sampler(cloud.db, host) as seen:
        drain = _wait_done(cloud, cloud.api.drain_host(host, max_parallel=4)['id'])
    assert drain['counts']['moved'] == 4
    assert seen.max_cluster == 1


def test_guests_that_cannot_move_are_summarised_with_why(cloud, host):
    movable = _guests(cloud, host, 2)
    huge = cloud.cloud.create_guest(host, host + '-huge', memory_mb=10 ** 7,
                                    storage='volume')
    off = cloud.cloud.create_guest(host, host + '-off', storage='volume')
    with cloud.cloud.editing(host) as state:
        state['guests'][off['uuid']]['power_state'] = 'shutoff'
    cloud.refresh()
    drain = _wait_done(cloud, cloud.api.drain_host(host)['id'])
    assert drain['status'] == 'done'
    assert drain['counts'] == {'pending': 0, 'migrating': 0, 'moved': 2, 'failed': 2}
    why = {u: g['error'] for u, g in drain['guests'].items() if g['status'] == 'failed'}
    assert set(why) == {huge['uuid'], off['uuid']}
    assert 'No valid destination' in why[huge['uuid']]
    assert 'refused by filter capacity' in why[huge['uuid']]
    assert 'shutoff' in why[off['uuid']]
    for g in movable:
        assert cloud.db.get_instance(g['uuid'])['host'] != host


def test_a_new_drainer_carries_on_a_recorded_drain(cloud, host):
    guests = _guests(cloud, host, 3)
    manager = cloud.conductor.manager
    manager.drainer.stop()  # the conductor "stops" before the drain begins
    try:
        drain = cloud.api.drain_host(host, max_parallel=2)
        time.sleep(0.2)
        assert cloud.api.get_drain(drain['id'])['counts']['pending'] == 3
        assert all(cloud.db.get_instance(g['uuid'])['host'] == host for g in guests)
    finally:
        # The "restarted" conductor's drainer, from the database alone.
        manager.drainer = host_drain.Drainer(manager).start()
    drain = _wait_done(cloud, drain['id'])
    assert drain['counts']['moved'] == 3
    assert cloud.api.list_drains(host=host)[0]['id'] == drain['id']


def test_bad_drain_requests_are_refused_naming_the_value(cloud, host):
    _guests(cloud, host, 1)
    for bad in (0, -1, 'two', True, 1.5, 10 ** 6):
        with pytest.raises(exception.InvalidArgument) as err:
            cloud.api.drain_host(host, max_parallel=bad)
        assert repr(bad) in str(err.value) and 'max_parallel' in str(err.value)
    with pytest.raises(exception.HostNotFound) as err:
        cloud.api.drain_host('no-such-host')
    assert 'no-such-host' in str(err.value)
    # Nothing recorded, the host still enabled.
    assert cloud.api.list_drains(host=host) == []
    assert cloud.db.get_host(host)['enabled'] is True
    cloud.cloud.inject_fault(host, 'start_migration', delay_s=0.5)
    first = cloud.api.drain_host(host)
    with pytest.raises(exception.DrainInProgress) as err:
        cloud.api.drain_host(host)
    assert first['id'] in str(err.value)
    _wait_done(cloud, first['id'])
    with pytest.raises(exception.DrainNotFound):
        cloud.api.get_drain('no-such-drain')


@pytest.fixture
def cli_conf(tmp_path, cloud):
    path = tmp_path / 'ferryman.conf'
    path.write_text('[DEFAULT]\ntransport_url = %s\n[oslo_messaging_rabbit]\n'
                    'heartbeat_timeout_threshold = 0\n' % cloud.overrides['transport_url'])
    return str(path)


def test_cli_drain_shows_progress_and_summary(cloud, host, cli_conf, capsys):
    _guests(cloud, host, 2)
    stuck = cloud.cloud.create_guest(host, host + '-off', storage='volume')
    with cloud.cloud.editing(host) as state:
        state['guests'][stuck['uuid']]['power_state'] = 'shutoff'
    cloud.refresh()
    rc = cli.main(['host', 'drain', host, '--max-parallel', '2',
                   '--config-file', cli_conf])
    out = capsys.readouterr().out
    assert rc == 1  # one guest could not move
    assert 'draining %s' % host in out
    assert '3 guests: 2 moved, 1 could not move' in out
    assert host + '-off' in out and 'shutoff' in out
    rc = cli.main(['drain', 'list', '--host', host, '--json', '--config-file',
                   cli_conf])
    assert rc == 0 and host in capsys.readouterr().out


def test_cli_refuses_a_bad_max_parallel(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(['host', 'drain', 'h', '--max-parallel', '0'])
    assert exit_.value.code == 2
    assert "invalid value '0'" in capsys.readouterr().err


def test_drain_counts_match_the_database(cloud, host):
    _guests(cloud, host, 2)
    drain = _wait_done(cloud, cloud.api.drain_host(host)['id'])
    assert drain == host_drain.with_counts(cloud.db.get_drain(drain['id']))
    assert cloud.db.list_drains(host=host, status=db_api.DRAIN_DONE)[0]['id'] == \
        drain['id']


@pytest.mark.parametrize('kwargs,named', [
    ({'hosts': 1}, 'hosts'), ({'guests': 0}, 'guests'),
    ({'max_parallel': 0}, 'max_parallel'), ({'max_cluster': 'many'}, 'max_cluster'),
    ({'workers': True}, 'workers')])
def test_bench_drain_refuses_bad_sizes_before_starting(kwargs, named):
    from ferryman import bench_drain
    with pytest.raises(exception.InvalidArgument) as err:
        bench_drain.run(**kwargs)
    assert named in str(err.value) and repr(list(kwargs.values())[0]) in str(err.value)


def test_overcommit_check_sees_a_provider_over_capacity(cloud, host):
    from ferryman import bench_drain
    assert [o for o in bench_drain.overcommit(cloud.db) if o[0] == host] == []
    with cloud.db.session.begin() as s:
        s.add(models.Allocation(consumer=str(uuid.uuid4()), host=host, vcpus=1,
                                memory_mb=10 ** 7, disk_gb=0))
    assert [o[:2] for o in bench_drain.overcommit(cloud.db) if o[0] == host] == [
        (host, 'memory_mb')]
