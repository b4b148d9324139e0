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
from taskflow.types import failure as tf_failure

from compute_agent import service as agent_service
from conductor import drain as host_drain
from conductor import placement
from conductor.db import drains as db_drains
from conductor.db import rows
from conductor.db import models
from ferryman.common import exception
from ferryman.common import rpc
from ferryman.cmd import cli
from flows import states


DRAIN_OPTS = ('drain_interval', 'drain_max_cluster', 'drain_lease_expiry',
              'drain_retry_interval', 'drain_capacity_attempts')


@pytest.fixture
def make_host(cloud, doomed):
    """Fresh hosts (each its own simulated agent, ``fake`` options as given) to
    drain, gone after the test with every guest they had, wherever they went."""
    made = []
    conf = cloud.conductor_conf
    conf.set_override('drain_interval', 0.02, group='conductor')

    def make(**fake):
        name = 'drain-%s' % uuid.uuid4().hex[:6]
        agent = agent_service.ComputeService(cloud.conf(name, **{
            'fake.%s' % k: v for k, v in fake.items()})).start()
        cloud.agents[name] = agent
        made.append((name, agent))
        # Its own first report lands first: a report beside it could insert
        # the same new host twice.
        deadline = time.monotonic() + 30
        while not any(h['name'] == name for h in cloud.db.hosts.list()):
            assert time.monotonic() < deadline, 'no report from %s' % name
            time.sleep(0.01)
        cloud.refresh()
        return name

    yield make
    for opt in DRAIN_OPTS:
        conf.clear_override(opt, group='conductor')
    for name, agent in made:
        doomed.extend(i['uuid'] for i in cloud.db.instances.list()
                      if i['name'].startswith(name + '-'))
        del cloud.agents[name]
        agent.server.stop()
        agent.stop()
        rpc.cleanup(agent.conf)
        # What stays of it (guests that could not move) must not reach other
        # tests.
        with cloud.db.session.begin() as s:
            uuids = [i.uuid for i in s.scalars(sa.select(models.Instance).where(
                models.Instance.host == name))]
            for table in (models.Allocation, models.NestedAllocation):
                s.execute(sa.delete(table).where(sa.or_(
                    table.host == name, table.consumer.in_(uuids))))
            s.execute(sa.delete(models.Instance).where(models.Instance.host == name))
            s.execute(sa.delete(models.Provider).where(models.Provider.host == name))
            s.execute(sa.delete(models.Host).where(models.Host.name == name))


@pytest.fixture
def host(make_host):
    return make_host()


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
            by_source = self.db.migrations.active_by_source()
            self.max_host = max(self.max_host, by_source.get(self.host, 0))
            self.max_cluster = max(self.max_cluster, sum(by_source.values()))
            time.sleep(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _drainer(manager):
    """Another drainer of the conductor's (as a second conductor would run)."""
    return host_drain.Drainer(manager.conf, manager.db, manager.admission)


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
        assert cloud.db.hosts.get(host)['enabled'] is False
        drain = _wait_done(cloud, drain['id'])
    assert drain['status'] == 'done'
    assert drain['counts'] == {'pending': 0, 'migrating': 0, 'moved': 6, 'failed': 0}
    assert seen.max_host == max_parallel, (seen.max_host, max_parallel)
    for g in guests:
        where = cloud.db.instances.get(g['uuid'])['host']
        assert where != host
        assert cloud.cloud.find_guest(g['uuid']) == {where: 'running'}
        assert drain['guests'][g['uuid']]['destination'] == where
        mig = cloud.api.get_migration(drain['guests'][g['uuid']]['migration'])
        assert mig['importance'] == 'high' and mig['status'] == states.COMPLETED
    assert cloud.db.allocations.list(host=host) == []
    # Still disabled: nothing is placed back on it.
    assert cloud.db.hosts.get(host)['enabled'] is False


def test_drain_respects_the_cluster_limit(cloud, host):
    _guests(cloud, host, 4)
    cloud.cloud.inject_fault(host, 'start_migration', delay_s=0.2)
    cloud.conductor_conf.set_override('drain_max_cluster', 1, group='conductor')
    with Sampler(cloud.db, host) as seen:
        drain = _wait_done(cloud, cloud.api.drain_host(host, max_parallel=4)['id'])
    assert drain['counts']['moved'] == 4
    assert seen.max_cluster == 1


def test_a_migration_that_ends_wakes_the_drainer(cloud, host):
    # The drainer looks only every minute: the drain ends in seconds only if
    # each migration's end starts the next one at once.
    _guests(cloud, host, 3)
    conf = cloud.conductor_conf
    conf.set_override('drain_interval', 60.0, group='conductor')
    conf.set_override('drain_lease_expiry', 120.0, group='conductor')
    drain = _wait_done(cloud, cloud.api.drain_host(host, max_parallel=1)['id'],
                       timeout=30)
    assert drain['counts']['moved'] == 3, drain


def test_guests_that_cannot_move_are_summarised_with_why(cloud, host):
    movable = _guests(cloud, host, 2)
    huge = cloud.cloud.create_guest(host, host + '-huge', memory_mb=10 ** 7,
                                    storage='volume')
    off = cloud.cloud.create_guest(host, host + '-off', storage='volume')
    with cloud.cloud.editing(host) as state:
        state['guests'][off['uuid']]['power_state'] = 'shutoff'
    cloud.refresh()
    cloud.conductor_conf.set_override('drain_retry_interval', 0.05,
                                      group='conductor')
    cloud.conductor_conf.set_override('drain_capacity_attempts', 2,
                                      group='conductor')
    drain = _wait_done(cloud, cloud.api.drain_host(host)['id'])
    assert drain['status'] == 'done'
    assert drain['counts'] == {'pending': 0, 'migrating': 0, 'moved': 2, 'failed': 2}
    why = {u: g['error'] for u, g in drain['guests'].items() if g['status'] == 'failed'}
    assert set(why) == {huge['uuid'], off['uuid']}
    assert 'no host could take it in 2 attempts' in why[huge['uuid']]
    assert 'No valid destination' in why[huge['uuid']]
    assert 'refused by filter capacity' in why[huge['uuid']]
    # Not a matter of room: no second attempt.
    assert 'shutoff' in why[off['uuid']]
    assert 'attempts' not in drain['guests'][off['uuid']]
    for g in movable:
        assert cloud.db.instances.get(g['uuid'])['host'] != host


def test_a_new_drainer_carries_on_a_recorded_drain(cloud, host):
    guests = _guests(cloud, host, 3)
    manager = cloud.conductor.manager
    manager.drainer.stop()  # the conductor "stops" before the drain begins
    try:
        drain = cloud.api.drain_host(host, max_parallel=2)
        time.sleep(0.2)
        assert cloud.api.get_drain(drain['id'])['counts']['pending'] == 3
        assert all(cloud.db.instances.get(g['uuid'])['host'] == host for g in guests)
        assert cloud.db.drains.get(drain['id'])['owner'] == manager.drainer.owner
    finally:
        # The old conductor stops cleanly (handing its drains back); the
        # restarted one's drainer carries on from the database alone.
        manager.drainer.stop()
        manager.drainer = _drainer(manager).start()
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
    assert cloud.db.hosts.get(host)['enabled'] is True
    cloud.cloud.inject_fault(host, 'start_migration', delay_s=0.5)
    first = cloud.api.drain_host(host)
    with pytest.raises(exception.DrainInProgress) as err:
        cloud.api.drain_host(host)
    assert first['id'] in str(err.value)
    _wait_done(cloud, first['id'])
    with pytest.raises(exception.DrainNotFound):
        cloud.api.get_drain('no-such-drain')


def _owner(cloud, drain_id):
    return cloud.db.drains.get(drain_id)['owner']


def test_one_drainer_holds_a_drain_and_takes_over_a_dead_ones(cloud, host):
    """Two drainers (two conductors): the one asked holds the drain; the other
    leaves it alone until the holder dies and its lease runs out, then carries
    it on; the dead one, were it to wake, can neither start nor write."""
    guests = _guests(cloud, host, 3)
    # Long enough that a pass waiting for the shared sqlite database (other
    # tests' flows still writing) is still inside it.
    lease = 5.0
    cloud.conductor_conf.set_override('drain_lease_expiry', lease, group='conductor')
    manager = cloud.conductor.manager
    first = manager.drainer
    first.stop()  # passes by hand from here on
    second = _drainer(manager)
    try:
        granted = time.monotonic()
        drain = cloud.api.drain_host(host, max_parallel=2)
        assert _owner(cloud, drain['id']) == first.owner
        assert second.run_pass() == []
        time.sleep(0.3)
        assert second.run_pass() == []  # the lease still runs
        assert time.monotonic() - granted < lease, 'the check came too late'
        assert all(cloud.db.instances.get(g['uuid'])['host'] == host
                   for g in guests)
        # The first conductor "dies" (its lease is never handed back) ...
        time.sleep(max(0.0, granted + lease + 0.2 - time.monotonic()))
        assert second.run_pass() == [drain['id']]
        assert _owner(cloud, drain['id']) == second.owner
        started = cloud.api.get_drain(drain['id'])['counts']['migrating']
        assert started == 2
        # ... and a stale pass of it changes nothing.
        assert first.run_pass() == []
        pending = next(u for u, g in cloud.db.drains.get(drain['id'])[
            'guests'].items() if g['status'] == 'pending')
        slot = {'drain_id': drain['id'], 'owner': first.owner, 'max_per_host': 9,
                'max_cluster': 99}
        with pytest.raises(db_drains.NoDrainSlot) as err:
            manager.admission.admit(pending, importance='high', drain_slot=slot)
        assert 'no longer held by %s' % first.owner in str(err.value)
        assert cloud.db.instances.get(pending)['migration_id'] is None
        assert cloud.db.drains.update(drain['id'], owner=first.owner,
                                      status='done') is None
        second.start()
        drain = _wait_done(cloud, drain['id'])
    finally:
        second.stop()
        manager.drainer = _drainer(manager).start()
    assert drain['counts']['moved'] == 3
    # Handed back on a clean stop.
    assert _owner(cloud, drain['id']) is None


def test_a_pass_slower_than_its_lease_keeps_its_drain(cloud, host):
    """A lease that ran out mid-pass, with no other drainer taking the drain,
    is renewed by the next start instead of refusing it (a loaded conductor
    lost every guest of its drains that way)."""
    (g,) = _guests(cloud, host, 1)
    cloud.conductor_conf.set_override('drain_lease_expiry', 1.0, group='conductor')
    manager = cloud.conductor.manager
    manager.drainer.stop()
    try:
        drain = cloud.api.drain_host(host)
        time.sleep(1.2)
        slot = {'drain_id': drain['id'], 'owner': manager.drainer.owner,
                'max_per_host': 9, 'max_cluster': 99}
        # Without a lease to renew it with, a lapsed lease still refuses.
        with pytest.raises(db_drains.NoDrainSlot) as err:
            manager.admission.admit(g['uuid'], importance='high', drain_slot=slot)
        assert 'no longer held' in str(err.value)
        mig = manager.admission.admit(g['uuid'], importance='high',
                                      drain_slot=dict(slot, lease=1.0))
        assert mig['instance_uuid'] == g['uuid']
        row = cloud.db.drains.get(drain['id'])
        assert row['owner'] == manager.drainer.owner
        assert row['lease_expires_at'] > rows.utcnow().isoformat()
        manager.runner.wait(mig['id'])
    finally:
        manager.drainer.stop()
        manager.drainer = _drainer(manager).start()
    assert _wait_done(cloud, drain['id'])['counts']['moved'] == 1


def test_no_slot_at_the_start_is_not_a_failed_request(cloud, host, monkeypatch):
    """A start refused for room (another conductor took the last slot since the
    pass counted) leaves the guest waiting: it is no failed request of its own,
    however often it happens."""
    (g,) = _guests(cloud, host, 1)
    manager = cloud.conductor.manager
    manager.drainer.stop()
    real = cloud.db.drains.create_migration
    refused = []

    def no_room(values, **slot):
        if len(refused) < host_drain.REQUEST_TRIES + 1:
            refused.append(values['instance_uuid'])
            raise db_drains.NoDrainSlot('1 migrations leave %s, at most 1' % host)
        return real(values, **slot)
    monkeypatch.setattr(cloud.db.drains, 'create_migration', no_room)
    drainer = _drainer(manager)
    try:
        drain = drainer.drain(str(uuid.uuid4()), host)
        for _ in range(host_drain.REQUEST_TRIES + 1):
            drainer.run_pass()
        guest = cloud.db.drains.get(drain['id'])['guests'][g['uuid']]
        assert guest['status'] == host_drain.PENDING, guest
        assert 'tries' not in guest
        assert len(refused) == host_drain.REQUEST_TRIES + 1
        drainer.start()
        assert _wait_done(cloud, drain['id'])['counts']['moved'] == 1
    finally:
        drainer.stop()
        manager.drainer = _drainer(manager).start()


def test_limits_hold_across_drainers(cloud, make_host):
    """Two drainers, each holding the drain of its own host, started together:
    never more than the per-host limit leaves a host, nor more than the
    cluster limit in flight, whichever drainer started them."""
    hosts = [make_host(), make_host()]
    for h in hosts:
        _guests(cloud, h, 4)
        cloud.cloud.inject_fault(h, 'start_migration', delay_s=0.2)
    cloud.conductor_conf.set_override('drain_max_cluster', 3, group='conductor')
    manager = cloud.conductor.manager
    other = _drainer(manager)
    try:
        # The second host's drain goes to the second drainer; neither may take
        # the other's guests.
        cloud.db.hosts.set_enabled(hosts[1], False)
        with Sampler(cloud.db, hosts[0]) as seen0, \
                Sampler(cloud.db, hosts[1]) as seen1:
            d0 = cloud.api.drain_host(hosts[0], max_parallel=2)
            d1 = other.drain(str(uuid.uuid4()), hosts[1], 2)
            other.start()
            assert _owner(cloud, d0['id']) == manager.drainer.owner
            assert _owner(cloud, d1['id']) == other.owner
            ends = [_wait_done(cloud, d['id']) for d in (d0, d1)]
    finally:
        other.stop()
    assert [d['counts']['moved'] for d in ends] == [4, 4], ends
    assert (seen0.max_host, seen1.max_host) == (2, 2)
    assert max(seen0.max_cluster, seen1.max_cluster) == 3


def test_a_start_beyond_the_limits_records_nothing(cloud, host):
    (g,) = _guests(cloud, host, 1)
    manager = cloud.conductor.manager
    manager.drainer.stop()
    try:
        drain = cloud.api.drain_host(host)
        for per_host, cluster, why in ((0, 99, 'leave %s, at most 0' % host),
                                       (9, 0, 'in the cluster, at most 0')):
            slot = {'drain_id': drain['id'], 'owner': manager.drainer.owner,
                    'max_per_host': per_host, 'max_cluster': cluster}
            before = len(cloud.db.migrations.list(instance=g['uuid']))
            with pytest.raises(db_drains.NoDrainSlot) as err:
                manager.admission.admit(g['uuid'], drain_slot=slot)
            assert why in str(err.value)
            assert len(cloud.db.migrations.list(instance=g['uuid'])) == before
            assert cloud.db.instances.get(g['uuid'])['migration_id'] is None
    finally:
        manager.drainer.stop()
        manager.drainer = _drainer(manager).start()
    assert _wait_done(cloud, drain['id'])['counts']['moved'] == 1


def test_a_guest_refused_for_room_is_retried_until_a_host_has_room(cloud, make_host):
    host = make_host()
    big = cloud.cloud.create_guest(host, host + '-big', memory_mb=200000,
                                   storage='volume')
    cloud.refresh()
    conf = cloud.conductor_conf
    conf.set_override('drain_retry_interval', 0.3, group='conductor')
    conf.set_override('drain_capacity_attempts', 30, group='conductor')
    drain = cloud.api.drain_host(host)

    def refused():
        g = cloud.api.get_drain(drain['id'])['guests'][big['uuid']]
        return g.get('attempts', 0) >= 1 and g

    deadline = time.time() + 30
    while not refused() and time.time() < deadline:
        time.sleep(0.02)
    g = refused()
    assert g['status'] == 'pending' and 'refused by filter capacity' in g['error']
    # Room appears: a bigger host comes up before the next try.
    roomy = make_host(memory_mb=262144)
    drain = _wait_done(cloud, drain['id'])
    g = drain['guests'][big['uuid']]
    assert (g['status'], g['destination'], g['error']) == ('moved', roomy, None)
    assert 'retry_at' not in g and 1 <= g['attempts'] < 30
    assert cloud.db.instances.get(big['uuid'])['host'] == roomy


def test_a_guest_refused_for_room_gives_up_after_its_attempts(cloud, host):
    huge = cloud.cloud.create_guest(host, host + '-huge', memory_mb=10 ** 7,
                                    storage='volume')
    cloud.refresh()
    conf = cloud.conductor_conf
    conf.set_override('drain_retry_interval', 0.25, group='conductor')
    conf.set_override('drain_capacity_attempts', 3, group='conductor')
    began = time.monotonic()
    drain = _wait_done(cloud, cloud.api.drain_host(host)['id'])
    took = time.monotonic() - began
    g = drain['guests'][huge['uuid']]
    assert g['status'] == 'failed' and g['attempts'] == 3
    assert g['error'].startswith('no host could take it in 3 attempts: ')
    assert 'refused by filter capacity' in g['error']
    assert took >= 0.5  # two waits between three tries
    assert cloud.db.instances.get(huge['uuid'])['host'] == host


@pytest.mark.parametrize('refusal', [
    placement.misfit_error(placement.Misfit('capacity', 'memory_mb', 5, 1,
                                            'memory_mb needs 5, 1 free'), 'h2', 'u'),
    exception.InsufficientCapacity(host='h2', instance='u', resource='vcpus',
                                   requested=4, free=0)])
def test_a_migration_that_found_no_room_is_retried_like_a_refusal(cloud, refusal):
    """Every candidate filled up between the choice and the claim (other drains,
    other conductors): the failed migration counts as an attempt, not an end."""
    conf = cloud.conductor_conf
    conf.set_override('drain_retry_interval', 5.0, group='conductor')
    conf.set_override('drain_capacity_attempts', 2, group='conductor')
    try:
        drainer = _drainer(cloud.conductor.manager)
        drain = {'id': 'd'}
        guest = {'name': 'x', 'status': 'migrating', 'migration': 'm1',
                 'destination': None, 'error': None}

        def failed(mid, error, kind):
            return {'id': mid, 'status': states.FAILED, 'destination': 'h2',
                    'error': error, 'error_kind': kind}

        before = time.time()
        drainer._follow(drain, 'u', guest, failed('m1', refusal.message, refusal.kind))
        assert guest['status'] == 'pending' and guest['migration'] is None
        assert guest['attempts'] == 1 and guest['retry_at'] >= before + 5.0
        assert guest['error'] == 'migration m1 failed: %s' % refusal.message
        guest.update(status='migrating', migration='m2')
        drainer._follow(drain, 'u', guest, failed('m2', refusal.message, refusal.kind))
        assert guest['status'] == 'failed' and guest['attempts'] == 2
        assert guest['error'] == 'no host could take it in 2 attempts: ' \
            'migration m2 failed: %s' % refusal.message
        # Any other failure ends it at once.
        other = {'name': 'y', 'status': 'migrating', 'migration': 'm3'}
        drainer._follow(drain, 'v', other, failed('m3', 'agent on h2 said no', None))
        assert other['status'] == 'failed' and 'attempts' not in other
        assert other['error'] == 'migration m3 failed: agent on h2 said no'
    finally:
        for opt in ('drain_retry_interval', 'drain_capacity_attempts'):
            conf.clear_override(opt, group='conductor')


def test_rewording_the_capacity_error_keeps_the_retries(
        cloud, make_host, monkeypatch):
    """Drains retry on the kind of a refusal, never on its wording: a migration
    whose claim found no room, under any message, is tried again."""
    real = exception.InsufficientCapacity.__init__

    def reworded(self, message=None, **kwargs):
        real(self, message='Sorry, %s is full' % kwargs.get('host'), **kwargs)
    monkeypatch.setattr(exception.InsufficientCapacity, '__init__', reworded)
    src, dest = make_host(), make_host(memory_mb=8192)
    g = cloud.cloud.create_guest(src, src + '-g', memory_mb=2048, storage='volume')
    cloud.refresh()
    manager = cloud.conductor.manager
    # Accepted (its flow saved, not run) before the destination fills up.
    monkeypatch.setattr(manager.runner, 'submit', manager.runner.save)
    mig = cloud.api.live_migrate(g['name'], host=dest)
    cloud.cloud.create_guest(dest, dest + '-filler', memory_mb=8192,
                             storage='volume')
    cloud.refresh()
    manager.runner.resume_all()
    mig = cloud.wait(mig['id'])
    assert mig['status'] == states.FAILED
    assert mig['error'] == 'Sorry, %s is full' % dest
    guest = {'name': g['name'], 'status': 'migrating', 'migration': mig['id'],
             'destination': None, 'error': None}
    _drainer(manager)._follow({'id': 'd'}, g['uuid'], guest, mig)
    assert (guest['status'], guest['migration'], guest['attempts']) == (
        'pending', None, 1)
    assert guest['error'] == 'migration %s failed: Sorry, %s is full' % (
        mig['id'], dest)
    # Refused at the request, reworded too: the same.

    class Refusing(object):
        def admit(self, *args, **kwargs):
            raise exception.InsufficientCapacity(host=dest, instance=g['uuid'])
    drainer = host_drain.Drainer(manager.conf, manager.db, Refusing())
    guest = {'name': g['name'], 'status': 'pending', 'migration': None,
             'destination': None, 'error': None}
    assert drainer._move({'id': 'd', 'host': src, 'max_parallel': 1}, g['uuid'],
                         guest) is False
    assert (guest['status'], guest['attempts'], guest['error']) == (
        'pending', 1, 'Sorry, %s is full' % dest)


@pytest.mark.parametrize('error,kind', [
    (exception.InsufficientCapacity(message='full'), exception.NO_ROOM),
    (exception.NoValidHost(message='none'), exception.NO_ROOM),
    (exception.InstanceNotRunning(message='off'), None),
    (RuntimeError('boom'), None)])
def test_a_saved_failure_keeps_its_errors_kind(error, kind):
    """The sentinel reads failures that may have been saved and loaded again
    (a resumed flow): their exception is gone, their class names are left."""
    try:
        raise error
    except Exception:
        failure = tf_failure.Failure()
    loaded = tf_failure.Failure.from_dict(failure.to_dict())
    assert loaded.exception is None
    assert exception.kind_named(loaded) == kind


def test_a_bad_lease_expiry_is_refused_naming_it(cloud):
    conf = cloud.conductor_conf
    conf.set_override('drain_lease_expiry', 1.0, group='conductor')
    conf.set_override('drain_interval', 2.0, group='conductor')
    try:
        with pytest.raises(exception.InvalidArgument) as err:
            _drainer(cloud.conductor.manager)
    finally:
        for opt in ('drain_lease_expiry', 'drain_interval'):
            conf.clear_override(opt, group='conductor')
    assert 'drain_lease_expiry' in str(err.value) and '1.0' in str(err.value)


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
    assert drain == host_drain.with_counts(cloud.db.drains.get(drain['id']))
    assert cloud.db.drains.list(host=host, status=db_drains.DRAIN_DONE)[0]['id'] == \
        drain['id']


@pytest.mark.parametrize('kwargs,named', [
    ({'hosts': 1}, 'hosts'), ({'guests': 0}, 'guests'),
    ({'max_parallel': 0}, 'max_parallel'), ({'max_cluster': 'many'}, 'max_cluster'),
    ({'workers': True}, 'workers'), ({'agent_processes': -1}, 'agent_processes'),
    ({'agent_processes': 2}, 'agent_processes')])
def test_bench_drain_refuses_bad_sizes_before_starting(kwargs, named):
    from ferryman.bench import drain as bench_drain
    with pytest.raises(exception.InvalidArgument) as err:
        bench_drain.run(**kwargs)
    assert named in str(err.value) and repr(list(kwargs.values())[0]) in str(err.value)


def test_overcommit_check_sees_a_provider_over_capacity(cloud, host):
    from ferryman.bench import drain as bench_drain
    assert [o for o in bench_drain.overcommit(cloud.db) if o[0] == host] == []
    with cloud.db.session.begin() as s:
        s.add(models.Allocation(consumer=str(uuid.uuid4()), host=host, vcpus=1,
                                memory_mb=10 ** 7, disk_gb=0))
    assert [o[:2] for o in bench_drain.overcommit(cloud.db) if o[0] == host] == [
        (host, 'memory_mb')]


def test_cli_shows_a_running_drains_owner_and_guests_waiting_for_room(capsys):
    guests = {
        'u1': {'name': 'g1', 'status': 'pending', 'migration': None,
               'destination': None, 'error': 'no host has room', 'attempts': 2},
        'u2': {'name': 'g2', 'status': 'moved', 'migration': 'm2',
               'destination': 'h2', 'error': None}}
    cli._print_drain(host_drain.with_counts({
        'id': 'd1', 'host': 'h1', 'status': 'running', 'guests': guests,
        'owner': 'conductor.42.abcd', 'lease_expires_at': '2026-01-01T00:00:30Z'}))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ('Drain d1 of h1: running; 2 guests: 1 moved, 0 could not '
                      'move, 0 migrating, 1 pending')
    assert out[1] == 'Advanced by conductor.42.abcd, lease until 2026-01-01T00:00:30Z'
    assert out[2:] == ['Waiting for room:',
                       '  g1 (u1): 2 attempts so far, last: no host has room']


@pytest.mark.parametrize('processes,url,named', [
    (0, 'rabbit://u:p@127.0.0.1:5672/', 'agent processes'),
    (1.5, 'rabbit://u:p@127.0.0.1:5672/', 'agent processes'),
    (2, 'kombu+memory://localhost//', 'transport_url')])
def test_agent_pool_refuses_what_it_cannot_run(tmp_path, processes, url, named):
    from ferryman.sim import agent_pool
    with pytest.raises(exception.InvalidArgument) as err:
        agent_pool.AgentPool({'h1': None}, {'transport_url': url,
                                            'state_path': str(tmp_path)}, processes)
    assert named in str(err.value)


def test_an_agent_process_that_cannot_start_says_why(tmp_path):
    from ferryman.sim import agent_pool
    pool = agent_pool.AgentPool(
        {'h1': None}, {'transport_url': 'rabbit://u:p@127.0.0.1:9/',
                       'state_path': str(tmp_path),
                       'auth.insecure_allow_unsigned': True,
                       'compute.virt_driver': 'no-such-driver'}, 1)
    with pytest.raises(exception.FerrymanError) as err:
        pool.start()
    assert 'agent process 0 did not start' in str(err.value)
    assert 'no-such-driver' in str(err.value)
    assert pool.procs == []
