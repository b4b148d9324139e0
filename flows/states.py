"""Migration state machines, one per subtype, with shared state names.

Every status change of a migration is checked against its subtype's machine, so a
status can never jump (say from completed back to running) whatever code asks.
"""

from automaton import exceptions as automaton_exc
from automaton import machines

from ferryman import exception

ACCEPTED = 'accepted'
PREPARING = 'preparing'
RUNNING = 'running'
POST_COPY = 'post-copy'  # runs on the destination while its memory follows
FINISHING = 'finishing'
COMPLETED = 'completed'
FAILED = 'failed'        # rolled back; the guest runs on the source
CANCELLED = 'cancelled'  # stopped on request; the guest runs on the source
ERROR = 'error'          # rollback failed or failure after switch-over: operator

TERMINAL = (COMPLETED, FAILED, CANCELLED, ERROR)
ACTIVE = (ACCEPTED, PREPARING, RUNNING, POST_COPY, FINISHING)

BLOCK = 'block'
FILE_LEVEL = 'file-level'
BLOCK_STORAGE = 'block-storage'
SUBTYPES = (BLOCK, FILE_LEVEL, BLOCK_STORAGE)

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

# What "running" means differs per subtype; the names stay the same.
DESCRIPTIONS = {
    BLOCK: 'local disks and memory are copied to the destination',
    FILE_LEVEL: 'memory is copied; the instance directory is shared',
    BLOCK_STORAGE: 'memory is copied; volumes are attached on both hosts',
}


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
