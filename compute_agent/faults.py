"""Fault injection for tests: make a named agent step fail, any driver.

A fault is ``{"times": N, "skip": K}``: after K calls that pass, the next N fail
(N = -1: every one). The agent reads ``[compute] fault_injection_file`` (a JSON
object of step name -> fault) at every step; the simulated driver keeps the same
records in its hosts' state.
"""

import fcntl
import json
import os

from ferryman import exception


def consume(faults, step):
    """Whether this call of ``step`` fails; updates ``faults`` in place."""
    fault = faults.get(step)
    if fault is None or fault['times'] == 0:
        return False
    if fault['skip'] > 0:
        fault['skip'] -= 1
        return False
    if fault['times'] > 0:
        fault['times'] -= 1
    return True


def check_file(path, step, host):
    if not path or not os.path.exists(path):
        return
    with open(path, 'r+') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        faults = json.loads(f.read() or '{}')
        failing = consume(faults, step)
        f.seek(0)
        f.truncate()
        json.dump(faults, f)
    if failing:
        raise exception.AgentStepFailed(step=step, host=host, reason='injected fault')


def write_file(path, faults):
    """Replace the injected faults (the tests' side)."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(faults, f)
    os.replace(tmp, path)
