"""Evacuation: a dead host's guests rebuilt elsewhere, and the dead host fencing
them when it returns. A simulated cloud of its own: its hosts die and come back.

compute1 and compute2 share an instance directory; compute3 and compute4 each
have their own. A guest of compute1 comes back on compute2 on the same files;
a volume-backed one anywhere on its volumes; one with local disks elsewhere is
rebuilt from its image.
"""

import datetime
import json
import time
import uuid as uuidlib

import pytest
from oslo_utils import importutils
from taskflow import task as tf_task
import webob

import flows
from api import service as api_service
from api.handlers import servers as api_servers
from compute_agent.virt import fake
from conductor import crash
from conductor.db import models
from conductor.db import rows
from ferryman.cmd import cli
from ferryman.common import conf as ferryman_conf
from ferryman.common import exception
from ferryman.common import vocabulary as vocab
from ferryman.sim import cloud as sim
from ferryman.sim import services as sim_services
from flows import constants as c
from flows import states

HOSTS = {'compute1': 'nfs', 'compute2': 'nfs', 'compute3': None, 'compute4': None}
IMAGE = 'cirros-0.6'
IMAGE_DATA = 'the base image as uploaded'
SMALL_DISK = [{'name': 'root', 'size_gb': 1, 'format': 'qcow2'}]

# storage -> (source, destination, guest arguments)
CASES = {
    vocab.EVACUATE_SHARED: ('compute1', 'compute2', {'storage': 'local'}),
    vocab.EVACUATE_VOLUMES: ('compute1', 'compute3', {'storage': 'volume'}),
    vocab.EVACUATE_REBUILD: ('compute3', 'compute4', {'storage': 'local',
                                                      'image': IMAGE}),
}


@pytest.fixture(scope='module')
def ecloud():
    # Two NUMA cells per host: a guest of a NUMA flavor holds nested
    # allocations (what a forced evacuation must refuse).
    with sim.SimCloud(hosts=HOSTS, overrides={'fake.numa_cells': 2}) as cloud:
        cloud.cloud.create_image(IMAGE, data=IMAGE_DATA)
        yield cloud


@pytest.fixture
def make(ecloud):
    """make(host, **guest arguments): a fresh guest, deleted after the test, its
    claims (and its migrations') checked gone."""
    uuids = []

    def guest(host, **kwargs):
        kwargs.setdefault('name', 'e-%s' % uuidlib.uuid4().hex[:8])
        if kwargs.get('storage', 'local') == 'local':
            kwargs.setdefault('disks', SMALL_DISK)
        g = ecloud.cloud.create_guest(host, data='data of %s' % kwargs['name'],
                                      **kwargs)
        ecloud.refresh()
        uuids.append(g['uuid'])
        return g
    yield guest
    for host in HOSTS:
        ecloud.cloud.clear_faults(host)
    for u in uuids:
        for mig in ecloud.db.migrations.list(instance=u):
            ecloud.conductor.manager.runner.wait(mig['id'], 30)
    migrations = {u: ecloud.db.migrations.list(instance=u) for u in uuids}
    for u in uuids:
        ecloud.cloud.destroy_guest(u)
    ecloud.refresh(vanish_after=0)
    leaked = {consumer: ecloud.db.allocations.list(consumer=consumer)
              for u in uuids for consumer in [u] + [m['id'] for m in migrations[u]]}
    assert not {k: v for k, v in leaked.items() if v}, leaked


@pytest.fixture
def dead(ecloud):
    """dead(host): the host crashes (its guests' QEMU processes die with it) and
    an operator forces it down. After the test it comes back as an agent
    restarting would: it fences first, then reports."""
    names = []

    def kill(host):
        names.append(host)
        ecloud.cloud.crash_host(host)
        ecloud.api.force_down(host, True)
    yield kill
    for host in names:
        ecloud.agents[host].manager.fence()
        ecloud.api.force_down(host, False)
    ecloud.refresh()


def _state(ecloud, g):
    """What an evacuation may change, to compare before and after."""
    uuid = g['uuid']
    inst = ecloud.db.instances.get(uuid)
    return {'where': ecloud.cloud.find_guest(uuid),
            'record': (inst['host'], inst['migration_id']),
            'claims': sorted((a['consumer'], a['host'], a['memory_mb'])
                             for a in ecloud.db.allocations.list()),
            'nested': sorted((a['consumer'], a['provider'])
                             for a in ecloud.db.allocations.nested()),
            'leftovers': {h: ecloud.cloud.leftovers(h, uuid) for h in HOSTS},
            'migrations': ecloud.db.migrations.list(instance=uuid)}


# The flow. ------------------------------------------------------------------------
EXPECTED = {
    vocab.EVACUATE_SHARED: [c.PLUG_NETWORKING],
    vocab.EVACUATE_VOLUMES: [c.CONNECT_VOLUMES, c.PLUG_NETWORKING],
    vocab.EVACUATE_REBUILD: [c.REBUILD_DISKS, c.PLUG_NETWORKING],
}


def _flow(storage):
    return flows.build(vocab.EVACUATION, evacuation_storage=storage)


@pytest.mark.parametrize('storage', vocab.EVACUATION_STORAGE)
def test_flow_atoms_in_order_and_stable(storage):
    names = [t.name for t in flows.iter_tasks(_flow(storage))]
    assert names == ([c.MIGRATION_SENTINEL, c.CLAIM_RESOURCES, c.CHECK_REBUILD] +
                     EXPECTED[storage] +
                     [c.DEFINE_GUEST, c.START_GUEST, c.FINISH_EVACUATION])
    # Rebuilt by name, as a resumed flow is.
    factory = importutils.import_class(flows.FACTORIES[vocab.EVACUATION])
    assert [t.name for t in flows.iter_tasks(
        factory(evacuation_storage=storage))] == names


@pytest.mark.parametrize('storage', vocab.EVACUATION_STORAGE)
def test_flow_needs_only_store_keys_and_retries_its_placement(storage):
    flow = _flow(storage)
    assert flow.requires <= set(c.STORE_KEYS) | {c.EVACUATION_STORAGE}
    assert flow.provides == {c.PLACED_DESTINATION}
    (place,) = [n for n, _ in flow.iter_nodes() if n.name == c.PLACE_SUBFLOW]
    assert place.retry.name == c.DESTINATION_RETRY
    inside = [t.name for t in flows.iter_tasks(place)]
    assert inside == [c.CLAIM_RESOURCES, c.CHECK_REBUILD] + EXPECTED[storage]
    for task in flows.iter_tasks(flow):
        if 'destination' in task.rebind:
            assert task.rebind['destination'] == c.PLACED_DESTINATION


@pytest.mark.parametrize('storage', vocab.EVACUATION_STORAGE)
def test_every_changing_step_has_its_revert_and_the_tail_none(storage):
    tasks = {t.name: t for t in flows.iter_tasks(_flow(storage))}
    has_revert = {n for n, t in tasks.items()
                  if type(t).revert is not tf_task.Task.revert}
    changing = {c.MIGRATION_SENTINEL, c.CLAIM_RESOURCES, c.CONNECT_VOLUMES,
                c.REBUILD_DISKS, c.PLUG_NETWORKING, c.DEFINE_GUEST, c.START_GUEST}
    assert has_revert == changing & set(tasks)
    assert c.FINISH_EVACUATION not in has_revert


def test_an_unknown_storage_has_no_flow():
    with pytest.raises(ValueError, match='nfs'):
        _flow('nfs')


# Each storage kind. ------------------------------------------------------------------
def _events(ecloud, mig):
    return [(e['atom'], e['state']) for e in ecloud.api.get_task_history(mig['id'])]


@pytest.mark.parametrize('named', [True, False], ids=['named', 'scheduled'])
@pytest.mark.parametrize('storage', vocab.EVACUATION_STORAGE)
def test_each_storage_kind_evacuates(ecloud, make, dead, storage, named):
    source, dest, kwargs = CASES[storage]
    g = make(source, **kwargs)
    dead(source)
    mig = ecloud.api.evacuate(g['name'], host=dest if named else None)
    assert (mig['subtype'], mig['source']) == (vocab.EVACUATION, source)
    mig = ecloud.wait(mig['id'])
    assert mig['status'] == states.COMPLETED, (mig['status'], mig['error'])
    dest = mig['destination']
    assert dest != source and ecloud.db.instances.get(g['uuid'])['host'] == dest
    # Running there, a new boot; on the dead host only its dead domain, until
    # that host comes back and fences it.
    assert ecloud.cloud.find_guest(g['uuid']) == {source: 'shutoff',
                                                  dest: 'running'}
    assert ecloud.cloud.load(dest)['guests'][g['uuid']]['boots'] == 1
    if storage == vocab.EVACUATE_SHARED:
        assert ecloud.cloud.read_disk(dest, g['uuid']) == 'data of %s' % g['name']
    elif storage == vocab.EVACUATE_VOLUMES:
        (vol,) = g['volumes']
        assert ecloud.cloud.read_volume(vol) == 'data of %s' % g['name']
        assert ecloud.cloud.load(dest)['volume_connections'][vol] == g['uuid']
    else:
        assert ecloud.cloud.read_disk(dest, g['uuid']) == IMAGE_DATA
        (note,) = [e for e in ecloud.api.get_task_history(mig['id'])
                   if e['state'] == 'NOTE' and e['atom'] == c.REBUILD_DISKS]
        assert 'contents are lost' in note['details']['what']
        assert IMAGE in note['details']['what']
    # Every step in the history, on its host.
    hosts = {e['atom']: e['host'] for e in ecloud.api.get_task_history(mig['id'])}
    for step in [c.CHECK_REBUILD, c.DEFINE_GUEST, c.START_GUEST] + EXPECTED[storage]:
        assert hosts[step] == dest, step
    # The guest's claim on the destination; the source held by the evacuation
    # until its host fences the guest.
    assert [a['host'] for a in ecloud.db.allocations.list(consumer=g['uuid'])] == [
        dest]
    assert [a['host'] for a in ecloud.db.allocations.list(consumer=mig['id'])] == [
        source]
    wanted_disk = 1 if storage == vocab.EVACUATE_REBUILD else 0  # SMALL_DISK
    assert ecloud.db.allocations.list(consumer=g['uuid'])[0]['disk_gb'] == \
        wanted_disk


def test_a_forced_evacuation_skips_the_scheduler(ecloud, make, dead):
    g = make('compute1', storage='volume', memory_mb=2048)
    dead('compute1')
    mig = ecloud.wait(ecloud.api.evacuate(g['name'], host='compute4',
                                          force=True)['id'])
    assert (mig['status'], mig['force']) == (states.COMPLETED, True)
    (claim,) = ecloud.db.allocations.list(consumer=g['uuid'])
    assert (claim['host'], claim['memory_mb']) == ('compute4', 2048)


def test_an_evacuation_cannot_be_forced_to_complete(ecloud, make, dead):
    g = make('compute1', storage='volume')
    dead('compute1')
    mig = ecloud.wait(ecloud.api.evacuate(g['name'], host='compute3')['id'])
    with pytest.raises(exception.CannotForceComplete, match='evacuation'):
        ecloud.api.force_complete_migration(mig['id'])


# Refused, nothing changed. ---------------------------------------------------------
def _refused(ecloud, g, error, *words, **request):
    before = _state(ecloud, g)
    with pytest.raises(error) as err:
        ecloud.api.evacuate(request.pop('instance', g['name']), **request)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    assert _state(ecloud, g) == before
    return err.value


def test_a_host_that_is_up_is_refused_naming_its_state(ecloud, make):
    g = make('compute1')
    _refused(ecloud, g, exception.SourceHostUp, 'compute1', 'is up',
             'not forced down', 'within 60 s')
    _refused(ecloud, g, exception.SourceHostUp, 'compute1', host='compute2')


def test_bad_requests_are_refused_naming_the_value(ecloud, make, dead):
    g = make('compute1')
    dead('compute1')
    _refused(ecloud, g, exception.DestinationSameAsSource, 'compute1',
             host='compute1')
    _refused(ecloud, g, exception.InstanceNotFound, 'no-such-guest',
             instance='no-such-guest')
    _refused(ecloud, g, exception.HostNotFound, 'no-such-host', host='no-such-host')
    _refused(ecloud, g, exception.InvalidArgument, 'force', force=True)
    _refused(ecloud, g, exception.InvalidArgument, 'force', force='yes',
             host='compute2')
    # A destination that is down itself.
    dead('compute4')
    _refused(ecloud, g, exception.HostUnavailable, 'compute4', 'forced down',
             host='compute4')


def test_no_room_is_refused(ecloud, make, dead):
    g = make('compute1', storage='volume', memory_mb=200000)
    dead('compute1')
    _refused(ecloud, g, exception.InsufficientCapacity, 'compute3', 'memory_mb',
             host='compute3')
    _refused(ecloud, g, exception.NoValidHost, g['uuid'])


def test_a_local_disk_guest_without_an_image_is_refused(ecloud, make, dead):
    g = make('compute3')  # local disks on a host sharing them with nobody
    dead('compute3')
    err = _refused(ecloud, g, exception.ImageMissing, g['uuid'], 'compute4',
                   'no image reference', host='compute4')
    assert err.kwargs['source'] == 'compute3'
    # Scheduled: no host can rebuild it either.
    _refused(ecloud, g, exception.ImageMissing, g['uuid'])


def test_forced_with_nested_allocations_is_refused(ecloud, make, dead):
    g = make('compute1', storage='volume',
             numa_topology=[{'vcpus': 1, 'memory_mb': 1024}])
    assert len(ecloud.db.allocations.nested(consumer=g['uuid'])) == 1
    dead('compute1')
    _refused(ecloud, g, exception.CannotForceNested, g['uuid'], 'compute3',
             'compute1/numa', host='compute3', force=True)
    # Not forced, it is placed on a cell of its own there.
    mig = ecloud.wait(ecloud.api.evacuate(g['name'], host='compute3')['id'])
    assert mig['status'] == states.COMPLETED, mig['error']
    assert [n['host'] for n in ecloud.db.allocations.nested(
        consumer=g['uuid'])] == ['compute3']


# Revert matrix: a failure at every changing step. ---------------------------------
MATRIX = [(storage, step)
          for storage in vocab.EVACUATION_STORAGE
          for step in (['check_rebuild'] +
                       {vocab.EVACUATE_SHARED: [],
                        vocab.EVACUATE_VOLUMES: ['connect_volumes'],
                        vocab.EVACUATE_REBUILD: ['rebuild_disks']}[storage] +
                       ['plug_networking', 'define_guest', 'start_guest'])]


@pytest.mark.parametrize('storage,step', MATRIX)
def test_a_failure_at_any_step_rolls_back_to_failed(ecloud, make, dead, storage,
                                                    step):
    source, dest, kwargs = CASES[storage]
    g = make(source, **kwargs)
    dead(source)
    before = _state(ecloud, g)
    # The request's own check passes; the flow's fails.
    ecloud.cloud.inject_fault(dest, step, skip=1 if step == 'check_rebuild' else 0)
    mig = ecloud.wait(ecloud.api.evacuate(g['name'], host=dest)['id'])
    assert mig['status'] == states.FAILED, (mig['status'], mig['error'])
    assert step in mig['error'] and mig['rollback_errors'] == []
    after = _state(ecloud, g)
    # Nothing left on the destination, claims as before, the guest where it was.
    assert after['leftovers'] == before['leftovers']
    assert after['where'] == before['where'] == {source: 'shutoff'}
    assert after['claims'] == before['claims']
    assert after['nested'] == before['nested']
    assert after['record'] == (source, None)
    # Rolled back: nothing for the dead host to fence when it returns.
    assert mig['id'] not in [m['id'] for m in ecloud.db.migrations.to_fence(source)]
    # Each undo in the history, the claim's included.
    reverted = {a for a, s in _events(ecloud, mig) if s == 'REVERTED'}
    assert c.CLAIM_RESOURCES in reverted
    # Once the fault is gone, the same guest evacuates.
    ecloud.cloud.clear_faults(dest)
    again = ecloud.wait(ecloud.api.evacuate(g['name'], host=dest)['id'])
    assert again['status'] == states.COMPLETED, again['error']


def test_a_failed_undo_ends_in_error_naming_it(ecloud, make, dead):
    g = make('compute1', storage='volume')
    dead('compute1')
    ecloud.cloud.inject_fault('compute3', 'start_guest')
    ecloud.cloud.inject_fault('compute3', 'undefine_guest', times=1)
    mig = ecloud.wait(ecloud.api.evacuate(g['name'], host='compute3')['id'])
    assert mig['status'] == states.ERROR
    assert any('undefine guest' in e for e in mig['rollback_errors'])
    assert ecloud.db.migrations.get(mig['id'])['last_known_host'] == 'compute1'


# Fencing. ----------------------------------------------------------------------------
@pytest.fixture
def agent_down(ecloud, monkeypatch):
    """down(host): its agent stops (the host died), its last report aged past
    host_down_after (no waiting a minute); back(host): a new agent starts on
    it. Every report and fencing the conductor takes in is noted in ``calls``
    as (what, host)."""
    calls = []
    db = ecloud.db
    real_record, real_fenced = db.reports.record, db.migrations.fenced

    def record(host, *args, **kwargs):
        calls.append(('report', host))
        return real_record(host, *args, **kwargs)

    def fenced(host, *args, **kwargs):
        calls.append(('fenced', host))
        return real_fenced(host, *args, **kwargs)
    monkeypatch.setattr(db.reports, 'record', record)
    monkeypatch.setattr(db.migrations, 'fenced', fenced)
    stopped = {}

    def down(host):
        stopped[host] = ecloud.agents.pop(host)
        sim_services.stop_services([stopped[host]])
        ecloud.cloud.crash_host(host)
        down_after = ecloud.conductor_conf.conductor.host_down_after
        with ecloud.db.session.begin() as s:
            s.get(models.Host, host).last_seen = rows.utcnow() - \
                datetime.timedelta(seconds=down_after + 1)
        (row,) = [h for h in ecloud.api.list_hosts() if h['name'] == host]
        assert (row['up'], row['forced_down']) == (False, False)

    def back(host):
        ecloud.agents[host] = sim_services.start_agent(ecloud.overrides, host,
                                                       HOSTS[host])
        stopped.pop(host)
    yield down, back, calls
    for host in list(stopped):
        back(host)
    ecloud.refresh()


def _until(what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, 'timed out waiting for %s' % what.__doc__
        time.sleep(0.05)


def test_a_returning_host_fences_before_it_reports(ecloud, make, agent_down):
    down, back, calls = agent_down
    shared = make('compute1')
    volume = make('compute1', storage='volume')
    stays = make('compute2')
    down('compute1')
    migs = [ecloud.wait(ecloud.api.evacuate(g['name'], host=dest)['id'])
            for g, dest in ((shared, 'compute2'), (volume, 'compute3'))]
    assert [m['status'] for m in migs] == [states.COMPLETED] * 2
    # Held until the host fences them.
    for m in migs:
        assert [a['host'] for a in ecloud.db.allocations.list(
            consumer=m['id'])] == ['compute1']
    del calls[:]
    back('compute1')

    def fenced():
        """both evacuations fenced and the host reporting"""
        return all(ecloud.db.migrations.get(m['id'])['fenced_at'] for m in migs) \
            and ('report', 'compute1') in calls
    _until(fenced)
    mine = [call for call in calls if call[1] == 'compute1']
    assert mine[0] == ('fenced', 'compute1'), mine
    # Gone from the old host; the shared files and the volume's data intact.
    assert ecloud.cloud.find_guest(shared['uuid']) == {'compute2': 'running'}
    assert ecloud.cloud.find_guest(volume['uuid']) == {'compute3': 'running'}
    assert ecloud.cloud.read_disk('compute2', shared['uuid']) == \
        'data of %s' % shared['name']
    (vol,) = volume['volumes']
    assert ecloud.cloud.read_volume(vol) == 'data of %s' % volume['name']
    assert vol not in ecloud.cloud.load('compute1')['volume_connections']
    assert ecloud.cloud.leftovers('compute1', volume['uuid']) == []
    # The source allocations released; the history says when.
    for m in migs:
        assert ecloud.db.allocations.list(consumer=m['id']) == []
        assert ('fence-source', 'FENCED') in _events(ecloud, m)
    assert ecloud.cloud.find_guest(stays['uuid']) == {'compute2': 'running'}
    ecloud.refresh()
    assert ecloud.api.audit()['violations'] == []


def test_audit_flags_an_evacuated_guest_still_on_its_old_host(ecloud, make, dead):
    g = make('compute1', storage='volume')
    dead('compute1')
    mig = ecloud.wait(ecloud.api.evacuate(g['name'], host='compute3')['id'])
    assert mig['status'] == states.COMPLETED
    # The host reports without fencing (a bypass no agent takes).
    ecloud.refresh()
    fencing = [v['text'] for v in ecloud.api.audit()['violations']
               if v['kind'] == 'fencing']
    assert len(fencing) == 1 and g['uuid'] in fencing[0] and \
        'compute1' in fencing[0]
    assert ecloud.agents['compute1'].manager.fence() == [mig['id']]
    assert [v for v in ecloud.api.audit()['violations']
            if v['kind'] == 'fencing'] == []


def test_fencing_asks_only_for_its_own_host(ecloud, make, dead):
    g = make('compute1', storage='volume')
    dead('compute1')
    mig = ecloud.wait(ecloud.api.evacuate(g['name'], host='compute3')['id'])
    # Another host naming this evacuation marks nothing.
    assert ecloud.db.migrations.fenced('compute3', [mig['id']]) == []
    assert ecloud.agents['compute3'].manager.fence() == []
    assert ecloud.db.migrations.get(mig['id'])['fenced_at'] is None


# A conductor restart mid-flow. ----------------------------------------------------
class Crash(BaseException):
    """The conductor dies here: none of its handlers run after it."""


@pytest.mark.parametrize('atom', [c.CLAIM_RESOURCES, c.CONNECT_VOLUMES,
                                  c.PLUG_NETWORKING, c.DEFINE_GUEST, c.START_GUEST,
                                  c.FINISH_EVACUATION])
def test_a_conductor_restart_mid_flow_resumes_it(ecloud, make, dead, monkeypatch,
                                                 atom):
    g = make('compute1', storage='volume')
    dead('compute1')
    runner = ecloud.conductor.manager.runner
    saved = {}
    # Accepted and saved, its run in this thread: it dies at the step, its work
    # done and its result not saved (crash.EXECUTED).
    with monkeypatch.context() as m:
        m.setattr(runner, 'submit', lambda mig, store: saved.update(
            mig=mig, engine=runner.save(mig, store)[1]))
        mig = ecloud.api.evacuate(g['name'], host='compute3')

    def reached(conf, name, state):
        if (name, state) == (atom, crash.EXECUTED):
            raise Crash(name)
    with monkeypatch.context() as m:
        m.setattr(crash, 'reached', reached)
        with pytest.raises(Crash):
            saved['engine'].run()
    # The restarted conductor resumes it from its saved flow (the last step's
    # work, once done, had completed it: nothing is left to resume).
    last = atom == c.FINISH_EVACUATION
    assert ecloud.db.migrations.get(mig['id'])['status'] in (
        (states.COMPLETED,) if last else states.ACTIVE)
    assert (mig['id'] in runner.resume_all()) is not last
    mig = ecloud.wait(mig['id'])
    assert mig['status'] == states.COMPLETED, (mig['status'], mig['error'])
    assert ecloud.cloud.find_guest(g['uuid']) == {'compute1': 'shutoff',
                                                  'compute3': 'running'}
    assert ecloud.cloud.load('compute3')['guests'][g['uuid']]['boots'] == 1
    assert [a['host'] for a in ecloud.db.allocations.list(consumer=g['uuid'])] == [
        'compute3']


def test_fake_cloud_crash_keeps_domains_defined(tmp_path):
    cloud = fake.FakeCloud(str(tmp_path))
    cloud.ensure_host('h1', {'instances_path': str(tmp_path / 'i')})
    g = cloud.create_guest('h1', 'x', storage='volume')
    cloud.crash_host('h1')
    assert cloud.find_guest(g['uuid']) == {'h1': 'shutoff'}


# The command line. -------------------------------------------------------------------
@pytest.fixture
def ecli(tmp_path, ecloud):
    path = tmp_path / 'ferryman.conf'
    path.write_text('[DEFAULT]\ntransport_url = %s\n[oslo_messaging_rabbit]\n'
                    'heartbeat_timeout_threshold = 0\n[auth]\noperator_key_file = %s\n'
                    % (ecloud.overrides['transport_url'], ecloud.operator_key('cli')))
    return lambda *args: cli.main(list(args) + ['--config-file', str(path)])


def test_cli_evacuates_and_waits(ecloud, make, dead, ecli, capsys):
    g = make('compute1', storage='volume')
    assert ecli('evacuate', g['name']) != 0  # its host is up
    err = capsys.readouterr().err
    assert 'compute1' in err and 'is up' in err
    dead('compute1')
    assert ecli('evacuate', g['name'], '--host', 'compute3', '--wait',
                '--json') == 0
    mig = json.loads(capsys.readouterr().out)
    assert (mig['subtype'], mig['status'], mig['destination']) == (
        vocab.EVACUATION, states.COMPLETED, 'compute3')
    assert ecli('migration', 'tasks', mig['id']) == 0
    assert c.START_GUEST in capsys.readouterr().out


# ferryman-api: evacuations as Nova shows and takes them. ----------------------------
@pytest.fixture(scope='module')
def eapi(ecloud):
    conf = ferryman_conf.make_conf(config_files=[], overrides={
        'transport_url': ecloud.overrides['transport_url'],
        'oslo_messaging_rabbit.heartbeat_timeout_threshold': 0,
        'api.port': 0, 'api.auth_strategy': 'noauth',
        'auth.operator_key_file': ecloud.operator_key('ferryman-api')})
    service = api_service.APIService(conf)
    yield service
    service.stop()


def _request(service, method, path, version='2.59', body=None, token='admin:admin'):
    """(status, JSON body or None) of a request to the API application."""
    req = webob.Request.blank(path, method=method)
    req.headers['X-Auth-Token'] = token
    req.headers['OpenStack-API-Version'] = 'compute %s' % version
    if body is not None:
        req.content_type = 'application/json'
        req.body = json.dumps(body).encode()
    resp = req.get_response(service.app)
    return resp.status_int, (resp.json if resp.body else None)


def test_os_migrations_lists_an_evacuation_as_one(ecloud, make, dead, eapi):
    g = make('compute1', storage='volume')
    dead('compute1')
    mig = ecloud.wait(ecloud.api.evacuate(g['name'], host='compute3')['id'])

    def get(path):
        status, body = _request(eapi, 'GET', path)
        assert status == 200, body
        return body
    base = '/v2.1/os-migrations?instance_uuid=%s' % g['uuid']
    (listed,) = get(base)['migrations']
    assert (listed['uuid'], listed['migration_type'], listed['status']) == (
        mig['id'], 'evacuation', 'completed')
    assert get(base + '&migration_type=evacuation')['migrations'] == [listed]
    assert get(base + '&migration_type=live-migration')['migrations'] == []


def test_the_evacuate_action_rebuilds_a_dead_hosts_server(ecloud, make, dead, eapi):
    g = make('compute1', storage='volume')
    action = '/v2.1/servers/%s/action' % g['uuid']

    def post(body, version='2.29', token='admin:admin'):
        return _request(eapi, 'POST', action, version, body, token)
    # Its host is up: refused naming it, nothing recorded.
    status, body = post({'evacuate': {'host': 'compute3'}})
    assert status == 400 and 'compute1' in body['badRequest']['message'], body
    assert ecloud.db.migrations.list(instance=g['uuid']) == []
    dead('compute1')
    for request, version, code, words in [
            ({'evacuate': {'host': 'compute3', 'adminPass': 'x'}}, '2.29', 400,
             'adminPass'),
            ({'evacuate': {'host': 'compute3'}}, '2.1', 400, 'onSharedStorage'),
            ({'evacuate': {'host': 'compute3', 'force': True}}, '2.68', 400,
             'force'),
            ({'evacuate': {'force': True}}, '2.29', 400, 'non-provided'),
            ({'evacuate': {'host': 'bad host!'}}, '2.29', 400, 'host')]:
        status, body = post(request, version)
        assert status == code and words in json.dumps(body), (request, body)
    status, body = post({'evacuate': {'host': 'compute3'}}, token='u1:p1')
    assert (status, body['forbidden']['message']) == (
        403, "Policy doesn't allow os_compute_api:os-evacuate to be performed.")
    assert ecloud.db.migrations.list(instance=g['uuid']) == []
    # From 2.14 a 200 with no body; the server is rebuilt on the host named.
    status, body = post({'evacuate': {'host': 'compute3', 'force': False}})
    assert (status, body) == (200, None)
    (mig,) = ecloud.db.migrations.list(instance=g['uuid'])
    mig = ecloud.wait(mig['id'])
    assert (mig['subtype'], mig['status']) == (vocab.EVACUATION, states.COMPLETED)
    status, body = _request(eapi, 'GET', '/v2.1/servers/%s' % g['uuid'])
    assert (body['server']['status'], body['server']['OS-EXT-SRV-ATTR:host']) == (
        'ACTIVE', 'compute3')


def test_a_server_being_evacuated_is_rebuilding():
    inst = {'power_state': 'running', 'migration_id': 'm',
            'last_migration': {'subtype': vocab.EVACUATION, 'progress': None}}
    assert api_servers.state(inst)[:3] == ('REBUILD', 'active', 'rebuilding')
    live = dict(inst, last_migration={'subtype': 'block', 'progress': None})
    assert api_servers.state(live)[:3] == ('MIGRATING', 'active', 'migrating')
