"""Migration state machines, one per subtype, with shared state names.

Every status change of a migration is checked against its subtype's machine, so a
status can never jump (say from completed back to running) whatever code asks.
"""

from automaton import exceptions as automaton_exc
from automaton import machines

from ferryman.common import exception
# The names are the shared vocabulary's, here beside the machines that order them.
from ferryman.common.vocabulary import (  # noqa: F401
    ACCEPTED, ACTIVE, BLOCK, BLOCK_STORAGE, CANCELLED, COMPLETED, ERROR, FAILED,
    FILE_LEVEL, FINISHING, POST_COPY, PREPARING, RUNNING, SUBTYPES, TERMINAL)

# (from, event, to) shared by every subtype.
_TRANSITIONS = [
    (ACCEPTED, 'prepare', PREPARING),
    (PREPARING, 'start', RUNNING),
    (RUNNING, 'switch_over', FINISHING),
    # Post-copy: past switch-over already, so forward (or error) only.
    (RUNNING, 'post_copy', POST_COPY),
    (POST_COPY, 'switch_over', FINISHING),
    (POST_COPY, 'error', ERROR),
    (FINISHING, 'complete', COMPLETED),
    (ACCEPTED, 'fail', FAILED), (PREPARING, 'fail', FAILED),
    (RUNNING, 'fail', FAILED),
    (ACCEPTED, 'cancel', CANCELLED), (PREPARING, 'cancel', CANCELLED),
    (RUNNING, 'cancel', CANCELLED),
    (ACCEPTED, 'error', ERROR), (PREPARING, 'error', ERROR),
    (RUNNING, 'error', ERROR), (FINISHING, 'error', ERROR),
]


def _build(subtype):
    machine = machines.FiniteMachine()
    for state in ACTIVE:
        machine.add_state(state)
    for state in TERMINAL:
        machine.add_state(state, terminal=True)
    for src, event, dst in _TRANSITIONS:
        machine.add_transition(src, dst, event)
    machine.default_start_state = ACCEPTED
    machine.freeze()
    return machine


MACHINES = {subtype: _build(subtype) for subtype in SUBTYPES}


def advance(subtype, current, event):
    """The status that ``event`` leads to from ``current``; refuses any other."""
    machine = MACHINES[subtype].copy()
    try:
        machine.initialize(current)
        machine.process_event(event)
    except automaton_exc.AutomatonException:
        raise exception.Invalid(
            reason='a %s migration in state %s cannot %s' % (subtype, current, event))
    return machine.current_state
