"""What several handlers share: ids Nova has and Ferryman does not, query
parameters, and the conductor's records as Nova names them."""

import hashlib
import re
import uuid
import zlib

from api import faults

UUID_RE = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z')
# Names Ferryman's records use for hosts (ferryman.common.schemas.HOST).
HOST_RE = re.compile(r'^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z')
# Ids of hosts and services derive from their host's name in this namespace, so
# every API process (and restart) gives the same.
NAMESPACE = uuid.UUID('6c2d53f2-8e61-4b0c-9a55-6d3f6f1e8a7b')
ZONE = 'nova'

# Ferryman's migration states as Nova's clients know them.
# A subtype's own states: volumes connected on the destination are Nova's
# pre-live-migration (preparing); local disks copying is the job running.
MIGRATION_STATUS = {'accepted': 'queued', 'preparing': 'preparing',
                    'connecting-volumes': 'preparing', 'copying-disks': 'running',
                    'running': 'running', 'post-copy': 'running',
                    # An evacuation defining and starting the guest.
                    'rebuilding': 'running',
                    'finishing': 'post-migrating', 'completed': 'completed',
                    'failed': 'failed', 'cancelled': 'cancelled', 'error': 'error'}
IN_PROGRESS = ('queued', 'preparing', 'running', 'post-migrating')


def number(text):
    """A stable positive integer for a name or uuid, where Nova shows one (old
    microversions, migration ids): clients look it up again through this API,
    which compares numbers the same way."""
    return zlib.crc32(text.encode('utf-8')) & 0x7fffffff


def host_id(host):
    """Nova's hostId: names a host without showing it."""
    return hashlib.sha224(host.encode('utf-8')).hexdigest()


def host_uuid(kind, host):
    return str(uuid.uuid5(NAMESPACE, '%s:%s' % (kind, host)))


def is_uuid(value):
    return bool(UUID_RE.match(value))


def query(req, name, pattern=None, what='value'):
    """The single value of query parameter ``name`` (None when absent); 400
    when repeated or not matching ``pattern``."""
    values = req.GET.getall(name)
    if not values:
        return None
    if len(values) > 1:
        raise faults.bad_request('Query parameter %s given %d times; expected '
                                 'one.' % (name, len(values)))
    value = values[0]
    if pattern is not None and not re.match(pattern, value):
        raise faults.bad_request('Invalid %s %r for query parameter %s.' % (
            what, value[:80], name))
    return value


def host_query(req, name):
    value = query(req, name)
    if value is not None and not HOST_RE.match(value):
        raise faults.bad_request('Invalid host name %r for query parameter %s: '
                                 'expected letters, digits, dots and dashes.' % (
                                     value[:80], name))
    return value


def limit_query(req):
    value = query(req, 'limit', r'^[0-9]{1,9}\Z', 'non-negative integer')
    return None if value is None else int(value)


def boolish(req, name):
    value = query(req, name)
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ('1', 'true', 't', 'yes', 'y', 'on'):
        return True
    if lowered in ('0', 'false', 'f', 'no', 'n', 'off'):
        return False
    raise faults.bad_request('Invalid boolean %r for query parameter %s.' % (
        value[:40], name))


def flavor_id(inst):
    """Ferryman keeps sizes, not flavors: each size is a flavor named after it."""
    return '%dc-%dm-%dg' % (inst['vcpus'], inst['memory_mb'], inst['disk_gb'])


def page(ctx, req, items, marker_of, path):
    """Nova's paging (2.58/2.59) of items newest first: changes-since (and from
    2.66 changes-before) on updated_at, marker (``marker_of(item)``), limit;
    (items, next links or None)."""
    for name in ('changes-since', 'changes-before'):
        since = query(req, name, r'^[0-9T:.+\-Z ]{10,40}\Z', 'time')
        if since is not None:
            since = since.replace(' ', '+')
            if name == 'changes-before' and not ctx.at_least('2.66'):
                raise faults.bad_request('changes-before needs microversion 2.66.')
            keep = (lambda i, t=since: i['updated_at'] >= t) \
                if name == 'changes-since' else (lambda i, t=since: i['updated_at'] <= t)
            items = [i for i in items if keep(i)]
    marker = query(req, 'marker')
    if marker is not None:
        markers = [marker_of(i) for i in items]
        if marker not in markers:
            raise faults.bad_request('Marker %s could not be found.' % marker[:80])
        items = items[markers.index(marker) + 1:]
    limit = limit_query(req)
    if limit is None or len(items) <= limit:
        return items, None
    items = items[:limit]
    url = '%s/v2.1%s?limit=%d&marker=%s' % (ctx.base_url, path, limit,
                                            marker_of(items[-1]))
    return items, [{'rel': 'next', 'href': url}]
