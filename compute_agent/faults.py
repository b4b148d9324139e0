"""Fault injection for tests: make a named agent step fail, any driver.

A fault is ``{"times": N, "skip": K}``: after K calls that pass, the next N fail
(N = -1: every one). With ``"delay_s": S`` those N calls are held S seconds and
then pass instead (a step caught in the middle, for tests of abort and
force-complete at that point). With ``"kill": "before"`` or ``"after"`` the
agent kills itself (SIGKILL) before the step acts, or after it acted and before it
answers: the chaos tests' dead agent. The agent reads ``[compute] fault_injection_file`` (a JSON
object of step name -> fault) at every step; the simulated driver keeps the same
records in its hosts' state.
"""

import fcntl
import json
import os
import signal
import time

from oslo_log import log as logging

from ferryman.common import exception

LOG = logging.getLogger(__name__)


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


def kill_self(step, host, when):
    LOG.warning('Fault at %s on %s: killing this agent %s the step', step, host,
                when)
    os.kill(os.getpid(), signal.SIGKILL)


def apply(fault, step, host):
    """Hold or fail this call as ``fault`` (from consume) says."""
    if fault is None:
        return
    if fault.get('kill') == 'before':
        kill_self(step, host, 'before')
    if fault.get('kill') == 'after':
        return  # the caller acts, then kills
    if fault.get('delay_s'):
        time.sleep(float(fault['delay_s']))
        return
    raise exception.AgentStepFailed(step=step, host=host, reason='injected fault')


def check_file(path, step, host):
    """Apply the fault this call meets; return it (the caller kills after)."""
    if not path or not os.path.exists(path):
        return None
    with open(path, 'r+') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        faults = json.loads(f.read() or '{}')
        fault = consume(faults, step)
        f.seek(0)
        f.truncate()
        json.dump(faults, f)
    apply(fault, step, host)
    return fault


def write_file(path, faults):
    """Replace the injected faults (the tests' side)."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(faults, f)
    os.replace(tmp, path)
