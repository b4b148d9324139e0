"""The conductor process: its manager behind an RPC server."""

from oslo_log import log as logging

from conductor import jobboard
from conductor import manager
from ferryman.common import rpc
from ferryman.common import rpc_auth

LOG = logging.getLogger(__name__)


class ConductorService(object):

    def __init__(self, conf):
        self.conf = conf
        jobboard.board_conf(conf)  # a bad [jobboard] refuses to start, early
        auth = rpc_auth.conductor_auth(conf)  # so does a missing or open secret
        self.manager = manager.ConductorManager(conf, auth=auth)
        # Operators' calls are open; an agent's must be signed by its host's key.
        self.server = rpc.get_server(
            conf, rpc.CONDUCTOR_TOPIC, conf.host, [self.manager], auth,
            rpc_auth.methods_by_argument(manager.AGENT_METHODS))

    def start(self):
        self.manager.runner.start()
        self.manager.drainer.start()  # carries on with drains under way
        self.server.start()
        LOG.info('Conductor %s listening on topic %s', self.conf.host,
                 rpc.CONDUCTOR_TOPIC)
        return self

    def stop(self):
        self.server.stop()
        self.server.wait()
        self.manager.stop()
