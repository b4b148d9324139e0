"""Hostile input, counted: generated malformed messages to every conductor and
agent RPC method, over real RabbitMQ from a bare oslo.messaging client (no
Ferryman client code, so no client-side check helps).

The methods are the endpoints' exposed ones and the schemas' (they must be the
same); what they are sent comes from their schemas: wrong types, empty and huge
strings, control characters, URI and XML metacharacters, out-of-range numbers,
missing and unknown fields; and, for every method, wrong RPC versions and a
namespace, and (every method is signed: an agent's by the conductor, a report
by its host, the rest by an operator) unsigned, forged (another host's key or
proof), tampered, stale and replayed messages. The endpoint objects' other
attributes (helpers such as ``stop``, ``conf``) must not be callable at all.

Each message must be refused with an error naming the bad value (and no raw
control characters); then every service still answers and runs, and nothing
changed: the conductor's hosts, guests, migrations, drains and claims, and the
simulated hosts' state and files. It prints what it tried and refused, per
method and in total, with the seed (FERRYMAN_HOSTILE_SEED=N runs it again).
"""

import collections
import concurrent.futures
import copy
import inspect
import os
import random
import re
import secrets
import time
import uuid as uuidlib

import oslo_messaging as messaging
import pytest
import sqlalchemy as sa

from compute_agent import manager as agent_manager
from conductor import manager as conductor_manager
from conductor.db import models
from conductor.db import rows
from ferryman.common import conf as ferryman_conf
from ferryman.common import rpc
from ferryman.common import rpc_auth
from ferryman.common import schemas
from flows import states

pytestmark = pytest.mark.functional

SEED = int(os.environ.get('FERRYMAN_HOSTILE_SEED') or
           random.SystemRandom().randrange(2 ** 32))
TIMEOUT = 10  # seconds a refusal may take on a loaded machine
HOST = 'compute1'  # the agent spoken to
OTHER = 'compute2'  # whose key or proof forgeries borrow
OPERATOR = 'operator:hostile'  # who signs operators' calls to the conductor
MISSING = object()
# Hostile values tried per field within an argument, by depth (the arguments
# themselves get every one).
PER_FIELD = {1: 2, 2: 1, 3: 1}
FAILURES_SHOWN = int(os.environ.get('FERRYMAN_HOSTILE_SHOWN', 40))

# Fields any printable text may fill (so '', '<x>' and 'a/../b' are fine), and
# absolute paths; every other string field is an identifier or an enum.
FREE_TEXT = {'reason', 'cpu_model'}
PATHS = {'instances_path', 'destination_instances_path'}
# What an error must never carry raw: it ends in logs and terminals.
RAW_CONTROL = re.compile('[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e'
                         '\u2066-\u2069\ud800-\udfff]')

CONTROL = ['\x00', '\n', '\x1b[2J', '\x7f', '\x9b31m', '\ud800', '\u202e']
URI = ['a/../b', '../../etc/passwd', 'a?b=1', 'a#b', 'a%2e%2e', 'a b', 'a;b',
       'a&b', 'file:///etc/passwd', 'a\\b', 'a@b:c', '$(id)', '`id`', 'a|b',
       '\u0441ompute1']
XML = ['<a>', 'a&amp;b', '<!ENTITY x SYSTEM "file:///etc/passwd">', ']]>',
       "<?xml version='1.0'?>", 'a</name><evil/>', '"\'']
UNKNOWN = ['evil', 'ctxt', 'self', 'drain_slot', '__class__', 'x\ny', '\x1b[2J',
           'k' * 300]


def _schema_of(service, method):
    return (schemas.CONDUCTOR if service == 'conductor' else schemas.AGENT)[method]


def _exposed(cls):
    return {n for n, v in inspect.getmembers(cls) if getattr(v, 'exposed', False)}


def _endpoint_methods(service):
    """The RPC methods of a service: its endpoint's exposed methods, which its
    schemas must list exactly."""
    cls, table = ((conductor_manager.ConductorManager, schemas.CONDUCTOR)
                  if service == 'conductor' else
                  (agent_manager.ComputeManager, schemas.AGENT))
    methods = _exposed(cls) | set(table)
    assert methods == set(table) == _exposed(cls), (
        '%s: methods exposed without a schema %s, schemas of no exposed method %s'
        % (service, sorted(methods - set(table)), sorted(methods - _exposed(cls))))
    return sorted(methods)


def _not_endpoints(service, methods):
    """What a caller may name that is no RPC method: the endpoint's other
    attributes (its class's and those it sets on itself), and junk."""
    cls = (conductor_manager.ConductorManager if service == 'conductor' else
           agent_manager.ComputeManager)
    names = {n for n in dir(cls) if not n.startswith('__')}
    names |= set(re.findall(r'self\.(\w+)\s*=', inspect.getsource(cls)))
    names -= set(methods)
    return sorted(names) + ['__init__', '__class__', '__dict__', 'no_such_method',
                            '', 'x' * 5000, '../list_hosts', 'list_hosts\n']


# Valid arguments, one set per method: each case spoils one thing of them.
def _skeletons(rng, info):
    u = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
    probe = '%032x' % rng.getrandbits(128)
    guest = {'uuid': u}
    full = {'uuid': u, 'name': 'hostile-%d' % rng.randrange(10 ** 6), 'vcpus': 1,
            'memory_mb': 512, 'disk_gb': 1, 'storage': 'local',
            'disks': [{'name': 'root', 'size_gb': 1, 'format': 'qcow2',
                       'target': 'vda'}],
            'volumes': [], 'sla_class': schemas.GUEST_PROPERTIES['sla_class'][
                'enum'][0], 'power_state': 'running'}
    nohost = 'hostile-%d' % rng.randrange(10 ** 6)
    return {
        'conductor': {
            'live_migrate': {'instance': 'hostile-%d' % rng.randrange(10 ** 6)},
            'force_complete_migration': {'migration': u},
            'abort_migration': {'migration': u}, 'get_migration': {'migration': u},
            'list_migrations': {}, 'get_task_history': {'migration': u},
            'audit': {}, 'drain_host': {'host': nohost}, 'get_drain': {'drain': u},
            'list_drains': {}, 'list_hosts': {}, 'list_instances': {},
            'set_host_enabled': {'host': nohost, 'enabled': True},
            'force_down': {'host': nohost, 'forced_down': True},
            'describe_instances': {},
            'list_refused_requests': {'instance': 'hostile-%d' % rng.randrange(10 ** 6)},
            'evacuate': {'instance': 'hostile-%d' % rng.randrange(10 ** 6)},
            # The fencing calls of an agent back from the dead, for evacuations
            # that never were.
            'evacuated_guests': {'host': HOST},
            'guests_fenced': {'host': HOST, 'migrations': [u]},
            # The agent's own report, but for a guest it does not have.
            'report_host': {'host': HOST, 'info': info, 'guests': [full]},
        },
        'agent': {
            'get_host_info': {}, 'list_guests': {}, 'get_inventory': {},
            'check_destination': {'guest': guest, 'probe': probe, 'source_info': {
                'hypervisor_type': 'fake', 'cpu_model': None,
                'cpu_features': []}},
            'remove_probe': {'probe': probe},
            'check_source': {'uuid': u, 'probe': probe},
            'create_local_disks': {'guest': guest},
            'delete_local_disks': {'guest': guest},
            'connect_volumes': {'guest': guest},
            'disconnect_volumes': {'guest': guest},
            'plug_networking': {'guest': guest},
            'unplug_networking': {'guest': guest},
            'start_migration': {'guest': guest, 'destination': OTHER,
                                'subtype': 'block', 'params': None},
            'get_migration_job': {'uuid': u}, 'abort_migration': {'uuid': u},
            'set_max_downtime': {'uuid': u, 'downtime_ms': 500},
            'start_post_copy': {'uuid': u}, 'pause_guest': {'uuid': u},
            'post_migration_source': {'guest': guest, 'subtype': 'block'},
            'post_migration_destination': {'guest': guest, 'subtype': 'block'},
            'check_rebuild': {'guest': guest, 'source_info': {
                'hypervisor_type': 'fake', 'cpu_model': None,
                'cpu_features': []}},
            'rebuild_disks': {'guest': guest}, 'define_guest': {'guest': guest},
            'undefine_guest': {'uuid': u}, 'start_guest': {'guest': guest},
            'stop_guest': {'uuid': u},
        },
    }


# Cases. --------------------------------------------------------------------------
Case = collections.namedtuple('Case', 'service method label kwargs auth version '
                                      'namespace exc_type expect')


def _field(path):
    out = ''
    for part in path:
        out += '[%d]' % part if isinstance(part, int) else (
            '.%s' % part if out else part)
    return out


def _types(schema):
    if 'enum' in schema:
        return {{str: 'string', type(None): 'null', bool: 'boolean'}.get(
            type(v), 'number') for v in schema['enum']}
    t = schema.get('type')
    if t is None:
        raise AssertionError('no generator for a schema without a type: %r' % schema)
    return set(t if isinstance(t, list) else [t])


def _wrong_types(types):
    samples = [('string', 'x'), ('integer', 7), ('number', 1.5),
               ('boolean', True), ('null', None), ('array', []), ('object', {})]
    out = []
    for kind, value in samples:
        if kind in types or (kind == 'integer' and 'number' in types):
            continue
        out.append(('wrong type %s' % kind, value))
    return out


def _strings(name, schema, rng):
    """Strings the field must refuse."""
    prefix = '/' if name in PATHS else ''
    out = [('control %r' % c, prefix + 'a' + c + 'b')
           for c in rng.sample(CONTROL, 3)]
    out.append(('huge', prefix + 'h' * rng.choice([1100, 70000])))
    if name not in FREE_TEXT:
        out.append(('empty', ''))
        out += [('uri', v) for v in rng.sample(URI, 2)]
        out += [('xml', v) for v in rng.sample(XML, 1)]
    if 'enum' in schema:
        word = next((v for v in schema['enum'] if isinstance(v, str)), 'x')
        out += [('enum case', word.upper()), ('enum +newline', word + '\n')]
    return out


def _numbers(schema, integer):
    low = schema.get('minimum', schema.get('exclusiveMinimum'))
    out = [('below range', low if 'exclusiveMinimum' in schema else low - 1),
           ('above range', schema['maximum'] + 1), ('inf', float('inf')),
           ('-inf', float('-inf')), ('nan', float('nan'))]
    if integer:
        out.append(('2**64', 2 ** 64))
    return out


def _hostile(schema, path, rng):
    """(label, value) pairs a field of this schema must refuse."""
    types = _types(schema)
    name = next((p for p in reversed(path) if isinstance(p, str)), '')
    wrong = _wrong_types(types)
    out = rng.sample(wrong, min(3, len(wrong)))
    if 'enum' in schema:
        out += [('not in enum', 'evil')] + _strings(name, schema, rng)
    elif 'string' in types:
        if 'pattern' not in schema and 'enum' not in schema:
            raise AssertionError('no generator for free string %s' % _field(path))
        out += _strings(name, schema, rng)
    elif 'integer' in types:
        out += _numbers(schema, True)
    elif 'number' in types:
        out += _numbers(schema, False)
    return out


def _expect(path, value):
    """Texts a refusal of ``value`` at ``path`` must hold."""
    texts = [_field(path) if all(re.fullmatch(r'\w{1,64}', str(p)) for p in path)
             else repr(path[-1])[:40]]
    if value is not MISSING:
        texts.append(repr(value)[:40])
    return texts


def _spoil(skeleton, path, value):
    out = copy.deepcopy(skeleton)
    target = out
    for key, after in zip(path, path[1:]):
        if isinstance(target, dict) and target.get(key) is None:
            target[key] = [] if isinstance(after, int) else {}
        target = target[key]
    if value is MISSING:
        del target[path[-1]]
    elif isinstance(target, list) and path[-1] >= len(target):
        target.append(value)
    else:
        target[path[-1]] = value
    return out


def _field_cases(schema, base, path, depth, rng):
    """(label, path, value) of hostile values for the fields under ``schema``
    whose valid value is ``base``: every one for the arguments themselves, a
    seeded few for the fields within them (fewer the deeper)."""
    out = []
    props = schema.get('properties', {})
    for name, sub in props.items():
        here = path + [name]
        values = [(label, here, v) for label, v in _hostile(sub, here, rng)]
        if depth:
            values = rng.sample(values, min(PER_FIELD[depth], len(values)))
        out += values
        child = base.get(name) if isinstance(base, dict) else None
        if _types(sub) & {'object'} and 'properties' in sub and depth < 3:
            out += _field_cases(sub, child if isinstance(child, dict) else {},
                                here, depth + 1, rng)
        items = sub.get('items')
        if items and isinstance(child, list) and child and 'properties' in items:
            out += _field_cases(items, child[0], here + [0], depth + 1, rng)
        elif items and depth < 3:
            bad = [(label, here + [0], v) for label, v in _hostile(items, here + [0], rng)]
            out += rng.sample(bad, min(2, len(bad)))
    for name in schema.get('required', ()):
        if isinstance(base, dict) and name in base:
            out.append(('missing', path + [name], MISSING))
    if schema.get('additionalProperties') is False and depth <= 1:
        out += [('unknown field', path + [k], 1)
                for k in rng.sample(UNKNOWN, 3 if path == [] else 1)]
    return out


def _cases(rng, skeletons):
    cases = []
    for service in ('conductor', 'agent'):
        version = (conductor_manager.ConductorManager.target.version
                   if service == 'conductor' else
                   agent_manager.ComputeManager.target.version)
        major, minor = (int(x) for x in version.split('.'))
        methods = _endpoint_methods(service)
        for method in methods:
            assert method in skeletons[service], \
                'no generator (valid arguments) for %s.%s' % (service, method)
            skeleton = skeletons[service][method]
            schemas.check(service if service == 'conductor' else
                          schemas.AGENT_SERVICE, method, skeleton)
            # Every method is signed: by the conductor or the host its
            # arguments name (by_host), or else by an operator.
            by_host = service == 'agent' or \
                method in conductor_manager.AGENT_METHODS
            auth = 'signed'
            for label, path, value in _field_cases(
                    _schema_of(service, method), skeleton, [], 0, rng):
                # A report's host names the key that must have signed it: a
                # host no key can be made for is refused by authentication.
                refusals = ('InvalidArgument', 'NotAuthenticated') if (
                    by_host and path == ['host']) else ('InvalidArgument',)
                cases.append(Case(service, method, label, _spoil(skeleton, path,
                                                                 value),
                                  auth, version, None, refusals,
                                  _expect(path, value)))
            for bad in rng.sample(['%d.0' % (major + 1), '%d.%d' % (major, minor + 1),
                                   '%d.%d.1' % (major, minor), 'abc', '%d' % major,
                                   '%d.x' % major], 2):
                cases.append(Case(service, method, 'version %s' % bad, skeleton,
                                  auth, bad, None, ('InvalidArgument',),
                                  ['version', repr(bad)]))
            for bad in rng.sample(['evil', 'baseapi', 'a\x00b'], 1):
                cases.append(Case(service, method, 'namespace %r' % bad, skeleton,
                                  auth, version, bad, ('InvalidArgument',),
                                  ['namespace', repr(bad)]))
            host = skeleton.get('host', HOST) if by_host else OPERATOR
            for kind, words in [
                    ('unsigned', ['unsigned']),
                    ('wrong key', ['bad signature']),
                    ('other host proof', ['signed for host %r' % OTHER]),
                    ('malformed proof', ['malformed signature']),
                    ('tampered', ['bad signature']),
                    ('stale', ['timestamp']),
                    ('replay', ['replayed'])]:
                # A replay's first sending must change nothing either:
                # an unknown argument has it refused after authentication.
                kwargs = dict(skeleton, replayed=1) if kind == 'replay' else \
                    skeleton
                # An operator's proof that claims no operator is checked
                # as of no operator: "operator".
                named = host if by_host or kind not in (
                    'unsigned', 'malformed proof', 'other host proof') \
                    else 'operator'
                cases.append(Case(service, method, kind, kwargs, kind,
                                  version, None, ('NotAuthenticated',),
                                  [repr(named)] + words))
        for name in _not_endpoints(service, methods) + [7, None, ['list_hosts']]:
            cases.append(Case(service, name, 'not an RPC method', {}, 'signed',
                              version, None, ('InvalidArgument',),
                              ['method', repr(name)[:40]]))
        for args in (['x'], 'x', 7):
            cases.append(Case(service, methods[0], 'arguments not a mapping', args,
                              'signed', version, None, ('InvalidArgument',),
                              ['arguments', repr(args)]))
    return cases


# Sending. ------------------------------------------------------------------------
class Sender(object):
    """Sends cases with a bare client, signing as a holder of the conductor
    secret (or forging as a case says); judges what comes back."""

    def __init__(self, cluster, transport):
        keys = os.path.join(cluster.base_dir, 'keys')
        self.secret = rpc_auth.load_secret(os.path.join(keys, 'secret'))
        self.conductor_auth = rpc_auth.Auth(rpc_auth.ConductorKeys(self.secret))
        self.transport = transport
        self.stale = rpc_auth.Auth(rpc_auth.ConductorKeys(self.secret),
                                   clock=lambda: time.time() - 3600)

    def _send(self, case, ctxt):
        """The message as the client library would build it, but sent with the
        transport: no client-side rule (argument names such as ``ctxt``, a
        method that is not a string) stands in the way."""
        topic = rpc.CONDUCTOR_TOPIC if case.service == 'conductor' else \
            rpc.COMPUTE_TOPIC
        target = messaging.Target(
            topic=topic, server=None if case.service == 'conductor' else HOST)
        message = {'method': case.method, 'args': case.kwargs,
                   'version': case.version}
        if case.namespace is not None:
            message['namespace'] = case.namespace
        return self.transport._send(target, ctxt, message, wait_for_reply=True,
                                    timeout=TIMEOUT)

    def context(self, case, kwargs):
        topic = rpc.CONDUCTOR_TOPIC if case.service == 'conductor' else \
            rpc.COMPUTE_TOPIC
        if case.service != 'conductor' or not isinstance(kwargs, dict):
            host = HOST
        elif case.method in list(conductor_manager.AGENT_METHODS):
            host = kwargs.get('host')
        else:
            host = OPERATOR
        how = case.auth
        if how == 'unsigned':
            return {}
        if how == 'malformed proof':
            return {rpc_auth.CONTEXT_KEY: 'x'}
        if how == 'wrong key':
            return rpc_auth.Auth(rpc_auth.AgentKeys(host, rpc_auth.derive_key(
                self.secret, OTHER))).context(topic, case.method, host, kwargs)
        if how == 'other host proof':
            return self.conductor_auth.context(topic, case.method, OTHER, kwargs)
        if how == 'tampered':
            return self.conductor_auth.context(topic, case.method, host,
                                               dict(kwargs, tampered=True))
        if how == 'stale':
            return self.stale.context(topic, case.method, host, kwargs)
        try:  # signed (or replayed): for whatever host the arguments name
            return self.conductor_auth.context(topic, case.method, host, kwargs)
        except Exception:  # a host no key can be made for: a proof anyway
            return {rpc_auth.CONTEXT_KEY: {'host': host, 'ts': time.time(),
                                           'nonce': secrets.token_hex(16),
                                           'sig': '0' * 64}}

    def _call(self, case, ctxt):
        try:
            result = self._send(case, ctxt)
        except messaging.RemoteError as exc:
            return exc.exc_type, exc.value or ''
        except messaging.MessagingTimeout:
            return 'timeout', 'no answer in %s s' % TIMEOUT
        except Exception as exc:  # a built-in one, raised again as itself
            return type(exc).__name__, (str(exc).splitlines() or [''])[0]
        return 'accepted', repr(result)[:300]

    def send(self, case):
        """Why the reply to ``case`` is not the refusal it must be; None if
        it is."""
        ctxt = self.context(case, case.kwargs)
        if case.auth == 'replay':
            # The first sending is signed but spoiled (an unknown argument):
            # refused by validation; the same message again must be refused
            # as a replay, before validation.
            kind, text = self._call(case, ctxt)
            if kind != 'InvalidArgument':
                return 'first sending: got %s: %r' % (kind, text[:300])
        kind, text = self._call(case, ctxt)
        why = None
        if kind not in case.exc_type:
            why = 'got %s: %r' % (kind, text[:300])
        elif not all(e in text for e in case.expect):
            why = 'error does not name %r: %r' % (
                [e for e in case.expect if e not in text], text[:300])
        elif RAW_CONTROL.search(text):
            why = 'raw control characters in the error: %r' % text[:300]
        elif len(text) > 4000:
            why = 'error of %d characters' % len(text)
        return why


# State. --------------------------------------------------------------------------
def _state(cluster, db):
    with db.session() as s:
        out = {table.__tablename__: sorted(
            (rows.to_dict(row) for row in s.scalars(sa.select(table))), key=repr)
            for table in (models.Host, models.Instance, models.Allocation,
                          models.Provider, models.NestedAllocation,
                          models.Migration, models.Drain)}
    for host in out['ferryman_hosts']:
        del host['last_seen']
    sim = {}
    for host in cluster.hosts:
        state = cluster.cloud.load(host)
        sim[host] = state
        for root in (state['info']['instances_path'],
                     cluster.cloud.volume_path('')):
            for d, _dirs, files in os.walk(root):
                sim.setdefault('files', set()).update(
                    (os.path.join(d, f), os.path.getsize(os.path.join(d, f)))
                    for f in files)
    out['simulated'] = sim
    return out


def _stable_state(cluster, db):
    """The state once two looks a report interval apart agree (an earlier
    test's migration may still be settling)."""
    deadline = time.monotonic() + 60
    last = _state(cluster, db)
    while True:
        time.sleep(0.6)
        now = _state(cluster, db)
        if now == last and not any(
                m['status'] not in states.TERMINAL
                for m in now['ferryman_migrations']):
            return now
        assert time.monotonic() < deadline, 'the cluster never settled'
        last = now


@pytest.fixture
def bare(cluster):
    conf = ferryman_conf.make_conf(config_files=[cluster.client_conf])
    transport = messaging.get_rpc_transport(conf)  # no exception classes
    yield transport
    transport.cleanup()


def _write(request, lines):
    """Shown even under -q (as the functional conftest's timings are)."""
    plugins = request.config.pluginmanager
    tr = plugins.get_plugin('terminalreporter')
    capture = plugins.get_plugin('capturemanager')
    if tr and capture:
        with capture.global_and_fixture_disabled():
            for line in lines:
                tr.write_line(line)
    else:
        print('\n'.join(lines))


def test_hostile_messages_are_refused_naming_the_value_and_change_nothing(
        cluster, db, bare, request):
    rng = random.Random(SEED)
    sender = Sender(cluster, bare)
    info = sender._send(Case('agent', 'get_host_info', '', {}, 'signed', '1.0',
                             None, (), []), sender.conductor_auth.context(
                                 rpc.COMPUTE_TOPIC, 'get_host_info', HOST, {}))
    cases = _cases(rng, _skeletons(rng, info))
    before = _stable_state(cluster, db)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        verdicts = list(pool.map(sender.send, cases))
    elapsed = time.monotonic() - started

    tried = collections.Counter()
    refused = collections.Counter()
    for case, why in zip(cases, verdicts):
        method = case.method if isinstance(case.method, str) and re.fullmatch(
            r'\w{1,40}', case.method) else repr(case.method)[:20]
        key = '%s.%s' % (case.service, method)
        tried[key] += 1
        refused[key] += why is None
    lines = ['hostile RPC (seed %d, FERRYMAN_HOSTILE_SEED=%d to repeat): %d tried, '
             '%d refused in %.1f s' % (SEED, SEED, sum(tried.values()),
                                       sum(refused.values()), elapsed)]
    lines += ['  %-40s tried %4d refused %4d' % (k, tried[k], refused[k])
              for k in sorted(tried)]
    _write(request, lines)

    # The services are up and answer good calls.
    for name, proc in cluster.procs.items():
        assert proc.poll() is None, '%s exited (%s)' % (name, proc.returncode)
    conductor = messaging.get_rpc_client(bare, messaging.Target(
        topic=rpc.CONDUCTOR_TOPIC, version='1.0'), timeout=30)
    hosts = conductor.call(sender.conductor_auth.context(
        rpc.CONDUCTOR_TOPIC, 'list_hosts', OPERATOR, {}), 'list_hosts')
    assert {h['name'] for h in hosts if h['up']} >= set(cluster.hosts), hosts
    for host in cluster.hosts:
        agent = messaging.get_rpc_client(bare, messaging.Target(
            topic=rpc.COMPUTE_TOPIC, server=host, version='1.0'), timeout=30)
        assert agent.call(sender.conductor_auth.context(
            rpc.COMPUTE_TOPIC, 'get_host_info', host, {}),
            'get_host_info')['hypervisor_type']
    failures = ['%s.%s [%s] %s: %s' % (c.service, str(c.method)[:40], c.label,
                                       repr(c.kwargs)[:200], why)
                for c, why in zip(cases, verdicts) if why is not None]
    assert not failures, 'seed %d: %d of %d not refused as they should be:\n%s' % (
        SEED, len(failures), len(cases), '\n'.join(failures[:FAILURES_SHOWN]))
    assert sum(tried.values()) == sum(refused.values())
    after = _state(cluster, db)
    assert after == before, 'seed %d: state changed' % SEED
