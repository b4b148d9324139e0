"""Starting and stopping the simulated cloud's agents, in this process or in an
agent pool's child processes."""

import os

from compute_agent import service as agent_service
from ferryman.common import conf as ferryman_conf
from ferryman.common import rpc
from ferryman.common import rpc_auth


def write_secret(base_dir):
    """A fresh conductor secret in ``base_dir``/keys (private); its path."""
    keys = os.path.join(base_dir, 'keys')
    os.makedirs(keys, mode=0o700, exist_ok=True)
    return rpc_auth.write_private(os.path.join(keys, 'secret'),
                                  rpc_auth.new_secret())


def agent_overrides(overrides, host):
    """A host's agent's overrides: its own key, derived beside the secret, in
    place of the conductor's secret (an agent holds only its key)."""
    overrides = dict(overrides, host=host)
    secret = overrides.pop('auth.secret_file', None)
    if secret:
        overrides['auth.key_file'] = rpc_auth.write_agent_key(
            secret, host, os.path.join(os.path.dirname(secret), host + '.key'))
    return overrides


def start_agent(overrides, host, shared=None):
    """A simulated host's agent, started; ``shared``: the name of the instance
    directory it shares with other hosts (under ``state_path``), or None."""
    extra = {}
    if shared:
        extra['fake.instances_path'] = os.path.join(overrides['state_path'], shared)
    conf = ferryman_conf.make_conf(config_files=[], overrides=dict(
        agent_overrides(overrides, host), **extra))
    return agent_service.ComputeService(conf).start()


def stop_services(services):
    # Each RPC server takes a poll period to stop: stop them all, then wait.
    for service in services:
        service.server.stop()
    for service in services:
        service.stop()
        rpc.cleanup(service.conf)
