"""The words every part of Ferryman speaks: what a caller may say about a guest and
a move, and the names of a migration's states and storage subtypes.

The RPC schemas, the API and the CLI check against these; the state machines that
order the states are in ``flows.states``, the steering they imply in
``conductor.policy``.
"""

# What a guest is (its SLA class) and how much a move matters (importance).
SLA_CLASSES = ('cattle', 'pet', 'panda')
IMPORTANCE = ('low', 'medium', 'high')

# Storage subtypes of a live migration.
BLOCK = 'block'                  # local disks copied
FILE_LEVEL = 'file-level'        # shared instance directory
BLOCK_STORAGE = 'block-storage'  # volumes re-attached
SUBTYPES = (BLOCK, FILE_LEVEL, BLOCK_STORAGE)
# A dead host's guest rebuilt elsewhere (Nova's migration_type evacuation): a
# migration record of its own kind, with its own flow and state machine.
EVACUATION = 'evacuation'
KINDS = SUBTYPES + (EVACUATION,)
# How an evacuated guest comes back, by its storage: defined on the same files
# (shared instance directory), on its volumes connected on the destination, or
# rebuilt from its base image (local disks: their contents are lost).
EVACUATE_SHARED = 'shared'
EVACUATE_VOLUMES = 'volumes'
EVACUATE_REBUILD = 'rebuild'
EVACUATION_STORAGE = (EVACUATE_SHARED, EVACUATE_VOLUMES, EVACUATE_REBUILD)

# Migration states (shared names; each subtype's machine uses those it passes).
ACCEPTED = 'accepted'
PREPARING = 'preparing'
CONNECTING_VOLUMES = 'connecting-volumes'  # block-storage: attached on the destination
COPYING_DISKS = 'copying-disks'  # block: the job mirrors the local disks first
RUNNING = 'running'              # the job copies memory
REBUILDING = 'rebuilding'        # evacuation: the guest defined, then started
POST_COPY = 'post-copy'  # runs on the destination while its memory follows
FINISHING = 'finishing'
COMPLETED = 'completed'
FAILED = 'failed'        # rolled back; the guest runs on the source
CANCELLED = 'cancelled'  # stopped on request; the guest runs on the source
ERROR = 'error'          # rollback failed or failure after switch-over: operator

TERMINAL = (COMPLETED, FAILED, CANCELLED, ERROR)
ACTIVE = (ACCEPTED, PREPARING, CONNECTING_VOLUMES, COPYING_DISKS, RUNNING, POST_COPY,
          REBUILDING, FINISHING)

# A hypervisor migration job's status, as an agent reports it (get_migration_job).
JOB_NONE = 'none'            # no job for that guest here
JOB_RUNNING = 'running'
JOB_COMPLETED = 'completed'  # switched over: the guest runs on the destination
JOB_FAILED = 'failed'
JOB_CANCELLED = 'cancelled'
JOB_STATUSES = (JOB_NONE, JOB_RUNNING, JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED)
