"""The conductor process: its manager behind an RPC server."""

from oslo_log import log as logging

from conductor import manager
from ferryman import rpc

LOG = logging.getLogger(__name__)


class ConductorService(object):

    def __init__(self, conf):
        self.conf = conf
        self.manager = manager.ConductorManager(conf)
        self.server = rpc.get_server(conf, rpc.CONDUCTOR_TOPIC, conf.host,
                                     [self.manager])

    def start(self):
        self.manager.runner.resume_all()
        self.server.start()
        LOG.info('Conductor %s listening on topic %s', self.conf.host,
                 rpc.CONDUCTOR_TOPIC)
        return self

    def stop(self):
        self.server.stop()
        self.server.wait()
        self.manager.stop()
