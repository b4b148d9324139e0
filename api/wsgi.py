"""The WSGI application: request ids, authentication, microversions, routing,
body parsing and validation, and Nova's error bodies around small handlers.

Handlers (``api.handlers``) take ``(ctx, req, **path_vars)`` and return
``(status, body)``; they raise ``faults.Fault`` to refuse. Conductor errors
(``ferryman.common.exception``) become the fault of their code.
"""

import json
import re
import time
import uuid

import futurist
import oslo_messaging as messaging
from oslo_log import log as logging
import webob

from api import auth
from api import faults
from api import microversion
from api import policy
from api import routes
from ferryman.common import exception

LOG = logging.getLogger(__name__)

PREFIX = '/v2.1'
# The task API (api.handlers.tasks): its own route table, no microversions.
V1_PREFIX = '/v1'
# Segments of a path the route table names: anything but a slash, bounded.
_VAR = r'(?P<%s>[^/]{1,255})'


class Context(object):
    """What a handler knows about its request."""

    def __init__(self, app, version, request_id, user_id, project_id, roles,
                 base_url):
        self.conf = app.conf
        self.conductor = app.conductor
        self.background = app.background
        self.policy = app.policy
        self.version = version
        self.request_id = request_id
        self.user_id = user_id
        self.project_id = project_id
        self.roles = roles
        self.is_admin = user_id is not None and app.policy.is_admin(
            user_id, project_id, roles)
        self.base_url = base_url

    def at_least(self, version):
        return self.version >= microversion.parse(version)

    def link(self, path):
        """Self and bookmark links of a resource path (after the prefix)."""
        return [{'rel': 'self', 'href': self.base_url + PREFIX + path},
                {'rel': 'bookmark', 'href': self.base_url + path}]

    def _creds(self):
        return {'user_id': self.user_id, 'project_id': self.project_id,
                'roles': list(self.roles), 'is_admin': self.is_admin}

    def _target(self, target):
        # No target: the caller's own project (rules about no one's resource).
        return target if target is not None else {
            'project_id': self.project_id, 'user_id': self.user_id}

    def authorize(self, rule, target=None):
        """Refuse (403 naming ``rule``) unless the policy allows it on
        ``target`` ({'project_id': owner, ...}); call before changing anything."""
        self.policy.authorize(rule, self._target(target), self._creds())

    def can(self, rule, target=None):
        """Whether the policy allows ``rule``, for what a response shows."""
        return self.policy.allowed(rule, self._target(target), self._creds())


def _compile(table):
    compiled = []
    for template, methods in table:
        pattern = re.sub(r'\{(\w+)\}', lambda m: _VAR % m.group(1),
                         re.escape(template).replace(r'\{', '{').replace(r'\}', '}'))
        compiled.append((re.compile('^%s$' % pattern), methods))
    return compiled


class Application(object):

    def __init__(self, conf, conductor):
        """``conductor``: a conductor.rpcapi.ConductorAPI, the only way out."""
        self.conf = conf
        self.conductor = conductor
        self.routes = _compile(routes.ROUTES)
        self.v1_routes = _compile(routes.V1_ROUTES)
        self.policy = policy.Enforcer(conf)
        # Requests answered before the conductor is (os-migrateLive from 2.34).
        self._executor = futurist.ThreadPoolExecutor(max_workers=conf.api.workers)

    def background(self, fn, *args, **kwargs):
        return self._executor.submit(fn, *args, **kwargs)

    def stop(self):
        self._executor.shutdown(wait=True)

    def __call__(self, environ, start_response):
        req = webob.Request(environ)
        request_id = 'req-%s' % uuid.uuid4()
        started = time.monotonic()
        version = None
        try:
            resp, version = self._handle(req, request_id)
        except faults.Fault as fault:
            resp = faults.response(fault.code, fault.message, fault.headers)
        except Exception:
            LOG.exception('%s %s %s failed', request_id, req.method, req.path)
            resp = faults.response(500, 'Unexpected API Error. The API log names '
                                        'request %s.' % request_id)
        resp.headers['x-openstack-request-id'] = request_id
        resp.headers['x-compute-request-id'] = request_id
        if version is not None:
            resp.headers.update(microversion.headers(version))
        LOG.info('%s %s %s%s status: %s len: %s time: %.3f', request_id,
                 req.method, req.path, '?' + req.query_string if req.query_string
                 else '', resp.status_int, resp.content_length or 0,
                 time.monotonic() - started)
        return resp(environ, start_response)

    def _handle(self, req, request_id):
        path = req.path_info
        if path in ('', '/'):
            status, body = routes.root(self._base_url(req))
            return _json(status, body), None
        if _under(path, V1_PREFIX):
            prefix, table, version = V1_PREFIX, self.v1_routes, None
        elif _under(path, PREFIX):
            prefix, table = PREFIX, self.routes
            version = microversion.from_headers(req.headers)
        else:
            raise faults.not_found('Unknown resource %s.' % path[:100])
        rest = path[len(prefix):].rstrip('/') or '/'
        try:
            handler, variables = self._route(table, req.method, rest)
            ctx = self._context(req, request_id, version,
                                open_=rest in routes.OPEN[prefix])
            result = handler(ctx, req, **variables)
        except faults.Fault as fault:
            return faults.response(fault.code, fault.message, fault.headers), version
        except exception.NotAuthenticated as exc:
            # The API's own credentials, not the client's: the client's token is
            # fine, so no 401 that would make it think otherwise.
            LOG.error('%s: the conductor refused this API\'s request: %s '
                      '(check [auth] operator_key_file)', request_id, exc.message)
            return faults.response(500, 'The conductor refused this API\'s '
                                        'request as not signed by an operator; '
                                        'the API log names request %s.'
                                   % request_id), version
        except exception.FerrymanError as exc:
            return faults.response(exc.code if exc.code in faults.FAULT_NAMES
                                   else 500, exc.message), version
        except messaging.MessagingTimeout:
            return faults.response(503, 'The conductor did not answer in time; '
                                        'try again.'), version
        except messaging.MessagingException as exc:
            LOG.warning('%s: the conductor cannot be reached: %s', request_id, exc)
            return faults.response(503, 'The conductor cannot be reached (message '
                                        'broker unavailable); try again.'), version
        if isinstance(result, webob.Response):
            return result, version
        return _json(*result), version

    def _route(self, table, method, path):
        for pattern, methods in table:
            found = pattern.match(path)
            if found is None:
                continue
            handler = methods.get(method)
            if handler is None:
                raise faults.Fault(405, 'Method %s is not allowed on %s.' % (
                    method, path), {'Allow': ', '.join(sorted(methods))})
            return handler, found.groupdict()
        raise faults.not_found('Unknown resource %s.' % path[:100])

    def _base_url(self, req):
        return req.host_url + req.script_name

    def _context(self, req, request_id, version, open_=False):
        """``open_``: the version document, which needs no credentials; what
        each caller may do is for the handlers to ask (Context.authorize)."""
        user, project, roles = (None, None, []) if open_ else \
            auth.credentials(self.conf, req)
        return Context(self, version, request_id, user, project, roles,
                       self._base_url(req))


def _under(path, prefix):
    return path == prefix or path.startswith(prefix + '/')


def _json(status, body):
    resp = webob.Response(status=status)
    if body is not None:
        resp.content_type = 'application/json'
        resp.charset = 'utf-8'
        resp.body = json.dumps(body).encode()
    else:
        resp.content_type = None
    return resp
