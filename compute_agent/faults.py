"""Fault injection for tests: make a named agent step fail, any driver.

A fault is ``{"times": N, "skip": K}``: after K calls that pass, the next N fail
(N = -1: every one). With ``"delay_s": S`` those N calls are held S seconds and
then pass instead (a step caught in the middle, for tests of abort and
force-complete at that point). The agent reads ``[compute] fault_injection_file`` (a JSON
object of step name -> fault) at every step; the simulated driver keeps the same
records in its hosts' state.
"""

import fcntl
import json
import os
import time

from ferryman import exception


def consume(faults, step):
    """The fault this call of ``step`` meets, or None; updates ``faults`` in place."""
    fault = faults.get(step)
    if fault is None or fault['times'] == 0:
        return None
    if fault['skip'] > 0:
        fault['skip'] -= 1
        return None
    if fault['times'] > 0:
        fault['times'] -= 1
    return dict(fault)


def apply(fault, step, host):
    """Hold or fail this call as ``fault`` (from consume) says."""
    if fault is None:
        return
    if fault.get('delay_s'):
        time.sleep(float(fault['delay_s']))
        return
    raise exception.AgentStepFailed(step=step, host=host, reason='injected fault')


def check_file(path, step, host):
    if not path or not os.path.exists(path):
        return
    with open(path, 'r+') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        faults = json.loads(f.read() or '{}')
        fault = consume(faults, step)
        f.seek(0)
        f.truncate()
        json.dump(faults, f)
    apply(fault, step, host)


def write_file(path, faults):
    """Replace the injected faults (the tests' side)."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(faults, f)
    os.replace(tmp, path)
