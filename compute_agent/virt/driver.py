"""The contract between a compute agent and its hypervisor.

Every method takes and returns JSON types only. A method that changes the host is
idempotent: the conductor may call it again after a crash or a lost reply.

Guest records (``list_guests``/``get_guest``) carry: uuid, name, vcpus, memory_mb,
disk_gb (local disks only), storage ('local' or 'volume'), disks [{name, size_gb,
format}], volumes [ids], sla_class, power_state, and image (the base image its
local disks were made from, kept in its metadata; None when unknown).
"""

import abc
import contextlib
import os

from ferryman.common import exception

# The destination's probe file, in its instance directory: a source that sees it
# shares that directory.
PROBE_PREFIX = '.ferryman-probe-'


class ComputeDriver(abc.ABC):
    """Drivers set ``instances_path``, where guests' directories (and probes) are."""

    instances_path = None

    def __init__(self, conf, host):
        self.conf = conf
        self.host = host

    def init_host(self):
        """Called once when the agent starts."""

    def cleanup_host(self):
        """Called once when the agent stops."""

    @abc.abstractmethod
    def get_host_info(self):
        """Capacity and identity: hypervisor_type, cpu_model, cpu_features, vcpus,
        memory_mb, disk_gb, instances_path, and features: what the operator lets
        migrations use (post_copy, auto_converge) and the link's bandwidth_mibps
        (0 when unknown)."""

    @abc.abstractmethod
    def list_guests(self):
        """Guests running (or paused) on this host, not incoming ones."""

    @abc.abstractmethod
    def get_guest(self, uuid):
        """One guest of this host; raises InstanceNotFound."""

    @abc.abstractmethod
    def inventory(self):
        """Everything guests leave on this host, for the audit: guests (uuid ->
        power state, incoming ones too), instance_dirs (uuids), volume_connections
        (volume id -> guest uuid or None), ports (uuids)."""

    # Checks. ---------------------------------------------------------------
    @abc.abstractmethod
    def check_destination(self, guest, source_info, probe):
        """Refuse (IncompatibleHost, InsufficientCapacity) a guest this host cannot
        take, then leave the named probe file in the instance directory."""

    def probe_path(self, probe):
        """Where the probe file of that token is; refuses any token but the
        conductor's (it becomes a file name)."""
        if not isinstance(probe, str) or not probe.isalnum() or len(probe) > 64:
            raise exception.InvalidArgument(name='probe', value=probe,
                                            reason='expected an alphanumeric token')
        return os.path.join(self.instances_path, PROBE_PREFIX + probe)

    def leave_probe(self, probe):
        with open(self.probe_path(probe), 'w') as f:
            f.write(self.host)

    def remove_probe(self, probe):
        """Delete the probe file if present."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.probe_path(probe))

    def sees_probe(self, probe):
        """Whether the destination's probe is visible here: a shared directory."""
        return os.path.exists(self.probe_path(probe))

    @abc.abstractmethod
    def check_source(self, uuid, probe):
        """Storage facts of a running guest: shared_instance_path (the destination's
        probe is visible here), volume_backed, local_disks."""

    # Destination preparation and its undo. ---------------------------------
    @abc.abstractmethod
    def create_local_disks(self, guest):
        """Instance directory and empty disks of the guest's format and size."""

    @abc.abstractmethod
    def delete_local_disks(self, guest):
        """Undo create_local_disks; refuses while the guest runs here."""

    @abc.abstractmethod
    def connect_volumes(self, guest):
        """Instance directory and a connection to each of the guest's volumes."""

    @abc.abstractmethod
    def disconnect_volumes(self, guest):
        """Undo connect_volumes; refuses while the guest runs here."""

    @abc.abstractmethod
    def plug_networking(self, guest):
        """Prepare the guest's ports on this host (inactive until post)."""

    @abc.abstractmethod
    def unplug_networking(self, guest):
        """Undo plug_networking; refuses while the guest runs here."""

    # The migration job, on the source. -------------------------------------
    @abc.abstractmethod
    def start_migration(self, guest, destination, subtype, params):
        """Start the hypervisor's migration job in the background."""

    @abc.abstractmethod
    def get_migration_job(self, uuid):
        """status (``vocabulary.JOB_STATUSES``), elapsed_s,
        copying_disks (a block job still copies local disks, memory not yet),
        iteration, memory_total_mb, memory_remaining_mb, data_total_mb,
        data_processed_mb, dirty_rate_mibps, bandwidth_mibps, downtime_ms, error."""

    @abc.abstractmethod
    def wait_migration_job(self, uuid, timeout):
        """Return once the job has ended (or has none), or after ``timeout``
        seconds: the conductor learns of a switch-over the moment it happens."""

    @abc.abstractmethod
    def abort_migration(self, uuid):
        """Abort a running job; the guest keeps running here. Returns the job."""

    # Steering a running job (the conductor's policy decides when). ------------
    @abc.abstractmethod
    def set_max_downtime(self, uuid, downtime_ms):
        """Allow a longer (or shorter) pause at switch-over."""

    @abc.abstractmethod
    def start_post_copy(self, uuid):
        """Run the guest on the destination now; the rest of its memory follows.
        Only for jobs started with post_copy in their params."""

    @abc.abstractmethod
    def pause_guest(self, uuid):
        """Pause the guest so that its memory stops changing and the copy ends."""

    # After switch-over. ----------------------------------------------------
    @abc.abstractmethod
    def post_migration_source(self, guest, subtype):
        """Remove what the guest left on the source (never shared files)."""

    @abc.abstractmethod
    def post_migration_destination(self, guest):
        """Take ownership of the guest and activate its networking."""

    # Evacuation: the guest of a dead host rebuilt here. --------------------------
    # Not abstract: a driver without them refuses evacuations, naming the step.
    def _unsupported(self, step):
        raise exception.AgentStepFailed(
            step=step, host=self.host,
            reason='the %s driver cannot evacuate guests' % type(self).__name__)

    def check_rebuild(self, guest, source_info):
        """Refuse (IncompatibleHost, InsufficientCapacity) a guest this host
        cannot take; {shared_instance_path: whether every disk of the guest is
        in its instance directory here (the dead host's files, shared)}."""
        self._unsupported('check_rebuild')

    def rebuild_disks(self, guest):
        """Instance directory and the guest's disks made afresh from its base
        image (``guest['image']``); refuses an image it cannot find."""
        self._unsupported('rebuild_disks')

    def define_guest(self, guest):
        """Define the guest (not started) on its files or connected volumes."""
        self._unsupported('define_guest')

    def undefine_guest(self, uuid):
        """Undo define_guest: undefine (destroying it if it runs); never
        touches its files or volumes."""
        self._unsupported('undefine_guest')

    def start_guest(self, guest):
        """Start the defined guest (a new boot) and activate its ports."""
        self._unsupported('start_guest')

    def stop_guest(self, uuid):
        """Undo start_guest: power the guest off, still defined."""
        self._unsupported('stop_guest')

    def fence_guest(self, evacuated):
        """On a host back from the dead: destroy and undefine a guest evacuated
        away from it ({uuid, storage, volumes}), disconnect its volumes (their
        data untouched) and drop its ports; its local disks go only when they
        were rebuilt elsewhere (storage 'rebuild'), shared files never."""
        self._unsupported('fence_guest')
