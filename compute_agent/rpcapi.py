"""Client side of the compute agent RPC API (topic ferryman-compute, server = host).

Each call asks for the version that brought it (the base one unless it says), so a
conductor talks to the oldest agent that can answer. The agent's endpoint serves
``VERSION``.

API version history (the one place it is kept; a new method or argument gets the
next minor version here, in VERSION, and in its call):
    1.0 - Initial version.
    1.1 - get_migration_job(wait_s): answers as soon as the job ends, or after
          wait_s, so the conductor sees a switch-over at once without polling fast.
    1.2 - Evacuation: check_rebuild, rebuild_disks, define_guest, undefine_guest,
          start_guest, stop_guest.
"""

from ferryman.common import rpc
from ferryman.common import rpc_auth

BASE_VERSION = '1.0'
VERSION = '1.2'


class ComputeAPI(object):
    """Every call names the host whose agent answers it."""

    def __init__(self, conf, timeout=None, auth=None):
        """``auth`` (rpc_auth.Auth): signs every call with the host's key; by
        default the conductor's, from ``[auth] secret_file``."""
        self.client = rpc.get_client(conf, rpc.COMPUTE_TOPIC, BASE_VERSION,
                                     version_cap=VERSION, timeout=timeout)
        self.auth = auth or rpc_auth.conductor_auth(conf)

    # A progress call is answered within its wait; one lost with a dying agent
    # should not hold the conductor for the whole RPC timeout.
    PROGRESS_TIMEOUT_S = 10.0

    def _call(self, host, method, version=None, timeout=None, **kwargs):
        extra = {'version': version} if version else {}
        if timeout:
            extra['timeout'] = timeout
        cctxt = self.client.prepare(server=host, **extra)
        ctxt = self.auth.context(rpc.COMPUTE_TOPIC, method, host, kwargs)
        return cctxt.call(ctxt, method, **kwargs)

    def get_host_info(self, host):
        return self._call(host, 'get_host_info')

    def list_guests(self, host):
        return self._call(host, 'list_guests')

    def get_inventory(self, host):
        return self._call(host, 'get_inventory')

    def check_destination(self, host, guest, source_info, probe):
        return self._call(host, 'check_destination', guest=guest,
                          source_info=source_info, probe=probe)

    def remove_probe(self, host, probe):
        return self._call(host, 'remove_probe', probe=probe)

    def check_source(self, host, uuid, probe):
        return self._call(host, 'check_source', uuid=uuid, probe=probe)

    def create_local_disks(self, host, guest):
        return self._call(host, 'create_local_disks', guest=guest)

    def delete_local_disks(self, host, guest):
        return self._call(host, 'delete_local_disks', guest=guest)

    def connect_volumes(self, host, guest):
        return self._call(host, 'connect_volumes', guest=guest)

    def disconnect_volumes(self, host, guest):
        return self._call(host, 'disconnect_volumes', guest=guest)

    def plug_networking(self, host, guest):
        return self._call(host, 'plug_networking', guest=guest)

    def unplug_networking(self, host, guest):
        return self._call(host, 'unplug_networking', guest=guest)

    def start_migration(self, host, guest, destination, subtype, params):
        return self._call(host, 'start_migration', guest=guest,
                          destination=destination, subtype=subtype, params=params)

    def get_migration_job(self, host, uuid, wait_s=0.0):
        timeout = self.PROGRESS_TIMEOUT_S + wait_s
        if wait_s and self.client.can_send_version('1.1'):
            return self._call(host, 'get_migration_job', version='1.1',
                              timeout=timeout, uuid=uuid, wait_s=float(wait_s))
        return self._call(host, 'get_migration_job', timeout=timeout, uuid=uuid)

    def abort_migration(self, host, uuid):
        return self._call(host, 'abort_migration', uuid=uuid)

    def set_max_downtime(self, host, uuid, downtime_ms):
        return self._call(host, 'set_max_downtime', uuid=uuid, downtime_ms=downtime_ms)

    def start_post_copy(self, host, uuid):
        return self._call(host, 'start_post_copy', uuid=uuid)

    def pause_guest(self, host, uuid):
        return self._call(host, 'pause_guest', uuid=uuid)

    def post_migration_source(self, host, guest, subtype):
        return self._call(host, 'post_migration_source', guest=guest,
                          subtype=subtype)

    def post_migration_destination(self, host, guest, subtype):
        return self._call(host, 'post_migration_destination', guest=guest,
                          subtype=subtype)

    # Evacuation, on the destination (1.2). -------------------------------------------
    def check_rebuild(self, host, guest, source_info):
        return self._call(host, 'check_rebuild', '1.2', guest=guest,
                          source_info=source_info)

    def rebuild_disks(self, host, guest):
        return self._call(host, 'rebuild_disks', '1.2', guest=guest)

    def define_guest(self, host, guest):
        return self._call(host, 'define_guest', '1.2', guest=guest)

    def undefine_guest(self, host, uuid):
        return self._call(host, 'undefine_guest', '1.2', uuid=uuid)

    def start_guest(self, host, guest):
        return self._call(host, 'start_guest', '1.2', guest=guest)

    def stop_guest(self, host, uuid):
        return self._call(host, 'stop_guest', '1.2', uuid=uuid)
