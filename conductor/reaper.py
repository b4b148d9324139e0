"""The reaper: takes up every unfinished migration that has had no live owner
(no conductor running it, no claim or job on the board) for
``[conductor] orphan_timeout`` seconds."""

import threading
import time

from oslo_log import log as logging

from flows import states

LOG = logging.getLogger(__name__)


class Reaper(object):

    def __init__(self, conf, db, owners, take_up):
        """``owners()``: migration id -> who is responsible for it now;
        ``take_up(mig)``: have an orphaned migration go on."""
        self.conf = conf
        self.db = db
        self._owners = owners
        self._take_up = take_up
        self._orphans = {}  # migration id -> monotonic time first seen ownerless
        self._stopping = threading.Event()
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name='reaper')
        self._thread.start()

    def stop(self):
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self):
        while not self._stopping.wait(self.conf.conductor.reaper_interval):
            try:
                self.reap()
            except Exception:
                LOG.exception('Reaper pass failed')

    def reap(self, now=None):
        """Take up every migration that has had no live owner for
        ``orphan_timeout`` seconds; their ids."""
        now = time.monotonic() if now is None else now
        owners = self._owners()
        reaped = []
        seen = set()
        for mig in self.db.migrations.list():
            if mig['status'] in states.TERMINAL or mig['id'] in owners:
                continue
            seen.add(mig['id'])
            since = self._orphans.setdefault(mig['id'], now)
            if now - since < self.conf.conductor.orphan_timeout:
                continue
            LOG.warning('Migration %s has been %s with no owner for %.0f s; '
                        'taking it up', mig['id'], mig['status'], now - since)
            self._take_up(mig)
            reaped.append(mig['id'])
        self._orphans = {k: v for k, v in self._orphans.items()
                         if k in seen and k not in reaped}
        return reaped
