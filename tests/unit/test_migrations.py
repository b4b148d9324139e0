"""Whole migrations on the in-process cloud: happy paths, every revert, bad input."""

import os

import pytest

from compute_agent.virt import driver
from ferryman.common import exception
from flows import constants as c
from flows import selection
from flows import states

# Where each subtype goes (the demo cloud: compute2 and compute3 share storage).
ROUTES = {
    'block': ('compute1', 'compute2', 'local'),
    'file-level': ('compute2', 'compute3', 'local'),
    'block-storage': ('compute1', 'compute3', 'volume'),
}

# Driver steps that change something before switch-over, per subtype (the fault
# names of the simulated driver), and the host they run on.
CHANGING_STEPS = {
    'block': [('check_destination', 'dest'), ('check_source', 'src'),
              ('create_local_disks', 'dest'), ('plug_networking', 'dest'),
              ('start_migration', 'src'), ('migration_job', 'src')],
    'file-level': [('check_destination', 'dest'), ('check_source', 'src'),
                   ('plug_networking', 'dest'), ('start_migration', 'src'),
                   ('migration_job', 'src')],
    'block-storage': [('check_destination', 'dest'), ('check_source', 'src'),
                      ('connect_volumes', 'dest'), ('plug_networking', 'dest'),
                      ('start_migration', 'src'), ('migration_job', 'src')],
}
MATRIX = [(s, step, where) for s, steps in CHANGING_STEPS.items()
          for step, where in steps]


def _usage(cloud):
    return {h['name']: h['used'] for h in cloud.api.list_hosts()}


def _allocations(cloud, consumer):
    return [(a['host'], a['memory_mb']) for a in cloud.db.allocations.list(consumer)]


def _probe_left(cloud, host, mig_id):
    """Whether the migration's storage probe is still in the host's instance
    directory."""
    path = cloud.cloud.load(host)['info']['instances_path']
    return driver.PROBE_PREFIX + selection.probe_token(mig_id) in os.listdir(path)


# The statuses each subtype's flow records, in order: its state machine's path.
STATUS_PATHS = {
    'block': [states.PREPARING, states.COPYING_DISKS, states.RUNNING,
              states.FINISHING, states.COMPLETED],
    'file-level': [states.PREPARING, states.RUNNING, states.FINISHING,
                   states.COMPLETED],
    'block-storage': [states.PREPARING, states.CONNECTING_VOLUMES, states.RUNNING,
                      states.FINISHING, states.COMPLETED],
}


@pytest.fixture
def statuses(cloud, monkeypatch):
    """migration id -> the statuses the conductor recorded for it, in order."""
    seen = {}
    for name in ('advance', 'enter_post_copy', 'switch_over'):
        def recording(migration_id, *args,
                      _real=getattr(cloud.db.migrations, name), **kwargs):
            mig = _real(migration_id, *args, **kwargs)
            seen.setdefault(migration_id, []).append(mig['status'])
            return mig
        monkeypatch.setattr(cloud.db.migrations, name, recording)
    return seen


@pytest.mark.parametrize('subtype', sorted(ROUTES))
def test_each_subtype_passes_its_own_states(cloud, guest, statuses, subtype):
    src, dest, storage = ROUTES[subtype]
    g = guest(src, storage, memory_mb=1024)
    mig = cloud.wait(cloud.api.live_migrate(g['name'], host=dest)['id'])
    assert mig['status'] == states.COMPLETED, mig['error']
    assert statuses[mig['id']] == STATUS_PATHS[subtype]
    assert set(STATUS_PATHS[subtype]) <= set(states.MACHINES[subtype].states)


def test_undone_volume_connection_is_preparing_again(cloud, guest, statuses):
    src, dest, storage = ROUTES['block-storage']
    g = guest(src, storage, memory_mb=1024)
    cloud.cloud.inject_fault(dest, 'plug_networking')
    mig = cloud.wait(cloud.api.live_migrate(g['name'], host=dest)['id'])
    assert mig['status'] == states.FAILED
    assert statuses[mig['id']] == [states.PREPARING, states.CONNECTING_VOLUMES,
                                   states.PREPARING, states.FAILED]


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
    assert cloud.cloud.leftovers(src, g['uuid']) == []
    assert cloud.api.list_instances(host=dest)[-1:] and \
        cloud.db.instances.get(g['uuid'])['host'] == dest
    if storage == 'local':
        assert cloud.cloud.read_disk(dest, g['uuid']) == 'data of %s' % g['name']
    # Counted once, on the destination.
    assert _allocations(cloud, g['uuid']) == [(dest, 2048)]
    assert _allocations(cloud, mig['id']) == []
    after = _usage(cloud)
    assert after[src]['memory_mb'] == before[src]['memory_mb'] - 2048
    assert after[dest]['memory_mb'] == before[dest]['memory_mb'] + 2048
    assert mig['stats']['data_sent_mb'] >= 2048
    events = cloud.api.get_task_history(mig['id'])
    done = [e['atom'] for e in events if e['state'] == 'SUCCESS']
    assert c.FINISH_MIGRATION in done and c.MIGRATION_SENTINEL in done
    assert all(e['ended_at'] for e in events if e['state'] == 'SUCCESS')
    hosts = {e['atom']: e['host'] for e in events}
    assert hosts[c.START_MIGRATION] == src
    assert hosts[c.PLUG_NETWORKING] == dest
    assert not cloud.db.instances.get(g['uuid'])['migration_id']


def test_a_volume_backed_guest_moves_its_volumes_even_on_a_shared_directory(
        cloud, guest):
    # compute2 and compute3 share their instance directory: the volumes must
    # still be connected on the destination and let go on the source.
    g = guest('compute2', 'volume')
    mig = cloud.wait(cloud.api.live_migrate(g['name'], host='compute3')['id'])
    assert (mig['status'], mig['subtype']) == (states.COMPLETED,
                                               states.BLOCK_STORAGE)
    assert cloud.cloud.find_guest(g['uuid']) == {'compute3': 'running'}
    assert cloud.cloud.leftovers('compute2', g['uuid']) == []
    cloud.refresh()
    assert cloud.api.audit()['violations'] == []


@pytest.mark.parametrize('subtype,step,where', MATRIX)
def test_failure_at_each_step_rolls_back(cloud, guest, subtype, step, where):
    src, dest, storage = ROUTES[subtype]
    g = guest(src, storage, memory_mb=1024, dirty_rate_mibps=10.0)
    before = _usage(cloud)
    # The request's own checks call the check steps once; fail the flow's call.
    skip = 1 if step.startswith('check_') else 0
    cloud.cloud.inject_fault(dest if where == 'dest' else src, step, skip=skip)
    mig = cloud.wait(cloud.api.live_migrate(g['name'], host=dest)['id'])
    assert mig['status'] == states.FAILED, (mig['status'], mig['error'])
    assert step in mig['error']
    assert mig['last_known_host'] == src
    assert cloud.cloud.find_guest(g['uuid']) == {src: 'running'}
    assert cloud.cloud.leftovers(dest, g['uuid']) == []
    assert not _probe_left(cloud, dest, mig['id'])
    assert mig['rollback_errors'] == []
    assert 'guest:running' in cloud.cloud.leftovers(src, g['uuid'])
    assert _usage(cloud) == before
    assert _allocations(cloud, g['uuid']) == [(src, 1024)]
    assert _allocations(cloud, mig['id']) == []
    assert not cloud.db.instances.get(g['uuid'])['migration_id']
    states_seen = {(e['atom'], e['state']) for e in
                   cloud.api.get_task_history(mig['id'])}
    assert (c.MIGRATION_SENTINEL, 'REVERTED') in states_seen
    assert any(s == 'FAILURE' for _, s in states_seen)
    # The guest can be migrated again once the fault is gone.
    cloud.cloud.clear_faults(dest if where == 'dest' else src)
    again = cloud.wait(cloud.api.live_migrate(g['name'], host=dest)['id'])
    assert again['status'] == states.COMPLETED, again['error']


@pytest.mark.parametrize('subtype', sorted(ROUTES))
@pytest.mark.parametrize('step', ['post_migration_source',
                                  'post_migration_destination'])
def test_failure_after_switch_over_is_error_never_rollback(
        cloud, guest, undo_calls, subtype, step):
    src, dest, storage = ROUTES[subtype]
    g = guest(src, storage, memory_mb=1024)
    cloud.cloud.inject_fault(src if step.endswith('source') else dest, step)
    mig = cloud.wait(cloud.api.live_migrate(g['name'], host=dest)['id'])
    assert mig['status'] == states.ERROR
    assert mig['last_known_host'] == dest
    # Not even asked: the conductor's own guard, whatever the agents would say
    # (they refuse too, which would show here as rollback errors).
    assert [u for u in undo_calls if u[2] == g['uuid']] == []
    assert mig['rollback_errors'] == []
    # The guest keeps running where it went; what it uses there is untouched.
    assert cloud.cloud.find_guest(g['uuid']) == {dest: 'running'}
    if storage == 'local':
        assert cloud.cloud.read_disk(dest, g['uuid']) == 'data of %s' % g['name']
    left = cloud.cloud.leftovers(dest, g['uuid'])
    assert 'port' in left and 'guest:running' in left
    if subtype == 'block-storage':
        assert ['volume:' + v for v in g['volumes']] == \
            [x for x in left if x.startswith('volume:')]
    assert _allocations(cloud, g['uuid']) == [(dest, 1024)]
    assert _allocations(cloud, mig['id']) == []
    assert cloud.db.instances.get(g['uuid'])['host'] == dest
    assert not cloud.db.instances.get(g['uuid'])['migration_id']


def test_transient_failure_after_switch_over_is_retried(cloud, guest):
    src, dest, _ = ROUTES['block']
    g = guest(src, 'local')
    cloud.cloud.inject_fault(src, 'post_migration_source', times=1)
    mig = cloud.wait(cloud.api.live_migrate(g['name'], host=dest)['id'])
    assert mig['status'] == states.COMPLETED, mig['error']
    assert cloud.cloud.leftovers(src, g['uuid']) == []


def test_auto_picks_subtype_and_scheduler_picks_host(cloud, guest):
    g = guest('compute1', 'volume')
    mig = cloud.wait(cloud.api.live_migrate(g['name'])['id'])
    assert mig['status'] == states.COMPLETED, mig['error']
    assert mig['subtype'] == 'block-storage'
    assert mig['destination'] in ('compute2', 'compute3')


def test_second_request_for_migrating_guest_is_refused(cloud, stuck):
    g = stuck()
    first = cloud.api.live_migrate(g['name'], host='compute2')
    with pytest.raises(exception.InstanceAlreadyMigrating) as err:
        cloud.api.live_migrate(g['name'], host='compute2')
    assert first['id'] in str(err.value)
    cloud.api.abort_migration(first['id'])
    assert cloud.wait(first['id'])['status'] == states.CANCELLED
    assert cloud.cloud.find_guest(g['uuid']) == {'compute1': 'running'}


@pytest.mark.parametrize('kwargs,error,named', [
    ({'instance': 'no-such-guest'}, exception.InstanceNotFound, 'no-such-guest'),
    ({'host': 'no-such-host'}, exception.HostNotFound, 'no-such-host'),
    ({'host': 'compute1'}, exception.DestinationSameAsSource, 'compute1'),
    ({'block_migration': 'maybe'}, exception.InvalidArgument, 'maybe'),
    ({'block_migration': 'false'}, exception.StorageMismatch, 'false'),
    ({'force': 'yes'}, exception.InvalidArgument, 'yes'),
    ({'instance': 42}, exception.InvalidArgument, '42'),
    ({'host': ['compute2']}, exception.InvalidArgument, 'compute2'),
])
def test_bad_input_changes_nothing(cloud, guest, kwargs, error, named):
    g = guest('compute1', 'local')
    args = dict({'instance': g['name'], 'host': 'compute2'}, **kwargs)
    before = (cloud.api.list_migrations(), _usage(cloud))
    with pytest.raises(error) as err:
        cloud.api.live_migrate(**args)
    assert named in str(err.value)
    assert (cloud.api.list_migrations(), _usage(cloud)) == before
    assert cloud.cloud.leftovers('compute2', g['uuid']) == []
    assert not cloud.db.instances.get(g['uuid'])['migration_id']


def test_host_disabled_and_down_are_refused(cloud, guest):
    g = guest('compute1', 'local')
    cloud.api.set_host_enabled('compute2', False, 'maintenance')
    try:
        with pytest.raises(exception.HostUnavailable) as err:
            cloud.api.live_migrate(g['name'], host='compute2')
        assert 'compute2' in str(err.value) and 'maintenance' in str(err.value)
    finally:
        cloud.api.set_host_enabled('compute2', True)


def test_not_enough_capacity_is_refused(cloud, guest):
    g = guest('compute1', 'local', memory_mb=500000)
    with pytest.raises(exception.InsufficientCapacity) as err:
        cloud.api.live_migrate(g['name'], host='compute2')
    assert 'memory_mb' in str(err.value) and 'compute2' in str(err.value)
    with pytest.raises(exception.NoValidHost):
        cloud.api.live_migrate(g['name'])


def test_refusal_under_a_request_id_is_recorded_and_only_then(cloud, guest):
    # Nova's API answers 202 before asking from 2.34: the refusal must be seen later.
    g = guest('compute1', 'local', memory_mb=500000)
    with pytest.raises(exception.InsufficientCapacity):
        cloud.api.live_migrate(g['name'], host='compute2')
    assert cloud.api.list_refused_requests(g['name']) == []
    with pytest.raises(exception.InsufficientCapacity) as err:
        cloud.api.live_migrate(g['name'], host='compute2', request_id='req-r1')
    (refused,) = cloud.api.list_refused_requests(g['uuid'])
    assert (refused['request_id'], refused['instance_uuid'], refused['action'],
            refused['host'], refused['error']) == (
        'req-r1', g['uuid'], 'live-migration', 'compute2', err.value.message)
    assert cloud.api.list_migrations(instance=g['uuid']) == []
    # A guest nobody knows has nothing to show it on: refused, nothing recorded.
    with pytest.raises(exception.InstanceNotFound):
        cloud.api.live_migrate('no-such-guest', request_id='req-r2')
    with pytest.raises(exception.InvalidArgument):
        cloud.api.live_migrate(g['name'], request_id='bad id!')


def test_guest_not_running_is_refused(cloud, guest):
    g = guest('compute1', 'local')
    with cloud.cloud.editing('compute1') as state:
        state['guests'][g['uuid']]['power_state'] = 'shutoff'
    cloud.refresh()
    with pytest.raises(exception.InstanceNotRunning) as err:
        cloud.api.live_migrate(g['name'], host='compute2')
    assert g['name'] in str(err.value) and 'shutoff' in str(err.value)


def test_failure_in_request_checks_records_nothing(cloud, guest):
    g = guest('compute1', 'local')
    cloud.cloud.inject_fault('compute2', 'check_destination')
    before = cloud.api.list_migrations()
    with pytest.raises(exception.AgentStepFailed) as err:
        cloud.api.live_migrate(g['name'], host='compute2')
    assert 'check_destination' in str(err.value)
    assert cloud.api.list_migrations() == before
    assert cloud.cloud.leftovers('compute2', g['uuid']) == []


def test_unknown_migration_and_filters(cloud):
    with pytest.raises(exception.MigrationNotFound):
        cloud.api.get_migration('nope')
    with pytest.raises(exception.InvalidArgument) as err:
        cloud.api.list_migrations(status='bogus')
    assert 'bogus' in str(err.value)
    assert all(m['status'] == states.COMPLETED
               for m in cloud.api.list_migrations(status=states.COMPLETED))


def test_outbound_migrations_per_host_are_capped(cloud, stuck):
    cap = cloud.conductor_conf.conductor.max_outbound_per_host
    guests = [stuck() for _ in range(cap + 1)]
    migs = [cloud.api.live_migrate(g['name'], host='compute2') for g in guests]
    compute = cloud.conductor.manager.compute
    import time
    deadline = time.time() + 30
    while time.time() < deadline:
        statuses = [cloud.api.get_migration(m['id'])['status'] for m in migs]
        if statuses.count(states.RUNNING) == cap:
            break
        time.sleep(0.02)
    assert statuses.count(states.RUNNING) == cap
    assert statuses.count(states.ACCEPTED) == 1  # queued behind the cap
    for g in guests:  # end each running job; the queued one starts, then ends
        compute.abort_migration('compute1', g['uuid'])
    while True:
        pending = [m for m in migs
                   if cloud.api.get_migration(m['id'])['status'] not in states.TERMINAL]
        if not pending:
            break
        for m in pending:
            compute.abort_migration('compute1', m['instance_uuid'])
        time.sleep(0.05)
    for g in guests:
        assert cloud.cloud.find_guest(g['uuid']) == {'compute1': 'running'}


@pytest.mark.parametrize('subtype,undo', [('block', 'delete_local_disks'),
                                          ('block-storage', 'disconnect_volumes'),
                                          ('file-level', 'unplug_networking')])
def test_failed_rollback_is_error_for_an_operator(cloud, guest, subtype, undo):
    src, dest, storage = ROUTES[subtype]
    g = guest(src, storage)
    cloud.cloud.inject_fault(src, 'start_migration')
    cloud.cloud.inject_fault(dest, undo)
    mig = cloud.wait(cloud.api.live_migrate(g['name'], host=dest)['id'])
    assert mig['status'] == states.ERROR
    assert undo in mig['error'] and 'rollback incomplete' in mig['error']
    # Everything else was still undone, and the guest never left the source.
    assert cloud.cloud.find_guest(g['uuid']) == {src: 'running'}
    assert _allocations(cloud, g['uuid']) == [(src, g['memory_mb'])]
    assert not cloud.db.instances.get(g['uuid'])['migration_id']
    events = {(e['atom'], e['state']) for e in cloud.api.get_task_history(mig['id'])}
    assert (c.CLAIM_RESOURCES, 'REVERTED') in events


def test_errors_carry_no_remote_traceback(cloud, guest):
    g = guest('compute1', 'local')
    cloud.cloud.inject_fault('compute2', 'create_local_disks')
    mig = cloud.wait(cloud.api.live_migrate(g['name'], host='compute2')['id'])
    assert mig['error'] == ('Step create_local_disks failed on host compute2: '
                            'injected fault')
    failed = [e for e in cloud.api.get_task_history(mig['id'])
              if e['state'] == 'FAILURE']
    assert [e['error'] for e in failed] == [mig['error']]


def _until(cloud, mig_id, wanted, timeout=30):
    import time
    deadline = time.time() + timeout
    while time.time() < deadline:
        mig = cloud.api.get_migration(mig_id)
        if mig['status'] == wanted:
            return mig
        time.sleep(0.01)
    raise AssertionError('migration %s never %s: %s' % (mig_id, wanted, mig))


def test_abort_while_copying_rolls_back_to_cancelled(cloud, stuck):
    src, dest, _ = ROUTES['block']
    g = stuck(memory_mb=2048)
    before = _usage(cloud)
    mig = cloud.api.live_migrate(g['name'], host=dest)
    _until(cloud, mig['id'], states.RUNNING)
    assert cloud.api.abort_migration(mig['id'])['cancel_requested'] is True
    mig = cloud.wait(mig['id'])
    assert mig['status'] == states.CANCELLED, mig['error']
    assert cloud.cloud.find_guest(g['uuid']) == {src: 'running'}
    assert cloud.cloud.leftovers(dest, g['uuid']) == []
    assert _usage(cloud) == before
    with pytest.raises(exception.CannotAbort) as err:
        cloud.api.abort_migration(mig['id'])
    assert 'cancelled' in str(err.value)


def test_abort_while_queued_never_starts(cloud, guest, stuck):
    cap = cloud.conductor_conf.conductor.max_outbound_per_host
    busy = [stuck() for _ in range(cap)]
    running = [cloud.api.live_migrate(g['name'], host='compute2') for g in busy]
    for m in running:
        _until(cloud, m['id'], states.RUNNING)
    g = guest('compute1', 'local')
    queued = cloud.api.live_migrate(g['name'], host='compute2')
    assert cloud.api.get_migration(queued['id'])['status'] == states.ACCEPTED
    cloud.api.abort_migration(queued['id'])
    for m in running:
        cloud.api.abort_migration(m['id'])
    for m in running + [queued]:
        assert cloud.wait(m['id'])['status'] == states.CANCELLED
    # Never started: no task of the queued one ran.
    assert not [e for e in cloud.api.get_task_history(queued['id'])
                if e['state'] == 'RUNNING' and e['atom'] != 'block-live-migration']
    for x in busy + [g]:
        assert cloud.cloud.find_guest(x['uuid']) == {'compute1': 'running'}


def _running_atom(cloud, mig_id, atom, timeout=30):
    """Wait until ``atom`` of the migration's flow has started and not ended."""
    import time
    deadline = time.time() + timeout
    while time.time() < deadline:
        last = {e['atom']: e['state'] for e in cloud.api.get_task_history(mig_id)}
        if last.get(atom) == 'RUNNING':
            return
        time.sleep(0.01)
    raise AssertionError('%s of %s never seen running' % (atom, mig_id))


def test_abort_while_preparing_rolls_back_to_cancelled(cloud, guest):
    src, dest, _ = ROUTES['block']
    g = guest(src, 'local')
    before = _usage(cloud)
    # The destination's preparation is held: the abort lands in the middle of it.
    cloud.cloud.inject_fault(dest, 'create_local_disks', times=1, delay_s=1.0)
    mig = cloud.api.live_migrate(g['name'], host=dest)
    _running_atom(cloud, mig['id'], c.CREATE_LOCAL_DISKS)
    assert cloud.api.get_migration(mig['id'])['status'] == states.PREPARING
    cloud.api.abort_migration(mig['id'])
    mig = cloud.wait(mig['id'])
    assert mig['status'] == states.CANCELLED, mig['error']
    assert mig['switchover_at'] is None
    # The copy never started; what preparation made on the destination is gone.
    started = {e['atom'] for e in cloud.api.get_task_history(mig['id'])
               if e['state'] == 'RUNNING'}
    assert c.MONITOR_MIGRATION not in started
    assert cloud.cloud.find_guest(g['uuid']) == {src: 'running'}
    assert cloud.cloud.leftovers(dest, g['uuid']) == []
    assert _usage(cloud) == before


def test_abort_refused_when_done_or_unknown(cloud, guest):
    g = guest('compute1', 'local')
    mig = cloud.wait(cloud.api.live_migrate(g['name'], host='compute2')['id'])
    with pytest.raises(exception.CannotAbort) as err:
        cloud.api.abort_migration(mig['id'])
    assert 'completed' in str(err.value)
    with pytest.raises(exception.MigrationNotFound):
        cloud.api.abort_migration('no-such-migration')


def test_agent_fault_file_fails_any_step(tmp_path, cloud, guest):
    from compute_agent import faults
    path = str(tmp_path / 'faults.json')
    agent = cloud.agents['compute2']
    agent.conf.set_override('fault_injection_file', path, group='compute')
    try:
        faults.write_file(path, {'plug_networking': {'times': 1, 'skip': 0}})
        g = guest('compute1', 'local')
        mig = cloud.wait(cloud.api.live_migrate(g['name'], host='compute2')['id'])
        assert mig['status'] == states.FAILED
        assert 'plug_networking' in mig['error']
        assert cloud.cloud.leftovers('compute2', g['uuid']) == []
        again = cloud.wait(cloud.api.live_migrate(g['name'], host='compute2')['id'])
        assert again['status'] == states.COMPLETED  # it failed once only
    finally:
        agent.conf.clear_override('fault_injection_file', group='compute')
