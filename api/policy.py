"""Policy enforcement: oslo.policy with the defaults of api.policies, the
operator's policy file ([oslo_policy] policy_file) over them."""

from oslo_config import cfg
from oslo_policy import policy as oslo_policy

from api import faults
from api import policies


class Enforcer(object):
    """One per application, on the application's own configuration."""

    def __init__(self, conf):
        self._enforcer = oslo_policy.Enforcer(conf)
        self._enforcer.register_defaults(policies.list_rules())

    def is_admin(self, user_id, project_id, roles):
        """What ``context_is_admin`` says of these credentials."""
        return self._enforcer.authorize(
            'context_is_admin', {}, {'user_id': user_id, 'project_id': project_id,
                                     'roles': list(roles), 'is_admin': False})

    def allowed(self, rule, target, creds):
        """Whether ``rule`` allows ``creds`` on ``target``; an unknown rule
        name raises (oslo.policy's PolicyNotRegistered), never passes."""
        return self._enforcer.authorize(rule, target, creds)

    def authorize(self, rule, target, creds):
        """403 naming the rule (as Nova words it) unless allowed."""
        if not self.allowed(rule, target, creds):
            raise faults.Fault(403, "Policy doesn't allow %s to be performed." % rule)


def sample_enforcer():
    """The oslo.policy.enforcer entry point (oslopolicy-policy-generator and
    oslopolicy-checker read the effective rules through it)."""
    enforcer = oslo_policy.Enforcer(cfg.CONF)
    enforcer.register_defaults(policies.list_rules())
    return enforcer
