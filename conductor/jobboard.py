"""The jobboard conductors share: migrations posted as jobs, claimed with an expiry.

TaskFlow's Redis board stores a claim as an owner key with no TTL unless the claim
asks for one, so a conductor killed with SIGKILL would hold its migrations forever.
Here every claim carries ``claim_expiry`` and one heartbeat thread per conductor
renews the claims it holds, each only while the key still names this conductor (a
claim lost to a partition is never renewed for someone else; the engine running
it is suspended instead). On ZooKeeper a claim is an ephemeral node: it goes with
the session, whose timeout is ``claim_expiry``.

A claim that could not be renewed (the board's server unreachable) for half its
expiry is given up as lost, while it surely still holds: soon another conductor
may take the job over, so this one must stop running it first. On ZooKeeper the
session may yet survive such an outage, keeping the claim: the heartbeat releases
it once the server answers again.
"""

import logging as std_logging
import os
import re
import threading
import time
import urllib.parse
import uuid as uuidlib

from kazoo import client as kazoo_client
from kazoo import exceptions as kazoo_exc
from oslo_log import log as logging
import redis
from redis import backoff as redis_backoff
from redis import retry as redis_retry
from taskflow import exceptions as tf_exc
from taskflow.jobs import backends as tf_jobs
from taskflow.utils import kazoo_utils
from taskflow.utils import misc as tf_misc

from ferryman.common import exception

LOG = logging.getLogger(__name__)


class _KazooLog(std_logging.LoggerAdapter):
    """kazoo's logger, noting the session timeout the server granted: kazoo only
    logs it (as a session is created), it keeps no record of it."""

    granted_ms = None

    def log(self, level, msg, *args, **kwargs):
        if isinstance(msg, str) and msg.startswith('Session created') \
                and len(args) >= 3 and isinstance(args[2], int):
            self.granted_ms = args[2]
        super().log(level, msg, *args, **kwargs)


NAME_RE = re.compile(r'^[A-Za-z0-9._-]{1,64}$')
JOB_PREFIX = 'migration-'

# Renew only our own claim: compare and extend in one step on the server.
_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


def _bad(option, value, reason):
    return exception.InvalidArgument(name='[jobboard] %s' % option, value=value,
                                     reason=reason)


def _masked(url):
    """The URL as an error may show it: without its password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(':%s@' % parts.password, ':***@', 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _host_port(option, url, text, default_port):
    host, sep, port = text.rpartition(':')
    if not sep:
        host, port = text, str(default_port)
    if not host or not re.match(r'^[A-Za-z0-9.\-\[\]]+$', host):
        raise _bad(option, url, 'expected HOST[:PORT], got %r' % text)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad(option, url, 'port %r is not a number from 1 to 65535' % port)
    return host.strip('[]'), int(port)


def board_conf(conf):
    """TaskFlow's board configuration for ``[jobboard]``, or None without a board.

    Raises InvalidArgument naming the first bad option and value.
    """
    jb = conf.jobboard
    if not NAME_RE.match(jb.name or ''):
        raise _bad('name', jb.name, 'expected 1-64 letters, digits, ".", "_" or "-"')
    if jb.heartbeat_interval > jb.claim_expiry / 2.0:
        raise _bad('heartbeat_interval', jb.heartbeat_interval,
                   'must be at most half of claim_expiry (%s): a claim would '
                   'expire between two renewals' % jb.claim_expiry)
    url = jb.backend_url or ''
    if not url.strip():
        return None
    shown = _masked(url)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise _bad('backend_url', shown, str(exc))
    if parts.query or parts.fragment:
        raise _bad('backend_url', shown, 'query and fragment are not supported')
    # The heartbeat must give up on a silent server well before the claim expires.
    io_timeout = max(0.5, jb.claim_expiry / 4.0)
    if parts.scheme == 'redis':
        hostport = parts.netloc.rpartition('@')[2]
        host, port = _host_port('backend_url', shown, hostport, 6379)
        db = parts.path.strip('/') or '0'
        if not db.isdigit():
            raise _bad('backend_url', shown, 'database %r is not a number' % db)
        out = {'board': 'redis', 'host': host, 'port': port, 'db': int(db),
               'namespace': jb.name, 'socket_timeout': io_timeout,
               'socket_connect_timeout': io_timeout}
        if parts.password:
            out['password'] = urllib.parse.unquote(parts.password)
        if parts.username:
            out['username'] = urllib.parse.unquote(parts.username)
        return out
    if parts.scheme == 'zookeeper':
        if '@' in parts.netloc:
            raise _bad('backend_url', shown, 'ZooKeeper credentials are not supported')
        hosts = [_host_port('backend_url', shown, h, 2181)
                 for h in parts.netloc.split(',')]
        base = parts.path.rstrip('/') or '/ferryman'
        if not re.match(r'^(/[A-Za-z0-9._-]+)+$', base):
            raise _bad('backend_url', shown, 'path %r is not /NAME[/NAME...]' % base)
        # No version probe: it needs the "srvr" four-letter word, off by default
        # since ZooKeeper 3.5.
        return {'board': 'zookeeper',
                'hosts': ','.join('%s:%d' % hp for hp in hosts),
                'path': '%s/%s' % (base, jb.name), 'timeout': jb.claim_expiry,
                'connection_timeout': io_timeout, 'check_compatible': False}
    raise _bad('backend_url', shown, 'expected a redis:// or zookeeper:// URL '
                                     '(or nothing, for no board)')


def owner_name(conf):
    """Unique per process: the board stores claims under the owner's name, and a
    restarted conductor must not mistake its predecessor's claims for its own."""
    return '%s.%d.%s' % (conf.host, os.getpid(), uuidlib.uuid4().hex[:8])


def migration_of(job):
    return (job.details or {}).get('migration_id')


class Board(object):
    """A connected jobboard, this conductor's name on it, and its heartbeat."""

    def __init__(self, conf, persistence, spec=None):
        self.spec = spec or board_conf(conf)
        self.kind = self.spec['board']
        self.owner = owner_name(conf)
        self.expiry = conf.jobboard.claim_expiry
        self.interval = conf.jobboard.heartbeat_interval
        self.io_timeout = max(0.5, self.expiry / 4.0)
        self._zk = None
        kwargs = {}
        self.session_s = None
        if self.kind == 'zookeeper':
            # Our client, passed to the board: the board's reads wait for a
            # reconnection without bound, the heartbeat's must not.
            self._zk_log = _KazooLog(std_logging.getLogger('kazoo.client'), {})
            self._zk = kwargs['client'] = kazoo_client.KazooClient(
                hosts=self.spec['hosts'], timeout=self.spec['timeout'],
                logger=self._zk_log)
        self._board = tf_jobs.fetch(conf.jobboard.name, dict(self.spec),
                                    persistence=persistence, **kwargs)
        self._board.connect()
        if self._zk is not None:
            try:
                self._check_session()
            except Exception:
                self._board.close()
                kazoo_utils.finalize_client(self._zk)
                raise
        self._redis = None
        if self.kind == 'redis':
            # A client of our own: the board's is private to TaskFlow.
            keys = ('host', 'port', 'db', 'password', 'username', 'socket_timeout',
                    'socket_connect_timeout')
            # No retries: one renewal takes at most io_timeout.
            self._redis = redis.Redis(
                retry=redis_retry.Retry(redis_backoff.NoBackoff(), 0),
                **{k: self.spec[k] for k in keys if k in self.spec})
            self._extend = self._redis.register_script(_EXTEND)
        self._held = {}  # job uuid -> (job, called when the claim is lost)
        self._renewed = {}  # job uuid -> monotonic start of its last renewal
        self._stale = {}  # job uuid -> job given up, perhaps still ours (ZooKeeper)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True,
                                      name='jobboard-heartbeat')
        self._beat.start()

    def _check_session(self):
        # The server clamps a session's timeout to its own bounds (by default
        # 2 to 20 ticks): a claim would then outlive a dead conductor longer
        # than claim_expiry promises, unnoticed.
        granted = self._zk_log.granted_ms
        if granted is None:
            LOG.warning('ZooKeeper did not say which session timeout it granted; '
                        'claims are assumed to last claim_expiry (%.1f s)',
                        self.expiry)
            return
        self.session_s = granted / 1000.0
        if self.session_s > self.expiry + 0.001:
            raise exception.InvalidArgument(
                name='[jobboard] claim_expiry', value=self.expiry,
                reason='ZooKeeper at %s grants sessions of no less than %.1f s, '
                       'so a dead conductor\'s claims would outlive claim_expiry: '
                       'raise claim_expiry to %.1f s or lower the server\'s '
                       'minSessionTimeout' % (self.spec['hosts'], self.session_s,
                                              self.session_s))
        if self.session_s < self.expiry - 0.001:
            LOG.warning('ZooKeeper at %s grants sessions of at most %.1f s, less '
                        'than claim_expiry (%.1f s): a claim is lost after %.1f s '
                        'without the server (raise its maxSessionTimeout)',
                        self.spec['hosts'], self.session_s, self.expiry,
                        self.session_s)

    # Jobs. --------------------------------------------------------------------------
    def post(self, migration_id, book, source):
        return self._board.post(JOB_PREFIX + migration_id, book=book, details={
            'migration_id': migration_id, 'source': source})

    def jobs(self):
        """Every job on the board (claimed or not), oldest first."""
        jobs = list(self._board.iterjobs(ensure_fresh=True))
        return sorted(jobs, key=lambda j: j.sequence)

    def owner_of(self, job):
        """The owner's name, or None when the job is unclaimed (or gone)."""
        try:
            return self._board.find_owner(job)
        except (TypeError, tf_exc.NotFound):
            return None  # the Redis board raises TypeError for an unowned job

    def claim(self, job, on_lost):
        """Claim ``job`` for this conductor, with an expiry; True if it is ours.

        ``on_lost`` is called (from the heartbeat) if the claim is found lost.
        """
        started = time.monotonic()
        try:
            if self.kind == 'redis':
                self._board.claim(job, self.owner, expiry=self.expiry)
            else:
                self._board.claim(job, self.owner)
        except (tf_exc.UnclaimableJob, tf_exc.NotFound):
            return False
        with self._lock:
            self._held[job.uuid] = (job, on_lost)
            self._renewed[job.uuid] = started
        return True

    def _release(self, job):
        with self._lock:
            self._held.pop(job.uuid, None)
            self._renewed.pop(job.uuid, None)

    def consume(self, job):
        """Done with it: the job leaves the board."""
        self._release(job)
        self._board.consume(job, self.owner)

    def abandon(self, job):
        """Not done: let any conductor claim it again."""
        self._release(job)
        self._board.abandon(job, self.owner)

    def forget(self, job):
        """Stop renewing a claim we no longer hold (lost to someone else)."""
        self._release(job)

    def holds(self, job):
        with self._lock:
            return job.uuid in self._held

    # Heartbeat. ---------------------------------------------------------------------
    def _zk_owner(self, job):
        """The claim's owner as the server says it, within ``io_timeout``."""
        try:
            data, _stat = self._zk.get_async(job.lock_path).get(
                timeout=self.io_timeout)
        except kazoo_exc.NoNodeError:
            return None
        return tf_misc.decode_json(data).get('owner')

    def renew(self, job):
        """Extend our claim on ``job`` by the expiry; False if it is not ours."""
        if self.kind == 'redis':
            return bool(self._extend(keys=[job.owner_key], args=[
                tf_misc.binary_encode(self.owner), int(self.expiry * 1000)]))
        # ZooKeeper: the session keeps the ephemeral claim (gone with the job's
        # node once consumed); check it is still ours.
        return self._zk_owner(job) == self.owner

    def _release_stale(self):
        for uuid, job in list(self._stale.items()):
            try:
                if self._zk_owner(job) == self.owner:
                    self._board.abandon(job, self.owner)
                    LOG.info('Released the claim on job %s given up earlier', uuid)
            except Exception:
                LOG.warning('Cannot release the claim on job %s yet', uuid)
                continue
            del self._stale[uuid]

    def beat(self):
        """Renew every claim held once; report those found lost."""
        with self._lock:
            held = list(self._held.values())
        unreachable = False
        for job, on_lost in held:
            started = time.monotonic()
            try:
                mine = None if unreachable else self.renew(job)
            except Exception:
                LOG.exception('Cannot renew the claim on job %s', job.uuid)
                # The others would wait as long: none is tried again this beat.
                mine, unreachable = None, True
            if mine is None:
                with self._lock:
                    silent = time.monotonic() - self._renewed.get(job.uuid, started)
                if silent < self.expiry / 2.0:
                    continue  # the claim holds; retry soon
                LOG.error('No renewal of the claim on job %s (migration %s) for '
                          '%.1fs: giving it up before it lapses',
                          job.uuid, migration_of(job), silent)
                if self.kind == 'zookeeper':
                    self._stale[job.uuid] = job
            elif mine:
                with self._lock:
                    if job.uuid in self._renewed:
                        self._renewed[job.uuid] = started
                continue
            else:
                try:
                    who = self.owner_of(job)
                except Exception:
                    who = 'someone'  # only for the log: never stop the heartbeat
                LOG.error('Lost the claim on job %s (migration %s) to %s',
                          job.uuid, migration_of(job), who)
            self._release(job)
            try:
                on_lost()
            except Exception:
                LOG.exception('Cannot stop the flow of job %s', job.uuid)
        if not unreachable:
            self._release_stale()

    def _heartbeat(self):
        while not self._stop.wait(self.interval):
            self.beat()

    def close(self):
        self._stop.set()
        self._beat.join()
        self._board.close()
        if self._zk is not None:
            kazoo_utils.finalize_client(self._zk)
        if self._redis is not None:
            self._redis.close()
