"""Crash points, for crash and chaos tests only: the conductor kills itself, as
kill -9 would, the moment a migration's atom reaches a state.

A point is ``ATOM:STATE``: a TaskFlow state the task history records (RUNNING,
SUCCESS, REVERTING, REVERTED...), or EXECUTED, when a task's work is done and its
result not yet saved (the moment a real crash loses most). Points come from
``[conductor] crash_at`` or from ``[conductor] crash_file``, read at every
transition so that one conductor process serves case after case: a JSON object of
point -> victim, "self" or the pid of another process to kill there (an agent, the
broker; negative: its process group), so that a chaos test can kill any process
at any step of the flow.
"""

import json
import os
import signal

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

EXECUTED = 'EXECUTED'


def _victims(conf):
    victims = {conf.conductor.crash_at: 'self'} if conf.conductor.crash_at else {}
    path = conf.conductor.crash_file
    if path:
        try:
            with open(path) as f:
                victims.update(json.load(f))
        except FileNotFoundError:
            pass
        except ValueError:
            # Half-written by the test; the next transition reads it whole.
            LOG.warning('crash_file %s is not a JSON object yet', path)
    return victims


def reached(conf, atom, state):
    if conf is None or not (conf.conductor.crash_at or conf.conductor.crash_file):
        return
    point = '%s:%s' % (atom, state)
    victim = _victims(conf).get(point)
    if victim is None:
        return
    if victim == 'self':
        LOG.warning('crash point %s reached: killing this conductor', point)
        os.kill(os.getpid(), signal.SIGKILL)
    LOG.warning('crash point %s reached: killing process %s', point, victim)
    try:
        os.kill(int(victim), signal.SIGKILL)
    except (OSError, ValueError) as exc:
        LOG.error('crash point %s: cannot kill %r: %s', point, victim, exc)
