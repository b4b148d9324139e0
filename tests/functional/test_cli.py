"""The ferryman CLI against a conductor and three agents in separate processes.

Guests are seeded and inspected through FakeCloud, the simulated hypervisors'
shared state; everything else goes through the ``ferryman`` command.
"""

import uuid

import pytest
from taskflow import flow as tf_flow

import flows

pytestmark = pytest.mark.functional


def unique(prefix):
    # One cluster serves every test: unique names keep them independent.
    return '%s-%s' % (prefix, uuid.uuid4().hex[:6])


def flow_atoms(subtype):
    """The top flow, every task and every retry controller of the subtype: the
    atoms that record history."""
    def tasks(flow):
        if flow.retry is not None:
            yield flow.retry.name
        for child, _meta in flow.iter_nodes():
            if isinstance(child, tf_flow.Flow):
                yield from tasks(child)
            else:
                yield child.name
    flow = flows.build(subtype)
    return {flow.name, *tasks(flow)}


def migrate(cluster, name, *args):
    return cluster.cli('live-migrate', name, '--wait', *args)


def instance(cluster, uuid):
    rc, instances = cluster.cli('instance', 'list')
    assert rc == 0, instances
    return next(i for i in instances if i['uuid'] == uuid)


def usage(cluster, host):
    rc, hosts = cluster.cli('host', 'list')
    assert rc == 0, hosts
    return next(h['used'] for h in hosts if h['name'] == host)


@pytest.fixture(scope='module')
def block_migration(cluster):
    """A local-disk guest moved compute1 -> compute2: (guest, data, migration)."""
    name = unique('blk')
    data = 'written by %s before migrating' % name
    guest = cluster.seed(name, 'compute1', data=data)
    rc, mig = migrate(cluster, name, '--host', 'compute2')
    assert rc == 0, mig
    return guest, data, mig


def test_block_migration(cluster, block_migration):
    guest, data, mig = block_migration
    uuid = guest['uuid']
    assert (mig['status'], mig['subtype']) == ('completed', 'block')
    assert (mig['source'], mig['destination']) == ('compute1', 'compute2')
    assert cluster.cloud.find_guest(uuid) == {'compute2': 'running'}
    assert cluster.cloud.read_disk('compute2', uuid) == data
    assert cluster.cloud.leftovers('compute1', uuid) == []

    rc, events = cluster.cli('migration', 'tasks', mig['id'])
    assert rc == 0, events
    last = {e['atom']: e['state'] for e in events}  # events come oldest first
    assert last == dict.fromkeys(flow_atoms('block'), 'SUCCESS')

    inst = instance(cluster, uuid)
    assert (inst['host'], inst['migration_id']) == ('compute2', None)


def test_file_level_migration(cluster):
    name = unique('fl')
    guest = cluster.seed(name, 'compute2', data='shared')
    rc, mig = migrate(cluster, name, '--host', 'compute3')
    assert rc == 0, mig
    assert (mig['status'], mig['subtype']) == ('completed', 'file-level')
    assert cluster.cloud.find_guest(guest['uuid']) == {'compute3': 'running'}
    # The shared instance directory now belongs to compute3: not a leftover.
    assert cluster.cloud.read_disk('compute3', guest['uuid']) == 'shared'
    assert cluster.cloud.leftovers('compute2', guest['uuid']) == []
    assert instance(cluster, guest['uuid'])['host'] == 'compute3'


def test_block_storage_migration_scheduled(cluster):
    name = unique('vol')
    guest = cluster.seed(name, 'compute1', storage='volume')
    rc, mig = migrate(cluster, name)
    assert rc == 0, mig
    assert (mig['status'], mig['subtype']) == ('completed', 'block-storage')
    dest = mig['destination']
    assert dest in ('compute2', 'compute3')
    assert cluster.cloud.find_guest(guest['uuid']) == {dest: 'running'}
    assert cluster.cloud.leftovers('compute1', guest['uuid']) == []
    volume = guest['volumes'][0]
    assert 'volume:' + volume in cluster.cloud.leftovers(dest, guest['uuid'])


def test_failure_rolls_back(cluster):
    name = unique('fail')
    guest = cluster.seed(name, 'compute1', data='stays')
    before = usage(cluster, 'compute2')
    cluster.cloud.inject_fault('compute2', 'create_local_disks')

    rc, mig = migrate(cluster, name, '--host', 'compute2')
    assert rc != 0
    assert mig['status'] == 'failed'
    assert 'create_local_disks' in mig['error']
    assert cluster.cloud.find_guest(guest['uuid']) == {'compute1': 'running'}
    assert cluster.cloud.read_disk('compute1', guest['uuid']) == 'stays'
    assert cluster.cloud.leftovers('compute2', guest['uuid']) == []
    assert usage(cluster, 'compute2') == before
    inst = instance(cluster, guest['uuid'])
    assert (inst['host'], inst['migration_id']) == ('compute1', None)

    rc, out = cluster.cli('flow', 'render', mig['id'])
    assert rc == 0, out
    assert out['states']['create-local-disks'] == 'FAILURE'
    assert out['states']['claim-resources'] == 'REVERTED'


def test_bad_requests_are_refused_and_not_recorded(cluster):
    name = unique('bad')
    cluster.seed(name, 'compute1')
    rc, before = cluster.cli('migration', 'list')
    assert rc == 0, before

    for args, word in ((['no-such-guest'], 'no-such-guest'),
                       ([name, '--block-migration', 'maybe'], 'maybe'),
                       ([name, '--host', 'compute1'], 'compute1')):
        rc, out = cluster.cli('live-migrate', *args)
        assert rc != 0, out
        assert word in out['message'], out
        assert 'Traceback' not in out['message'], out
    assert out['error'] == 'DestinationSameAsSource'

    assert cluster.cli('migration', 'list') == (0, before)


def test_flow_pictures(cluster, block_migration, tmp_path):
    svg = tmp_path / 'block.svg'
    rc, out = cluster.cli('flow', 'show', 'block', '--format', 'svg',
                          '--output', svg)
    assert rc == 0, out
    assert out['bytes'] == svg.stat().st_size > 0
    assert '<svg' in svg.read_text()

    rc, out = cluster.cli('flow', 'render', block_migration[2]['id'],
                          '--format', 'text')
    assert rc == 0, out
    assert out['subtype'] == 'block'
    lines = out['picture'].splitlines()
    assert lines[0] == 'block-live-migration  [SUCCESS]'
    tasks = [line for line in lines if 'create-local-disks' in line]
    assert tasks and tasks[0].endswith('SUCCESS')
