"""The conductor killed (SIGKILL) at a step, then restarted: every migration
resumes from its saved flow and ends completed or rolled back, never stuck, with
the guest on exactly one host and resources counted once."""

import time
import uuid

import pytest

pytestmark = pytest.mark.functional

TERMINAL = ('completed', 'failed', 'cancelled', 'error')


def _migration_of(cluster, guest_uuid):
    rc, migs = cluster.cli('migration', 'list', '--instance', guest_uuid)
    assert rc == 0, migs
    return migs[-1] if migs else None


def _allocations_ok(cluster, guest, host):
    rc, hosts = cluster.cli('host', 'list')
    assert rc == 0
    rc, insts = cluster.cli('instance', 'list')
    mine = [i for i in insts if i['uuid'] == guest['uuid']]
    assert mine and mine[0]['host'] == host and not mine[0]['migration_id']
    # Usage on every host equals the memory of the guests the conductor puts there.
    for h in hosts:
        expected = sum(i['memory_mb'] for i in insts if i['host'] == h['name'])
        assert h['used']['memory_mb'] == expected, (h, insts)


# Every step's EXECUTED point is test_chaos.py's; these are the points it has not.
@pytest.mark.parametrize('crash_at,fault,outcome', [
    ('monitor-migration:RUNNING', None, 'completed'),
    # Killed in the middle of a rollback: the rollback goes on after the restart.
    ('create-local-disks:REVERTING', ('compute2', 'plug_networking'), 'failed'),
])
def test_conductor_killed_at_a_step_resumes(cluster, crash_at, fault, outcome):
    name = 'crash-%s' % uuid.uuid4().hex[:6]
    guest = cluster.seed(name, 'compute1', memory_mb=512, data='before %s' % name)
    if fault:
        cluster.cloud.inject_fault(*fault)
    cluster.restart('conductor', conductor={'crash_at': crash_at})
    cluster.wait_for(lambda: cluster.cli('host', 'list', timeout=3)[0] == 0,
                     'conductor answering')
    # The reply may be lost if the crash comes first; the migration is found below.
    cluster.cli('live-migrate', name, '--host', 'compute2', timeout=10)
    assert cluster.exited('conductor', timeout=60) != 0  # it was killed
    cluster.restart('conductor', conductor={})
    deadline = time.monotonic() + 90
    while True:
        mig = _migration_of(cluster, guest['uuid']) if cluster.cli(
            'host', 'list', timeout=3)[0] == 0 else None
        if mig and mig['status'] in TERMINAL:
            break
        assert time.monotonic() < deadline, 'migration stuck: %s' % mig
        time.sleep(0.5)
    assert mig['status'] == outcome, mig
    where = 'compute2' if outcome == 'completed' else 'compute1'
    other = 'compute1' if where == 'compute2' else 'compute2'
    assert cluster.cloud.find_guest(guest['uuid']) == {where: 'running'}
    assert cluster.cloud.leftovers(other, guest['uuid']) == []
    assert cluster.cloud.read_disk(where, guest['uuid']) == 'before %s' % name
    _allocations_ok(cluster, guest, where)
    rc, tasks = cluster.cli('migration', 'tasks', mig['id'])
    assert any(t['atom'] == crash_at.split(':')[0] for t in tasks)
    rc, report = cluster.cli('audit')
    assert (rc, report['violations']) == (0, []), report
