"""Signed RPC messages: who may speak for a host, and to it, and who may ask
the conductor for anything.

Every message between services carries, in its context, an HMAC-SHA256 over the
topic, method, canonical JSON of the arguments, a principal, a timestamp and a
nonce, made with the principal's key ``key_P = HMAC-SHA256(secret, P)``, derived
from one conductor secret:

- agent<->conductor: P is the host (``compute1``), so an agent holds only its key
  and can neither speak for another host nor be spoken to in another host's name;
- operator->conductor (the ``ferryman`` CLI, ferryman-api, tools): P is
  ``operator:NAME``, which no host name can equal (hosts have no ``:``), so an
  agent's key signs no operator's request and an operator's key no report.

A receiver refuses a stale or future timestamp (beyond ``[auth]
replay_window``) and a nonce it has seen within the window.

The conductor holds the secret (``[auth] secret_file``), each agent its key
(``[auth] key_file``), each operator's client its key (``[auth]
operator_key_file``; where the secret is at hand, the secret signs as ``[auth]
operator_name``). Every file must be private to its owner; a service refuses to
start without its file unless ``[auth] insecure_allow_unsigned`` is set
(development only: then unsigned messages are accepted).
"""

import hashlib
import heapq
import hmac
import json
import math
import os
import re
import secrets
import stat
import threading
import time

from oslo_config import cfg
from oslo_log import log as logging
from oslo_messaging import target as messaging_target
from oslo_messaging.rpc import dispatcher as rpc_dispatcher
from oslo_serialization import jsonutils

from ferryman.common import exception
from ferryman.common import schemas

LOG = logging.getLogger(__name__)

CONTEXT_KEY = 'ferryman_auth'
OPERATOR_PREFIX = 'operator:'
# An operator's name: what a host name may hold, plus underscores; never a colon.
_OPERATOR_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z')
SCHEME = 'ferryman-hmac-sha256-v1'
SECRET_MIN_BYTES = 32

auth_opts = [
    cfg.StrOpt('secret_file',
               help='Conductor only: file holding the conductor secret every '
                    'host key is derived from (key_H = HMAC-SHA256(secret, H)). '
                    'Must be readable by its owner alone (mode 0600). Make one '
                    'with "ferryman auth new-secret --output FILE".'),
    cfg.StrOpt('key_file',
               help='Compute agent only: file holding this host\'s key, '
                    'derived from the conductor secret with "ferryman auth '
                    'agent-key HOST --secret-file SECRET --output FILE". Must '
                    'be readable by its owner alone (mode 0600).'),
    cfg.StrOpt('operator_key_file',
               help='Operators\' clients (the ferryman CLI, ferryman-api): file '
                    'holding an operator\'s name and key, derived from the '
                    'conductor secret with "ferryman auth operator-key NAME '
                    '--secret-file SECRET --output FILE", that every request '
                    'to the conductor is signed with. Must be readable by its '
                    'owner alone (mode 0600).'),
    cfg.StrOpt('operator_name', default='admin',
               help='The operator a client holding the conductor secret itself '
                    '([auth] secret_file, on the conductor\'s host) signs its '
                    'requests as, when it has no [auth] operator_key_file.'),
    cfg.BoolOpt('insecure_allow_unsigned', default=False,
                help='DEVELOPMENT ONLY: start without a key file and accept '
                     'unsigned messages, so anyone on the message broker can '
                     'speak for any host and order any agent about.'),
    cfg.IntOpt('replay_window', default=60, min=1,
               help='Seconds a signed message stays valid: one whose '
                    'timestamp is further from the receiver\'s clock is '
                    'refused, and a nonce seen within it is refused as a '
                    'replay. Keep hosts\' clocks within it (NTP).'),
]


def list_opts():
    return [('auth', auth_opts)]


# Keys. ---------------------------------------------------------------------------
def derive_key(secret, host):
    """key_H = HMAC-SHA256(secret, H): what host H's agent holds."""
    return hmac.new(secret, host.encode('utf-8'), hashlib.sha256).digest()


def _read_private(path, option):
    """The bytes of a key file that only its owner may read; refused naming the
    path (and mode) otherwise."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise exception.InvalidArgument(
            name='[auth] %s' % option, value=path, reason='no such file')
    except OSError as exc:
        raise exception.InvalidArgument(name='[auth] %s' % option, value=path,
                                        reason=str(exc))
    if not stat.S_ISREG(st.st_mode):
        raise exception.InvalidArgument(name='[auth] %s' % option, value=path,
                                        reason='not a regular file')
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise exception.InvalidArgument(
            name='[auth] %s' % option, value=path,
            reason='mode %04o lets group or others at it; chmod 600 it' % mode)
    with open(path, 'rb') as f:
        return f.read().strip()


def write_private(path, data):
    """Write ``data`` to ``path`` readable by its owner alone (0600 from the
    start: never a moment open to others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def new_secret():
    return secrets.token_hex(32).encode()


def load_secret(path):
    secret = _read_private(path, 'secret_file')
    if len(secret) < SECRET_MIN_BYTES:
        raise exception.InvalidArgument(
            name='[auth] secret_file', value=path,
            reason='holds %d bytes; expected at least %d' % (len(secret),
                                                             SECRET_MIN_BYTES))
    return secret


def load_agent_key(path):
    text = _read_private(path, 'key_file')
    try:
        key = bytes.fromhex(text.decode('ascii'))
    except ValueError:
        key = b''
    if len(key) != hashlib.sha256().digest_size:
        raise exception.InvalidArgument(
            name='[auth] key_file', value=path,
            reason='expected %d hex digits (a key from "ferryman auth '
                   'agent-key")' % (2 * hashlib.sha256().digest_size))
    return key


def write_agent_key(secret_file, host, path):
    """Derive host's key from the secret in ``secret_file`` into ``path``."""
    # Only a host name: "operator:NAME" would make an operator's key.
    if not (isinstance(host, str) and re.match(schemas.HOST['pattern'], host)):
        raise schemas.invalid('host', host, schemas.HOST['description'])
    key = derive_key(load_secret(secret_file), host)
    return write_private(path, key.hex().encode() + b'\n')


def operator_principal(name):
    """``operator:NAME``, the principal an operator's requests are signed as;
    refused naming the name unless it is one."""
    if not (isinstance(name, str) and _OPERATOR_NAME.match(name)):
        raise exception.InvalidArgument(
            name='operator name', value=name,
            reason='expected letters, digits, dots, dashes and underscores, '
                   'at most 63, starting with a letter or digit')
    return OPERATOR_PREFIX + name


def write_operator_key(secret_file, name, path):
    """Derive operator ``name``'s key from the secret into ``path``."""
    principal = operator_principal(name)
    key = derive_key(load_secret(secret_file), principal)
    return write_private(path, json.dumps({'operator': name,
                                           'key': key.hex()}).encode() + b'\n')


def load_operator_key(path):
    """(principal, key) of an operator key file."""
    text = _read_private(path, 'operator_key_file')
    try:
        data = json.loads(text.decode('utf-8'))
        principal = operator_principal(data['operator'])
        key = bytes.fromhex(data['key'])
    except (ValueError, KeyError, TypeError, AttributeError,
            exception.InvalidArgument):
        key = b''
    if len(key) != hashlib.sha256().digest_size:
        raise exception.InvalidArgument(
            name='[auth] operator_key_file', value=path,
            reason='expected an operator key (from "ferryman auth operator-key")')
    return principal, key


def operator_signer(conf):
    """(Auth, principal) that an operator's client signs its requests to the
    conductor with, or None where it holds no key (its requests go unsigned and
    only a conductor in insecure mode takes them)."""
    if conf.auth.operator_key_file:
        principal, key = load_operator_key(conf.auth.operator_key_file)
        keys = AgentKeys(principal, key)
    elif conf.auth.secret_file:
        principal = operator_principal(conf.auth.operator_name)
        keys = ConductorKeys(load_secret(conf.auth.secret_file))
    else:
        return None
    return Auth(keys, window=conf.auth.replay_window), principal


def claimed_operator(ctxt):
    """The operator principal a message's proof claims, or ``operator`` (no
    such principal: its check fails naming what the proof did claim)."""
    proof = ctxt.get(CONTEXT_KEY) if isinstance(ctxt, dict) else None
    claimed = proof.get('host') if isinstance(proof, dict) else None
    if isinstance(claimed, str) and claimed.startswith(OPERATOR_PREFIX) and \
            _OPERATOR_NAME.match(claimed[len(OPERATOR_PREFIX):]):
        return claimed
    return 'operator'


class ConductorKeys(object):
    """Every host's key, derived from the secret."""

    def __init__(self, secret):
        self._secret = secret

    def key_for(self, host):
        # Not cached: forged messages may name any number of hosts.
        return derive_key(self._secret, host)


class AgentKeys(object):
    """One principal's key (an agent's host, or an operator): nothing to sign
    or check for any other."""

    def __init__(self, host, key):
        self.host = host
        self._key = key

    def key_for(self, host):
        return self._key if host == self.host else None


def _auth(conf, keys, option, what):
    if keys is None and not conf.auth.insecure_allow_unsigned:
        raise exception.InvalidArgument(
            name='[auth] %s' % option, value=None,
            reason='%s needs it to sign and check messages (or set [auth] '
                   'insecure_allow_unsigned = true, for development only)' % what)
    return Auth(keys, conf.auth.insecure_allow_unsigned, conf.auth.replay_window)


def conductor_auth(conf):
    """The conductor's signer and checker; refuses without a usable secret file."""
    path = conf.auth.secret_file
    keys = ConductorKeys(load_secret(path)) if path else None
    return _auth(conf, keys, 'secret_file', 'the conductor')


def agent_auth(conf, host):
    """Agent ``host``'s signer and checker; refuses without a usable key file."""
    path = conf.auth.key_file
    keys = AgentKeys(host, load_agent_key(path)) if path else None
    return _auth(conf, keys, 'key_file', 'the compute agent of %s' % host)


# Signing and checking. -----------------------------------------------------------
def canonical(args):
    """The arguments as the receiver will see them (JSON on the wire), in one
    byte form: sorted keys, no spaces."""
    wire = json.loads(jsonutils.dumps(args))
    return json.dumps(wire, sort_keys=True, separators=(',', ':'),
                      ensure_ascii=True)


def _mac(key, topic, method, host, ts, nonce, args):
    text = json.dumps([SCHEME, topic, method, host, ts, nonce], separators=(',', ':'),
                      ensure_ascii=True) + '\n' + canonical(args)
    return hmac.new(key, text.encode('ascii'), hashlib.sha256).hexdigest()


class Auth(object):
    """Signs what a service sends and checks what it is sent.

    ``keys``: ConductorKeys, AgentKeys, or None (insecure: sends unsigned);
    ``allow_unsigned``: accept a message without a signature (insecure).
    """

    def __init__(self, keys, allow_unsigned=False, window=60, clock=time.time):
        self.keys = keys
        self.allow_unsigned = allow_unsigned
        self.window = window
        self.clock = clock
        self._seen = {}    # (host, nonce) -> timestamp, within the window
        self._expiry = []  # heap of (timestamp, host, nonce)
        self._lock = threading.Lock()

    def context(self, topic, method, host, args):
        """The RPC context to send ``method(**args)`` for ``host`` with."""
        key = self.keys.key_for(host) if self.keys is not None else None
        if key is None:
            if self.keys is not None:
                # An agent asked to speak for another host: a bug, not a send.
                raise exception.NotAuthenticated(
                    method=method, host=host, reason='this service holds no key '
                                                     'for that host')
            return {}
        ts = round(self.clock(), 6)
        nonce = secrets.token_hex(16)
        return {CONTEXT_KEY: {'host': host, 'ts': ts, 'nonce': nonce,
                              'sig': _mac(key, topic, method, host, ts, nonce,
                                          args)}}

    def check(self, topic, method, host, args, ctxt):
        """Raise NotAuthenticated unless ``ctxt`` proves ``host``'s key signed
        this very message, recently, for the first time."""
        proof = ctxt.get(CONTEXT_KEY) if isinstance(ctxt, dict) else None
        if proof is None:
            if self.allow_unsigned:
                return
            raise exception.NotAuthenticated(method=method, host=host,
                                             reason='unsigned')
        if self.keys is None:  # insecure, and nothing to check with
            return
        why = self._refusal(topic, method, host, args, proof)
        if why:
            raise exception.NotAuthenticated(method=method, host=host, reason=why)

    def _refusal(self, topic, method, host, args, proof):
        if not isinstance(proof, dict):
            return 'malformed signature'
        ts, nonce, sig = proof.get('ts'), proof.get('nonce'), proof.get('sig')
        if not (isinstance(ts, (int, float)) and not isinstance(ts, bool)
                and math.isfinite(ts)
                and isinstance(nonce, str) and 16 <= len(nonce) <= 64
                and isinstance(sig, str) and len(sig) == 64):
            return 'malformed signature'
        if proof.get('host') != host:
            return 'signed for host %r' % (proof.get('host'),)
        try:
            key = self.keys.key_for(host) if isinstance(host, str) else None
        except UnicodeEncodeError:  # a lone surrogate: no key for that
            key = None
        if key is None:
            return 'no key for this host'
        try:
            expected = _mac(key, topic, method, host, ts, nonce, args)
        except (TypeError, ValueError):
            return 'arguments cannot be signed'
        if not hmac.compare_digest(expected, sig):
            return 'bad signature'
        now = self.clock()
        if abs(now - ts) > self.window:
            return 'timestamp %s is %.0f s from now (window %s s)' % (
                ts, ts - now, self.window)
        with self._lock:
            while self._expiry and now - self._expiry[0][0] > self.window:
                _ts, h, n = heapq.heappop(self._expiry)
                self._seen.pop((h, n), None)
            if (host, nonce) in self._seen:
                return 'replayed (nonce %r already seen)' % nonce
            self._seen[(host, nonce)] = ts
            heapq.heappush(self._expiry, (ts, host, nonce))
        return None


# A method any operator may call, signed with that operator's key (see
# AuthDispatcher).
OPERATOR = object()


class AuthDispatcher(rpc_dispatcher.RPCDispatcher):
    """Dispatches a message only once its envelope and its signature are
    checked.

    The envelope: a method the endpoints expose (oslo.messaging's explicit
    access policy; see schemas.checked), its arguments as a mapping, no
    namespace, and a version the endpoints implement. What is refused, here
    or by an endpoint for the caller's fault (an error below 500: invalid, not
    found, conflict), reaches the caller and the log without a traceback.

    ``signer``: for each method, whose key must have signed it: a
    callable(method, args) returning the host, or ``OPERATOR`` for a method any
    operator may call (the operator's principal is the one its proof claims).
    """

    def __init__(self, endpoints, auth, topic, signer):
        super().__init__(endpoints, None,
                         access_policy=rpc_dispatcher.ExplicitRPCAccessPolicy)
        self.auth = auth
        self.topic = topic
        self.signer = signer

    def _exposes(self, method):
        # Looked up on the classes: naming an attribute runs none of its code
        # (a property) and reaches none of the instances' (their configuration).
        return isinstance(method, str) and any(
            getattr(getattr(type(ep), method, None), 'exposed', False)
            for ep in self.endpoints)

    def _check_envelope(self, message):
        method = message.get('method')
        if not self._exposes(method):
            raise schemas.invalid('method', method, 'no such method on %s' %
                                  self.topic)
        args = message.get('args', {})
        if not isinstance(args, dict):
            raise schemas.invalid('arguments', args, 'expected a mapping')
        targets = [getattr(ep, 'target', None) or messaging_target.Target()
                   for ep in self.endpoints]
        namespace = message.get('namespace')
        if not any(self._is_namespace(t, namespace) for t in targets):
            raise schemas.invalid('namespace', namespace, 'expected none')
        version = message.get('version', '1.0')
        if not (isinstance(version, str) and
                re.fullmatch(r'\d{1,6}\.\d{1,6}(\.\d{1,6})?', version) and
                any(self._is_compatible(t, version) for t in targets)):
            raise schemas.invalid('version', version, 'this server implements '
                                  '%s' % ', '.join(sorted({
                                      t.version or '1.0' for t in targets})))

    def dispatch(self, incoming):
        message = incoming.message
        try:
            self._check_envelope(message)
        except exception.InvalidArgument as exc:
            LOG.warning('Refused RPC on %s: %s', self.topic, exc)
            # Expected: the caller gets it, the log no traceback.
            raise rpc_dispatcher.ExpectedException()
        method = message['method']
        args = message.get('args', {})
        host = self.signer(method, args)
        if host is OPERATOR:
            host = claimed_operator(incoming.ctxt)
        try:
            self.auth.check(self.topic, method, host, args, incoming.ctxt)
        except exception.NotAuthenticated as exc:
            # Refused before any endpoint ran: nothing changed.
            LOG.error('Refused RPC %s for host %s on %s: %s', method,
                      schemas.shown(host), self.topic,
                      exc.kwargs.get('reason'))
            raise rpc_dispatcher.ExpectedException()
        try:
            return super().dispatch(incoming)
        except exception.FerrymanError as exc:
            if exc.code >= 500:
                raise
            raise rpc_dispatcher.ExpectedException()


def every_method(host):
    """Every method must be signed with ``host``'s key (an agent's server)."""
    return lambda method, args: host


def methods_by_argument(methods):
    """{method: name of the argument naming the host whose key signs it};
    other methods are operators' (the conductor's server)."""
    def signer(method, args):
        if method not in methods:
            return OPERATOR
        return args.get(methods[method]) if isinstance(args, dict) else None
    return signer
