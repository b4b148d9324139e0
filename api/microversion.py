"""Compute API microversions: which one a request asked for, and the headers a
response carries back."""

import microversion_parse

from api import faults

SERVICE_TYPE = 'compute'
LEGACY_HEADER = 'X-OpenStack-Nova-API-Version'
MIN_VERSION = (2, 1)
MAX_VERSION = (2, 88)


def text(version):
    return '%d.%d' % version


def parse(value):
    """(major, minor) of a version string; 'latest' is the maximum."""
    if value.strip().lower() == 'latest':
        return MAX_VERSION
    try:
        parsed = microversion_parse.parse_version_string(value)
    except (TypeError, ValueError):
        raise faults.bad_request('Invalid microversion %r: expected MAJOR.MINOR or '
                                 'latest.' % value[:40])
    return (parsed.major, parsed.minor)


def from_headers(headers):
    """The version a request asks for (none: the minimum); 406 out of range."""
    try:
        value = microversion_parse.get_version(
            headers, SERVICE_TYPE, legacy_headers=[LEGACY_HEADER])
    except ValueError as exc:
        raise faults.bad_request('Invalid microversion header: %s' % exc)
    if value is None:
        return MIN_VERSION
    version = parse(value)
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise faults.Fault(406, 'Version %s is not supported by the API. Minimum '
                                'is %s and maximum is %s.' % (
                                    text(version), text(MIN_VERSION),
                                    text(MAX_VERSION)))
    return version


def headers(version):
    return {'OpenStack-API-Version': '%s %s' % (SERVICE_TYPE, text(version)),
            LEGACY_HEADER: text(version),
            'Vary': 'OpenStack-API-Version, %s' % LEGACY_HEADER}
