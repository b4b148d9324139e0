"""Options shared by every Ferryman service."""

import socket

import oslo_messaging
from oslo_config import cfg
from oslo_log import log
from oslo_messaging._metrics import client as metrics_client
from oslo_messaging._tracing import client as tracing_client
from oslo_messaging import opts as messaging_opts
from stevedore import extension

from ferryman.common import rpc
from ferryman.common import rpc_auth

PROJECT = 'ferryman'

common_opts = [
    cfg.StrOpt('host', default=socket.gethostname(), sample_default='<hostname>',
               help='Name of this host as other services address it (RPC server '
                    'name of a compute agent).'),
    cfg.StrOpt('state_path', default='/var/lib/ferryman',
               help='Directory for Ferryman state (database, simulated hosts).'),
]


# Each service package lists its options under this entry point group (as
# oslo-config-generator reads them), so the shared library never imports a service.
OPTS_ENTRY_POINTS = 'oslo.config.opts'


def list_opts():
    return [('DEFAULT', common_opts)] + rpc_auth.list_opts()


def _service_opts():
    """(group, options) of every Ferryman namespace installed."""
    manager = extension.ExtensionManager(OPTS_ENTRY_POINTS)
    found = []
    for ext in sorted(manager, key=lambda e: e.name):
        if ext.name == PROJECT or ext.name.startswith(PROJECT + '.'):
            found.extend(ext.plugin())
    if not found:
        raise RuntimeError('no %r entry points named %s*: is Ferryman installed '
                           '(pip install -e .)?' % (OPTS_ENTRY_POINTS, PROJECT))
    return found


def make_conf(argv=(), config_files=None, project='ferryman', overrides=None):
    """A fully registered private configuration.

    Services and the CLI each build their own instead of using the global one, so one
    process can hold a conductor and several agents (the demo, the tests).
    """
    conf = cfg.ConfigOpts()
    for group, opts in _service_opts():
        # By group name: a shared OptGroup object would carry one configuration's
        # overrides into every other configuration of the process.
        name = getattr(group, 'name', group)
        conf.register_opts(opts, group=None if name == 'DEFAULT' else name)
    log.register_options(conf)
    # Before registering, or the transport later registers a clashing default.
    oslo_messaging.set_transport_defaults(rpc.EXCHANGE)
    for group, opts in messaging_opts.list_opts():
        conf.register_opts(opts, group=group)
    # oslo.messaging registers these on the global configuration only.
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
