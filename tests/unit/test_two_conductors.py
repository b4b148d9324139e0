"""Two conductors in one process, each with its own database, agents and
transport: each one's flows use its own services, never the other's (a benchmark
beside a test cloud once left the cloud's migrations unrecorded)."""

import contextlib

from ferryman.sim import cloud as sim
from flows import states


def _cloud(stack, name):
    # Each simulated cloud has a transport of its own (rpc.IN_PROCESS_URL with a
    # private exchange), as a benchmark's and a test's would.
    return stack.enter_context(sim.SimCloud())


def test_two_conductors_run_migrations_at_once_each_in_its_own_database():
    with contextlib.ExitStack() as stack:
        clouds = [_cloud(stack, 'a'), _cloud(stack, 'b')]
        for c in clouds:
            c.cloud.create_guest('compute2', 'twin', storage='local', disks=[
                {'name': 'root', 'size_gb': 1, 'format': 'qcow2'}])
            c.refresh()
        migs = [c.api.live_migrate('twin', host='compute3') for c in clouds]
        ended = [c.wait(m['id'], timeout=30) for c, m in zip(clouds, migs)]
        for mig in ended:
            assert (mig['status'], mig['error']) == (states.COMPLETED, None)
        for c, mig, other in zip(clouds, migs, reversed(migs)):
            assert [m['id'] for m in c.db.migrations.list()] == [mig['id']]
            atoms = {e['atom'] for e in c.db.history.list(mig['id'])}
            assert 'finish-migration' in atoms, atoms
            assert c.db.history.list(other['id']) == []
            assert c.cloud.find_guest(c.db.instances.get('twin')['uuid']) == {
                'compute3': 'running'}
