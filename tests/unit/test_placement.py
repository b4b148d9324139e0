"""Placement: filters and weighers, NUMA and PCI fit, migration-held allocations,
destination modes, and retries over candidate hosts inside the flow.

On the shared in-process cloud (a second one in this process would share its RPC
topics): compute1 and compute2 get two NUMA cells each, compute2 and compute3 a
PCI device on PHYSNET, for this module; capacity changes last one test.
"""

import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from conductor import placement
from conductor import scheduler
from conductor.db import api as db_api
from ferryman.common import exception
from flows import constants as c
from flows import states

PHYSNET = 'CUSTOM_PHYSNET_A'
NESTED = {'compute1': (2, []), 'compute2': (2, ['0000:81:00.1/' + PHYSNET]),
          'compute3': (0, ['0000:82:00.1/' + PHYSNET])}


# Overcommit, so that what earlier tests left (sources are never checked, and
# some guests are huge on purpose) cannot make a filter refuse before the one a
# test looks at: compute1 never runs out, the others never of vCPUs.
RATIOS = {'compute1': (1000.0, 1000.0), 'compute2': (16.0, 1.0),
          'compute3': (16.0, 1.0)}


@pytest.fixture(scope='module', autouse=True)
def nested(cloud):
    for host, (cells, devices) in NESTED.items():
        conf = cloud.agents[host].conf
        conf.set_override('numa_cells', cells, group='fake')
        conf.set_override('pci_devices', devices, group='fake')
        conf.set_override('cpu_allocation_ratio', RATIOS[host][0], group='compute')
        conf.set_override('ram_allocation_ratio', RATIOS[host][1], group='compute')
    cloud.refresh()
    yield
    for host in NESTED:
        conf = cloud.agents[host].conf
        for name, group in (('numa_cells', 'fake'), ('pci_devices', 'fake'),
                            ('cpu_allocation_ratio', 'compute'),
                            ('ram_allocation_ratio', 'compute')):
            conf.clear_override(name, group=group)
    cloud.refresh()


def _mine(cloud, *ids):
    """Audit violations about these guests or migrations (the shared cloud keeps
    what other tests leave on purpose)."""
    return [v for v in cloud.api.audit()['violations']
            if any(i in v['text'] for i in ids)]


@pytest.fixture
def memory(cloud):
    """Set a host's memory (MiB) for one test."""
    changed = {}

    def set_memory(host, memory_mb):
        with cloud.cloud.editing(host) as state:
            changed.setdefault(host, state['info']['memory_mb'])
            state['info']['memory_mb'] = memory_mb
        cloud.refresh()

    yield set_memory
    for host, value in changed.items():
        with cloud.cloud.editing(host) as state:
            state['info']['memory_mb'] = value
    cloud.refresh()


@pytest.fixture
def disabled(cloud):
    """Disable hosts for one test (the scheduler then never picks them)."""
    hosts = []

    def disable(*names):
        for name in names:
            cloud.api.set_host_enabled(name, False, 'kept out by the test')
            hosts.append(name)

    yield disable
    for name in hosts:
        cloud.api.set_host_enabled(name, True)


def _allocs(cloud, consumer):
    return sorted((a['host'], a['memory_mb'])
                  for a in cloud.db.allocations.list(consumer))


def _nested(cloud, consumer):
    return sorted(a['provider'] for a in cloud.db.allocations.nested(consumer))


def _held_anywhere(cloud, consumer, host):
    return ([a for a in cloud.db.allocations.list(consumer, host)] +
            [a for a in cloud.db.allocations.nested(consumer, host)])


def _running_atom(cloud, mig_id, atom, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        last = {e['atom']: e['state'] for e in cloud.api.get_task_history(mig_id)}
        if last.get(atom) == 'RUNNING':
            return
        time.sleep(0.01)
    raise AssertionError('%s of %s never seen running' % (atom, mig_id))


# Pure functions: capacity, filters, weighers, NUMA and PCI fit. ----------------------
def _host(name='h', **kw):
    host = {'name': name, 'enabled': True, 'disabled_reason': None, 'up': True,
            'forced_down': False, 'hypervisor_type': 'QEMU', 'cpu_features': ['avx'],
            'instances_path': None,
            'vcpus': 16, 'memory_mb': 16384, 'disk_gb': 100, 'reserved': {},
            'allocation_ratios': {}, 'providers': [], 'migrations_out': 0,
            'used': {'vcpus': 0, 'memory_mb': 0, 'disk_gb': 0}}
    host.update(kw)
    return host


def _inst(**kw):
    inst = {'uuid': 'i-1', 'vcpus': 2, 'memory_mb': 4096, 'disk_gb': 10,
            'storage': 'local', 'numa_topology': None, 'pci_requests': []}
    inst.update(kw)
    return inst


def _cell(name, vcpus, memory_mb, used=None):
    return {'name': name, 'kind': placement.NUMA, 'traits': [],
            'inventory': {placement.VCPU: vcpus, placement.MEMORY_MB: memory_mb},
            'used': used or {}}


def _pci(name, traits, used=0):
    return {'name': name, 'kind': placement.PCI, 'traits': traits,
            'inventory': {placement.PCI_DEVICE: 1},
            'used': {placement.PCI_DEVICE: used} if used else {}}


def test_capacity_honours_reserved_amounts_and_ratios():
    host = _host(reserved={'memory_mb': 2048, 'vcpus': 4},
                 allocation_ratios={'vcpus': 4.0, 'memory_mb': 1.5})
    assert placement.capacity(host, 'memory_mb') == (16384 - 2048) * 1.5
    assert placement.capacity(host, 'vcpus') == (16 - 4) * 4
    assert placement.capacity(host, 'disk_gb') == 100
    placement.check_root(host, {'memory_mb': 21000}, {'memory_mb': 504})
    with pytest.raises(placement.Misfit) as err:
        placement.check_root(host, {'memory_mb': 21000}, {'memory_mb': 505})
    assert err.value.kind == 'capacity' and err.value.resource == 'memory_mb'
    assert err.value.free == 504


# One host each filter refuses (host changes, instance changes, filter, text).
REFUSALS = [
    ({'name': 'src'}, {}, 'same-host', "'src'"),
    ({'problems': ["reserved.vcpus 'lots'"]}, {}, 'record', "'lots'"),
    ({'enabled': False, 'disabled_reason': 'repairs'}, {}, 'enabled', 'repairs'),
    ({'up': False}, {}, 'up', 'not reported'),
    ({'up': False, 'forced_down': True}, {}, 'up', 'forced down'),
    ({'hypervisor_type': 'Xen'}, {}, 'hypervisor', 'Xen'),
    ({'cpu_features': []}, {}, 'cpu', 'avx'),
    ({'used': {'vcpus': 0, 'memory_mb': 14000, 'disk_gb': 0}}, {}, 'capacity',
     'memory_mb needs 4096, 2384 free'),
    ({'reserved': {'vcpus': 15}}, {}, 'capacity', 'vcpus needs 2, 1 free'),
    ({'providers': [_cell('h/numa0', 8, 8192)]},
     {'numa_topology': [{'vcpus': 1, 'memory_mb': 1024}] * 2}, 'numa', '2 distinct'),
    ({'providers': [_pci('h/pci/a', ['OTHER'])]},
     {'pci_requests': [{'count': 1, 'trait': PHYSNET}]}, 'pci', PHYSNET),
]


@pytest.mark.parametrize('change,inst,name,text', REFUSALS)
def test_each_filter_refuses_and_names_itself(change, inst, name, text):
    source = _host('src')
    refused = scheduler.refusal(_inst(**inst), source, _host(**change))
    assert refused is not None
    assert refused[0] == name
    assert text in str(refused[1]) and 'filter %s' % name in str(refused[1])
    assert name in scheduler.FILTERS


def test_filters_refuse_in_their_listed_order():
    # Every filter is exercised above ...
    assert sorted({r[2] for r in REFUSALS}) == sorted(scheduler.FILTERS)
    # ... and a host two filters would refuse is refused by the earlier one.
    source = _host('src')
    pairs = 0
    for change_a, inst_a, name_a, _ in REFUSALS:
        for change_b, inst_b, name_b, _ in REFUSALS:
            if name_a == name_b or set(change_a) & set(change_b) or \
                    set(inst_a) & set(inst_b):
                continue
            host = _host(**dict(change_a, **change_b))
            refused = scheduler.refusal(_inst(**dict(inst_a, **inst_b)), source,
                                        host)
            first = min(name_a, name_b, key=scheduler.FILTERS.index)
            assert refused[0] == first, (name_a, name_b, refused)
            pairs += 1
    assert pairs > len(scheduler.FILTERS)


def test_force_skips_capacity_numa_and_pci_but_not_compatibility():
    source = _host('src')
    full = _host(used={'vcpus': 16, 'memory_mb': 16384, 'disk_gb': 100})
    inst = _inst(pci_requests=[{'count': 1, 'trait': PHYSNET}])
    assert scheduler.refusal(inst, source, full)[0] == 'capacity'
    assert scheduler.refusal(inst, source, full, force=True) is None
    assert scheduler.refusal(inst, source, _host(up=False), force=True)[0] == 'up'


def test_weighers_most_free_memory_then_fewest_outbound_migrations():
    source = _host('src')
    hosts = [_host('a', used={'vcpus': 0, 'memory_mb': 8192, 'disk_gb': 0}),
             _host('b', migrations_out=2), _host('c', migrations_out=1),
             _host('d', enabled=False), source,
             _host('e', allocation_ratios={'memory_mb': 2.0},
                   used={'vcpus': 0, 'memory_mb': 16384, 'disk_gb': 0})]
    passed, refused = scheduler.candidates(_inst(), source, hosts)
    # e: twice the memory, half of it used, ties with b and c; fewest outbound
    # first (e has none), then c, b; a has least free memory.
    assert [h['name'] for h in passed] == ['e', 'c', 'b', 'a']
    assert refused == {'d': 'enabled'}


def test_numa_cells_are_distinct_and_tightest_first():
    host = _host()
    cells = [_cell('h/numa0', 8, 8192),
             _cell('h/numa1', 8, 8192, used={placement.MEMORY_MB: 6144})]
    wanted = [{'vcpus': 2, 'memory_mb': 2048}]
    # The fuller cell still fits: it is used first, the empty one kept whole.
    assert placement.fit_nested(host, cells, wanted, []) == [
        ('h/numa1', {placement.VCPU: 2, placement.MEMORY_MB: 2048})]
    two = [{'vcpus': 2, 'memory_mb': 4096}, {'vcpus': 2, 'memory_mb': 1024}]
    plan = dict(placement.fit_nested(host, cells, two, []))
    assert plan == {'h/numa0': {placement.VCPU: 2, placement.MEMORY_MB: 4096},
                    'h/numa1': {placement.VCPU: 2, placement.MEMORY_MB: 1024}}
    with pytest.raises(placement.Misfit) as err:
        placement.fit_nested(host, cells, [{'vcpus': 2, 'memory_mb': 4096}] * 2, [])
    assert err.value.kind == 'numa'
    # Cells share the host's ratios.
    host = _host(allocation_ratios={'memory_mb': 2.0})
    assert placement.fit_nested(host, [_cell('h/numa0', 8, 8192)],
                                [{'vcpus': 1, 'memory_mb': 16384}], [])


def test_pci_devices_by_trait_and_count():
    host = _host()
    devices = [_pci('h/pci/a', [PHYSNET], used=1), _pci('h/pci/b', [PHYSNET]),
               _pci('h/pci/c', ['CUSTOM_OTHER'])]
    assert placement.fit_nested(host, devices, None, [
        {'count': 1, 'trait': PHYSNET}]) == [('h/pci/b', {placement.PCI_DEVICE: 1})]
    assert len(placement.fit_nested(host, devices, None, [
        {'count': 1, 'trait': PHYSNET}, {'count': 1, 'trait': None}])) == 2
    with pytest.raises(placement.Misfit) as err:
        placement.fit_nested(host, devices, None, [{'count': 2, 'trait': PHYSNET}])
    assert err.value.kind == 'pci' and '1 free' in err.value.reason


# Migration-held allocations. -------------------------------------------------------
def test_source_held_by_migration_while_it_runs_then_dropped(cloud, guest):
    g = guest('compute1', 'local', memory_mb=1536)
    cloud.cloud.inject_fault('compute2', 'plug_networking', times=1, delay_s=1.0)
    mig = cloud.api.live_migrate(g['name'], host='compute2')
    _running_atom(cloud, mig['id'], c.PLUG_NETWORKING)
    # Claimed: the guest on the destination, the migration holding the source.
    assert _allocs(cloud, g['uuid']) == [('compute2', 1536)]
    assert _allocs(cloud, mig['id']) == [('compute1', 1536)]
    mig = cloud.wait(mig['id'])
    assert mig['status'] == states.COMPLETED, mig['error']
    assert _allocs(cloud, g['uuid']) == [('compute2', 1536)]
    assert _allocs(cloud, mig['id']) == []
    assert _mine(cloud, g['uuid'], mig['id']) == []


def test_allocations_swap_back_on_rollback(cloud, guest):
    g = guest('compute1', 'local', memory_mb=1536)
    before = {h['name']: h['used'] for h in cloud.api.list_hosts()}
    cloud.cloud.inject_fault('compute1', 'start_migration')
    mig = cloud.wait(cloud.api.live_migrate(g['name'], host='compute2')['id'])
    assert mig['status'] == states.FAILED
    assert _allocs(cloud, g['uuid']) == [('compute1', 1536)]
    assert _allocs(cloud, mig['id']) == []
    assert {h['name']: h['used'] for h in cloud.api.list_hosts()} == before
    events = {(e['atom'], e['state']) for e in cloud.api.get_task_history(mig['id'])}
    assert (c.CLAIM_RESOURCES, 'REVERTED') in events


def _race_setup(db, capacity_mb, wanted_mb):
    tag = uuid.uuid4().hex[:8]
    info = {'hypervisor_type': 'fake', 'cpu_model': 'x', 'cpu_features': [],
            'vcpus': 64, 'memory_mb': capacity_mb, 'disk_gb': 1000,
            'instances_path': None}
    dest = 'race-dest-%s' % tag
    db.reports.record(dest, info, [])
    migs = []
    for i in range(2):
        src = 'race-src-%s-%d' % (tag, i)
        g = {'uuid': str(uuid.uuid4()), 'name': 'race-%s-%d' % (tag, i), 'vcpus': 1,
             'memory_mb': wanted_mb, 'disk_gb': 0, 'storage': 'volume', 'disks': [],
             'volumes': ['v%d' % i], 'sla_class': 'pet', 'power_state': 'running'}
        db.reports.record(src, dict(info, memory_mb=wanted_mb * 2), [g])
        migs.append(db.migrations.create({
            'id': str(uuid.uuid4()), 'instance_uuid': g['uuid'], 'source': src,
            'destination': dest, 'subtype': states.BLOCK_STORAGE,
            'block_migration': 'false', 'force': False}))
    return dest, migs


def test_concurrent_claims_for_the_last_capacity_only_one_wins(tmp_path):
    db = db_api.Database('sqlite:///%s' % (tmp_path / 'race.sqlite'))
    db.upgrade()
    try:
        dest, migs = _race_setup(db, capacity_mb=4096, wanted_mb=3072)
        racing = threading.local()

        def slow_usage(conn, cursor, statement, *args):
            # Widen the check-then-write window of each claim.
            if getattr(racing, 'on', False) and 'sum(' in statement.lower():
                time.sleep(0.3)

        sa.event.listen(db.engine, 'after_cursor_execute', slow_usage)
        barrier = threading.Barrier(2)
        results = [None, None]

        def claim(i):
            racing.on = True
            barrier.wait()
            try:
                db.allocations.claim(migs[i]['id'])
                results[i] = 'claimed'
            except exception.InsufficientCapacity as exc:
                results[i] = exc

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results.count('claimed') == 1, results
        winner = results.index('claimed')
        loser = results[winner ^ 1]
        assert 'memory_mb' in str(loser) and dest in str(loser)
        assert [a['consumer'] for a in db.allocations.list(host=dest)] == [
            migs[winner]['instance_uuid']]
        # The loser changed nothing: its guest still holds its own source.
        lost = migs[winner ^ 1]
        assert [a['consumer'] for a in db.allocations.list(host=lost['source'])] == [
            lost['instance_uuid']]
        assert db.allocations.list(consumer=lost['id']) == []
    finally:
        db.engine.dispose()


def test_two_migrations_racing_for_a_host_one_completes(cloud, guest, memory):
    a, b = (guest('compute1', 'local', memory_mb=4096) for _ in range(2))
    # Room for one more such guest on compute3 in the conductor's count, for
    # both on its hypervisor: both requests pass their checks, one claim fits.
    db_used = cloud.db.hosts.get('compute3')['used']['memory_mb']
    hv_used = sum(g['memory_mb'] for g in cloud.cloud.guests('compute3', True))
    memory('compute3', max(db_used, hv_used) + 6144)
    started, refused = [], []
    for x in (a, b):
        try:
            started.append(cloud.api.live_migrate(x['name'], host='compute3'))
        except exception.InsufficientCapacity as exc:  # the first claimed already
            refused.append(str(exc))
    ends = [cloud.wait(m['id']) for m in started]
    assert [m['status'] for m in ends].count(states.COMPLETED) == 1, ends
    assert len(ends) + len(refused) == 2
    for m in ends:
        if m['status'] != states.COMPLETED:
            assert m['status'] == states.FAILED
            assert 'compute3' in m['error'] and 'filter capacity' in m['error']
            assert _allocs(cloud, m['instance_uuid']) == [('compute1', 4096)]
    assert all('filter capacity' in r for r in refused)
    on_dest = [x for x in (a, b) if cloud.db.allocations.list(x['uuid'], 'compute3')]
    assert len(on_dest) == 1
    assert cloud.db.hosts.get('compute3')['used']['memory_mb'] == db_used + 4096
    assert _mine(cloud, a['uuid'], b['uuid'], *[m['id'] for m in ends]) == []


# Destination modes. --------------------------------------------------------------
def test_admin_chosen_host_refused_names_the_filter(cloud, guest, memory, disabled):
    g = guest('compute1', 'local', memory_mb=2048)
    disabled('compute2')
    with pytest.raises(exception.HostUnavailable) as err:
        cloud.api.live_migrate(g['name'], host='compute2')
    assert 'filter enabled' in str(err.value) and 'compute2' in str(err.value)
    memory('compute3', 1024)
    with pytest.raises(exception.InsufficientCapacity) as err:
        cloud.api.live_migrate(g['name'], host='compute3')
    assert 'filter capacity' in str(err.value) and 'memory_mb' in str(err.value)
    assert cloud.api.list_migrations(instance=g['uuid']) == []


def test_forced_host_skips_capacity_and_copies_the_source_allocation(cloud, guest):
    g = guest('compute1', 'local', memory_mb=2048)
    # Room for the guest on p3's hypervisor, none in the conductor's count once
    # p3 keeps all but 1 GiB for itself.
    agent = cloud.agents['compute3'].conf
    total = cloud.db.hosts.get('compute3')['memory_mb']
    agent.set_override('reserved_host_memory_mb', total - 1024, group='compute')
    cloud.refresh()
    try:
        with pytest.raises(exception.InsufficientCapacity) as err:
            cloud.api.live_migrate(g['name'], host='compute3')
        assert 'filter capacity' in str(err.value)
        mig = cloud.wait(cloud.api.live_migrate(g['name'], host='compute3', force=True)['id'])
    finally:
        agent.clear_override('reserved_host_memory_mb', group='compute')
        cloud.refresh()
    assert mig['status'] == states.COMPLETED, mig['error']
    assert mig['force'] is True
    assert _allocs(cloud, g['uuid']) == [('compute3', 2048)]


def test_forced_with_nested_allocations_is_refused_changing_nothing(cloud, guest):
    g = guest('compute1', 'local', numa_topology=[{'vcpus': 1, 'memory_mb': 512}])
    assert _nested(cloud, g['uuid']) == ['compute1/numa0'] or \
        _nested(cloud, g['uuid']) == ['compute1/numa1']
    before = (cloud.api.list_migrations(), cloud.db.allocations.list(),
              cloud.db.allocations.nested())
    with pytest.raises(exception.CannotForceNested) as err:
        cloud.api.live_migrate(g['name'], host='compute2', force=True)
    assert '2 resource providers' in str(err.value) and 'numa' in str(err.value)
    assert (cloud.api.list_migrations(), cloud.db.allocations.list(),
            cloud.db.allocations.nested()) == before
    assert cloud.cloud.leftovers('compute2', g['uuid']) == []
    assert not cloud.db.instances.get(g['uuid'])['migration_id']


def test_force_needs_a_host(cloud, guest):
    g = guest('compute1', 'local')
    with pytest.raises(exception.InvalidArgument) as err:
        cloud.api.live_migrate(g['name'], force=True)
    assert 'force' in str(err.value) and 'True' in str(err.value)


def test_numa_guest_moves_with_its_cells_only_where_cells_fit(cloud, guest):
    g = guest('compute1', 'local', memory_mb=2048,
              numa_topology=[{'vcpus': 1, 'memory_mb': 1024}] * 2)
    assert [p.split('/')[0] for p in _nested(cloud, g['uuid'])] == ['compute1', 'compute1']
    with pytest.raises(exception.InsufficientCapacity) as err:
        cloud.api.live_migrate(g['name'], host='compute3')
    assert 'filter numa' in str(err.value)
    mig = cloud.wait(cloud.api.live_migrate(g['name'])['id'])
    assert mig['status'] == states.COMPLETED, mig['error']
    assert mig['destination'] == 'compute2'  # the only other host with two cells
    assert _nested(cloud, g['uuid']) == ['compute2/numa0', 'compute2/numa1']
    assert _nested(cloud, mig['id']) == []


def test_pci_guest_goes_only_where_a_device_with_its_trait_is_free(cloud, guest):
    g = guest('compute3', 'local', pci_requests=[{'count': 1, 'trait': PHYSNET}])
    assert _nested(cloud, g['uuid']) == ['compute3/pci/0000:82:00.1']
    with pytest.raises(exception.InsufficientCapacity) as err:
        cloud.api.live_migrate(g['name'], host='compute1')
    assert 'filter pci' in str(err.value) and PHYSNET in str(err.value)
    mig = cloud.wait(cloud.api.live_migrate(g['name'])['id'])
    assert mig['status'] == states.COMPLETED, mig['error']
    assert mig['destination'] == 'compute2'
    assert _nested(cloud, g['uuid']) == ['compute2/pci/0000:81:00.1']
    # p2's only device is taken now: a second such guest has nowhere to go.
    other = guest('compute3', 'local', pci_requests=[{'count': 1, 'trait': PHYSNET}])
    with pytest.raises(exception.NoValidHost) as err:
        cloud.api.live_migrate(other['name'])
    assert 'compute2 refused by filter pci' in str(err.value)


# Retries over candidates. ---------------------------------------------------------
def _order(cloud, g):
    inst = cloud.db.instances.get(g['uuid'])
    source = cloud.db.hosts.get(inst['host'])
    passed, _ = scheduler.candidates(inst, source, cloud.db.hosts.list())
    return [h['name'] for h in passed]


@pytest.mark.parametrize('step,skip', [('create_local_disks', 0),
                                       ('check_destination', 1)])
def test_retry_on_the_next_candidate_after_a_failing_first(cloud, guest, step, skip):
    g = guest('compute1', 'local', memory_mb=1024)
    first, second = _order(cloud, g)[:2]
    # check_destination: the request's own probe passes, the flow's call fails.
    cloud.cloud.inject_fault(first, step, skip=skip)
    mig = cloud.api.live_migrate(g['name'])
    assert mig['destination'] == first
    mig = cloud.wait(mig['id'])
    assert mig['status'] == states.COMPLETED, mig['error']
    assert mig['destination'] == second
    assert cloud.cloud.find_guest(g['uuid']) == {second: 'running'}
    # Nothing left of the first attempt: no claim, no disks, no probe.
    assert _held_anywhere(cloud, g['uuid'], first) == []
    assert _held_anywhere(cloud, mig['id'], first) == []
    assert cloud.cloud.leftovers(first, g['uuid']) == []
    assert _allocs(cloud, g['uuid']) == [(second, 1024)]
    events = cloud.api.get_task_history(mig['id'])
    seen = [(e['atom'], e['state']) for e in events]
    assert (c.DESTINATION_RETRY, 'RETRYING') in seen
    assert (c.CLAIM_RESOURCES, 'REVERTED') in seen
    attempts = [(e['host'], e['details']['attempt']) for e in events
                if e['state'] == 'ATTEMPT']
    assert attempts == [(first, 1), (second, 2)]
    assert [e['error'] for e in events if e['state'] == 'FAILURE'] == [
        'Step %s failed on host %s: injected fault' % (step, first)]
    assert _mine(cloud, g['uuid'], mig['id']) == []


def test_every_candidate_failing_rolls_back_everything(cloud, guest):
    g = guest('compute1', 'local', memory_mb=1024)
    order = _order(cloud, g)
    for host in order:
        cloud.cloud.inject_fault(host, 'plug_networking')
    before = {h['name']: h['used'] for h in cloud.api.list_hosts()}
    mig = cloud.wait(cloud.api.live_migrate(g['name'])['id'])
    assert mig['status'] == states.FAILED
    assert 'plug_networking' in mig['error']
    attempts = [e['host'] for e in cloud.api.get_task_history(mig['id'])
                if e['state'] == 'ATTEMPT']
    assert attempts == order
    assert {h['name']: h['used'] for h in cloud.api.list_hosts()} == before
    assert _allocs(cloud, g['uuid']) == [('compute1', 1024)]
    assert _allocs(cloud, mig['id']) == []
    assert cloud.cloud.find_guest(g['uuid']) == {'compute1': 'running'}
    for host in order:
        assert cloud.cloud.leftovers(host, g['uuid']) == []


def test_no_further_attempt_after_an_abort_during_a_failing_one(cloud, guest):
    g = guest('compute1', 'local', memory_mb=1024)
    first, second = _order(cloud, g)[:2]
    # Each candidate's preparation is held (the abort lands then), then fails.
    for host in (first, second):
        cloud.cloud.inject_fault(host, 'create_local_disks', times=1, delay_s=1.0)
        cloud.cloud.inject_fault(host, 'plug_networking')
    before = {h['name']: h['used'] for h in cloud.api.list_hosts()}
    mig = cloud.api.live_migrate(g['name'])
    _running_atom(cloud, mig['id'], c.CREATE_LOCAL_DISKS)
    cloud.api.abort_migration(mig['id'])
    mig = cloud.wait(mig['id'])
    assert mig['status'] == states.CANCELLED, (mig['status'], mig['error'])
    assert mig['destination'] == first
    events = cloud.api.get_task_history(mig['id'])
    assert [e['host'] for e in events if e['state'] == 'ATTEMPT'] == [first]
    assert (c.DESTINATION_RETRY, 'RETRYING') not in {
        (e['atom'], e['state']) for e in events}
    # The second candidate was never asked anything.
    assert cloud.cloud.load(second)['faults']['create_local_disks']['times'] == 1
    assert {h['name']: h['used'] for h in cloud.api.list_hosts()} == before
    assert cloud.cloud.find_guest(g['uuid']) == {'compute1': 'running'}
    for host in (first, second):
        assert cloud.cloud.leftovers(host, g['uuid']) == []


def test_attempts_end_at_the_configured_limit(cloud, guest):
    g = guest('compute1', 'local')
    first, second = _order(cloud, g)[:2]
    cloud.cloud.inject_fault(first, 'create_local_disks')
    conf = cloud.conductor_conf
    conf.set_override('max_destination_attempts', 1, group='conductor')
    try:
        mig = cloud.wait(cloud.api.live_migrate(g['name'])['id'])
    finally:
        conf.clear_override('max_destination_attempts', group='conductor')
    # The second candidate would have done; one attempt was all that was allowed.
    assert mig['status'] == states.FAILED and mig['destination'] == first
    states_seen = {e['state'] for e in cloud.api.get_task_history(mig['id'])}
    assert 'RETRYING' not in states_seen
    assert cloud.cloud.leftovers(second, g['uuid']) == []


def test_admin_chosen_host_is_the_only_attempt(cloud, guest):
    g = guest('compute1', 'local')
    cloud.cloud.inject_fault('compute2', 'create_local_disks')
    mig = cloud.wait(cloud.api.live_migrate(g['name'], host='compute2')['id'])
    assert mig['status'] == states.FAILED and mig['destination'] == 'compute2'
    events = cloud.api.get_task_history(mig['id'])
    assert not [e for e in events if e['state'] in ('ATTEMPT', 'RETRYING')]


def test_libvirt_reports_numa_cells_from_its_capabilities():
    from compute_agent.virt.libvirt import driver
    caps = '''<capabilities><host><cpu><model>x</model></cpu><topology>
      <cells num='2'>
        <cell id='0'><memory unit='KiB'>8388608</memory>
          <cpus num='2'><cpu id='0'/><cpu id='1'/></cpus></cell>
        <cell id='1'><memory unit='KiB'>4194304</memory>
          <cpus num='1'><cpu id='2'/></cpus></cell>
      </cells></topology></host></capabilities>'''
    assert driver.numa_cells(caps) == [{'id': 0, 'vcpus': 2, 'memory_mb': 8192},
                                       {'id': 1, 'vcpus': 1, 'memory_mb': 4096}]
    assert driver.numa_cells('<capabilities><host/></capabilities>') == []
    providers = placement.providers_from_report('h', {'numa_cells': driver.numa_cells(
        caps)})
    assert [(p['name'], p['inventory']) for p in providers] == [
        ('h/numa0', {placement.VCPU: 2, placement.MEMORY_MB: 8192}),
        ('h/numa1', {placement.VCPU: 1, placement.MEMORY_MB: 4096})]
