"""Reverts and the switch-over guards, each layer alone: what a rollback removes,
the monitor's branches that must finish a migration rather than roll it back, steps
that only go forward, and the drivers' own refusal to remove what a running guest
uses (the last line of defence, tested without the conductor's guard in front)."""

import contextlib
import os
import time
import uuid as uuidlib

import pytest

from compute_agent.virt import fake
from ferryman.common import conf as ferryman_conf
from ferryman.common import exception
from flows import states


def _until(what, timeout=20.0):
    """Wait for ``what()``; its docstring says what it waits for."""
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError('timed out waiting for %s' % what.__doc__)
        time.sleep(0.01)


def _mine(calls, uuid):
    return [c for c in calls if c[2] == uuid]


# The flow: a failure after the start. ---------------------------------------------
def test_failure_after_the_start_aborts_the_job(cloud, stuck, undo_calls):
    g = stuck()
    # StartMigration's own look at the job passes; the monitor's first sample
    # fails, while the copy runs (it never converges by itself).
    cloud.cloud.inject_fault('compute1', 'get_migration_job', times=1, skip=1)
    driver = cloud.agents['compute1'].manager.driver
    try:
        mig = cloud.wait(cloud.api.live_migrate(g['name'], host='compute2')['id'])
        assert mig['status'] == states.FAILED, (mig['status'], mig['error'])
        assert 'get_migration_job' in mig['error']
        assert ('abort_migration', 'compute1', g['uuid']) in undo_calls
        assert driver.get_migration_job(g['uuid'])['status'] != 'running'
        assert cloud.cloud.find_guest(g['uuid']) == {'compute1': 'running'}
        assert cloud.cloud.leftovers('compute2', g['uuid']) == []
        assert mig['rollback_errors'] == []
    finally:
        driver.abort_migration(g['uuid'])  # a job left running would hold a core


# The monitor: a migration that finished must end completed. -------------------------
def _watching(cloud, monkeypatch, uuid, first_sample):
    """Call ``first_sample(real_call)`` in place of the monitor's first progress
    sample of the guest's job (the one that waits; StartMigration's does not);
    returns what the monitor was answered."""
    compute = cloud.conductor.manager.compute
    real = compute.get_migration_job
    answers = []

    def sample(host, job_uuid, wait_s=None):
        if wait_s is None:
            return real(host, job_uuid)
        if job_uuid == uuid and not answers:
            job = first_sample(lambda: real(host, job_uuid, wait_s=wait_s))
        else:
            job = real(host, job_uuid, wait_s=wait_s)
        answers.append(job['status'])
        return job

    monkeypatch.setattr(compute, 'get_migration_job', sample)
    return answers


def _moved(cloud, uuid, dest):
    def moved():
        """the guest to run on the destination only"""
        return cloud.cloud.find_guest(uuid) == {dest: 'running'}
    return moved


def _completed_on(cloud, mig, g, src, dest, undo_calls):
    assert mig['status'] == states.COMPLETED, (mig['status'], mig['error'])
    assert mig['rollback_errors'] == []
    assert _mine(undo_calls, g['uuid']) == [] or \
        _mine(undo_calls, g['uuid']) == [('abort_migration', src, g['uuid'])]
    assert cloud.cloud.find_guest(g['uuid']) == {dest: 'running'}
    assert cloud.cloud.leftovers(src, g['uuid']) == []
    assert cloud.db.instances.get(g['uuid'])['host'] == dest
    assert cloud.db.migrations.get(mig['id'])['last_known_host'] == dest


def test_source_agent_restarted_after_the_move_still_completes(
        cloud, guest, monkeypatch, undo_calls):
    g = guest('compute1', 'local')
    agent = cloud.agents['compute1'].manager

    def restart_after_the_move(call):
        _until(_moved(cloud, g['uuid'], 'compute2'))
        # A new agent: the hypervisor's job ended while nobody watched, so it
        # knows of no job for the guest.
        fresh = fake.FakeDriver(agent.conf, agent.host)
        fresh.init_host()
        monkeypatch.setattr(agent, 'driver', fresh)
        return call()

    answers = _watching(cloud, monkeypatch, g['uuid'], restart_after_the_move)
    mig = cloud.wait(cloud.api.live_migrate(g['name'], host='compute2')['id'])
    assert answers[0] == 'none'
    _completed_on(cloud, mig, g, 'compute1', 'compute2', undo_calls)


def test_abort_arriving_after_the_copy_finished_completes(cloud, guest, monkeypatch,
                                                          undo_calls):
    g = guest('compute1', 'local')
    # The copy is held a moment: the monitor's first sample sees it running.
    cloud.cloud.inject_fault('compute1', 'migration_job', times=1, delay_s=0.5)
    mig_id = []

    def abort_after_the_copy(call):
        job = call()
        assert job['status'] == 'running'
        _until(_moved(cloud, g['uuid'], 'compute2'))
        cloud.api.abort_migration(mig_id[0])  # before the monitor looks again
        return job

    _watching(cloud, monkeypatch, g['uuid'], abort_after_the_copy)
    mig_id.append(cloud.api.live_migrate(g['name'], host='compute2')['id'])
    mig = cloud.wait(mig_id[0])
    assert mig['cancel_requested'] is True
    # The abort was tried, and came too late: the job had completed.
    assert ('abort_migration', 'compute1', g['uuid']) in undo_calls
    _completed_on(cloud, mig, g, 'compute1', 'compute2', undo_calls)


# Steps past switch-over only go forward. --------------------------------------------
def _snapshot(cloud, uuid, hosts):
    """What the guest has on the hosts, and where the database says it runs."""
    out = {'instance_host': cloud.db.instances.get(uuid)['host']}
    for host in hosts:
        state = cloud.cloud.load(host)
        path = os.path.join(state['info']['instances_path'], uuid)
        out[host] = {
            'guest': state['guests'].get(uuid, {}).get('power_state'),
            'port': state['ports'].get(uuid),
            'volumes': sorted(v for v, o in state['volume_connections'].items()
                              if o == uuid),
            'files': sorted(os.listdir(path)) if os.path.isdir(path) else None}
    return out


@pytest.mark.parametrize('subtype,src,dest,storage', [
    ('block', 'compute1', 'compute2', 'local'),
    ('block-storage', 'compute1', 'compute3', 'volume')])
@pytest.mark.parametrize('failing', ['post-migration-destination',
                                     'finish-migration'])
def test_a_failure_past_switch_over_undoes_no_forward_step(
        cloud, guest, monkeypatch, undo_calls, subtype, src, dest, storage,
        failing):
    g = guest(src, storage)
    at_failure = []

    def fail(*args, **kwargs):
        at_failure.append(_snapshot(cloud, g['uuid'], (src, dest)))
        raise exception.FerrymanError('%s failed for the test' % failing)

    if failing == 'post-migration-destination':
        # After the source was cleaned up: that clean-up must stay done.
        monkeypatch.setattr(cloud.conductor.manager.compute,
                            'post_migration_destination', fail)
    else:
        # After both hosts' steps: neither may be undone.
        real = cloud.db.allocations.drop_source
        monkeypatch.setattr(cloud.db.allocations, 'drop_source',
                            lambda mig_id: fail() if not at_failure else real(mig_id))
    mig = cloud.wait(cloud.api.live_migrate(g['name'], host=dest)['id'])
    assert at_failure, 'the step never ran'
    assert mig['status'] == states.ERROR, (mig['status'], mig['error'])
    assert 'failed for the test' in mig['error']
    assert mig['last_known_host'] == dest and mig['rollback_errors'] == []
    assert _mine(undo_calls, g['uuid']) == []
    # Nothing changed on either host since the failure.
    assert _snapshot(cloud, g['uuid'], (src, dest)) == at_failure[0]
    assert at_failure[0][src] == {'guest': None, 'port': None, 'volumes': [],
                                  'files': None}
    assert at_failure[0][dest]['guest'] == 'running'
    # Counted on the destination only, as after a migration that completed.
    assert [(a['host'], a['memory_mb']) for a in cloud.db.allocations.list(g['uuid'])] \
        == [(dest, g['memory_mb'])]
    assert cloud.db.allocations.list(mig['id']) == []


# The simulated driver. --------------------------------------------------------------
def _driver(tmp_path, host, shared=None, time_scale=0.0001):
    conf = ferryman_conf.make_conf(config_files=[], overrides={
        'state_path': str(tmp_path), 'fake.time_scale': time_scale,
        'fake.state_dir': str(tmp_path / 'fake')})
    if shared:
        conf.set_override('instances_path', str(tmp_path / shared), group='fake')
    d = fake.FakeDriver(conf, host)
    d.init_host()
    return d


UNDO = [('delete_local_disks', 'local', 'instance_dirs'),
        ('disconnect_volumes', 'volume', 'volume_connections'),
        ('unplug_networking', 'local', 'ports')]


@pytest.mark.parametrize('undo,storage,held', UNDO)
def test_simulated_undo_refuses_a_guest_running_on_its_host(tmp_path, undo, storage,
                                                            held):
    d = _driver(tmp_path, 'h1')
    g = d.cloud.create_guest('h1', 'g1', memory_mb=64, storage=storage)
    before = d.inventory()
    assert before[held]  # there is something to remove
    for power_state in ('running', 'paused'):  # paused: a post-copy's source
        with d.cloud.editing('h1') as state:
            state['guests'][g['uuid']]['power_state'] = power_state
        with pytest.raises(exception.AgentStepFailed) as err:
            getattr(d, undo)(g)
        assert undo in str(err.value) and g['uuid'] in str(err.value)
        assert d.inventory()[held] == before[held]
    # Incoming (a copy not switched over yet): what it was given goes.
    with d.cloud.editing('h1') as state:
        state['guests'][g['uuid']]['power_state'] = 'incoming'
    getattr(d, undo)(g)
    assert not d.inventory()[held]


def test_simulated_abort_after_a_post_copy_switch_lets_the_job_complete(tmp_path):
    src = _driver(tmp_path, 'h1', 'nfs', time_scale=0.05)
    dest = _driver(tmp_path, 'h2', 'nfs', time_scale=0.05)
    # Dirtier than the link: pre-copy alone never ends.
    g = src.cloud.create_guest('h1', 'g1', memory_mb=256, dirty_rate_mibps=1000.0)
    with src.cloud.editing('h1') as state:
        state['info']['bandwidth_mibps'] = 64.0
    dest.plug_networking(g)
    uuid = g['uuid']
    try:
        src.start_migration(g, 'h2', 'file-level', {'post_copy': True})
        src.start_post_copy(uuid)

        def switched():
            """the post-copy switch"""
            return src.cloud.find_guest(uuid) == {'h1': 'paused', 'h2': 'running'}
        _until(switched)
        job = src.abort_migration(uuid)
        assert job['status'] == 'running' and job['post_copy']

        def done():
            """the job to complete"""
            return src.get_migration_job(uuid)['status'] != 'running'
        _until(done, timeout=10)
        assert src.get_migration_job(uuid)['status'] == 'completed'
        assert src.cloud.find_guest(uuid) == {'h2': 'running'}
    finally:
        src.cleanup_host()


# The libvirt driver, on libvirt's own in-process test hypervisor. -------------------
@pytest.fixture
def libvirt_host(tmp_path):
    from compute_agent.virt.libvirt import driver
    conf = ferryman_conf.make_conf(config_files=[], overrides={
        'state_path': str(tmp_path), 'libvirt.connection_uri': 'test:///default',
        'libvirt.instances_path': str(tmp_path / 'instances'),
        'libvirt.volume_dir': str(tmp_path / 'volumes'),
        'libvirt.connections_dir': str(tmp_path / 'connections')})
    os.makedirs(conf.libvirt.volume_dir)
    d = driver.LibvirtDriver(conf, 'h1')
    d.init_host()
    domains = []

    def boot(storage, volumes=()):
        uuid = str(uuidlib.uuid4())
        meta = driver.metadata_xml(uuid, 'g1', storage=storage, volumes=volumes)
        domains.append(d.conn.createXML(
            "<domain type='test'><name>g-%s</name><uuid>%s</uuid>"
            "<memory>65536</memory><vcpu>1</vcpu><metadata>%s</metadata>"
            "<os><type>hvm</type></os></domain>" % (uuid, uuid, meta), 0))
        return d.get_guest(uuid)

    yield d, boot, domains
    for dom in domains:
        with contextlib.suppress(driver.libvirt.libvirtError):
            dom.destroy()
    d.cleanup_host()


@pytest.mark.parametrize('undo', ['delete_local_disks', 'disconnect_volumes',
                                  'unplug_networking'])
def test_libvirt_undo_refuses_a_guest_running_on_its_host(libvirt_host, undo):
    d, boot, domains = libvirt_host
    vol = 'vol-%s' % uuidlib.uuid4().hex[:8]
    open(d.volumes.volume_path(vol), 'w').close()
    g = boot('volume' if undo == 'disconnect_volumes' else 'local', volumes=[vol])
    os.makedirs(os.path.join(d.instances_path, g['uuid']))
    d.volumes.connect(vol, g['uuid'])
    with pytest.raises(exception.AgentStepFailed) as err:
        getattr(d, undo)(g)
    assert undo in str(err.value) and g['uuid'] in str(err.value)
    assert d.inventory()['instance_dirs'] == [g['uuid']]
    assert d.volumes.connections() == [vol]
    # Once the guest is gone from this host, the undo does its work.
    domains[0].destroy()
    getattr(d, undo)(g)
    removed = {'delete_local_disks': ([], [vol]),
               'disconnect_volumes': ([], []),
               'unplug_networking': ([g['uuid']], [vol])}[undo]
    assert (d.inventory()['instance_dirs'], d.volumes.connections()) == removed
