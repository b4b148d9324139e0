"""Options shared by every Ferryman service."""

import socket

from oslo_config import cfg

common_opts = [
    cfg.StrOpt('host', default=socket.gethostname(), sample_default='<hostname>',
               help='Name of this host as other services address it (RPC server '
                    'name of a compute agent).'),
    cfg.StrOpt('state_path', default='/var/lib/ferryman',
               help='Directory for Ferryman state (database, simulated hosts).'),
]


def register_opts(conf):
    from ferryman import rpc_auth
    conf.register_opts(common_opts)
    rpc_auth.register_opts(conf)


def list_opts():
    from ferryman import rpc_auth
    return [('DEFAULT', common_opts)] + rpc_auth.list_opts()


def make_conf(argv=(), config_files=None, project='ferryman', overrides=None):
    """A fully registered private configuration.

    Services and the CLI each build their own instead of using the global one, so one
    process can hold a conductor and several agents (the demo, the tests).
    """
    import oslo_messaging
    from oslo_log import log
    from oslo_messaging import opts as messaging_opts

    from ferryman import rpc

    from compute_agent import conf as compute_conf
    from conductor import conf as conductor_conf
    from conductor import policy

    conf = cfg.ConfigOpts()
    register_opts(conf)
    conductor_conf.register_opts(conf)
    compute_conf.register_opts(conf)
    policy.register_opts(conf)
    log.register_options(conf)
    # Before registering, or the transport later registers a clashing default.
    oslo_messaging.set_transport_defaults(rpc.EXCHANGE)
    for group, opts in messaging_opts.list_opts():
        conf.register_opts(opts, group=group)
    # oslo.messaging registers these on the global configuration only.
    from oslo_messaging._metrics import client as metrics_client
    from oslo_messaging._tracing import client as tracing_client
    conf.register_opts(metrics_client.oslo_messaging_metrics,
                       group='oslo_messaging_metrics')
    conf.register_opts(tracing_client.oslo_messaging_tracing,
                       group='oslo_messaging_tracing')
    kwargs = {'project': project}
    if config_files is not None:
        kwargs['default_config_files'] = config_files
    conf(list(argv), **kwargs)
    for key, value in (overrides or {}).items():
        group, _, name = key.rpartition('.')
        conf.set_override(name, value, group=group or None)
    return conf
