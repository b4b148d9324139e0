"""The compute agent process: its manager behind an RPC server named after the host."""

from oslo_log import log as logging

from compute_agent import manager
from ferryman.common import rpc
from ferryman.common import rpc_auth

LOG = logging.getLogger(__name__)


class ComputeService(object):

    def __init__(self, conf, host=None):
        self.conf = conf
        self.host = host or conf.host
        auth = rpc_auth.agent_auth(conf, self.host)  # no usable key: no start
        self.manager = manager.ComputeManager(conf, self.host, auth=auth)
        # Every call must be signed with this host's key: only the conductor
        # (which derives it) or this agent holds it.
        self.server = rpc.get_server(conf, rpc.COMPUTE_TOPIC, self.host,
                                     [self.manager], auth,
                                     rpc_auth.every_method(self.host))

    def start(self):
        self.manager.init_host()
        self.server.start()
        self.manager.start_reporting()
        LOG.info('Compute agent %s listening on topic %s', self.host,
                 rpc.COMPUTE_TOPIC)
        return self

    def stop(self):
        self.server.stop()
        self.server.wait()
        self.manager.stop()
