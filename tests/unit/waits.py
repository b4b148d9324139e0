"""Waiting on a migration's flow in the in-process cloud's tests."""

import time


def running_atom(cloud, mig_id, atom, timeout=30):
    """Wait until ``atom`` of the migration's flow has started and not ended."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        last = {e['atom']: e['state'] for e in cloud.api.get_task_history(mig_id)}
        if last.get(atom) == 'RUNNING':
            return
        time.sleep(0.01)
    raise AssertionError('%s of %s never seen running' % (atom, mig_id))
