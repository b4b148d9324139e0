"""The compute agent: the conductor's hands on one hypervisor host.

It answers the conductor's step calls by delegating to its virt driver and publishes
its host's resources and guests. It never calls another agent.
"""

import functools
import threading

import oslo_messaging as messaging
from oslo_log import log as logging

from compute_agent import faults
from compute_agent import rpcapi as compute_rpcapi
from compute_agent import virt
from conductor import rpcapi as conductor_rpcapi
from ferryman.common import exception
from ferryman.common import rpc_auth
from ferryman.common import schemas
from ferryman.common import vocabulary as vocab

LOG = logging.getLogger(__name__)


def _guest(guest):
    if not isinstance(guest, dict) or not isinstance(guest.get('uuid'), str):
        raise exception.InvalidArgument(name='guest', value=guest,
                                        reason='expected a guest record with a uuid')
    return guest


def _subtype(subtype):
    if subtype not in vocab.SUBTYPES:
        raise exception.InvalidArgument(
            name='subtype', value=subtype,
            reason='expected one of %s' % ', '.join(vocab.SUBTYPES))
    return subtype


def endpoint(fn):
    """An RPC method the conductor calls (a step, in faults and errors), exposed
    to RPC (nothing else on the manager is): its arguments pass their schema
    before anything acts on them; may be made to fail for tests."""
    @schemas.checked(schemas.AGENT_SERVICE)
    @functools.wraps(fn)
    def wrapper(self, ctxt, **kwargs):
        fault = faults.check_file(self.conf.compute.fault_injection_file,
                                  fn.__name__, self.host)
        result = fn(self, ctxt, **kwargs)
        if fault and fault.get('kill') == 'after':
            faults.kill_self(fn.__name__, self.host, 'after')
        return result
    return wrapper


class ComputeManager(object):
    # Every version this serves: compute_agent.rpcapi keeps their history.
    target = messaging.Target(version=compute_rpcapi.VERSION)

    # Longest a progress call may be held open (the RPC timeout must exceed it).
    MAX_WAIT_S = 10.0

    def __init__(self, conf, host=None, driver=None, auth=None):
        self.conf = conf
        self.host = host or conf.host
        auth = auth or rpc_auth.agent_auth(conf, self.host)
        self.driver = driver or virt.load_driver(conf, self.host)
        self.conductor = conductor_rpcapi.ConductorAPI(conf, auth=auth)
        self._stop = threading.Event()
        self._reporter = None

    def init_host(self):
        self.driver.init_host()

    def start_reporting(self):
        # Fenced first, inside the loop: no report before it has succeeded.
        self._reporter = threading.Thread(target=self._report_loop,
                                          name='report-%s' % self.host, daemon=True)
        self._reporter.start()

    def stop(self):
        self._stop.set()
        if self._reporter is not None:
            self._reporter.join(5)
        self.driver.cleanup_host()

    def report(self):
        # A guest the conductor would refuse is left out (and logged) here, so
        # one odd domain does not cost its host every report.
        self.conductor.report_host(self.host, self.host_info(), schemas.valid_guests(
            self.driver.list_guests(), self.host))

    def _report_loop(self):
        fenced = False
        while not self._stop.is_set():
            try:
                if not fenced:
                    self.fence()
                    fenced = True
                self.report()
            except Exception:  # the conductor may be down; keep trying
                LOG.exception('%s host %s failed', 'Reporting' if fenced else
                              'Fencing', self.host)
            interval = self.conf.compute.report_interval
            self._stop.wait(interval if fenced else min(interval, 1.0))

    def fence(self):
        """Before this host reports (it may come back from the dead): destroy
        and undefine every guest evacuated away from it, so none runs on two
        hosts, then tell the conductor, which releases what they held here.
        Shared files and volume data stay; local disks go (rebuilt elsewhere).
        Raises if the conductor cannot say which: no report until it can."""
        evacuated = self.conductor.evacuated_guests(self.host)
        if not evacuated:
            return []
        for guest in evacuated:
            LOG.warning('Host %s: guest %s was evacuated (migration %s, %s): '
                        'destroying it here', self.host, guest['uuid'],
                        guest['migration'], guest['storage'])
            self.driver.fence_guest(guest)
        return self.conductor.guests_fenced(
            self.host, [g['migration'] for g in evacuated])

    # RPC endpoint methods. -------------------------------------------------------
    @endpoint
    def get_host_info(self, ctxt):
        return self.host_info()

    def host_info(self):
        """The driver's host facts, with what this host's operator allows."""
        info = self.driver.get_host_info()
        features = info.setdefault('features', {})
        features['post_copy'] = (features.get('post_copy', True) and
                                 self.conf.compute.allow_post_copy)
        features['auto_converge'] = (features.get('auto_converge', True) and
                                     self.conf.compute.allow_auto_converge)
        features.setdefault('bandwidth_mibps', 0)
        c = self.conf.compute
        info['reserved'] = {'vcpus': c.reserved_host_cpus,
                            'memory_mb': c.reserved_host_memory_mb,
                            'disk_gb': c.reserved_host_disk_gb}
        info['allocation_ratios'] = {'vcpus': c.cpu_allocation_ratio,
                                     'memory_mb': c.ram_allocation_ratio,
                                     'disk_gb': c.disk_allocation_ratio}
        return info

    @endpoint
    def list_guests(self, ctxt):
        return self.driver.list_guests()

    @endpoint
    def get_inventory(self, ctxt):
        return self.driver.inventory()

    @endpoint
    def check_destination(self, ctxt, guest, source_info, probe):
        return self.driver.check_destination(_guest(guest), source_info, probe)

    @endpoint
    def remove_probe(self, ctxt, probe):
        return self.driver.remove_probe(probe)

    @endpoint
    def check_source(self, ctxt, uuid, probe):
        return self.driver.check_source(uuid, probe)

    @endpoint
    def create_local_disks(self, ctxt, guest):
        return self.driver.create_local_disks(_guest(guest))

    @endpoint
    def delete_local_disks(self, ctxt, guest):
        return self.driver.delete_local_disks(_guest(guest))

    @endpoint
    def connect_volumes(self, ctxt, guest):
        return self.driver.connect_volumes(_guest(guest))

    @endpoint
    def disconnect_volumes(self, ctxt, guest):
        return self.driver.disconnect_volumes(_guest(guest))

    @endpoint
    def plug_networking(self, ctxt, guest):
        return self.driver.plug_networking(_guest(guest))

    @endpoint
    def unplug_networking(self, ctxt, guest):
        return self.driver.unplug_networking(_guest(guest))

    @endpoint
    def start_migration(self, ctxt, guest, destination, subtype, params):
        return self.driver.start_migration(_guest(guest), destination,
                                           _subtype(subtype), params or {})

    @endpoint
    def get_migration_job(self, ctxt, uuid, wait_s=0.0):
        if isinstance(wait_s, bool) or not isinstance(wait_s, (int, float)) or \
                not 0 <= wait_s <= self.MAX_WAIT_S:
            raise exception.InvalidArgument(
                name='wait_s', value=wait_s,
                reason='expected seconds from 0 to %s' % self.MAX_WAIT_S)
        if wait_s:
            self.driver.wait_migration_job(uuid, wait_s)
        return self.driver.get_migration_job(uuid)

    @endpoint
    def abort_migration(self, ctxt, uuid):
        return self.driver.abort_migration(uuid)

    @endpoint
    def set_max_downtime(self, ctxt, uuid, downtime_ms):
        return self.driver.set_max_downtime(uuid, downtime_ms)

    @endpoint
    def start_post_copy(self, ctxt, uuid):
        return self.driver.start_post_copy(uuid)

    @endpoint
    def pause_guest(self, ctxt, uuid):
        return self.driver.pause_guest(uuid)

    @endpoint
    def post_migration_source(self, ctxt, guest, subtype):
        return self.driver.post_migration_source(_guest(guest), _subtype(subtype))

    # Evacuation, on the destination. ------------------------------------------------
    @endpoint
    def check_rebuild(self, ctxt, guest, source_info):
        return self.driver.check_rebuild(_guest(guest), source_info)

    @endpoint
    def rebuild_disks(self, ctxt, guest):
        return self.driver.rebuild_disks(_guest(guest))

    @endpoint
    def define_guest(self, ctxt, guest):
        return self.driver.define_guest(_guest(guest))

    @endpoint
    def undefine_guest(self, ctxt, uuid):
        return self.driver.undefine_guest(uuid)

    @endpoint
    def start_guest(self, ctxt, guest):
        return self.driver.start_guest(_guest(guest))

    @endpoint
    def stop_guest(self, ctxt, uuid):
        return self.driver.stop_guest(uuid)

    @endpoint
    def post_migration_destination(self, ctxt, guest, subtype):
        guest = _guest(guest)
        _subtype(subtype)  # on the wire since 1.0; the destination needs none
        return self.driver.post_migration_destination(guest)
