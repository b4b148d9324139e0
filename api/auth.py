"""Who sent a request, per [api] auth_strategy.

keystone: keystonemiddleware's auth_token in front of the application validates
the token with Keystone, strips any identity headers the client sent, and sets
X-Identity-Status, X-User-Id, X-Project-Id and X-Roles, which are read here.
noauth: development only, as Placement's: the token is ``user:project``, the
roles are X-Roles as sent, and the user ``admin`` is an administrator.
none: LOCAL USE ONLY: every request is an administrator's.
"""

from keystonemiddleware import auth_token

from api import conf as api_conf
from api import faults

# The version documents: clients read them before they have a token.
OPEN_PATHS = ('', '/', '/v2.1', '/v2.1/')


def _roles(header):
    return [r.strip() for r in (header or '').split(',') if r.strip()]


def credentials(conf, req):
    """(user_id, project_id, roles) of a request; 401 when it has none."""
    strategy = conf.api.auth_strategy
    if strategy == api_conf.AUTH_NONE:
        return 'admin', 'admin', ['admin']
    if strategy == api_conf.AUTH_KEYSTONE:
        # Set by auth_token (from the validated token), never by the client.
        user = req.headers.get('X-User-Id', '')
        project = req.headers.get('X-Project-Id', '')
        if req.headers.get('X-Identity-Status') != 'Confirmed' or not user or \
                not project:
            raise faults.Fault(401, 'Authentication required: a valid Keystone '
                                    'token scoped to a project.')
        return user, project, _roles(req.headers.get('X-Roles'))
    token = req.headers.get('X-Auth-Token', '')
    user, sep, project = token.partition(':')
    if not sep or not user or not project:
        raise faults.Fault(401, 'Expected an X-Auth-Token of the form '
                                'user:project ([api] auth_strategy = noauth).')
    roles = _roles(req.headers.get('X-Roles'))
    if user == 'admin' and 'admin' not in roles:
        roles.append('admin')
    return user, project, roles


def trusts_the_caller(conf):
    """Whether the strategy takes the caller's word for who it is."""
    return conf.api.auth_strategy in (api_conf.AUTH_NONE, api_conf.AUTH_NOAUTH)


class _OpenPaths(object):
    """The version documents served without the auth middleware, everything
    else through it."""

    def __init__(self, app, authenticated):
        self.app = app
        self.authenticated = authenticated

    def __call__(self, environ, start_response):
        if environ.get('PATH_INFO', '') in OPEN_PATHS:
            return self.app(environ, start_response)
        return self.authenticated(environ, start_response)


def pipeline(conf, app):
    """The WSGI application to serve: ``app`` behind auth_token (configured
    from the [keystone_authtoken] group of ``conf``) when the strategy is
    keystone, else ``app`` itself."""
    if conf.api.auth_strategy != api_conf.AUTH_KEYSTONE:
        return app
    return _OpenPaths(app, auth_token.AuthProtocol(app, {'oslo_config_config': conf}))
