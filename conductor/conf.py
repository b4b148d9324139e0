"""Conductor options."""

from oslo_config import cfg

conductor_group = cfg.OptGroup('conductor', title='Migration conductor')

conductor_opts = [
    cfg.IntOpt('workers', default=16, min=1,
               help='Migrations whose flows may run at the same time in this '
                    'conductor (one long-lived thread pool).'),
    cfg.IntOpt('max_outbound_per_host', default=2, min=1,
               help='Live migrations leaving one host at once; further requests '
                    'wait in state accepted until a slot frees.'),
    cfg.FloatOpt('monitor_interval', default=0.5, min=0.001, max=10.0,
                 help='Seconds between progress samples of a running migration.'),
    cfg.IntOpt('post_migration_attempts', default=3, min=1,
               help='Tries of each step after switch-over before the migration '
                    'is set to error (those steps never roll back).'),
    cfg.FloatOpt('post_migration_retry_delay', default=1.0, min=0.0,
                 help='Seconds between tries of a step after switch-over.'),
    cfg.StrOpt('crash_at',
               help='For crash tests only: kill this conductor (SIGKILL) the '
                    'moment an atom reaches a state, given as ATOM:STATE (e.g. '
                    'start-migration:SUCCESS; EXECUTED: the task\'s work done, its '
                    'result not yet saved).'),
    cfg.StrOpt('crash_file',
               help='For chaos tests only: a JSON object of crash point (as in '
                    'crash_at) -> "self" or the pid of a process to kill '
                    '(SIGKILL) there; read at every step, so that one conductor '
                    'serves many cases.'),
    cfg.FloatOpt('agent_unreachable_timeout', default=300.0, min=1.0,
                 help='Seconds a running migration\'s source agent may leave '
                      'progress calls unanswered (it may be restarting; the '
                      'hypervisor\'s job goes on) before the migration fails.'),
    cfg.FloatOpt('vanished_guest_grace', default=120.0, min=1.0,
                 help='A guest missing from every report of its host for this '
                      'many seconds (deleted outside Ferryman) is forgotten, and '
                      'its resources there are freed. Guests in a migration, or '
                      'whose migration ended within this time, are kept.'),
    cfg.IntOpt('max_destination_attempts', default=3, min=1,
               help='Scheduled migrations: candidate destinations tried in turn '
                    'when claiming, checking or preparing one fails (each '
                    'attempt undone before the next). An admin-chosen or forced '
                    'host is the only one tried.'),
    cfg.IntOpt('drain_max_per_host', default=2, min=1,
               help='Host drain: guests migrating off the drained host at once '
                    '(the default of a drain that names no --max-parallel).'),
    cfg.IntOpt('drain_max_cluster', default=5, min=1,
               help='Host drain: migrations in flight in the whole cluster above '
                    'which a drain starts no more.'),
    cfg.FloatOpt('drain_interval', default=1.0, min=0.01,
                 help='Seconds between two looks of the drainer at the drains '
                      'under way.'),
    cfg.FloatOpt('drain_lease_expiry', default=30.0, min=1.0,
                 help='Host drain: seconds a conductor holds a drain it advances '
                      '(renewed at every look, so above drain_interval). With '
                      'several conductors, a dead one\'s drains are taken over '
                      'by another after this long; one that stops cleanly hands '
                      'them back at once.'),
    cfg.FloatOpt('drain_retry_interval', default=60.0, min=0.0,
                 help='Host drain: seconds before a guest is tried again that '
                      'no host could take (no room, or every other host '
                      'disabled or down).'),
    cfg.IntOpt('drain_capacity_attempts', default=3, min=1,
               help='Host drain: tries of a guest that no host could take before '
                    'it is summarised as could not move, with the last reason.'),
    cfg.IntOpt('host_down_after', default=60, min=1,
               help='A host whose agent has not reported for this many seconds '
                    'is down and is not chosen as a destination.'),
    cfg.FloatOpt('reaper_interval', default=10.0, min=0.05,
                 help='Seconds between two looks of the reaper for migrations '
                      'in a non-terminal state with no live owner.'),
    cfg.FloatOpt('orphan_timeout', default=60.0, min=1.0,
                 help='A migration in a non-terminal state with no live owner '
                      'for this many seconds is resumed from its saved flow '
                      '(or failed when no flow was saved). Without a jobboard '
                      'the owner is this conductor (running or queued for a '
                      'slot); with one, a job on the board (claimed, or '
                      'waiting to be claimed).'),
]

database_group = cfg.OptGroup('database', title='Conductor database')

database_opts = [
    cfg.StrOpt('connection', secret=True,
               default='sqlite:///$state_path/ferryman.sqlite',
               help='SQLAlchemy URL of the conductor database (migrations, task '
                    'history and TaskFlow state).'),
]


jobboard_group = cfg.OptGroup('jobboard', title='Jobboard shared by conductors')

jobboard_opts = [
    cfg.StrOpt('backend_url', default='', secret=True,
               help='Where conductors post and claim migrations: '
                    'redis://[:PASSWORD@]HOST[:PORT][/DB] or '
                    'zookeeper://HOST[:PORT][,HOST[:PORT]...][/PATH]. Empty: no '
                    'board; this conductor runs every migration it accepts and '
                    'resumes them on restart. With a board, every conductor '
                    'must share one [database] connection (PostgreSQL).'),
    cfg.StrOpt('name', default='ferryman',
               help='Name of the board (letters, digits, ".", "_", "-"): the key '
                    'namespace on Redis, the last path element on ZooKeeper. '
                    'Conductors on one board must agree on it.'),
    cfg.FloatOpt('claim_expiry', default=30.0, min=1.0,
                 help='Seconds a claim outlives its conductor: a dead '
                      "conductor's migrations are taken over by another one "
                      'after at most this long (plus poll_interval). On '
                      'ZooKeeper, the session timeout.'),
    cfg.FloatOpt('heartbeat_interval', default=5.0, min=0.05,
                 help='Seconds between renewals of this conductor\'s claims; '
                      'at most half of claim_expiry.'),
    cfg.FloatOpt('poll_interval', default=1.0, min=0.05,
                 help='Seconds between two looks for jobs to claim.'),
]


def list_opts():
    return [(conductor_group, conductor_opts), (database_group, database_opts),
            (jobboard_group, jobboard_opts)]
