"""The API process: the application behind cheroot's threaded HTTP server."""

import ipaddress
import threading

from cheroot import wsgi as cheroot_wsgi
from oslo_log import log as logging

from api import auth
from api import wsgi
from conductor import rpcapi as conductor_rpcapi

LOG = logging.getLogger(__name__)


def _loopback(address):
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == 'localhost'


class APIService(object):

    def __init__(self, conf, conductor=None):
        self.conf = conf
        conductor = conductor or conductor_rpcapi.ConductorAPI(
            conf, timeout=conf.api.rpc_timeout)
        self.app = wsgi.Application(conf, conductor)
        # What is served: the application behind its authentication.
        self.wsgi_app = auth.pipeline(conf, self.app)
        self.server = cheroot_wsgi.Server(
            (conf.api.listen, conf.api.port), self.wsgi_app,
            numthreads=conf.api.workers, server_name='ferryman-api',
            request_queue_size=conf.api.backlog)
        self._thread = None

    @property
    def port(self):
        """The port bound (the one asked for, or the one given for 0)."""
        return self.server.bind_addr[1]

    def start(self):
        self.server.prepare()  # binds now: a taken port fails the start
        self._thread = threading.Thread(target=self.server.serve,
                                        name='ferryman-api', daemon=True)
        self._thread.start()
        LOG.info('ferryman-api listening on http://%s:%d/v2.1 (auth_strategy %s)',
                 self.conf.api.listen, self.port, self.conf.api.auth_strategy)
        if auth.trusts_the_caller(self.conf) and not _loopback(self.server.bind_addr[0]):
            LOG.warning('auth_strategy %s believes whoever calls, and the API '
                        'listens beyond this host (%s): use keystone there.',
                        self.conf.api.auth_strategy, self.conf.api.listen)
        return self

    def stop(self):
        self.server.stop()
        if self._thread is not None:
            self._thread.join(10)
        self.app.stop()
