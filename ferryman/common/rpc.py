"""oslo.messaging plumbing shared by the conductor, the agents and the CLI.

Payloads are plain JSON types both ways; errors from ``ferryman.common.exception`` are
re-raised on the caller's side as the same class. Servers check signatures before
dispatching (``ferryman.common.rpc_auth``).
"""

import logging
import weakref

import oslo_messaging as messaging
from oslo_messaging.rpc import server as rpc_server

from ferryman.common import inprocess
from ferryman.common import rpc_auth

CONDUCTOR_TOPIC = 'ferryman-conductor'
COMPUTE_TOPIC = 'ferryman-compute'
EXCHANGE = 'ferryman'
# The single-process transport: the demo and the unit tests (a private broker
# per URL path: ferryman.common.inprocess).
IN_PROCESS_URL = inprocess.url('ferryman')
IN_PROCESS_SCHEMES = ('kombu+' + inprocess.SCHEME, 'kombu+memory', 'fake')


def in_process(url):
    """Whether a transport URL is one that lives inside this process."""
    return (url or '').partition(':')[0] in IN_PROCESS_SCHEMES


ALLOWED_EXMODS = ['ferryman.common.exception']

# Kept per configuration object: several private configurations (the demo runs its
# agents in one process) must not share a transport built for another.
# By id (a configuration is not hashable), forgotten when the configuration goes so
# a later one at the same address never inherits it.
_transports = {}


def get_transport(conf):
    transport = _transports.get(id(conf))
    if transport is None:
        transport = messaging.get_rpc_transport(
            conf, allowed_remote_exmods=ALLOWED_EXMODS)
        _transports[id(conf)] = transport
        weakref.finalize(conf, _transports.pop, id(conf), None)
    return transport


def cleanup(conf):
    transport = _transports.pop(id(conf), None)
    if transport is not None:
        transport.cleanup()


def get_server(conf, topic, server, endpoints, auth, signer):
    """An RPC server that dispatches a message only once ``auth``
    (rpc_auth.Auth) has checked it was signed by the host ``signer`` names
    (see rpc_auth.AuthDispatcher)."""
    target = messaging.Target(topic=topic, server=server)
    dispatcher = rpc_auth.AuthDispatcher(endpoints, auth, topic, signer)
    return rpc_server.RPCServer(get_transport(conf), target, dispatcher)


def get_client(conf, topic, version, version_cap=None, timeout=None):
    target = messaging.Target(topic=topic, version=version)
    return messaging.get_rpc_client(get_transport(conf), target,
                                    version_cap=version_cap, timeout=timeout)


def quiet_messaging_logs():
    # The in-process transport is flagged "experimental" and has no heartbeat;
    # both warnings say nothing to a user of the demo.
    for name in ('oslo.messaging', 'oslo_messaging', 'kombu'):
        logging.getLogger(name).setLevel(logging.ERROR)
