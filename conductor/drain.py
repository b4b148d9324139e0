"""Host drain: every guest of a host live-migrated elsewhere, a few at a time.

A drain is a database row (``ferryman_drains``): the host, its per-host limit and
each guest's progress (pending, migrating, moved, failed with why). One drainer
thread per conductor looks at the drains under way every ``drain_interval``
seconds and starts scheduled migrations with importance high while fewer than the
limit leave the host and fewer than ``drain_max_cluster`` run in the whole
cluster (KubeVirt's defaults: 2 and 5). Everything it needs is in the database,
so a restarted conductor carries on where the last one stopped; the migrations
themselves resume with their flows.
"""

import threading

from oslo_log import log as logging

from conductor.db import api as db_api
from ferryman import exception
from flows import states

LOG = logging.getLogger(__name__)

PENDING = 'pending'
MIGRATING = 'migrating'
MOVED = 'moved'
FAILED = 'failed'
GUEST_STATES = (PENDING, MIGRATING, MOVED, FAILED)
MAX_PARALLEL = 1000
# Requests that fail for want of an answer (an agent or the database away) are
# tried again on later passes, this many times in all.
REQUEST_TRIES = 3


def validate_max_parallel(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or \
            not 1 <= value <= MAX_PARALLEL:
        raise exception.InvalidArgument(
            name='max_parallel', value=value,
            reason='expected a whole number from 1 to %d' % MAX_PARALLEL)
    return value


def counts(drain):
    """Guests per state (pending, migrating, moved, failed)."""
    out = dict.fromkeys(GUEST_STATES, 0)
    for guest in drain['guests'].values():
        out[guest['status']] += 1
    return out


def with_counts(drain):
    drain = dict(drain)
    drain['counts'] = counts(drain)
    drain['total'] = len(drain['guests'])
    return drain


def _pending(inst):
    return {'name': inst['name'], 'status': PENDING, 'migration': None,
            'destination': None, 'error': None}


class Drainer(object):

    def __init__(self, manager):
        self.manager = manager
        self.db = manager.db
        self.conf = manager.conf.conductor
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = None
        self._lock = threading.Lock()  # one pass at a time

    # Life cycle. --------------------------------------------------------------------
    def start(self):
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name='drainer')
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def wake(self):
        self._wake.set()

    def _loop(self):
        while not self._stopping.is_set():
            try:
                self.step()
            except Exception:
                LOG.exception('Drain pass failed')
            self._wake.wait(self.conf.drain_interval)
            self._wake.clear()

    # Requests. ----------------------------------------------------------------------
    def drain(self, drain_id, host, max_parallel=None):
        """Record a drain of ``host`` (disabling it) and set it going."""
        validate_max_parallel(max_parallel)
        self.db.get_host(host)  # HostNotFound names it
        guests = {i['uuid']: _pending(i) for i in self.db.list_instances(host=host)}
        drain = self.db.create_drain(drain_id, host,
                                     max_parallel or self.conf.drain_max_per_host,
                                     guests)
        LOG.info('Drain %s of %s: %d guests, at most %d at once', drain_id, host,
                 len(guests), drain['max_parallel'])
        self.wake()
        return with_counts(drain)

    # The work. ----------------------------------------------------------------------
    def step(self):
        """One look at every drain under way; the drains looked at."""
        with self._lock:
            drains = self.db.list_drains(status=db_api.DRAIN_RUNNING)
            if not drains:
                return []
            # One look at what is in flight for every drain of this pass; each
            # start is counted in as it happens.
            leaving = self.db.active_migrations_by_source()
            for drain in drains:
                if self._stopping.is_set():
                    break
                try:
                    self._advance(drain, leaving)
                except Exception:
                    LOG.exception('Drain %s of %s: pass failed', drain['id'],
                                  drain['host'])
            return [d['id'] for d in drains]

    def _advance(self, drain, leaving):
        host = drain['host']
        guests = {u: dict(g) for u, g in drain['guests'].items()}
        following = {g['migration']: g for g in guests.values()
                     if g['status'] == MIGRATING}
        if following:
            for mig in self.db.get_migrations(list(following)):
                self._follow(following[mig['id']], mig)
        for uuid in sorted((u for u, g in guests.items() if g['status'] == PENDING),
                           key=lambda u: (guests[u]['name'], u)):
            if leaving.get(host, 0) >= drain['max_parallel'] or \
                    sum(leaving.values()) >= self.conf.drain_max_cluster or \
                    self._stopping.is_set():
                break
            if self._start(drain, uuid, guests[uuid]):
                leaving[host] = leaving.get(host, 0) + 1
        done = all(g['status'] in (MOVED, FAILED) for g in guests.values())
        if done:
            for inst in self.db.list_instances(host=host):
                if inst['uuid'] not in guests:
                    # Arrived since the drain began (a migration already on its
                    # way here, a guest found by a report): it goes too.
                    guests[inst['uuid']] = _pending(inst)
                    done = False
        values = {'guests': guests}
        if done:
            values['status'] = db_api.DRAIN_DONE
        if guests != drain['guests'] or done:
            self.db.update_drain(drain['id'], **values)
        if done:
            c = counts({'guests': guests})
            LOG.info('Drain %s of %s done: %d moved, %d could not move',
                     drain['id'], host, c[MOVED], c[FAILED])

    def _follow(self, guest, mig):
        if mig['status'] == states.COMPLETED:
            guest.update(status=MOVED, destination=mig['destination'])
        elif mig['status'] in states.TERMINAL:
            guest.update(status=FAILED, error='migration %s %s: %s' % (
                mig['id'], mig['status'], mig['error'] or 'no error recorded'))

    def _start(self, drain, uuid, guest):
        """Start the guest's migration; True if one now runs for it."""
        try:
            inst = self.db.get_instance(uuid)
        except exception.InstanceNotFound:
            guest.update(status=FAILED, error='the guest no longer exists')
            return False
        if inst['host'] != drain['host']:
            guest.update(status=MOVED, destination=inst['host'])
            return False
        if inst['migration_id']:
            # Someone else moves it: follow that migration.
            guest.update(status=MIGRATING, migration=inst['migration_id'])
            return False
        try:
            mig = self.manager.live_migrate({}, uuid, importance='high')
        except exception.FerrymanError as exc:
            guest.update(status=FAILED, error=exc.message)
            LOG.warning('Drain %s: %s (%s) cannot move: %s', drain['id'],
                        guest['name'], uuid, exc.message)
            return False
        except Exception as exc:
            tries = guest.get('tries', 0) + 1
            guest['tries'] = tries
            LOG.warning('Drain %s: request for %s (%s) failed (try %d of %d): %s',
                        drain['id'], guest['name'], uuid, tries, REQUEST_TRIES,
                        exc)
            if tries >= REQUEST_TRIES:
                guest.update(status=FAILED, error='request failed %d times, last: '
                             '%s' % (tries, exc))
            return False
        guest.update(status=MIGRATING, migration=mig['id'])
        return True
