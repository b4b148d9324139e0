"""What the service entry points share: configuration, logging, clean shutdown."""

import signal
import sys
import threading

from oslo_log import log as logging

import ferryman  # noqa: F401
from ferryman.common import conf as ferryman_conf
from ferryman.common import exception


def run(name, make_service, argv=None):
    conf = ferryman_conf.make_conf(argv if argv is not None else sys.argv[1:])
    logging.setup(conf, 'ferryman')
    log = logging.getLogger(name)
    try:
        service = make_service(conf).start()
    except exception.InvalidArgument as exc:
        # A bad setting: one line naming it, not a traceback.
        log.error('%s: %s', name, exc)
        print('%s: %s' % (name, exc), file=sys.stderr)
        return 2
    stop = threading.Event()

    def _signal(signum, _frame):
        log.info('%s: signal %d, stopping', name, signum)
        stop.set()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    while not stop.wait(1.0):
        pass
    service.stop()
    return 0
