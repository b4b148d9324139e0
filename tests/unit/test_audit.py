"""ferryman audit on a cloud of its own (the shared one keeps what other tests
leave on purpose, such as migrations in error)."""

import os

import pytest

from conductor import audit
from conductor.db import models
from ferryman.sim import cloud as sim
from flows import states


@pytest.fixture(scope='module')
def cloud():
    with sim.SimCloud() as c:
        yield c


def test_audit_is_clean_after_migrations_and_finds_violations(cloud, guest):
    assert cloud.api.audit()['violations'] == []
    g = guest('compute1', 'local')
    assert cloud.wait(cloud.api.live_migrate(g['name'], host='compute2')['id'])[
        'status'] == states.COMPLETED
    report = cloud.api.audit()
    assert report['violations'] == [], report
    assert report['hosts'] == 3
    # A guest on two hosts, a leaked claim, a leftover directory: all reported.
    with cloud.cloud.editing('compute3') as state:
        state['guests'][g['uuid']] = dict(state.get('guests', {}).get(g['uuid'], {}),
                                          power_state='running')
    os.makedirs(os.path.join(cloud.cloud.load('compute1')['info']['instances_path'],
                             g['uuid']))
    with cloud.db.session.begin() as s:
        s.add(models.Allocation(consumer='0' * 36, host='compute1', vcpus=1,
                                memory_mb=64, disk_gb=0))
    kinds = sorted({v['kind'] for v in cloud.api.audit()['violations']})
    texts = ' | '.join(v['text'] for v in cloud.api.audit()['violations'])
    assert kinds == ['allocation', 'guest', 'leftover'], texts
    assert 'runs on 2 hosts' in texts and 'leaked claim' in texts
    assert 'instance directory of %s on compute1' % g['uuid'] in texts
    # Put things right again for the tests after this one.
    with cloud.cloud.editing('compute3') as state:
        del state['guests'][g['uuid']]
    os.rmdir(os.path.join(cloud.cloud.load('compute1')['info']['instances_path'],
                          g['uuid']))
    with cloud.db.session.begin() as s:
        s.query(models.Allocation).filter_by(consumer='0' * 36).delete()
    assert cloud.api.audit()['violations'] == []


PHYSNET = 'CUSTOM_PHYSNET_A'


@pytest.fixture
def nested_hosts(cloud):
    """compute1 and compute2 with two NUMA cells and one PCI device each."""
    for host in ('compute1', 'compute2'):
        conf = cloud.agents[host].conf
        conf.set_override('numa_cells', 2, group='fake')
        conf.set_override('pci_devices', ['0000:81:00.1/' + PHYSNET], group='fake')
    cloud.refresh()
    yield
    for host in ('compute1', 'compute2'):
        conf = cloud.agents[host].conf
        conf.clear_override('numa_cells', group='fake')
        conf.clear_override('pci_devices', group='fake')
    cloud.refresh()


def _nested_texts(cloud):
    return [v['kind'] + ': ' + v['text'] for v in cloud.api.audit()['violations']]


def test_audit_checks_nested_allocations(cloud, guest, nested_hosts):
    g = guest('compute1', 'volume', numa_topology=[{'vcpus': 1, 'memory_mb': 512}],
              pci_requests=[{'count': 1, 'trait': PHYSNET}])
    held = cloud.db.allocations.nested(consumer=g['uuid'])
    assert sorted(a['provider'] for a in held) == [
        'compute1/numa0', 'compute1/pci/0000:81:00.1']
    assert _nested_texts(cloud) == []
    # Moved with its cells and device: nothing left behind, nothing missing.
    mig = cloud.api.live_migrate(g['name'], host='compute2')
    assert cloud.wait(mig['id'])['status'] == states.COMPLETED
    assert {a['host'] for a in cloud.db.allocations.nested(consumer=g['uuid'])} \
        == {'compute2'}
    assert _nested_texts(cloud) == []

    # Injected: the guest's cell left on its old host; a PCI device claimed by
    # nobody, twice over; the guest's own device claim gone.
    with cloud.db.session.begin() as s:
        s.add(models.NestedAllocation(consumer=g['uuid'], host='compute1',
                                      provider='compute1/numa1',
                                      resources={'VCPU': 1, 'MEMORY_MB': 512}))
        s.add(models.NestedAllocation(consumer='1' * 36, host='compute1',
                                      provider='compute1/pci/0000:81:00.1',
                                      resources={'PCI_DEVICE': 2}))
        own_pci = s.query(models.NestedAllocation).filter_by(
            consumer=g['uuid'], provider='compute2/pci/0000:81:00.1').one()
        kept = {c.name: getattr(own_pci, c.name) for c in own_pci.__table__.columns
                if c.name != 'id'}
        s.delete(own_pci)
    try:
        texts = _nested_texts(cloud)
        assert sorted(texts) == sorted([
            'allocation: leaked nested claim: guest %s holds MEMORY_MB 512, VCPU 1 '
            'on compute1/numa1 (host compute1)' % g['uuid'],
            'allocation: leaked nested claim: migration %s holds PCI_DEVICE 2 on '
            'compute1/pci/0000:81:00.1 (host compute1)' % ('1' * 36),
            'allocation: guest %s (%s) holds 1 NUMA cell(s) and 0 PCI device(s) on '
            'its host compute2; its flavor asks for 1 and 1' % (
                g['name'], g['uuid']),
            'overcommit: provider compute1/pci/0000:81:00.1 holds 2 PCI_DEVICE, it '
            'can hold 1',
        ]), texts
    finally:
        with cloud.db.session.begin() as s:
            s.query(models.NestedAllocation).filter(
                models.NestedAllocation.host == 'compute1').delete()
            s.add(models.NestedAllocation(**kept))
    assert _nested_texts(cloud) == []


def test_nested_claims_of_a_migration_in_flight_are_expected():
    hosts = [{'name': h, 'allocation_ratios': {}, 'providers': [
        {'name': h + '/numa0', 'kind': 'numa', 'inventory': {'VCPU': 2,
                                                             'MEMORY_MB': 1024},
         'traits': []}]} for h in ('a', 'b', 'c')]
    inst = {'uuid': 'g', 'name': 'guest', 'host': 'a',
            'numa_topology': [{'vcpus': 1, 'memory_mb': 512}], 'pci_requests': []}
    mig = {'id': 'm', 'instance_uuid': 'g', 'source': 'a', 'destination': 'b'}

    def row(consumer, host):
        return {'consumer': consumer, 'host': host, 'provider': host + '/numa0',
                'resources': {'VCPU': 1, 'MEMORY_MB': 512}}

    claimed = [row('m', 'a'), row('g', 'b')]
    assert audit._nested(claimed, {'g': inst}, [mig], hosts) == []
    # The same claims with the migration over: both are leaks (and the guest
    # holds nothing on its host).
    found = audit._nested(claimed, {'g': inst}, [], hosts)
    assert [v[1].split(':')[0] for v in found] == [
        'leaked nested claim', 'leaked nested claim',
        'guest guest (g) holds 0 NUMA cell(s) and 0 PCI device(s) on its host a; '
        'its flavor asks for 1 and 0'], found
    # Nothing on a third host, and none beyond a cell's inventory.
    found = audit._nested(claimed + [row('g', 'c')] + [row('m', 'a')] * 2,
                          {'g': inst}, [mig], hosts)
    assert found == [
        ('allocation', 'leaked nested claim: guest g holds MEMORY_MB 512, VCPU 1 '
                       'on c/numa0 (host c)'),
        ('overcommit', 'provider a/numa0 holds 1536 MEMORY_MB, it can hold 1024'),
        ('overcommit', 'provider a/numa0 holds 3 VCPU, it can hold 2')], found
