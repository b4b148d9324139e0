"""Host drain: every guest of a host live-migrated elsewhere, a few at a time.

A drain is a database row (``ferryman_drains``): the host, its per-host limit and
each guest's progress (pending, migrating, moved, failed with why). One drainer
thread per conductor looks at the drains under way every ``drain_interval``
seconds and starts scheduled migrations with importance high while fewer than the
limit leave the host and fewer than ``drain_max_cluster`` run in the whole
cluster (KubeVirt's defaults: 2 and 5). Everything it needs is in the database,
so a restarted conductor carries on where the last one stopped; the migrations
themselves resume with their flows.

Several conductors (on a jobboard, one PostgreSQL database) each run a drainer.
A drain is worked on by one of them at a time, under a lease its passes renew
(``drain_lease_expiry``): the conductor asked holds it first, one that stops
hands it back, a dead one's lapses and any other drainer takes it. The limits
hold across conductors because each start counts the migrations in flight in
the database in the transaction that records it, under one lock
(``Drains.create_migration``); a drainer that lost its lease can
neither start a migration nor write the drain.

A guest no host could take (refused by the scheduler, or its migration failed
for want of room when claiming) waits ``drain_retry_interval`` and is tried
again, ``drain_capacity_attempts`` times in all, before it is summarised as
could-not-move with the last refusal: room frees up as other guests move.
"""

import threading
import time

from oslo_log import log as logging

from conductor.db import drains as db_drains
from conductor import jobboard
from ferryman.common import exception
from ferryman.common import validation
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
    return validation.whole_number('max_parallel', value, 1, MAX_PARALLEL)


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

    def __init__(self, conf, db, admission):
        self.db = db
        self.admission = admission
        self.conf = conf.conductor
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = None
        self._lock = threading.Lock()  # one pass at a time
        if self.conf.drain_lease_expiry <= self.conf.drain_interval:
            raise exception.InvalidArgument(
                name='[conductor] drain_lease_expiry',
                value=self.conf.drain_lease_expiry,
                reason='must exceed drain_interval (%s): passes renew the lease'
                       % self.conf.drain_interval)
        # Unique per process: a restarted conductor is a new owner.
        self.owner = jobboard.owner_name(conf)

    # Life cycle. --------------------------------------------------------------------
    def start(self):
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name='drainer')
        self._thread.start()
        return self

    def stop(self, release=True):
        """Stop the passes; hand the drains held back (``release``: a clean
        stop; a dead conductor's leases lapse instead)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if release:
            with self._lock:
                try:
                    self.db.drains.release(self.owner)
                except Exception:
                    LOG.exception('Cannot hand back the drains of %s; their '
                                  'leases lapse', self.owner)

    def wake(self):
        self._wake.set()

    def _loop(self):
        while not self._stopping.is_set():
            try:
                self.run_pass()
            except Exception:
                LOG.exception('Drain pass failed')
            self._wake.wait(self.conf.drain_interval)
            self._wake.clear()

    # Requests. ----------------------------------------------------------------------
    def drain(self, drain_id, host, max_parallel=None):
        """Record a drain of ``host`` (disabling it) and set it going."""
        validate_max_parallel(max_parallel)
        self.db.hosts.get(host)  # HostNotFound names it
        guests = {i['uuid']: _pending(i) for i in self.db.instances.list(host=host)}
        drain = self.db.drains.create(drain_id, host,
                                      max_parallel or self.conf.drain_max_per_host,
                                      guests, owner=self.owner,
                                      lease=self.conf.drain_lease_expiry)
        LOG.info('Drain %s of %s: %d guests, at most %d at once', drain_id, host,
                 len(guests), drain['max_parallel'])
        self.wake()
        return with_counts(drain)

    # The work. ----------------------------------------------------------------------
    def run_pass(self):
        """One look at every drain under way that this drainer holds (or may
        take); the drains looked at."""
        with self._lock:
            drains = self.db.drains.lease(self.owner, self.conf.drain_lease_expiry)
            if not drains:
                return []
            # One look at what is in flight for every drain of this pass; each
            # start is counted in as it happens.
            leaving = self.db.migrations.active_by_source()
            for drain in drains:
                if self._stopping.is_set():
                    break
                try:
                    self._work_on(drain, leaving)
                except Exception:
                    LOG.exception('Drain %s of %s: pass failed', drain['id'],
                                  drain['host'])
            return [d['id'] for d in drains]

    def _work_on(self, drain, leaving):
        host = drain['host']
        guests = {u: dict(g) for u, g in drain['guests'].items()}
        following = {g['migration']: u for u, g in guests.items()
                     if g['status'] == MIGRATING}
        if following:
            for mig in self.db.migrations.get_many(list(following)):
                uuid = following[mig['id']]
                self._follow(drain, uuid, guests[uuid], mig)
        now = time.time()
        for uuid in sorted((u for u, g in guests.items() if g['status'] == PENDING
                            and g.get('retry_at', 0) <= now),
                           key=lambda u: (guests[u]['name'], u)):
            # What other conductors started since the pass began is counted
            # when the migration is recorded; this only spares futile requests.
            if leaving.get(host, 0) >= drain['max_parallel'] or \
                    sum(leaving.values()) >= self.conf.drain_max_cluster or \
                    self._stopping.is_set():
                break
            try:
                started = self._move(drain, uuid, guests[uuid])
            except db_drains.NoDrainSlot as exc:
                LOG.debug('Drain %s: no slot for %s: %s', drain['id'], uuid, exc)
                break
            if started:
                leaving[host] = leaving.get(host, 0) + 1
        done = all(g['status'] in (MOVED, FAILED) for g in guests.values())
        if done:
            for inst in self.db.instances.list(host=host):
                if inst['uuid'] not in guests:
                    # Arrived since the drain began (a migration already on its
                    # way here, a guest found by a report): it goes too.
                    guests[inst['uuid']] = _pending(inst)
                    done = False
        values = {'guests': guests}
        if done:
            values['status'] = db_drains.DRAIN_DONE
        if (guests != drain['guests'] or done) and self.db.drains.update(
                drain['id'], owner=self.owner, **values) is None:
            LOG.warning('Drain %s of %s: taken over by another conductor; '
                        'leaving it', drain['id'], host)
            return
        if done:
            c = counts({'guests': guests})
            LOG.info('Drain %s of %s done: %d moved, %d could not move',
                     drain['id'], host, c[MOVED], c[FAILED])

    def _follow(self, drain, uuid, guest, mig):
        if mig['status'] == states.COMPLETED:
            guest.update(status=MOVED, destination=mig['destination'])
        elif mig['status'] == states.FAILED and \
                mig['error_kind'] == exception.NO_ROOM:
            # Every candidate filled up before its claim (other drains, other
            # conductors): all undone, the guest on its source; as a refusal.
            guest.update(status=PENDING, migration=None)
            self._no_room(drain, uuid, guest, 'migration %s failed: %s' % (
                mig['id'], mig['error']))
        elif mig['status'] in states.TERMINAL:
            guest.update(status=FAILED, error='migration %s %s: %s' % (
                mig['id'], mig['status'], mig['error'] or 'no error recorded'))

    def _move(self, drain, uuid, guest):
        """Start the guest's migration; True if one now runs for it."""
        try:
            inst = self.db.instances.get(uuid)
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
        slot = {'drain_id': drain['id'], 'owner': self.owner,
                'max_per_host': drain['max_parallel'],
                'max_cluster': self.conf.drain_max_cluster,
                'lease': self.conf.drain_lease_expiry}
        try:
            mig = self.admission.admit(uuid, importance='high', drain_slot=slot)
        except db_drains.NoDrainSlot:
            raise  # no room now, or not ours: the guest waits; not its failure
        except exception.InstanceAlreadyMigrating as exc:
            # Someone else started one since we looked: follow it.
            guest.update(status=MIGRATING, migration=exc.kwargs['migration'])
            return False
        except exception.FerrymanError as exc:
            if exc.kind == exception.NO_ROOM:
                return self._no_room(drain, uuid, guest, exc.message)
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
        guest.pop('retry_at', None)
        guest.update(status=MIGRATING, migration=mig['id'], error=None)
        return True

    def _no_room(self, drain, uuid, guest, why):
        """No host could take it (room may free up as guests move or leave):
        try again later, or give up after the attempts."""
        attempts = guest.get('attempts', 0) + 1
        limit = self.conf.drain_capacity_attempts
        guest['attempts'] = attempts
        if attempts >= limit:
            guest.pop('retry_at', None)
            guest.update(status=FAILED, error='no host could take it in %d '
                         'attempt%s: %s' % (attempts, 's' if attempts > 1 else '',
                                            why))
            LOG.warning('Drain %s: %s (%s) cannot move: %s', drain['id'],
                        guest['name'], uuid, guest['error'])
            return False
        interval = self.conf.drain_retry_interval
        guest.update(retry_at=time.time() + interval, error=why)
        LOG.info('Drain %s: no room for %s (%s), attempt %d of %d; next in %.0f s: '
                 '%s', drain['id'], guest['name'], uuid, attempts, limit, interval,
                 why)
        return False
