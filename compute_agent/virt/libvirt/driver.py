"""The libvirt driver: real QEMU guests, live-migrated by libvirt peer to peer.

Ferryman's own facts about a guest (instance uuid, name, SLA class, storage kind,
volumes) live in the domain's <metadata> under Ferryman's namespace; domains without
it are not Ferryman's and are left alone. Host names and ids that reach a libvirt
URI, a path or XML are validated first, never interpolated as given.
"""

import os
import re
import shutil
import subprocess
import threading
import time
import xml.etree.ElementTree as ET

from oslo_log import log as logging

from compute_agent import pci
from compute_agent.virt import driver
from compute_agent.virt.libvirt import volumes as volume_connectors
from ferryman.common import exception
from ferryman.common import schemas
from ferryman.common import vocabulary as vocab

LOG = logging.getLogger(__name__)

libvirt = None  # imported at first use: the package is optional

NS = 'https://ferryman.dev/xmlns/instance/1.0'
_HOST_RE = re.compile(r'^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$')
_UUID_RE = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-'
                      r'[0-9a-f]{12}$')
_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$')
_OWNER_RE = re.compile(schemas.OWNER['pattern'])
MIB = 1024 * 1024
# The first QEMU whose dirty-page sync keeps TCG's TLB coherent (see
# [libvirt] tcg_memory_copy): older ones lose a TCG guest's writes in a live copy.
TCG_LIVE_COPY_FIXED = 9000000


def _import_libvirt():
    global libvirt
    if libvirt is None:
        import libvirt as _libvirt
        libvirt = _libvirt
        # Without an event loop a connection notices that its daemon went away
        # only when a call fails on it; with one, at once (and keepalives run).
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_events, name='libvirt-events',
                         daemon=True).start()
    return libvirt


def _run_events():
    while True:
        libvirt.virEventRunDefaultImpl()


def close_connection(conn):
    """Close a libvirt connection if there is one; one whose daemon has gone
    cannot close cleanly, and needs nothing more."""
    if conn is None:
        return
    import libvirt as libvirt_module  # without the event loop _import_libvirt starts
    try:
        conn.close()
    except libvirt_module.libvirtError:
        pass


def validate_host(name):
    if not isinstance(name, str) or not _HOST_RE.match(name):
        raise exception.InvalidArgument(
            name='host', value=name,
            reason='a host name has only letters, digits, dots and dashes')
    return name


def validate_uuid(value):
    if not isinstance(value, str) or not _UUID_RE.match(value):
        raise exception.InvalidArgument(name='uuid', value=value,
                                        reason='expected a lowercase UUID')
    return value


def validate_name(what, value):
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise exception.InvalidArgument(
            name=what, value=value,
            reason='expected letters, digits, dot, dash or underscore')
    return value


def _owner(text):
    """An owner id from a domain's metadata; None when it names none, or
    one no report could carry (logged: the guest is still reported)."""
    value = (text or '').strip()
    if value and not _OWNER_RE.match(value):
        LOG.warning('Ignoring owner id %r in a domain\'s metadata: %s', value[:80],
                    schemas.OWNER['description'])
        return None
    return value or None


def metadata_xml(uuid, name, storage='local', sla_class='pet', volumes=(),
                 project_id=None, user_id=None):
    """The <instance> element a Ferryman guest carries in its domain metadata
    (with its owner's <project_id> and <user_id> when known)."""
    root = ET.Element('instance', {'xmlns': NS})
    for tag, value in (('uuid', validate_uuid(uuid)), ('name', name),
                       ('storage', storage), ('sla_class', sla_class)):
        ET.SubElement(root, tag).text = value
    for tag, value in (('project_id', project_id), ('user_id', user_id)):
        if value is not None:
            ET.SubElement(root, tag).text = validate_name(tag, value)
    vols = ET.SubElement(root, 'volumes')
    for vol in volumes:
        ET.SubElement(vols, 'volume', {'id': validate_name('volume', vol)})
    return ET.tostring(root, encoding='unicode')


def numa_cells(capabilities_xml):
    """NUMA cells from libvirt's capabilities: [{id, vcpus, memory_mb}]."""
    cells = []
    for cell in ET.fromstring(capabilities_xml).findall('./host/topology/cells/cell'):
        memory = cell.find('memory')
        kib = int(memory.text) if memory is not None and memory.text else 0
        if memory is not None and memory.get('unit', 'KiB') != 'KiB':
            kib = 0  # libvirt reports KiB; anything else is not understood
        cpus = cell.find('cpus')
        vcpus = int(cpus.get('num', 0)) if cpus is not None else 0
        cells.append({'id': int(cell.get('id')), 'vcpus': vcpus,
                      'memory_mb': kib // 1024})
    return cells


# libvirt's memory units (its "scaled integer"), in bytes.
_MEMORY_UNITS = dict(
    [(u, 1) for u in ('b', 'bytes')] +
    [(u, 1000 ** i) for i, u in enumerate(('KB', 'MB', 'GB', 'TB'), 1)] +
    [(u, 1024 ** i) for i, us in enumerate((('k', 'KiB'), ('M', 'MiB'),
                                            ('G', 'GiB'), ('T', 'TiB')), 1)
     for u in us])


def _cpu_set(spec):
    """The CPUs of a libvirt cpuset ("0-3,^2,5")."""
    cpus = set()
    for part in (p.strip() for p in spec.split(',') if p.strip()):
        exclude = part.startswith('^')
        first, _, last = part.lstrip('^').partition('-')
        ids = set(range(int(first), int(last or first) + 1))
        cpus = cpus - ids if exclude else cpus | ids
    return cpus


def guest_numa_topology(domain):
    """The guest's NUMA cells from its domain XML (``<cpu><numa><cell>``):
    [{vcpus, memory_mb}], what its flavor asked for, as the conductor counts it
    on the host's cells; [] for a guest without a NUMA topology."""
    cells = []
    for cell in domain.findall('./cpu/numa/cell'):
        unit = cell.get('unit', 'KiB')
        if unit not in _MEMORY_UNITS:
            # libvirt writes KiB; a report must not fail over one guest.
            LOG.warning('NUMA cell memory unit %r not understood: the guest is '
                        'counted on the host, not on its cells', unit)
            return []
        memory = int(cell.get('memory')) * _MEMORY_UNITS[unit]
        cells.append({'vcpus': len(_cpu_set(cell.get('cpus', ''))),
                      'memory_mb': memory // 1024 ** 2})
    return cells


def validate_path(what, value):
    if not isinstance(value, str) or not os.path.isabs(value) or \
            os.path.normpath(value) != value or any(c in value for c in '\0\n'):
        raise exception.InvalidArgument(name=what, value=value,
                                        reason='expected a normalised absolute path')
    return value


class _Call(object):
    """One blocking libvirt call on a thread of its own, waited for with a
    timeout (libvirt-python releases the GIL while it waits)."""

    def __init__(self, fn):
        self.started = time.monotonic()
        self._done = threading.Event()
        self._result = self._error = None
        self._fn = fn
        threading.Thread(target=self._run, daemon=True,
                         name='libvirt-call').start()

    def _run(self):
        try:
            self._result = self._fn()
        except Exception as exc:
            self._error = exc
        self._done.set()

    def done(self):
        return self._done.is_set()

    def wait(self, timeout):
        return self._done.wait(timeout)

    def result(self):
        if self._error is not None:
            raise self._error
        return self._result


class _Job(object):
    def __init__(self, uuid, thread):
        self.uuid = uuid
        self.thread = thread
        self.status = vocab.JOB_RUNNING
        self.error = None
        self.started = time.monotonic()
        self.last = {}
        self.aborted = False
        self.post_copy = False
        self.paused = False
        self.paused_copy = None  # why the guest is paused for the whole copy
        self.stats_call = None  # a jobStats() call still waiting on libvirt


class LibvirtDriver(driver.ComputeDriver):

    def __init__(self, conf, host):
        super().__init__(conf, host)
        _import_libvirt()
        self._conn = None
        self._conn_lock = threading.Lock()
        self._jobs = {}
        # Reentrant: get_migration_job adopts a job under it, and adopting asks
        # _incoming, which takes it too.
        self._jobs_lock = threading.RLock()
        self._cpu = None
        self._capacities = {}  # (domain uuid, disk path): bytes
        lv = conf.libvirt
        self.instances_path = lv.instances_path
        self.volumes = volume_connectors.FileVolumeConnector(
            lv.volume_dir, lv.connections_dir)
        # Checked here: an agent with a bad spec must not start at all.
        self.pci_specs = pci.parse_specs(conf.pci.device_spec)

    # Connection, re-opened after libvirtd restarts. ----------------------------------
    @property
    def conn(self):
        with self._conn_lock:
            if self._conn is not None:
                try:
                    # Current because libvirt's event loop runs: it sees the
                    # socket close when the daemon restarts.
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                LOG.warning('libvirt connection to %s lost; reconnecting',
                            self.conf.libvirt.connection_uri)
            self._conn = libvirt.open(self.conf.libvirt.connection_uri)
            return self._conn

    def init_host(self):
        os.makedirs(self.instances_path, exist_ok=True)
        self.volumes.init_host()
        self.conn  # noqa: B018 (fail at start if the hypervisor is not there)

    def cleanup_host(self):
        with self._conn_lock:
            close_connection(self._conn)
            self._conn = None

    # Host and guests. -------------------------------------------------------------
    def _host_cpu(self):
        # The host's CPU does not change while the agent runs; libvirt builds the
        # capabilities document anew on every call.
        if self._cpu is None:
            caps = ET.fromstring(self.conn.getCapabilities())
            cpu = caps.find('./host/cpu')
            model = cpu.findtext('model') or 'unknown'
            features = sorted(f.get('name') for f in cpu.findall('feature'))
            self._cpu = model, features, ET.tostring(cpu, encoding='unicode')
        return self._cpu

    def get_host_info(self):
        info = self.conn.getInfo()
        model, features, _xml = self._host_cpu()
        disk = os.statvfs(self.instances_path)
        return {'hypervisor_type': self.conn.getType(), 'cpu_model': model,
                'cpu_features': features, 'vcpus': info[2], 'memory_mb': info[1],
                'disk_gb': disk.f_blocks * disk.f_frsize // (1024 ** 3),
                'instances_path': self.instances_path,
                'features': {'bandwidth_mibps':
                             self.conf.libvirt.live_migration_bandwidth},
                # Nested providers: NUMA cells, and the PCI devices offered.
                'numa_cells': self._numa_cells(), 'pci_devices': self._pci_devices()}

    def _pci_devices(self):
        if not self.pci_specs:
            return []
        # Listed on every report: devices come and go (hot plug, SR-IOV VFs).
        found = []
        for dev in self.conn.listAllDevices(
                libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV):
            parsed = pci.parse_nodedev(dev.XMLDesc(0))
            if parsed is not None:
                found.append(parsed)
        return pci.offered(found, self.pci_specs)

    def _numa_cells(self):
        if getattr(self, '_cells', None) is None:
            self._cells = numa_cells(self.conn.getCapabilities())
        return self._cells

    def _meta(self, dom):
        try:
            raw = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS)
        except libvirt.libvirtError:
            return None  # not a Ferryman guest
        root = ET.fromstring(raw)
        return {'uuid': root.findtext('uuid'), 'name': root.findtext('name'),
                'storage': root.findtext('storage') or 'local',
                'sla_class': root.findtext('sla_class') or 'pet',
                'project_id': _owner(root.findtext('project_id')),
                'user_id': _owner(root.findtext('user_id')),
                'volumes': [v.get('id') for v in root.findall('volumes/volume')]}

    _POWER = {1: 'running', 2: 'blocked', 3: 'paused', 4: 'shutdown', 5: 'shutoff',
              6: 'crashed', 7: 'suspended'}

    def _incoming(self, dom):
        state, reason = dom.state()
        # An incoming guest is paused from its QEMU's start until the switch-over;
        # libvirt holds its state lock meanwhile, so nothing else may be asked.
        # It is also transient until libvirt's finish phase defines it
        # (PERSIST_DEST), unlike a guest this host copies away paused.
        return (state == libvirt.VIR_DOMAIN_PAUSED and
                reason in (libvirt.VIR_DOMAIN_PAUSED_MIGRATION,
                           libvirt.VIR_DOMAIN_PAUSED_STARTING_UP,
                           getattr(libvirt, 'VIR_DOMAIN_PAUSED_POSTCOPY', -1)) and
                not self._has_job(dom) and not dom.isPersistent())

    def _has_job(self, dom):
        with self._jobs_lock:
            job = self._jobs.get(dom.UUIDString())
        return job is not None and job.status == vocab.JOB_RUNNING

    def _guest(self, dom):
        meta = self._meta(dom)
        if meta is None:
            return None
        state, _mem_max, _mem, vcpus, _cpu_time = dom.info()
        root = ET.fromstring(dom.XMLDesc(0))
        memory_mb = int(root.findtext('memory')) // 1024  # KiB in the XML
        disks = []
        for disk in root.findall("./devices/disk[@device='disk']"):
            source = disk.find('source')
            path = source is not None and (source.get('file') or source.get('dev'))
            if (not path or not path.startswith(self.instances_path + os.sep) or
                    path.startswith(self.volumes.connections_dir + os.sep)):
                continue  # volumes and foreign disks are not local disks
            capacity = self._capacity(dom, path)
            disks.append({'name': os.path.basename(path).split('.', 1)[-1],
                          'target': disk.find('target').get('dev'),
                          'format': disk.find('driver').get('type', 'raw'),
                          'size_bytes': capacity,
                          'size_gb': -(-capacity // 1024 ** 3)})
        power = self._POWER.get(state, 'unknown')
        numa = guest_numa_topology(root)
        if numa:
            meta = dict(meta, numa_topology=numa)
        return dict(meta, vcpus=vcpus, memory_mb=memory_mb, disks=disks,
                    disk_gb=sum(d['size_gb'] for d in disks),
                    power_state=power, dirty_rate_mibps=0.0)

    def _capacity(self, dom, path):
        """A disk's size. Asked of libvirt only while no migration job of ours
        runs: blockInfo is a query job, and queries of QEMU's block layer, that
        would compete with the job's own figures for libvirt's one query slot
        at every report. A disk is not resized while it migrates."""
        key = (dom.UUIDString(), path)
        # No _jobs_lock: start_migration lists a block migration's disks under it.
        job = self._jobs.get(key[0])
        if key in self._capacities and job is not None and job.status == vocab.JOB_RUNNING:
            return self._capacities[key]
        capacity = self._capacities[key] = dom.blockInfo(path)[0]
        return capacity

    def list_guests(self):
        guests = []
        for dom in self.conn.listAllDomains():
            try:
                if self._incoming(dom):
                    continue
                guest = self._guest(dom)
            except libvirt.libvirtError as exc:
                # Gone while listed (a migration just finished): not here.
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
                continue
            if guest is not None:
                guests.append(guest)
        return guests

    def inventory(self):
        guests, owners = {}, {}
        for dom in self.conn.listAllDomains():
            meta = self._meta(dom)
            if meta is None:
                continue
            guests[meta['uuid']] = ('incoming' if self._incoming(dom) else
                                    self._POWER.get(dom.state()[0], 'unknown'))
            owners.update({v: meta['uuid'] for v in meta['volumes']})
        dirs = sorted(n for n in os.listdir(self.instances_path)
                      if _UUID_RE.match(n))
        return {'guests': guests, 'instance_dirs': dirs,
                'volume_connections': {v: owners.get(v)
                                       for v in self.volumes.connections()},
                'ports': []}

    def _domain(self, uuid):
        try:
            return self.conn.lookupByUUIDString(validate_uuid(uuid))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def get_guest(self, uuid):
        dom = self._domain(uuid)
        if dom is None or self._incoming(dom):
            raise exception.InstanceNotFound(instance=uuid)
        return self._guest(dom)

    def _runs_here(self, uuid):
        dom = self._domain(uuid)
        return dom is not None and not self._incoming(dom)

    # Checks. ----------------------------------------------------------------------
    def check_destination(self, guest, source_info, probe):
        uuid = validate_uuid(guest['uuid'])
        if self.conn.getType() != source_info['hypervisor_type']:
            raise exception.IncompatibleHost(
                host=self.host, instance=uuid, reason='hypervisor %s, source has %s'
                % (self.conn.getType(), source_info['hypervisor_type']))
        cpu = ET.Element('cpu')
        ET.SubElement(cpu, 'arch').text = 'x86_64'
        ET.SubElement(cpu, 'model').text = source_info['cpu_model']
        for feature in source_info['cpu_features']:
            ET.SubElement(cpu, 'feature', {'policy': 'require', 'name': feature})
        result = self.conn.compareCPU(ET.tostring(cpu, encoding='unicode'), 0)
        if result == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
            raise exception.IncompatibleHost(
                host=self.host, instance=uuid,
                reason='CPU cannot run the source\'s %s' % source_info['cpu_model'])
        free_mb = self.conn.getFreeMemory() // MIB
        if guest['memory_mb'] > free_mb:
            raise exception.InsufficientCapacity(
                host=self.host, instance=uuid, resource='memory_mb',
                requested=guest['memory_mb'], free=free_mb)
        self.leave_probe(probe)
        return {'instances_path': self.instances_path}

    def check_source(self, uuid, probe):
        guest = self.get_guest(uuid)
        if guest['power_state'] != 'running':
            raise exception.InstanceNotRunning(instance=uuid,
                                               power_state=guest['power_state'])
        return {'shared_instance_path': self.sees_probe(probe),
                'volume_backed': guest['storage'] == 'volume',
                'local_disks': [d['name'] for d in guest['disks']],
                'cpu_features': self._host_cpu()[1]}

    # Destination preparation. ---------------------------------------------------------
    def _instance_dir(self, uuid):
        return os.path.join(self.instances_path, validate_uuid(uuid))

    def _refuse_if_running_here(self, uuid, step):
        if self._runs_here(uuid):
            raise exception.AgentStepFailed(
                step=step, host=self.host,
                reason='guest %s runs on this host; refusing to remove its '
                       'resources' % uuid)

    def create_local_disks(self, guest):
        instance_dir = self._instance_dir(guest['uuid'])
        os.makedirs(instance_dir, exist_ok=True)
        for disk in guest['disks']:
            name = validate_name('disk', disk['name'])
            path = os.path.join(instance_dir, 'disk.' + name)
            if os.path.exists(path):
                continue  # made by an earlier try of this step
            size = disk.get('size_bytes') or disk['size_gb'] * 1024 ** 3
            fmt = disk.get('format', 'qcow2')
            if fmt not in ('qcow2', 'raw'):
                raise exception.InvalidArgument(name='disk format', value=fmt,
                                                reason='expected qcow2 or raw')
            subprocess.run(['qemu-img', 'create', '-q', '-f', fmt, path, str(size)],
                           check=True, capture_output=True, timeout=60)

    def delete_local_disks(self, guest):
        self._refuse_if_running_here(guest['uuid'], 'delete_local_disks')
        shutil.rmtree(self._instance_dir(guest['uuid']), ignore_errors=True)

    def connect_volumes(self, guest):
        os.makedirs(self._instance_dir(guest['uuid']), exist_ok=True)
        for vol in guest['volumes']:
            self.volumes.connect(validate_name('volume', vol), guest['uuid'])

    def disconnect_volumes(self, guest):
        self._refuse_if_running_here(guest['uuid'], 'disconnect_volumes')
        self._disconnect(guest)

    def _disconnect(self, guest):
        for vol in guest['volumes']:
            self.volumes.disconnect(validate_name('volume', vol), guest['uuid'])
        shutil.rmtree(self._instance_dir(guest['uuid']), ignore_errors=True)

    def plug_networking(self, guest):
        # The test hosts' guests have no NICs; a real deployment binds ports here
        # (and checks that each bridge the guest uses exists on this host).
        pass

    def unplug_networking(self, guest):
        # Nothing to unbind on the test hosts; the refusal holds all the same, as
        # the driver contract says, for when ports are bound here.
        self._refuse_if_running_here(guest['uuid'], 'unplug_networking')

    # The migration job. ------------------------------------------------------------
    def start_migration(self, guest, destination, subtype, params):
        uuid = validate_uuid(guest['uuid'])
        validate_host(destination)
        with self._jobs_lock:
            job = self._jobs.get(uuid)
            if job is not None and job.status == vocab.JOB_RUNNING:
                return self._job_stats(job)
            dom = self._domain(uuid)
            if dom is None:
                raise exception.InstanceNotFound(instance=uuid)
            lv = self.conf.libvirt
            paused_copy = self._paused_copy_reason(dom)
            flags = (libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST |
                     libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
            if not paused_copy:
                # Without LIVE libvirt pauses the guest before copying its memory.
                flags |= libvirt.VIR_MIGRATE_LIVE
            inbound = lv.live_migration_inbound_uri
            mparams = {libvirt.VIR_MIGRATE_PARAM_URI:
                       inbound % destination if '%s' in inbound else inbound}
            if subtype == vocab.BLOCK:
                flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
                mparams[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = [
                    d['target'] for d in self.get_guest(uuid)['disks']]
            bandwidth = params.get('bandwidth_mibps') or lv.live_migration_bandwidth
            if bandwidth:
                mparams[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(bandwidth)
            # Both need a guest that runs while its memory is copied.
            if params.get('post_copy') and not paused_copy:
                flags |= libvirt.VIR_MIGRATE_POSTCOPY
            if params.get('auto_converge') and not paused_copy:
                flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
            if params.get('compressed'):
                flags |= libvirt.VIR_MIGRATE_COMPRESSED
            if lv.live_migration_with_tls:
                flags |= libvirt.VIR_MIGRATE_TLS
            if lv.trust_shared_storage and subtype in (vocab.FILE_LEVEL, vocab.BLOCK_STORAGE):
                # The conductor's probe proved the storage shared; libvirt only
                # guesses from the file system type.
                flags |= libvirt.VIR_MIGRATE_UNSAFE
            dest_path = params.get('destination_instances_path')
            if dest_path and dest_path != self.instances_path:
                mparams[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = self._dest_xml(
                    dom, uuid, validate_path('destination_instances_path',
                                             dest_path))
            dest_uri = lv.live_migration_uri % destination
            thread = threading.Thread(target=self._migrate, name='migrate-%s' % uuid,
                                      args=(uuid, dom, dest_uri, mparams, flags),
                                      daemon=True)
            job = self._jobs[uuid] = _Job(uuid, thread)
            if paused_copy:
                LOG.warning('Migration of %s copies its memory with the guest '
                            'paused: %s', uuid, paused_copy)
                job.paused, job.paused_copy = True, paused_copy
            thread.start()
        if params.get('max_downtime_ms') and not paused_copy:
            # Not a migrate parameter: set on the job once libvirt has it. The job
            # runs whatever happens here, so a failure is only logged.
            try:
                self._retry_while_starting(lambda: dom.migrateSetMaxDowntime(
                    int(params['max_downtime_ms']), 0))
            except libvirt.libvirtError as exc:
                LOG.warning('Cannot set the downtime of %s: %s', uuid,
                            exc.get_error_message())
        return self._job_stats(job)

    def _paused_copy_reason(self, dom):
        """Why this guest's memory must be copied with the guest paused, or None
        when a live copy is sound."""
        mode = self.conf.libvirt.tcg_memory_copy
        if mode == 'live' or ET.fromstring(dom.XMLDesc(0)).get('type') != 'qemu':
            return None  # KVM logs dirty pages in the kernel, not in TCG's TLB
        if mode == 'paused':
            return 'a TCG guest, and [libvirt] tcg_memory_copy is paused'
        version = self.conn.getVersion()
        if version >= TCG_LIVE_COPY_FIXED:
            return None
        return ('a TCG guest on QEMU %d.%d.%d, whose live copy loses writes the '
                'guest makes meanwhile (fixed in QEMU 9.0)' % (
                    version // 1000000, version // 1000 % 1000, version % 1000))

    def _dest_xml(self, dom, uuid, dest_path):
        """The domain as the destination must define it: every file of the
        instance directory (disks, console log) at the destination's path."""
        root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE))
        here = self._instance_dir(uuid) + os.sep
        there = os.path.join(dest_path, uuid) + os.sep
        for elem in root.iter():
            for attr in ('file', 'path'):
                value = elem.get(attr)
                if value and value.startswith(here):
                    elem.set(attr, there + value[len(here):])
        return ET.tostring(root, encoding='unicode')

    @staticmethod
    def _retry_while_starting(fn):
        # Job controls fail until libvirt has registered the job.
        for _ in range(50):
            try:
                return fn()
            except libvirt.libvirtError:
                time.sleep(0.1)
        return fn()

    def _migrate(self, uuid, dom, dest_uri, params, flags):
        job = self._jobs[uuid]
        try:
            dom.migrateToURI3(dest_uri, params, flags)
            job.status = vocab.JOB_COMPLETED
        except libvirt.libvirtError as exc:
            job.status = vocab.JOB_CANCELLED if job.aborted else vocab.JOB_FAILED
            job.error = exc.get_error_message()
            LOG.warning('Migration of %s ended: %s', uuid, job.error)
        except Exception as exc:  # the job thread must always record an end
            job.status = vocab.JOB_FAILED
            job.error = str(exc)
            LOG.exception('Migration of %s failed', uuid)
        job.last['elapsed_s'] = time.monotonic() - job.started

    def _fetch_job_stats(self, job):
        """libvirt's figures of a running job, or None when libvirt does not
        answer within job_stats_timeout (it answers only between QEMU monitor
        commands). At most one such call is in flight per job."""
        call = job.stats_call
        if call is None or call.done():
            dom = self._domain(job.uuid)
            if dom is None:
                return {}
            call = job.stats_call = _Call(dom.jobStats)
        if not call.wait(self.conf.libvirt.job_stats_timeout):
            LOG.warning('libvirt has not answered the job figures of %s for '
                        '%.1f s; answering with the last ones', job.uuid,
                        time.monotonic() - call.started)
            return None
        job.stats_call = None
        try:
            return call.result()
        except libvirt.libvirtError:
            return {}

    def _job_stats(self, job):
        out = {'status': job.status, 'error': job.error,
               'elapsed_s': time.monotonic() - job.started,
               'post_copy': job.post_copy, 'paused': job.paused,
               'paused_copy': job.paused_copy}
        if job.status == vocab.JOB_RUNNING:
            stats = self._fetch_job_stats(job)
            out['stale'] = stats is None
            if stats:
                page = stats.get('memory_page_size', 4096)
                total = stats.get('data_total', 0)
                job.last = {
                    # Block: libvirt mirrors the disks before QEMU's memory
                    # migration starts, which reports no memory until then.
                    'copying_disks': bool(stats.get('disk_total')) and
                    not stats.get('memory_total'),
                    'elapsed_s': stats.get('time_elapsed', 0) / 1000.0,
                    'setup_s': stats.get('setup_time', 0) / 1000.0,
                    'iteration': stats.get('memory_iteration', 0),
                    'memory_total_mb': stats.get('memory_total', 0) / MIB,
                    'memory_remaining_mb': stats.get('memory_remaining', 0) / MIB,
                    'data_total_mb': total / MIB,
                    'data_processed_mb': stats.get('data_processed', 0) / MIB,
                    'dirty_rate_mibps': stats.get('memory_dirty_rate', 0) * page / MIB,
                    'bandwidth_mibps': stats.get('memory_bps', 0) / MIB,
                    'downtime_ms': stats.get('downtime'),
                }
        out.update({k: v for k, v in job.last.items() if k != 'elapsed_s'})
        out['elapsed_s'] = job.last.get('elapsed_s', out['elapsed_s'])
        if job.status == vocab.JOB_COMPLETED:
            out['memory_remaining_mb'] = 0.0
        return out

    def get_migration_job(self, uuid):
        with self._jobs_lock:
            job = self._jobs.get(validate_uuid(uuid))
            if job is None:
                job = self._adopt(uuid)
        if job is None:
            return {'status': vocab.JOB_NONE}
        return self._job_stats(job)

    def _adopt(self, uuid):
        """A migration libvirt runs that this agent did not start (the agent
        restarted meanwhile): watched to its end, so the conductor learns how it
        ended instead of rolling back a guest that may already have moved."""
        dom = self._domain(uuid)
        if dom is None or self._incoming(dom):
            return None
        try:
            if dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE:
                return None
            operation = dom.jobStats().get('operation')
        except libvirt.libvirtError:
            return None
        if operation != libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT:
            return None
        LOG.warning('Adopting the running migration job of %s', uuid)
        thread = threading.Thread(target=self._watch_adopted, args=(uuid,),
                                  name='adopted-%s' % uuid, daemon=True)
        job = self._jobs[uuid] = _Job(uuid, thread)
        thread.start()
        return job

    def _watch_adopted(self, uuid):
        job = self._jobs[uuid]
        while True:
            time.sleep(0.2)
            try:
                dom = self._domain(uuid)
                if dom is None:
                    job.status = vocab.JOB_COMPLETED  # undefined here once it moved
                    break
                if dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE:
                    # Ended and still here: a migration that failed or was aborted.
                    job.status = vocab.JOB_CANCELLED if job.aborted else vocab.JOB_FAILED
                    job.error = 'the migration job ended with the guest still here'
                    break
            except libvirt.libvirtError as exc:
                LOG.warning('Watching the adopted job of %s: %s', uuid,
                            exc.get_error_message())
        job.last['elapsed_s'] = time.monotonic() - job.started

    def wait_migration_job(self, uuid, timeout):
        with self._jobs_lock:
            job = self._jobs.get(validate_uuid(uuid))
        if job is not None:
            job.thread.join(timeout)

    def abort_migration(self, uuid):
        with self._jobs_lock:
            job = self._jobs.get(validate_uuid(uuid))
        if job is None:
            return {'status': vocab.JOB_NONE}
        if job.status == vocab.JOB_RUNNING:
            job.aborted = True
            dom = self._domain(uuid)
            try:
                if dom is not None:
                    self._retry_while_starting(dom.abortJob)
            except libvirt.libvirtError as exc:
                LOG.warning('Abort of %s: %s', uuid, exc.get_error_message())
            job.thread.join(self.conf.libvirt.migration_job_wait)
        return self._job_stats(job)

    def _steer(self, uuid, action):
        """Apply ``action(dom, job)`` to a running job. A job that ended in the
        meantime is no error: its stats say how it ended."""
        with self._jobs_lock:
            job = self._jobs.get(validate_uuid(uuid))
        if job is None:
            raise exception.MigrationJobFailed(instance=uuid,
                                               reason='no migration job')
        dom = self._domain(uuid)
        if job.status == vocab.JOB_RUNNING and dom is not None:
            try:
                action(dom, job)
            except libvirt.libvirtError as exc:
                # The job may have ended a moment before our job thread saw it:
                # a source domain no longer active has switched over or failed.
                if job.status == vocab.JOB_RUNNING and self._active(uuid):
                    raise
                LOG.info('Job of %s ended before it could be steered: %s', uuid,
                         exc.get_error_message())
        return self._job_stats(job)

    def set_max_downtime(self, uuid, downtime_ms):
        return self._steer(uuid, lambda dom, job: dom.migrateSetMaxDowntime(
            int(downtime_ms), 0))

    def _active(self, uuid):
        dom = self._domain(uuid)
        try:
            return dom is not None and bool(dom.isActive())
        except libvirt.libvirtError:
            return False

    def start_post_copy(self, uuid):
        def post_copy(dom, job):
            dom.migrateStartPostCopy(0)
            job.post_copy = True
        return self._steer(uuid, post_copy)

    def pause_guest(self, uuid):
        def pause(dom, job):
            dom.suspend()
            job.paused = True
        return self._steer(uuid, pause)

    # After switch-over. -----------------------------------------------------------
    def post_migration_source(self, guest, subtype):
        uuid = validate_uuid(guest['uuid'])
        if self._domain(uuid) is not None:
            raise exception.AgentStepFailed(step='post_migration_source',
                                            host=self.host,
                                            reason='guest %s still here' % uuid)
        if subtype == vocab.BLOCK:
            shutil.rmtree(self._instance_dir(uuid), ignore_errors=True)
        elif subtype == vocab.BLOCK_STORAGE:
            self._disconnect(guest)
        with self._jobs_lock:
            self._jobs.pop(uuid, None)
        self._capacities = {k: v for k, v in self._capacities.items()
                            if k[0] != uuid}

    def post_migration_destination(self, guest):
        uuid = validate_uuid(guest['uuid'])
        dom = self._domain(uuid)
        if dom is None or dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
            raise exception.AgentStepFailed(step='post_migration_destination',
                                            host=self.host,
                                            reason='guest %s does not run here' % uuid)
        result = self._guest(dom)
        try:
            done = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except libvirt.libvirtError:
            done = {}
        result['completed_job'] = {
            'total_time_s': done.get('time_elapsed', 0) / 1000.0,
            'downtime_ms': done.get('downtime'),
            'data_sent_mb': done.get('data_processed', 0) / MIB,
            'iterations': done.get('memory_iteration')} if done else {}
        return result
