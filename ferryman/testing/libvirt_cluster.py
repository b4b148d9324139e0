"""Ferryman over real libvirt hosts: the functional tests' and the benchmark's cloud.

Three :class:`~ferryman.testing.hosts.TestHosts` (host1..host3), a private RabbitMQ,
the conductor as a process in the ordinary namespace, and one compute agent with
the libvirt driver per host, started *inside* that host's namespace so that
``qemu:///system`` is the host's own libvirtd and ``INSTANCES_PATH`` its own
directory. Storage, as the subtypes need it:

* host1's instance directory is private, host2's and host3's is one shared
  directory (``SHARED_PATH/instances``). So host1 <-> others is ``block`` and
  host2 <-> host3 is ``file-level``.
* Volumes are ``SHARED_PATH/volumes/<id>.img``; a host's connection to one is a
  link ``<connections_dir>/<id>`` private to the host.

Two layouts give that. ``mounted`` (the default): every agent has
``instances_path = INSTANCES_PATH``, the same path everywhere as the driver's block
migration needs today, and host2's and host3's ``INSTANCES_PATH`` is the shared
directory mounted there; connections are in ``CONNECTIONS_PATH``, a private mount
of each host. ``paths``: host1 uses ``INSTANCES_PATH``, host2 and host3
``SHARED_PATH/instances``, connections in ``INSTANCES_PATH/.connections`` -- a
migration between host1 and the others then changes the instance directory's path,
which the source's agent writes into the domain the destination defines.

The shared directory is a bind mount, which libvirt does not recognise as shared
storage; the agents are told to trust Ferryman's probe instead
(``[libvirt] trust_shared_storage``), so guests on it have writable disks.

Every agent reads ``<base>/<host>/faults.json`` at each RPC step
(``[compute] fault_injection_file``): see :meth:`LibvirtCluster.inject_fault`.
Needs root, ``tools/install-libvirt`` and ``rabbitmq-server``.
"""

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid as uuidlib

import libvirt

from compute_agent.virt.libvirt.driver import metadata_xml
from ferryman.testing import guest_image
from ferryman.testing.cluster import Cluster
from ferryman.testing.hosts import INSTANCES_PATH, SHARED_PATH, TestHosts, domain_xml
from ferryman.testing.servers import RabbitMQServer, _tail
from flows import states

HOST_NAMES = ('host1', 'host2', 'host3')
SHARED_INSTANCES = SHARED_PATH + '/instances'
VOLUME_DIR = SHARED_PATH + '/volumes'
CONNECTIONS_PATH = '/var/lib/ferryman/connections'
SHARED_HOSTS = ('host2', 'host3')  # their instance directory is shared
LAYOUTS = ('mounted', 'paths')
# Log lines that never explain a failure: debug chatter, and what libvirtd says of a
# host without dnsmasq, D-Bus, DMI, cgroups or a resolvable hostname at every start.
LOG_NOISE = re.compile(
    r' DEBUG |alembic\.runtime| (dnsmasqCaps|virGDBus|networkStateInitialize|udevGet'
    r'|virCgroupDetect|virGetHostnameImpl)|dmidecode')
HEARTBEAT = re.compile(r'^%s (\d+)$' % guest_image.HEARTBEAT, re.M)
# What a guest kernel prints when it dies or finds its memory corrupted, and what
# the test guest's /init prints when it boots again.
CONSOLE_FAULTS = re.compile(
    r'Kernel panic|Oops|BUG:|general protection|stack-protector|invalid opcode|'
    r'soft lockup|segfault|' + re.escape(guest_image.BOOT))


def read(path):
    try:
        with open(path, errors='replace') as f:
            return f.read()
    except FileNotFoundError:
        return ''


def beats_in(path):
    """The heartbeat counters in a serial log, in order."""
    return [int(n) for n in HEARTBEAT.findall(read(path))]


def last_beat(text):
    """The last heartbeat counter on whole lines of a console (a line cut at the
    end counts nowhere), or 0."""
    beats = HEARTBEAT.findall(text[:text.rfind('\n') + 1])
    return int(beats[-1]) if beats else 0


def console_faults(text):
    """The fault markers in a stretch of guest console, in order, once each."""
    return list(dict.fromkeys(CONSOLE_FAULTS.findall(text)))


def check_guest_alive(log, last_beat, offset=0, beats=6, timeout=60):
    """After a move (or a rolled-back one): the guest's console from ``offset``
    goes on counting heartbeats from ``last_beat`` without a gap, for ``beats``
    more, with no kernel fault and no reboot. Returns None, or why not with the
    console (for an assertion's message)."""
    deadline = time.monotonic() + timeout
    while True:
        text = read(log)[offset:]
        seen = [int(n) for n in HEARTBEAT.findall(text)]
        faults = console_faults(text)
        if faults or len(seen) >= beats or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    problems = []
    if faults:
        problems.append('console shows %s' % ', '.join(faults))
    if len(seen) < beats:
        problems.append('%d heartbeats in %ss, not %d' % (len(seen), timeout, beats))
    if seen and not last_beat < seen[0] <= last_beat + 2:
        problems.append('heartbeat went from %d to %d' % (last_beat, seen[0]))
    if seen and seen != list(range(seen[0], seen[0] + len(seen))):
        problems.append('heartbeats out of order: %s' % seen[:20])
    if not problems:
        return None
    return '%s; console %s from offset %d:\n%s' % (
        '; '.join(problems), log, offset, text[-4000:])


class Guest(object):
    """A Ferryman guest booted by :meth:`LibvirtCluster.boot_guest`."""

    def __init__(self, uuid, name, host, storage, disk, instance_dir, volume=None,
                 marker=None, dirty_mib=0, memory_mib=256, readonly=False):
        self.uuid = uuid
        self.name = name
        self.host = host          # where it was booted
        self.storage = storage    # 'local' or 'volume'
        self.disk = disk          # the disk's source path inside a host
        self.instance_dir = instance_dir  # inside path on the host it was booted on
        self.volume = volume      # volume id of a volume-backed guest
        self.marker = marker      # in the disk's first sector (see boot_guest)
        self.readonly = readonly
        self.dirty_mib = dirty_mib
        self.memory_mib = memory_mib

    def __repr__(self):
        return '<Guest %s %s on %s>' % (self.name, self.uuid, self.host)


class LibvirtCluster(Cluster):
    """``with LibvirtCluster(base_dir) as c:`` -- hosts, broker, conductor, agents.

    ``agent_options``: ``{host: {section: {option: value}}}`` added to (or
    overriding) that agent's configuration, e.g. a bandwidth cap on one source.
    ``conductor_options`` likewise for the conductor. ``layout``: see the module.
    """

    def __init__(self, base_dir, agent_options=None, conductor_options=None,
                 ready_timeout=90, image_dir=None, layout='mounted'):
        # Not Cluster.__init__: no simulated hypervisors here; the rest of
        # Cluster (configuration files, wait_for, cli, kill) is reused as is.
        self.base_dir = os.path.abspath(base_dir)
        self.ready_timeout = ready_timeout
        self.rabbit = None
        self.tls_files = None
        self.procs = {}
        self.client_conf = os.path.join(self.base_dir, 'client.conf')
        self.agent_options = agent_options or {}
        self.conductor_options = conductor_options or {}
        self.image_dir = image_dir or os.path.join(self.base_dir, 'image')
        self.hosts = TestHosts(len(HOST_NAMES), self.base_dir, names=list(HOST_NAMES),
                               timeout=ready_timeout)
        if layout not in LAYOUTS:
            raise ValueError('layout is one of %s, not %r' % (LAYOUTS, layout))
        self.layout = layout
        # Inside paths, per host.
        self.instances_paths = {}
        for h in self.hosts:
            if layout == 'mounted':
                self.instances_paths[h.name] = INSTANCES_PATH
                h.mounts[CONNECTIONS_PATH] = os.path.join(h.dir, 'connections')
                if h.name in SHARED_HOSTS:
                    h.mounts[INSTANCES_PATH] = os.path.join(h.shared_dir, 'instances')
            else:
                self.instances_paths[h.name] = (
                    SHARED_INSTANCES if h.name in SHARED_HOSTS else INSTANCES_PATH)
        self.connections_dir = (CONNECTIONS_PATH if layout == 'mounted'
                                else INSTANCES_PATH + '/.connections')
        self.image = None
        self.timings = {}
        self._conf = None
        self._api = None
        # Lookups of absent domains are expected; libvirt would print each one.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

    # Configuration. ----------------------------------------------------------------
    def fault_file(self, host):
        return os.path.join(self.base_dir, host, 'faults.json')

    @staticmethod
    def _merge(sections, extra):
        for section, opts in (extra or {}).items():
            sections.setdefault(section, {}).update(opts)
        return sections

    def _agent_conf(self, host):
        b = self.base_dir
        return self._write_conf(host, self._merge({
            'DEFAULT': {'transport_url': self.rabbit.url, 'host': host,
                        'state_path': os.path.join(b, host), 'debug': True,
                        'log_file': os.path.join(b, host + '.log')},
            'compute': {'virt_driver': 'libvirt', 'report_interval': 0.5,
                        'fault_injection_file': self.fault_file(host)},
            'libvirt': {
                # Inside the host's namespace: that host's own libvirtd.
                'connection_uri': 'qemu:///system',
                # The destination's libvirtd by its socket, reachable from every
                # namespace (the base directory is never hidden).
                'live_migration_uri':
                    'qemu+unix:///system?socket=%s/%%s/run/libvirt-sock' % b,
                # All hosts are this machine.
                'live_migration_inbound_uri': 'tcp://127.0.0.1',
                'instances_path': self.instances_paths[host],
                'volume_dir': VOLUME_DIR,
                'connections_dir': self.connections_dir,
                'trust_shared_storage': True,
            },
            'auth': self.auth_options(host, conductor=False),
        }, self.agent_options.get(host)))

    def _conductor_conf(self):
        b = self.base_dir
        return self._write_conf('conductor', self._merge({
            'DEFAULT': {'transport_url': self.rabbit.url, 'host': 'conductor',
                        'state_path': b, 'debug': True,
                        'log_file': os.path.join(b, 'conductor.log')},
            'database': {'connection': 'sqlite:///%s/ferryman.sqlite' % b},
            'conductor': {'monitor_interval': 0.2, 'host_down_after': 15,
                          'post_migration_retry_delay': 0.2,
                          # Tests destroy their guests; the conductor soon frees
                          # what they held.
                          'vanished_guest_grace': 2.0},
            'auth': self.auth_options('conductor', conductor=True),
        }, self.conductor_options))

    # Processes. --------------------------------------------------------------------
    def _spawn_process(self, name, argv, host=None):
        with open(self._logs(name)[0], 'ab') as out:
            kwargs = dict(stdin=subprocess.DEVNULL, stdout=out,
                          stderr=subprocess.STDOUT, start_new_session=True)
            # nsenter execs the command (no pid namespace): the Popen is the agent.
            self.procs[name] = (host.run(argv, **kwargs) if host is not None
                                else subprocess.Popen(argv, **kwargs))

    def start_agent(self, host):
        """(Re)start one host's agent, with a fresh configuration file."""
        self.kill(host)
        self._spawn_process(host, [sys.executable, '-m', 'ferryman.cmd.compute_agent',
                                   '--config-file', self._agent_conf(host)],
                            host=self.hosts[host])

    def start(self):
        os.makedirs(self.base_dir, exist_ok=True)
        t0 = time.monotonic()
        try:
            # Hosts (seconds of QEMU probing), broker and image at the same time.
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                hosts = pool.submit(self.hosts.start)
                image = pool.submit(guest_image.build, self.image_dir)
                self.rabbit = RabbitMQServer(os.path.join(self.base_dir, 'rabbitmq'))
                self.rabbit.start()
                self.timings['rabbitmq'] = time.monotonic() - t0
                self.image = image.result()
                hosts.result()
                self.timings['hosts'] = time.monotonic() - t0
            for h in self.hosts:
                for k, v in h.timings.items():
                    self.timings['%s_%s' % (h.name, k)] = v
            for d in (SHARED_INSTANCES, VOLUME_DIR):
                os.makedirs(self.hosts[0].path(d), exist_ok=True)
            self._write_conf('client', {
                'DEFAULT': {'transport_url': self.rabbit.url},
                'auth': self.operator_options('client')})
            self._spawn_process('conductor', [
                sys.executable, '-m', 'ferryman.cmd.conductor',
                '--config-file', self._conductor_conf()])
            for host in HOST_NAMES:
                self.clear_faults(host)
                self.start_agent(host)
            self.wait_for(self._all_up, 'every agent up in the host list')
            self.timings['cluster'] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return self

    def _all_up(self):
        # A short timeout: a call sent before the conductor's queue exists is lost.
        try:
            hosts = self.api_with_timeout(3).list_hosts()
        except Exception:
            return False
        return {h['name'] for h in hosts if h['up']} >= set(HOST_NAMES)

    def stop(self):
        # Agents first, while their libvirtd still answers; hosts before the
        # broker, so that nothing is left in a namespace.
        self.kill(*list(self.procs))
        if self._conf is not None:
            from ferryman.common import rpc
            rpc.cleanup(self._conf)
            self._conf = self._api = None
        self.hosts.stop()
        if self.rabbit is not None:
            self.rabbit.stop()
            self.rabbit = None

    def logs(self, *names, lines=25):
        """Tails of the named services' logs (default: all), for failure messages:
        the lines that can explain one (CI shows little of a failure's output)."""
        names = names or list(self.procs) + list(HOST_NAMES)
        paths = [p for n in dict.fromkeys(names) for p in self._logs(n)]
        paths += [h.log for h in self.hosts if h.name in names]
        return _tail(paths, lines, skip=LOG_NOISE)

    # The conductor's API. ----------------------------------------------------------
    @property
    def conf(self):
        if self._conf is None:
            from ferryman.common import conf as ferryman_conf
            self._conf = ferryman_conf.make_conf(config_files=[self.client_conf])
        return self._conf

    @property
    def api(self):
        """conductor.rpcapi.ConductorAPI over the cluster's broker (60 s calls)."""
        if self._api is None:
            self._api = self.api_with_timeout(60)
        return self._api

    def api_with_timeout(self, timeout):
        from conductor import rpcapi
        return rpcapi.ConductorAPI(self.conf, timeout=timeout)

    def cli(self, *args, timeout=60):
        """Run ``ferryman ARGS --json``: (exit code, parsed stdout). Unlike
        Cluster.cli, a command that printed nothing gives ``{'stderr': ...}``."""
        argv = ['ferryman'] + [str(a) for a in args] + [
            '--json', '--config-file', self.client_conf, '--timeout', str(timeout)]
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=timeout + 30)
        if not res.stdout.strip():
            return res.returncode, {'stderr': res.stderr}
        try:
            return res.returncode, json.loads(res.stdout)
        except ValueError:
            raise RuntimeError('%s printed no JSON (rc %s):\n%s\n%s' % (
                ' '.join(argv), res.returncode, res.stdout, res.stderr))

    def instance(self, uuid):
        """The conductor's record of a guest, or None."""
        return next((i for i in self.api.list_instances() if i['uuid'] == uuid), None)

    def wait_instance(self, uuid, host, timeout=60):
        """Wait until the conductor has the guest on ``host``, not migrating."""
        def there():
            inst = self.instance(uuid)
            return (inst if inst is not None and inst['host'] == host and
                    inst['migration_id'] is None and
                    inst['power_state'] == 'running' else None)
        return self.wait_for(there, 'instance %s known on %s' % (uuid, host), timeout)

    def wait_migration(self, migration_id, statuses=states.TERMINAL, timeout=300,
                       interval=0.1):
        """Poll the migration until its status is one of ``statuses``."""
        def reached():
            mig = self.api.get_migration(migration_id)
            return mig if mig['status'] in statuses else None
        return self.wait_for(reached, 'migration %s in %s' % (migration_id, statuses),
                             timeout, interval)

    def migrate(self, uuid, host=None, wait=True, timeout=300, **kwargs):
        """Ask the conductor to live-migrate; with ``wait``, return it once ended."""
        mig = self.api.live_migrate(uuid, host=host, **kwargs)
        return self.wait_migration(mig['id'], timeout=timeout) if wait else mig

    def abort(self, migration_id):
        return self.api.abort_migration(migration_id)

    # Faults. -----------------------------------------------------------------------
    def _faults(self, host):
        try:
            with open(self.fault_file(host)) as f:
                return json.loads(f.read() or '{}')
        except FileNotFoundError:
            return {}

    def _write_faults(self, host, faults):
        path = self.fault_file(host)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(faults, f)
        os.replace(tmp, path)  # the agent never sees half a file

    def inject_fault(self, host, step, times=-1, skip=0, delay_s=None):
        """Make ``host``'s agent fail RPC step ``step`` (a method name such as
        create_local_disks): after ``skip`` passing calls, ``times`` failing ones
        (-1: all); with ``delay_s``, held that long, then passing."""
        faults = self._faults(host)
        faults[step] = {'times': times, 'skip': skip}
        if delay_s:
            faults[step]['delay_s'] = float(delay_s)
        self._write_faults(host, faults)

    def clear_faults(self, host):
        self._write_faults(host, {})

    # Guests. -----------------------------------------------------------------------
    def boot_guest(self, host, name=None, storage='local', memory_mib=256,
                   dirty_mib=0, marker=None, disk_size_mib=32, sla_class='pet',
                   readonly=False, wait=True, numa=False):
        """Boot a Ferryman guest on ``host`` and wait for its heartbeats (and the
        conductor's record of it).

        ``storage='local'``: a qcow2 at ``<host's instances path>/<uuid>/disk.root``
        (private on host1, shared on host2/host3). ``storage='volume'``: the disk is
        volume ``vol-<uuid>`` (``SHARED_PATH/volumes/<id>.img``) reached through
        the host's connection link, made here first.

        ``readonly``: a read-only disk (libvirt refuses to copy one in a block
        migration). ``marker``: a writable disk gets it written to its first
        sector by the guest at boot; a read-only one has it there from the start,
        and the guest prints it at boot. ``numa``: one guest NUMA cell, as a
        flavor with a NUMA topology gives.
        """
        h = self.hosts[host]
        uuid = str(uuidlib.uuid4())  # lowercase, as the driver wants
        name = name or 'g-%s' % uuid[:8]
        volume = None
        instance_dir = self.instance_dir(host, uuid)
        prefill = marker if readonly else None
        if storage == 'local':
            disk = '%s/disk.root' % instance_dir
            self._qemu_img_create(h, disk, disk_size_mib, prefill)
        elif storage == 'volume':
            volume = 'vol-%s' % uuid[:8]
            self._qemu_img_create(h, '%s/%s.img' % (VOLUME_DIR, volume),
                                  disk_size_mib, prefill)
            self.connect_volume(host, volume)
            # As the driver's connect_volumes leaves it (for the console log...).
            os.makedirs(h.path(instance_dir), exist_ok=True)
            disk = '%s/%s' % (self.connections_dir, volume)
        else:
            raise ValueError('storage is local or volume, not %r' % storage)
        xml = domain_xml(name, memory_mib, self.image.kernel, self.image.initrd,
                         guest_image.cmdline(dirty_mib, None if readonly else marker),
                         disk, uuid, metadata_xml(uuid, name, storage, sla_class,
                                                  [volume] if volume else ()),
                         numa=numa)
        # cache=none, as a disk on shared storage must have for libvirt to migrate it.
        xml = xml.replace("<driver name='qemu' type='qcow2'/>",
                          "<driver name='qemu' type='qcow2' cache='none'/>")
        if readonly:
            xml = xml.replace('</disk>', '<readonly/></disk>')
        t0 = time.monotonic()
        dom = h.conn.defineXML(xml)
        dom.create()
        guest = Guest(uuid, name, host, storage, disk, instance_dir, volume, marker,
                      dirty_mib, memory_mib, readonly)
        if wait:
            self.wait_booted(guest, host)
            self.timings['boot_' + name] = time.monotonic() - t0
            self.wait_instance(uuid, host)
        return guest

    def _qemu_img_create(self, h, path, size_mib, marker=None):
        outside = h.path(path)
        os.makedirs(os.path.dirname(outside), exist_ok=True)
        if not marker:
            subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', outside,
                            '%dM' % size_mib], check=True, capture_output=True)
            return
        raw = outside + '.raw'
        with open(raw, 'wb') as f:
            f.write((marker + '\n').encode().ljust(512, b'\0'))
            f.truncate(size_mib * 1024 * 1024)
        try:
            subprocess.run(['qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'qcow2',
                            raw, outside], check=True, capture_output=True)
        finally:
            os.unlink(raw)

    def connect_volume(self, host, volume):
        """The host's connection link to a volume, as the driver makes it."""
        link = self.hosts[host].path(self.connection(volume))
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.lexists(link):
            os.unlink(link)
        # The target as seen inside the host (dangling outside).
        os.symlink('%s/%s.img' % (VOLUME_DIR, volume), link)

    def wait_booted(self, guest, host, timeout=90):
        log = self.serial_log(host, guest)
        self.wait_for(lambda: len(beats_in(log)) >= 2,
                      'heartbeats of %s on %s' % (guest.name, host), timeout)
        if guest.marker:
            line = '%s %s' % (guest_image.DISK if guest.readonly
                              else guest_image.DISK_WRITTEN, guest.marker)
            self.wait_for(lambda: line in read(log), 'disk marker of %s' % guest.name,
                          timeout)

    def serial_log(self, host, guest):
        return self.hosts[host].serial_log(guest.name)

    def beats(self, host, guest):
        return beats_in(self.serial_log(host, guest))

    def domain(self, host, guest):
        """The guest's virDomain on ``host``, or None."""
        try:
            return self.hosts[host].conn.lookupByUUIDString(guest.uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def diagnose(self, host, guest):
        """What a hung guest looks like on ``host``, for a failure message: its
        state, where its vCPU is (a kernel stuck in a loop, idle waiting for a
        timer, or dead), the tail of its serial console and of QEMU's log."""
        lines = []
        dom = self.domain(host, guest)
        if dom is None:
            return 'no domain %s on %s' % (guest.uuid, host)
        lines.append('state %s' % (dom.state(),))
        try:
            import libvirt_qemu

            def hmp(cmd):
                return libvirt_qemu.qemuMonitorCommand(
                    dom, cmd, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
            lines.append(hmp('info status').strip())
            # Where the vCPU is, twice: a loop, a halt, or progress; and whether
            # timer interrupts still come (IRQ 0 rising).
            for _ in range(2):
                regs = hmp('info registers').splitlines()
                lines += [r for r in regs if r.startswith(('RIP', 'RSP', 'CR0'))]
                lines += [r for r in hmp('info irq').splitlines()[:3] if r]
                time.sleep(1)
        except Exception as exc:  # a diagnosis never hides the failure itself
            lines.append('monitor: %s' % exc)
        h = self.hosts[host]
        qemu_log = h.path('/var/log/libvirt/qemu/%s.log' % guest.name)
        lines.append(_tail([self.serial_log(host, guest), qemu_log], lines=15))
        return '\n'.join(lines)

    def where(self, guest):
        """{host: libvirt state} of every host that has a domain for the guest."""
        found = {}
        for h in self.hosts:
            dom = self.domain(h.name, guest)
            if dom is not None:
                found[h.name] = dom.state()[0]
        return found

    def exists(self, host, inside_path):
        return os.path.lexists(self.hosts[host].path(inside_path))

    def instance_dir(self, host, guest):
        """Inside path of a guest's (or uuid's) instance directory on ``host``."""
        return '%s/%s' % (self.instances_paths[host], getattr(guest, 'uuid', guest))

    def connection(self, volume):
        """Inside path of a host's connection link to a volume."""
        return '%s/%s' % (self.connections_dir, volume)

    def outside(self, host, path):
        """The file outside for a path inside ``host``, links followed the way the
        host sees them (a volume connection points at the volume)."""
        h = self.hosts[host]
        for _ in range(10):
            out = h.path(path)
            if not os.path.islink(out):
                return out
            target = os.readlink(out)
            path = os.path.join(os.path.dirname(path), target)
        raise RuntimeError('too many links at %s on %s' % (path, host))

    def read_disk(self, host, path, length=512):
        """The first bytes of a qcow2 disk (inside path on ``host``); -U as a
        running QEMU holds the image's lock."""
        raw = os.path.join(self.base_dir, 'disk-%s.raw' % uuidlib.uuid4().hex[:8])
        try:
            subprocess.run(['qemu-img', 'convert', '-U', '-f', 'qcow2', '-O', 'raw',
                            self.outside(host, path), raw],
                           check=True, capture_output=True)
            with open(raw, 'rb') as f:
                return f.read(length)
        finally:
            if os.path.exists(raw):
                os.unlink(raw)

    def forgotten(self, guest, timeout=60):
        """Wait until the conductor no longer has the guest (after destroy_guest)."""
        self.wait_for(lambda: self.instance(guest.uuid) is None,
                      'the conductor to forget %s' % guest.name, timeout)

    def destroy_guest(self, guest):
        """Remove the guest from every host (the conductor notices at the next
        reports, and forgets it after [conductor] vanished_guest_grace), with its
        instance directories and volume."""
        for h in self.hosts:
            dom = self.domain(h.name, guest)
            if dom is not None:
                try:
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
                except libvirt.libvirtError:
                    pass
            shutil.rmtree(h.path(self.instance_dir(h.name, guest)), ignore_errors=True)
            if guest.volume:
                link = h.path(self.connection(guest.volume))
                if os.path.lexists(link):
                    os.unlink(link)
        if guest.volume:
            vol = self.hosts[0].path('%s/%s.img' % (VOLUME_DIR, guest.volume))
            if os.path.exists(vol):
                os.unlink(vol)
