"""Client side of the conductor RPC API (topic ferryman-conductor).

Each call asks for the version that brought it (or its newest argument), so a
client talks to the oldest conductor that can answer. The conductor's endpoint
serves ``VERSION``.

API version history (the one place it is kept; a new method or argument gets the
next minor version here, in VERSION, and in its call):
    1.0 - Initial version.
    1.1 - live_migrate(importance), abort_migration, force_complete_migration.
    1.2 - audit.
    1.3 - drain_host, get_drain, list_drains.
    1.4 - describe_instances (for ferryman-api).
    1.5 - force_down.
    1.6 - live_migrate(request_id), list_refused_requests.
    1.7 - evacuate; evacuated_guests, guests_fenced (agents, before reporting).
"""

from ferryman.common import rpc
from ferryman.common import rpc_auth

BASE_VERSION = '1.0'
VERSION = '1.7'


class ConductorAPI(object):

    def __init__(self, conf, timeout=None, auth=None, operator=None):
        """``auth`` (rpc_auth.Auth): an agent's, to sign its reports with.
        ``operator``: (rpc_auth.Auth, principal) an operator's requests are
        signed with; by default from ``conf``'s [auth] (rpc_auth.operator_signer),
        unsigned where it holds no operator key or secret."""
        self.client = rpc.get_client(conf, rpc.CONDUCTOR_TOPIC, BASE_VERSION,
                                     version_cap=VERSION, timeout=timeout)
        self.auth = auth
        if operator is None and conf is not None:
            operator = rpc_auth.operator_signer(conf)
        self.operator = operator

    def _call(self, method, version=BASE_VERSION, **kwargs):
        ctxt = {}
        if self.operator is not None:
            signer, principal = self.operator
            ctxt = signer.context(rpc.CONDUCTOR_TOPIC, method, principal, kwargs)
        return self.client.prepare(version=version).call(ctxt, method, **kwargs)

    def live_migrate(self, instance, host=None, block_migration='auto', force=False,
                     importance='medium', request_id=None):
        """Start a live migration; returns the new migration at once.

        ``importance`` (low, medium, high) and the guest's SLA class decide how the
        copy is steered to finish; no hypervisor setting is asked for here.
        ``request_id``: the caller's, under which a refusal is recorded (see
        list_refused_requests).
        """
        kwargs = {'instance': instance, 'host': host,
                  'block_migration': block_migration, 'force': force,
                  'importance': importance}
        if request_id is None:
            return self._call('live_migrate', '1.1', **kwargs)
        return self._call('live_migrate', '1.6', request_id=request_id, **kwargs)

    def list_refused_requests(self, instance):
        """A guest's move requests refused before any migration was recorded."""
        return self._call('list_refused_requests', '1.6', instance=instance)

    def evacuate(self, instance, host=None, force=False):
        """Rebuild a dead (or forced-down) host's guest elsewhere; returns the
        migration (subtype evacuation) at once."""
        return self._call('evacuate', '1.7', instance=instance, host=host,
                          force=force)

    # An agent asks again soon rather than wait long: a call sent before the
    # conductor listens is lost, and the agent reports only once fenced.
    FENCE_TIMEOUT_S = 3.0

    def evacuated_guests(self, host):
        """An agent back from the dead: the guests it must destroy before it
        reports (signed with its host's key)."""
        return self._signed_call('evacuated_guests', '1.7', host=host)

    def guests_fenced(self, host, migrations):
        """An agent: it destroyed the guests of these evacuations."""
        return self._signed_call('guests_fenced', '1.7', host=host,
                                 migrations=migrations)

    def _signed_call(self, method, version, **args):
        ctxt = self.auth.context(rpc.CONDUCTOR_TOPIC, method, args['host'], args) \
            if self.auth is not None else {}
        return self.client.prepare(version=version,
                                   timeout=self.FENCE_TIMEOUT_S).call(
            ctxt, method, **args)

    def force_complete_migration(self, migration):
        """Finish a running migration now (post-copy, or a pause)."""
        return self._call('force_complete_migration', '1.1', migration=migration)

    def abort_migration(self, migration):
        """Stop a migration; it ends in cancelled, the guest on its source."""
        return self._call('abort_migration', '1.1', migration=migration)

    def get_migration(self, migration):
        return self._call('get_migration', migration=migration)

    def list_migrations(self, instance=None, status=None, host=None):
        return self._call('list_migrations', instance=instance, status=status,
                          host=host)

    def get_task_history(self, migration):
        return self._call('get_task_history', migration=migration)

    def audit(self):
        """Invariant violations found on the hosts, and what was checked."""
        return self._call('audit', '1.2')

    def drain_host(self, host, max_parallel=None):
        """Disable a host and live-migrate every guest off it; returns the drain
        (its id, and each guest's state) at once."""
        return self._call('drain_host', '1.3', host=host, max_parallel=max_parallel)

    def get_drain(self, drain):
        return self._call('get_drain', '1.3', drain=drain)

    def list_drains(self, host=None):
        return self._call('list_drains', '1.3', host=host)

    def list_hosts(self):
        return self._call('list_hosts')

    def list_instances(self, host=None):
        return self._call('list_instances', host=host)

    def set_host_enabled(self, host, enabled, reason=None):
        return self._call('set_host_enabled', host=host, enabled=enabled,
                          reason=reason)

    def force_down(self, host, forced_down):
        """Count ``host`` as down (True) whatever its agent reports, or no
        longer (False); returns the host."""
        return self._call('force_down', '1.5', host=host, forced_down=forced_down)

    def report_host(self, host, info, guests):
        """Agents publish their host's resources and guests (no reply wanted),
        signed with their host's key."""
        args = {'host': host, 'info': info, 'guests': guests}
        ctxt = self.auth.context(rpc.CONDUCTOR_TOPIC, 'report_host', host, args) \
            if self.auth is not None else {}
        self.client.cast(ctxt, 'report_host', **args)

    # For ferryman-api (1.4). -------------------------------------------------------
    def describe_instances(self, host=None, instance=None):
        """Instances (all, those on ``host``, or the one uuid ``instance``), each
        with its newest migration and when its host last reported it."""
        return self._call('describe_instances', '1.4', host=host, instance=instance)
