"""[api] options of ferryman-api."""

from oslo_config import cfg

# What a request may carry and how it is authenticated.
AUTH_NONE = 'none'
AUTH_NOAUTH = 'noauth'
AUTH_KEYSTONE = 'keystone'

api_opts = [
    cfg.HostAddressOpt('listen', default='127.0.0.1',
                       help='Address the API listens on.'),
    cfg.PortOpt('port', default=8774,
                help='TCP port the API listens on (Nova\'s by default).'),
    cfg.IntOpt('workers', default=16, min=1, max=1024,
               help='Requests served at once (threads of the WSGI server); each '
                    'waits on the conductor for most of its time.'),
    cfg.StrOpt('auth_strategy', default=AUTH_NOAUTH,
               choices=[(AUTH_KEYSTONE, 'keystonemiddleware\'s auth_token '
                                        'validates each token with Keystone '
                                        '(configured in [keystone_authtoken])'),
                        (AUTH_NOAUTH, 'DEVELOPMENT ONLY: the token is '
                                      '"user:project", the roles are X-Roles as '
                                      'sent, and the user "admin" is an '
                                      'administrator (as Placement\'s noauth)'),
                        (AUTH_NONE, 'LOCAL USE ONLY: every request is an '
                                    'administrator\'s, whatever it carries (what '
                                    'clients with auth_type none send)')],
               help='How requests are authenticated. Never expose the API beyond '
                    'a trusted host with noauth or none: the caller says who it '
                    'is. What each caller may do is [oslo_policy] policy_file\'s '
                    'rules over the defaults (etc/ferryman/policy.yaml.sample).'),
    cfg.IntOpt('backlog', default=1024, min=16, max=65535,
               help='Connections the kernel holds until the API accepts them '
                    '(the listen backlog, capped by net.core.somaxconn). A '
                    'small one drops connection attempts when many clients '
                    'connect at once, and each then waits for its SYN retries.'),
    cfg.IntOpt('max_request_body_bytes', default=65536, min=1024,
               help='Largest request body accepted; larger ones get 413.'),
    cfg.FloatOpt('rpc_timeout', default=60.0, min=1.0,
                 help='Seconds to wait for the conductor\'s answer before a '
                      'request fails with 503.'),
]


def register_opts(conf):
    conf.register_opts(api_opts, group='api')


def list_opts():
    return [('api', api_opts)]
