"""JSON schemas of what crosses the broker: every RPC method's arguments, the
conductor's and the agents'.

Anyone on the broker can send anything, so each endpoint method checks its
arguments here before it acts on them or stores them: types, ranges, name
syntax, sizes, and no unknown keys. A refusal is an InvalidArgument naming the
field and its value (cut short when long), and is logged. The same schemas judge
rows already stored (``problems``): a value that cannot be interpreted is
reported, never interpreted.
"""

import functools
import inspect
import math
import re

import jsonschema
import oslo_messaging as messaging
from jsonschema import exceptions as js_exceptions
from oslo_log import log as logging

from ferryman.common import exception
from ferryman.common.exception import shown  # noqa: F401 (errors and logs)
from ferryman.common import vocabulary

LOG = logging.getLogger(__name__)

INT32 = 2 ** 31 - 1  # the database's integer columns
MAX_GUESTS = 4096  # per host report
MAX_ITEMS = 1024  # disks, volumes, features, traits, cells, devices...


def _text(pattern, description):
    # \Z, not $: $ also matches before a final newline.
    return {'type': 'string', 'pattern': pattern, 'description': description}


def _int(low, high):
    return {'type': 'integer', 'minimum': low, 'maximum': high}


def _number(low, high, exclusive_low=False):
    out = {'type': 'number', 'finite': True, 'maximum': high}
    out['exclusiveMinimum' if exclusive_low else 'minimum'] = low
    return out


def _nullable(schema):
    return dict(schema, type=[schema['type'], 'null'])


def _array(items, max_items=MAX_ITEMS, **extra):
    return dict({'type': 'array', 'items': items, 'maxItems': max_items}, **extra)


def _object(properties, required=(), closed=True):
    out = {'type': 'object', 'properties': properties, 'required': list(required)}
    if closed:
        out['additionalProperties'] = False
    return out


HOST = _text(r'^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z',
             'expected a host name: letters, digits, dots and dashes, at most 253')
UUID = _text(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z',
             'expected a lowercase UUID')
NAME = _text(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,254}\Z',
             'expected a name of letters, digits, dots, dashes and underscores, '
             'at most 255')
SHORT_NAME = _text(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z',
                   'expected a name of letters, digits, dots, dashes and '
                   'underscores, at most 63')
# Ids the conductor made (migrations, drains): uuids, but any id of this syntax
# is looked up, so one that is not there is "not found", not a syntax error.
ID = _text(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z',
           'expected an id of letters, digits, dots, dashes and underscores, at '
           'most 64')
TOKEN = _text(r'^[0-9a-f]{32}\Z', 'expected a probe token of 32 hex digits')
# A character of free text: no control character (C0, DEL or C1: \x9b starts
# a terminal escape too), no lone surrogate (UTF-8 cannot hold it, so neither
# can the database) and no bidirectional override (a terminal would show other
# text than is stored).
_PRINTABLE = r'[^\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]'
TEXT = _text(r'^%s{0,255}\Z' % _PRINTABLE,
             'expected at most 255 characters, no control characters')
PATH = _text(r'^/%s{0,1023}\Z' % _PRINTABLE,
             'expected an absolute path of at most 1024 characters, no control '
             'characters')
PCI_ADDRESS = _text(r'^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]\Z',
                    'expected a PCI address DDDD:BB:SS.F (lowercase hex)')
TRAIT = _text(r'^[A-Z][A-Z0-9_]{0,254}\Z', 'expected an upper-case trait name')
# A base image's reference (a Glance id, or a name the driver's image store knows).
IMAGE_REF = _text(r'^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}\Z',
                  'expected an image reference: letters, digits, dots, dashes, '
                  'colons and underscores, at most 255')
DISK_TARGET = _text(r'^[a-z][a-z0-9]{0,31}\Z', 'expected a device name such as vda')

# Who owns a guest (Keystone's project and user ids); empty when unknown.
# None (or absent) is no owner; an empty id is no id (found by the hostile test).
OWNER = _text(r'^[A-Za-z0-9._@-]{1,64}\Z',
              'expected an id of letters, digits, dots, dashes, underscores and '
              '@, at most 64')

RESOURCES = ('vcpus', 'memory_mb', 'disk_gb')
HOST_SIZES = {'vcpus': _int(0, 65536), 'memory_mb': _int(0, INT32),
              'disk_gb': _int(0, INT32)}

DISK = _object({'name': SHORT_NAME, 'size_gb': _int(0, INT32),
                'format': _text(r'^[a-z0-9]{1,16}\Z', 'expected a disk format'),
                'target': DISK_TARGET, 'size_bytes': _int(0, 2 ** 62)},
               required=('name', 'size_gb'))
GUEST_CELL = _object({'vcpus': _int(1, 4096), 'memory_mb': _int(1, INT32)},
                     required=('vcpus', 'memory_mb'))
PCI_REQUEST = _object({'count': _int(1, 64), 'trait': _nullable(TRAIT)},
                      required=('count',))
# A guest as drivers describe it (list_guests); the power states of one defined
# on its host (never incoming: list_guests leaves those out).
GUEST_PROPERTIES = {
    'uuid': UUID, 'name': NAME, 'vcpus': _int(1, 4096),
    'memory_mb': _int(1, INT32), 'disk_gb': _int(0, INT32),
    'storage': {'enum': ['local', 'volume']},
    'disks': _array(DISK), 'volumes': _array(SHORT_NAME),
    'sla_class': {'enum': list(vocabulary.SLA_CLASSES)},
    'power_state': {'enum': ['running', 'paused', 'blocked', 'shutdown', 'shutoff',
                             'crashed', 'suspended', 'unknown']},
    'dirty_rate_mibps': _number(0, 1e7),
    'numa_topology': _nullable(_array(GUEST_CELL, max_items=8)),
    'pci_requests': _array(PCI_REQUEST, max_items=64),
    # Optional: agents older than the owners' report leave them out.
    'project_id': _nullable(OWNER), 'user_id': _nullable(OWNER),
    # The base image its local disks were made from (in its metadata): what an
    # evacuation rebuilds them from.
    'image': _nullable(IMAGE_REF),
}
GUEST_REQUIRED = ('uuid', 'name', 'vcpus', 'memory_mb', 'disk_gb', 'storage',
                  'disks', 'volumes', 'sla_class', 'power_state')
GUEST = _object(GUEST_PROPERTIES, required=GUEST_REQUIRED)
# What the conductor hands an agent about a guest: any part of the record.
GUEST_ARG = _object(GUEST_PROPERTIES, required=('uuid',))

HOST_PROPERTIES = dict(
    HOST_SIZES,
    hypervisor_type=_text(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z',
                          'expected a hypervisor type such as QEMU'),
    cpu_model=_nullable(TEXT),
    cpu_features=_array(_text(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z',
                              'expected a CPU feature name'), uniqueItems=True),
    instances_path=PATH,
    features=_object({'post_copy': {'type': 'boolean'},
                      'auto_converge': {'type': 'boolean'},
                      'bandwidth_mibps': _number(0, 1e7)}),
    reserved=_object({r: HOST_SIZES[r] for r in RESOURCES}),
    allocation_ratios=_object({r: _number(0, 10000, exclusive_low=True)
                               for r in RESOURCES}),
    numa_cells=_array(_object({'id': _int(0, 1023), 'vcpus': _int(0, 65536),
                               'memory_mb': _int(0, INT32)},
                              required=('id', 'vcpus', 'memory_mb')), max_items=64),
    pci_devices=_array(_object({'address': PCI_ADDRESS, 'count': _int(1, 1024),
                                'traits': _array(TRAIT, max_items=64)},
                               required=('address',)), max_items=4096),
)
HOST_INFO = _object(HOST_PROPERTIES, required=(
    'hypervisor_type', 'cpu_model', 'cpu_features', 'vcpus', 'memory_mb',
    'disk_gb', 'instances_path'))
SOURCE_INFO = _object({k: HOST_PROPERTIES[k] for k in (
    'hypervisor_type', 'cpu_model', 'cpu_features')},
    required=('hypervisor_type', 'cpu_model', 'cpu_features'))
START_PARAMS = _object({'max_downtime_ms': _number(0, 3600000),
                        'post_copy': {'type': 'boolean'},
                        'auto_converge': {'type': 'boolean'},
                        'compressed': {'type': 'boolean'},
                        'bandwidth_mibps': _number(0, 1e7),
                        'destination_instances_path': _nullable(PATH)})
SUBTYPE = {'enum': list(vocabulary.SUBTYPES)}

OPT_HOST = _nullable(HOST)
# Instance references: a uuid or a (unique) name.
INSTANCE_REF = NAME

# Method -> its arguments (ctxt aside). Every RPC endpoint method has one.
CONDUCTOR = {
    'live_migrate': _object({
        'instance': INSTANCE_REF, 'host': OPT_HOST,
        'block_migration': {'type': ['string', 'boolean'],
                            'pattern': r'^(?i:auto|true|false)\Z',
                            'description': 'expected one of auto, true, false'},
        'force': {'type': 'boolean'},
        'importance': {'enum': list(vocabulary.IMPORTANCE)},
        'request_id': _nullable(ID)}, required=('instance',)),
    'list_refused_requests': _object({'instance': INSTANCE_REF}, ('instance',)),
    'force_complete_migration': _object({'migration': ID}, ('migration',)),
    'abort_migration': _object({'migration': ID}, ('migration',)),
    'get_migration': _object({'migration': ID}, ('migration',)),
    'list_migrations': _object({'instance': _nullable(INSTANCE_REF),
                                'status': {'enum': list(
                                    vocabulary.ACTIVE + vocabulary.TERMINAL) + [None]},
                                'host': OPT_HOST}),
    'get_task_history': _object({'migration': ID}, ('migration',)),
    'audit': _object({}),
    # 1000: conductor.drain.MAX_PARALLEL (which imports the database, which
    # imports this module).
    'drain_host': _object({'host': HOST,
                           'max_parallel': _nullable(_int(1, 1000))}, ('host',)),
    'get_drain': _object({'drain': ID}, ('drain',)),
    'list_drains': _object({'host': OPT_HOST}),
    'list_hosts': _object({}),
    'list_instances': _object({'host': OPT_HOST}),
    'describe_instances': _object({'host': OPT_HOST, 'instance': _nullable(UUID)}),
    'set_host_enabled': _object({'host': HOST, 'enabled': {'type': 'boolean'},
                                 'reason': _nullable(TEXT)}, ('host', 'enabled')),
    'force_down': _object({'host': HOST, 'forced_down': {'type': 'boolean'}},
                          ('host', 'forced_down')),
    'evacuate': _object({'instance': INSTANCE_REF, 'host': OPT_HOST,
                         'force': {'type': 'boolean'}}, required=('instance',)),
    # An agent back from the dead, before its first report (fencing).
    'evacuated_guests': _object({'host': HOST}, ('host',)),
    'guests_fenced': _object({'host': HOST, 'migrations': _array(ID)},
                             ('host', 'migrations')),
    'report_host': _object({'host': HOST, 'info': HOST_INFO,
                            'guests': _array(GUEST, max_items=MAX_GUESTS)},
                           ('host', 'info', 'guests')),
}

_GUEST_ONLY = _object({'guest': GUEST_ARG}, ('guest',))
_UUID_ONLY = _object({'uuid': UUID}, ('uuid',))
AGENT = {
    'get_host_info': _object({}),
    'list_guests': _object({}),
    'get_inventory': _object({}),
    'check_destination': _object({'guest': GUEST_ARG, 'source_info': SOURCE_INFO,
                                  'probe': TOKEN},
                                 ('guest', 'source_info', 'probe')),
    'remove_probe': _object({'probe': TOKEN}, ('probe',)),
    'check_source': _object({'uuid': UUID, 'probe': TOKEN}, ('uuid', 'probe')),
    'create_local_disks': _GUEST_ONLY,
    'delete_local_disks': _GUEST_ONLY,
    'connect_volumes': _GUEST_ONLY,
    'disconnect_volumes': _GUEST_ONLY,
    'plug_networking': _GUEST_ONLY,
    'unplug_networking': _GUEST_ONLY,
    'start_migration': _object({'guest': GUEST_ARG, 'destination': HOST,
                                'subtype': SUBTYPE,
                                'params': _nullable(START_PARAMS)},
                               ('guest', 'destination', 'subtype', 'params')),
    'get_migration_job': _object({'uuid': UUID, 'wait_s': _number(0, 10.0)},
                                 ('uuid',)),
    'abort_migration': _UUID_ONLY,
    'set_max_downtime': _object({'uuid': UUID,
                                 'downtime_ms': _number(0, 3600000)},
                                ('uuid', 'downtime_ms')),
    'start_post_copy': _UUID_ONLY,
    'pause_guest': _UUID_ONLY,
    'post_migration_source': _object({'guest': GUEST_ARG, 'subtype': SUBTYPE},
                                     ('guest', 'subtype')),
    'post_migration_destination': _object({'guest': GUEST_ARG, 'subtype': SUBTYPE},
                                          ('guest', 'subtype')),
    # Evacuation, on the destination (1.2).
    'check_rebuild': _object({'guest': GUEST_ARG, 'source_info': SOURCE_INFO},
                             ('guest', 'source_info')),
    'rebuild_disks': _GUEST_ONLY,
    'define_guest': _GUEST_ONLY,
    'undefine_guest': _UUID_ONLY,
    'start_guest': _GUEST_ONLY,
    'stop_guest': _UUID_ONLY,
}

# Rows as stored: the same fields as reported, other columns ignored.
STORED = {
    'host': _object(HOST_PROPERTIES, required=('vcpus', 'memory_mb', 'disk_gb'),
                    closed=False),
    'instance': _object(GUEST_PROPERTIES, required=('vcpus', 'memory_mb',
                                                    'disk_gb'), closed=False),
    'provider': _object({'kind': {'enum': ['numa', 'pci']},
                         'inventory': {'type': 'object', 'additionalProperties':
                                       _int(0, INT32)},
                         'traits': _array(TRAIT, max_items=64)},
                        required=('kind', 'inventory', 'traits'), closed=False),
    # A nested allocation's resources: class -> amount.
    'resources': {'type': 'object', 'additionalProperties': _int(0, INT32)},
}


def _finite(validator, wanted, instance, schema):
    if wanted and isinstance(instance, float) and not math.isfinite(instance):
        yield js_exceptions.ValidationError('%r is not a finite number' % instance)


_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator,
                                          {'finite': _finite})
for _table in (CONDUCTOR, AGENT, STORED):
    for _name, _schema in _table.items():
        _Validator.check_schema(_schema)
_CONDUCTOR = {n: _Validator(s) for n, s in CONDUCTOR.items()}
_AGENT = {n: _Validator(s) for n, s in AGENT.items()}
_STORED = {n: _Validator(s) for n, s in STORED.items()}
_GUEST = _Validator(GUEST)


_PLAIN_KEY = re.compile(r'[A-Za-z_][A-Za-z0-9_]{0,63}\Z')


def _field(path):
    """A field's path as errors name it: guests[0].name; a key a caller made up
    is shown as a value is (it may be huge, or hold control characters)."""
    out = ''
    for part in path:
        if isinstance(part, int):
            out += '[%d]' % part
        elif _PLAIN_KEY.match(part):
            out += '.%s' % part if out else part
        else:
            out += '[%s]' % shown(part)
    return out


_TYPES = {'integer': 'a whole number', 'number': 'a number', 'string': 'a string',
          'boolean': 'true or false', 'array': 'a list', 'object': 'a mapping',
          'null': 'nothing (null)'}


def _reason(error):
    """(field path, value, reason) of a validation error, in a caller's words."""
    path, value = list(error.absolute_path), error.instance
    kind, wanted = error.validator, error.validator_value
    if kind == 'additionalProperties':
        known = error.schema.get('properties', {})
        extra = sorted(k for k in value if k not in known)[0]
        return path + [extra], value[extra], 'unknown field; expected %s' % (
            ', '.join(sorted(known)) or 'none')
    if kind == 'required':
        missing = next(k for k in wanted if k not in value)
        return path + [missing], None, 'missing: a required field'
    if kind == 'type':
        types = wanted if isinstance(wanted, list) else [wanted]
        return path, value, 'expected %s' % ' or '.join(_TYPES.get(t, t)
                                                        for t in types)
    if kind == 'pattern':
        return path, value, error.schema.get('description') or \
            'does not match %s' % wanted
    if kind == 'enum':
        return path, value, 'expected one of %s' % ', '.join(
            str(v) for v in wanted)
    if kind in ('minimum', 'maximum', 'exclusiveMinimum'):
        words = {'minimum': 'at least', 'maximum': 'at most',
                 'exclusiveMinimum': 'more than'}[kind]
        return path, value, 'expected %s %s' % (words, wanted)
    if kind in ('maxLength', 'maxItems'):
        return path, value, 'expected at most %s %s' % (
            wanted, 'characters' if kind == 'maxLength' else 'items')
    if kind == 'uniqueItems':
        return path, value, 'expected no repeated items'
    if kind == 'finite':
        return path, value, 'expected a finite number'
    return path, value, error.message


def _first_error(validator, document):
    errors = list(validator.iter_errors(document))
    if not errors:
        return None
    return js_exceptions.best_match(errors)


def invalid(field, value, reason):
    """The InvalidArgument refusing ``value`` for ``field``; the value travels
    back (and into logs) only as ``shown``."""
    return exception.InvalidArgument(
        message='Invalid value %s for %s: %s' % (shown(value), field, reason),
        name=field, value=shown(value), reason=reason)


def _refusal(error, prefix=()):
    path, value, reason = _reason(error)
    return invalid(_field(list(prefix) + path) or 'arguments', value, reason)


CONDUCTOR_SERVICE = 'conductor'
AGENT_SERVICE = 'agent'


def check(service, method, arguments, sender=None):
    """Refuse (InvalidArgument, logged) arguments of an RPC method that do not
    fit its schema; ``service``: CONDUCTOR_SERVICE or AGENT_SERVICE."""
    validators = _CONDUCTOR if service == CONDUCTOR_SERVICE else _AGENT
    validator = validators.get(method)
    if validator is None:
        error = invalid('method', method, 'no such %s method' % service)
    else:
        found = _first_error(validator, arguments)
        if found is None:
            return arguments
        error = _refusal(found)
    LOG.warning('Refused %s%s: %s', method,
                '' if sender is None else ' from %s' % shown(sender), error.message)
    raise error


def checked(service, sender=None):
    """Decorator of an RPC endpoint method: its arguments (ctxt aside, by name,
    however they were passed) pass ``check`` before it runs; ``sender``: the
    argument naming who sent them, for the log.

    Only methods so decorated are exposed to RPC (the servers dispatch with
    oslo.messaging's ExplicitRPCAccessPolicy): an endpoint's other attributes,
    its helpers and its configuration, are out of a caller's reach."""
    def decorate(fn):
        names = list(inspect.signature(fn).parameters)[2:]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            # Not wrapper(self, ctxt, ...): arguments named "self" or "ctxt"
            # are a caller's unknown fields, refused by the schema.
            self, ctxt, args = args[0], args[1], args[2:]
            given = dict(zip(names, args))
            given.update(kwargs)
            check(service, fn.__name__, given,
                  sender=given.get(sender) if sender else None)
            return fn(self, ctxt, *args, **kwargs)
        return messaging.expose(wrapper)
    return decorate


def problems(kind, row):
    """What in a stored row (kind: host, instance, provider) cannot be
    interpreted, as 'field value: reason' texts; [] when it all can."""
    out = []
    for error in _STORED[kind].iter_errors(row):
        path, value, reason = _reason(error)
        out.append('%s %s: %s' % (_field(path) or kind, shown(value), reason))
    return sorted(out)


def valid_guests(guests, host):
    """The guests of a report that fit the schema; the others are logged and
    left out, so one odd guest does not stop its host's reports."""
    out = []
    for guest in guests:
        found = _first_error(_GUEST, guest)
        if found is None:
            out.append(guest)
        else:
            LOG.warning('Host %s: guest %s left out of the report: %s', host,
                        shown(guest.get('uuid') if isinstance(guest, dict)
                              else guest), _refusal(found).message)
    return out
