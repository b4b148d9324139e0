"""Version documents: what a client reads first to pick its microversion."""

from api import microversion

UPDATED = '2021-02-12T00:00:00Z'  # when 2.88, the maximum here, was published


def _version(base_url, extra=None):
    doc = {'id': 'v2.1', 'status': 'CURRENT',
           'version': microversion.text(microversion.MAX_VERSION),
           'min_version': microversion.text(microversion.MIN_VERSION),
           'updated': UPDATED,
           'links': [{'rel': 'self', 'href': base_url + '/v2.1/'}]}
    doc.update(extra or {})
    return doc


def root(base_url):
    """GET /: every API version offered (one)."""
    return 200, {'versions': [_version(base_url)]}


def show(ctx, req):
    """GET /v2.1."""
    return 200, {'version': _version(ctx.base_url, {'media-types': [{
        'base': 'application/json',
        'type': 'application/vnd.openstack.compute+json;version=2.1'}]})}
