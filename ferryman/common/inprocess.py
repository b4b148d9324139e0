"""The in-process transport: kombu's memory transport, one broker per virtual host.

kombu's own keeps one table of queues and bindings per process, and our queue
names are fixed (topics), so two simulated clouds in one process (a benchmark's
and a test's) would take each other's messages. Here each virtual host of the
URL (``kombu+ferryman-memory://localhost/NAME``) is a broker of its own.
"""

import collections
import threading

from kombu import transport as kombu_transport
from kombu.transport import memory
from kombu.transport import virtual

SCHEME = 'ferryman-memory'

_lock = threading.Lock()
_brokers = {}  # virtual host -> _Broker


class _Broker(object):
    def __init__(self):
        self.queues = {}
        self.events = collections.defaultdict(set)
        self.state = virtual.BrokerState()


def _broker(virtual_host):
    with _lock:
        return _brokers.setdefault(virtual_host or '/', _Broker())


class Channel(memory.Channel):

    def __init__(self, connection, **kwargs):
        self._broker = _broker(connection.client.virtual_host)
        super().__init__(connection, **kwargs)

    @property
    def queues(self):
        return self._broker.queues

    @queues.setter
    def queues(self, value):
        # memory.Channel.close() drops its reference; the broker keeps them.
        pass

    @property
    def events(self):
        return self._broker.events


class Transport(memory.Transport):
    Channel = Channel
    driver_name = SCHEME

    def __init__(self, client, **kwargs):
        super().__init__(client, **kwargs)
        self.state = _broker(client.virtual_host).state


def url(virtual_host):
    """The transport URL of a private in-process broker."""
    return 'kombu+%s://localhost/%s' % (SCHEME, virtual_host)


kombu_transport.TRANSPORT_ALIASES.setdefault(SCHEME, __name__ + ':Transport')
