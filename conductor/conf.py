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
    cfg.FloatOpt('monitor_interval', default=0.5, min=0.001,
                 help='Seconds between progress samples of a running migration.'),
    cfg.IntOpt('post_migration_attempts', default=3, min=1,
               help='Tries of each step after switch-over before the migration '
                    'is set to error (those steps never roll back).'),
    cfg.FloatOpt('post_migration_retry_delay', default=1.0, min=0.0,
                 help='Seconds between tries of a step after switch-over.'),
    cfg.StrOpt('crash_at',
               help='For crash tests only: kill this conductor (SIGKILL) the '
                    'moment an atom reaches a state, given as ATOM:STATE (e.g. '
                    'start-migration:SUCCESS).'),
    cfg.IntOpt('host_down_after', default=60, min=1,
               help='A host whose agent has not reported for this many seconds '
                    'is down and is not chosen as a destination.'),
]

database_group = cfg.OptGroup('database', title='Conductor database')

database_opts = [
    cfg.StrOpt('connection', secret=True,
               default='sqlite:///$state_path/ferryman.sqlite',
               help='SQLAlchemy URL of the conductor database (migrations, task '
                    'history and TaskFlow state).'),
]


def register_opts(conf):
    # By group name: a shared OptGroup object would carry one configuration's
    # overrides into every other configuration of the process.
    conf.register_opts(conductor_opts, group=conductor_group.name)
    conf.register_opts(database_opts, group=database_group.name)


def list_opts():
    return [(conductor_group, conductor_opts), (database_group, database_opts)]
