"""Migration state machines, one per subtype, with shared names for shared states.

Every status change of a migration is checked against its subtype's machine, so a
status can never jump (say from completed back to running) whatever code asks.

The subtypes differ where their flows do: block-storage connects the guest's
volumes on the destination before the copy (``connecting-volumes``, recorded by
its connect-volumes step and undone with it); block's job mirrors the local disks
before it copies memory (``copying-disks``, from the job's start until the monitor
sees the disks copied). file-level passes only the shared states.

Evacuation (a dead host's guest rebuilt elsewhere) has a machine of its own with
the same names where it shares a meaning: ``preparing`` (claimed, the
destination being readied; ``connecting-volumes`` for a volume-backed guest),
``rebuilding`` (the guest defined and started on the destination; its
switch-over is the start), ``finishing``, and the same ends.
"""

from automaton import exceptions as automaton_exc
from automaton import machines

from ferryman.common import exception
# The names are the shared vocabulary's, here beside the machines that order them.
from ferryman.common.vocabulary import (  # noqa: F401
    ACCEPTED, ACTIVE, BLOCK, BLOCK_STORAGE, CANCELLED, COMPLETED, CONNECTING_VOLUMES,
    COPYING_DISKS, ERROR, EVACUATION, FAILED, FILE_LEVEL, FINISHING, KINDS, POST_COPY,
    PREPARING, REBUILDING, RUNNING, SUBTYPES, TERMINAL)

# (from, event, to) of every subtype.
_SHARED = [
    (ACCEPTED, 'prepare', PREPARING),
    (RUNNING, 'switch_over', FINISHING),
    # Post-copy: past switch-over already, so forward (or error) only.
    (RUNNING, 'post_copy', POST_COPY),
    (POST_COPY, 'switch_over', FINISHING),
    (POST_COPY, 'error', ERROR),
    (FINISHING, 'complete', COMPLETED),
    (FINISHING, 'error', ERROR),
]

# What each subtype passes between preparing and the memory copy.
_BEFORE_MEMORY_COPY = {
    FILE_LEVEL: [(PREPARING, 'start', RUNNING)],
    BLOCK: [(PREPARING, 'start', COPYING_DISKS),
            (COPYING_DISKS, 'disks_copied', RUNNING)],
    BLOCK_STORAGE: [(PREPARING, 'connect_volumes', CONNECTING_VOLUMES),
                    # The step undone (its destination failed): preparing again.
                    (CONNECTING_VOLUMES, 'disconnect_volumes', PREPARING),
                    (CONNECTING_VOLUMES, 'start', RUNNING)],
}


# Evacuation: nothing is copied; the guest is rebuilt, and runs on the
# destination from its start (its switch-over).
_EVACUATION = [
    (ACCEPTED, 'prepare', PREPARING),
    (PREPARING, 'connect_volumes', CONNECTING_VOLUMES),
    (CONNECTING_VOLUMES, 'disconnect_volumes', PREPARING),
    (PREPARING, 'rebuild', REBUILDING),
    (CONNECTING_VOLUMES, 'rebuild', REBUILDING),
    (REBUILDING, 'switch_over', FINISHING),
    (FINISHING, 'complete', COMPLETED),
    (FINISHING, 'error', ERROR),
]


def _build(subtype):
    transitions = (_EVACUATION if subtype == EVACUATION else
                   _SHARED + _BEFORE_MEMORY_COPY[subtype])
    passed = [ACCEPTED] + [dst for _src, _event, dst in transitions]
    before_switch_over = [s for s in ACTIVE if s in passed and
                          s not in (POST_COPY, FINISHING)]
    # Until switch-over a failure rolls back, an abort cancels, and a failed
    # rollback is an error.
    for state in before_switch_over:
        transitions = transitions + [(state, 'fail', FAILED),
                                     (state, 'cancel', CANCELLED),
                                     (state, 'error', ERROR)]
    machine = machines.FiniteMachine()
    for state in ACTIVE:
        if state in passed:
            machine.add_state(state)
    for state in TERMINAL:
        machine.add_state(state, terminal=True)
    for src, event, dst in transitions:
        machine.add_transition(src, dst, event)
    machine.default_start_state = ACCEPTED
    machine.freeze()
    return machine


MACHINES = {kind: _build(kind) for kind in KINDS}

# Where the guest still runs on its source and the migration can be cancelled.
BEFORE_SWITCH_OVER = tuple(s for s in ACTIVE if s not in (POST_COPY, FINISHING))


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


def allows(subtype, current, event):
    """Whether ``event`` may happen to a migration in ``current``."""
    return any(src == current and ev == event for src, ev, _dst in MACHINES[subtype])
