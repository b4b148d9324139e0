"""Real hypervisor hosts on one machine, for functional tests of real live migrations.

Each :class:`TestHost` is a private mount (+UTS) namespace in which a privileged
libvirtd runs with its own directories bind-mounted over libvirt's fixed paths,
so that several daemons share one machine. Guests are QEMU TCG domains. Inside
every host:

* ``INSTANCES_PATH`` is that host's own directory (same path, different files on
  each host: what block migration needs);
* ``SHARED_PATH`` is one directory seen by all hosts (shared storage, volumes).

Outside, a host lives in ``<base_dir>/<name>/`` and is reached at ``host.uri``; the
shared directory is ``<base_dir>/shared``. ``host.path()`` maps a path inside the
host to the file outside. Needs root and ``tools/install-libvirt``.
"""

import concurrent.futures
import os
import signal
import subprocess
import time
import uuid
from xml.sax.saxutils import escape, quoteattr

import libvirt

from compute_agent.virt.libvirt import driver as libvirt_driver

INSTANCES_PATH = '/var/lib/ferryman/instances'
SHARED_PATH = '/var/lib/ferryman/shared'
LIBVIRTD = '/usr/sbin/libvirtd'
# Migration (and NBD) listen ports come from these; give each host its own range
# because all hosts share one network namespace. Below the kernel's ephemeral range
# (32768-60999; libvirt's default 49152 is inside it) and above rabbitmqctl's
# (servers.py), so no test server is given one of them and no client still retrying
# a stopped server's port can connect to a QEMU waiting for its migration stream.
PORT_BASE, PORTS_PER_HOST = 31000, 16

LIBVIRTD_CONF = '''\
host_uuid = "{host_uuid}"
unix_sock_group = "root"
unix_sock_rw_perms = "0770"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "2:file:/var/log/libvirt/libvirtd.log"
log_filters = "3:remote 3:event 3:rpc 3:util 3:access 3:conf 3:security"
'''

# cgroups would clash between two daemons of one machine; no virtlogd is running.
QEMU_CONF = '''\
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
remember_owner = 0
migration_port_min = {port_min}
migration_port_max = {port_max}
'''


def _tail(path, lines=40):
    try:
        with open(path, errors='replace') as f:
            return '\n'.join(f.read().splitlines()[-lines:])
    except OSError as e:
        return '(%s)' % e


def _alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def _wait_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _kill(pid, timeout=10):
    """SIGTERM, then SIGKILL, one process by pid."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_gone(pid, wait):
            return


class TestHost(object):
    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, name, base_dir, index=0):
        self.name = name
        self.base_dir = os.path.abspath(base_dir)
        self.dir = os.path.join(self.base_dir, name)
        self.index = index
        self.uri = 'qemu+unix:///system?socket=%s/run/libvirt-sock' % self.dir
        self.host_uuid = str(uuid.uuid4())
        self.log = os.path.join(self.dir, 'log', 'libvirtd.log')
        self.pid = None
        self.timings = {}
        self._holder = None
        self._daemon = None
        self._conn = None
        self.mounts = {
            '/etc/libvirt': os.path.join(self.dir, 'etc'),
            '/run/libvirt': os.path.join(self.dir, 'run'),
            '/var/lib/libvirt': os.path.join(self.dir, 'lib'),
            '/var/log/libvirt': os.path.join(self.dir, 'log'),
            '/var/cache/libvirt': os.path.join(self.dir, 'cache'),
            INSTANCES_PATH: os.path.join(self.dir, 'instances'),
            SHARED_PATH: os.path.join(self.base_dir, 'shared'),
        }
        if len(self.uri) - self.uri.index('=') > 107:
            raise ValueError('%s: socket path too long for AF_UNIX' % self.dir)
        for inside in self.mounts:
            # Our own directories (and so the sockets) must stay visible in every host.
            if (self.base_dir + '/').startswith(inside + '/'):
                raise ValueError('base_dir %s is under %s, which test hosts hide'
                                 % (self.base_dir, inside))

    def __repr__(self):
        return '<TestHost %s pid=%s>' % (self.name, self.pid)

    # Paths. -------------------------------------------------------------------------
    @property
    def shared_dir(self):
        return self.mounts[SHARED_PATH]

    def path(self, inside):
        """The file outside for a path seen inside this host."""
        for mount, outside in self.mounts.items():
            if inside == mount or inside.startswith(mount + '/'):
                return outside + inside[len(mount):]
        return inside

    def serial_log(self, domain_name):
        """Outside path of the serial console log of a guest made by define_guest."""
        return self.path(_serial_path(domain_name))

    # Life cycle. ---------------------------------------------------------------------
    def _write_config(self):
        for d in self.mounts.values():
            os.makedirs(d, exist_ok=True)
        # Guests' serial logs go here (see _serial_path); libvirt would make it only
        # when it first starts a guest, after it opened the serial file.
        os.makedirs(os.path.join(self.dir, 'log', 'qemu'), exist_ok=True)
        port_min = PORT_BASE + self.index * PORTS_PER_HOST
        with open(os.path.join(self.dir, 'etc', 'libvirtd.conf'), 'w') as f:
            f.write(LIBVIRTD_CONF.format(host_uuid=self.host_uuid))
        with open(os.path.join(self.dir, 'etc', 'qemu.conf'), 'w') as f:
            f.write(QEMU_CONF.format(port_min=port_min,
                                     port_max=port_min + PORTS_PER_HOST - 1))

    def spawn(self):
        """Make the namespace and start libvirtd in it; wait_ready() waits for it."""
        self._write_config()
        t0 = time.monotonic()
        binds = ''.join('mkdir -p %s && mount --bind %s %s && \\\n'
                        % (inside, outside, inside)
                        for inside, outside in self.mounts.items())
        script = ('set -e\n%s echo %s > /proc/sys/kernel/hostname\n'
                  'echo ready\nexec sleep infinity >/dev/null\n' % (binds, self.name))
        with open(os.path.join(self.dir, 'namespace.log'), 'ab') as err:
            # The holder keeps the namespace alive whatever happens to libvirtd;
            # unshare execs, so its pid is the namespace's first process.
            self._holder = subprocess.Popen(
                ['unshare', '-m', '-u', '--propagation', 'private', 'sh', '-c', script],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True)
        self.pid = self._holder.pid
        if self._holder.stdout.readline() != b'ready\n':
            self._holder.wait(10)
            raise RuntimeError('namespace of %s failed (rc %s):\n%s' % (
                self.name, self._holder.returncode,
                _tail(os.path.join(self.dir, 'namespace.log'))))
        self._holder.stdout.close()
        self.timings['namespace'] = time.monotonic() - t0
        self._start_daemon()

    def _start_daemon(self):
        with open(os.path.join(self.dir, 'libvirtd.out'), 'ab') as out:
            # Not -d: a child we can wait for, and its early errors land in .out.
            self._daemon = self.run(
                [LIBVIRTD, '-p', '/run/libvirt/libvirtd.pid',
                 '-f', '/etc/libvirt/libvirtd.conf'],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        self._t_spawn = time.monotonic()

    def restart_daemon(self, timeout=60):
        """Restart libvirtd alone, as an upgrade does: the guests' QEMUs go on
        running; every client's connection breaks."""
        libvirt_driver.close_connection(self._conn)
        self._conn = None
        self._daemon.terminate()
        self._daemon.wait(30)
        self._start_daemon()
        self.wait_ready(timeout)

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        sock = os.path.join(self.dir, 'run', 'libvirt-sock')
        while True:
            if self._daemon.poll() is not None:
                self._fail('libvirtd exited with %s' % self._daemon.returncode)
            if os.path.exists(sock):
                try:
                    self._conn = libvirt.open(self.uri)
                    break
                except libvirt.libvirtError as e:
                    err = e
            else:
                err = 'no socket %s' % sock
            if time.monotonic() > deadline:
                self._fail('libvirtd not answering after %ss: %s' % (timeout, err))
            time.sleep(0.05)
        self.timings['daemon'] = time.monotonic() - self._t_spawn
        # The first QEMU capability probe takes seconds: do it now, not in a test.
        t0 = time.monotonic()
        try:
            self._conn.getDomainCapabilities(None, 'x86_64', None, 'qemu')
        except libvirt.libvirtError as e:
            self._fail('QEMU driver not working: %s' % e)
        self.timings['qemu_probe'] = time.monotonic() - t0

    def start(self, timeout=60):
        self.spawn()
        self.wait_ready(timeout)
        return self

    def _fail(self, why):
        msg = '%s: %s\n==> %s <==\n%s\n==> libvirtd.out <==\n%s' % (
            self.name, why, self.log, _tail(self.log),
            _tail(os.path.join(self.dir, 'libvirtd.out')))
        self.stop()
        raise RuntimeError(msg)

    @property
    def conn(self):
        """A libvirt connection to this host, from the test's own namespace."""
        if self._conn is None:
            self._conn = libvirt.open(self.uri)
        return self._conn

    def run(self, cmd, **popen_kwargs):
        """Start ``cmd`` (argv list) inside this host's namespace; returns the Popen."""
        if self.pid is None:
            raise RuntimeError('%s is not started' % self.name)
        return subprocess.Popen(['nsenter', '-t', str(self.pid), '-m', '-u', '--'] +
                                list(cmd), **popen_kwargs)

    def check_output(self, cmd, timeout=120):
        """Run ``cmd`` inside the host to completion; raise with its output on failure."""
        proc = self.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        if proc.returncode:
            raise subprocess.CalledProcessError(proc.returncode, cmd, out)
        return out.decode(errors='replace')

    def _namespace_pids(self):
        """Pids whose mount namespace is this host's (libvirtd, QEMUs, run()...)."""
        try:
            ns = os.readlink('/proc/%d/ns/mnt' % self.pid)
        except OSError:
            return []
        pids = []
        for entry in os.listdir('/proc'):
            if entry.isdigit() and int(entry) != self.pid:
                try:
                    if os.readlink('/proc/%s/ns/mnt' % entry) == ns:
                        pids.append(int(entry))
                except OSError:
                    pass
        return pids

    def stop(self):
        if self.pid is None:
            return
        if self._daemon is not None and self._daemon.poll() is None:
            try:
                for dom in self.conn.listAllDomains():
                    if dom.isActive():
                        dom.destroy()
            except libvirt.libvirtError:
                pass  # a broken daemon: its QEMUs are killed by pid below
        libvirt_driver.close_connection(self._conn)
        self._conn = None
        pid = None
        try:
            with open(os.path.join(self.dir, 'run', 'libvirtd.pid')) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            pass
        for p in {pid, self._daemon and self._daemon.pid} - {None}:
            _kill(p)
        if self._daemon is not None:
            self._daemon.wait()
        # Anything left inside (a QEMU libvirt lost track of, a run() child) would keep
        # the namespace and its mounts alive.
        for p in self._namespace_pids():
            _kill(p, timeout=5)
        _kill(self.pid)
        self._holder.wait()
        self.pid = None


class TestHosts(object):
    """``n`` test hosts under ``base_dir``, started together (they probe QEMU in
    parallel). A context manager; index it or iterate over it."""
    __test__ = False

    def __init__(self, n, base_dir, names=None, timeout=90):
        names = names or ['host%d' % (i + 1) for i in range(n)]
        if len(names) != n:
            raise ValueError('%d names for %d hosts' % (len(names), n))
        self.base_dir = os.path.abspath(base_dir)
        self.shared_dir = os.path.join(self.base_dir, 'shared')
        self.timeout = timeout
        self.hosts = [TestHost(name, self.base_dir, i) for i, name in enumerate(names)]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __iter__(self):
        return iter(self.hosts)

    def __len__(self):
        return len(self.hosts)

    def __getitem__(self, key):
        if isinstance(key, str):
            return next(h for h in self.hosts if h.name == key)
        return self.hosts[key]

    def start(self):
        try:
            for h in self.hosts:
                h.spawn()
            # In parallel: each host's first QEMU capability probe takes seconds.
            with concurrent.futures.ThreadPoolExecutor(len(self.hosts)) as pool:
                for f in [pool.submit(h.wait_ready, self.timeout) for h in self.hosts]:
                    f.result()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        for h in self.hosts:
            h.stop()


# Guests. ------------------------------------------------------------------------------
def _serial_path(name):
    # Exists on every host (TestHost._write_config), so a migrated guest's console
    # reopens on the destination without any preparation.
    return '/var/log/libvirt/qemu/%s.serial.log' % name


def create_disk(host, path, size_mib=64):
    """Create a qcow2 disk at ``path`` as seen inside ``host`` (a block migration's
    destination needs one of the same size)."""
    host.check_output(['mkdir', '-p', os.path.dirname(path)])
    host.check_output(['qemu-img', 'create', '-q', '-f', 'qcow2', path,
                       '%dM' % size_mib])
    return path


def domain_xml(name, memory_mib, kernel, initrd, cmdline, disk_path=None, uuid=None,
               metadata_xml=None, numa=False):
    """``numa``: the guest gets one NUMA cell holding its vCPU and memory, as a
    flavor with a NUMA topology gives it."""
    cpu = ("\n  <cpu><numa><cell id='0' cpus='0' memory='%d' unit='MiB'/></numa></cpu>"
           % int(memory_mib)) if numa else ''
    disk = ''
    if disk_path:
        disk = ("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                "<source file=%s/><target dev='vda' bus='virtio'/></disk>"
                % quoteattr(disk_path))
    # ACPI and APIC, as every cloud guest has. Without them the kernel finds no
    # IOAPIC, HPET or PM timer, marks the TSC unstable and keeps time by counting PIT
    # ticks through the legacy PIC: a guest whose clock stops after a migration (all
    # CI failures of this kind had that platform) cannot sleep, so it stops beating.
    return '''<domain type='qemu'>
  <name>{name}</name>{uuid}
  <memory unit='MiB'>{memory}</memory>
  <vcpu>1</vcpu>{cpu}{metadata}
  <features><acpi/><apic/></features>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>{disk}
    <serial type='file'><source path={serial} append='on'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>'''.format(
        name=escape(name), memory=int(memory_mib), kernel=escape(kernel),
        initrd=escape(initrd), cmdline=escape(cmdline), disk=disk, cpu=cpu,
        uuid='\n  <uuid>%s</uuid>' % uuid if uuid else '',
        metadata='\n  <metadata>%s</metadata>' % metadata_xml if metadata_xml else '',
        serial=quoteattr(_serial_path(name)))


def define_guest(host, name, memory_mib, kernel, initrd, cmdline, disk_path=None,
                 uuid=None, metadata_xml=None, disk_size_mib=64):
    """Define and start a TCG guest on ``host``; returns its virDomain.

    ``disk_path`` (inside the host, e.g. under INSTANCES_PATH) becomes a virtio disk,
    created as qcow2 if missing. ``metadata_xml`` is the content of <metadata> (elements
    with their own namespace). The serial console goes to ``host.serial_log(name)``.
    """
    if disk_path and not os.path.exists(host.path(disk_path)):
        create_disk(host, disk_path, disk_size_mib)
    dom = host.conn.defineXML(domain_xml(name, memory_mib, kernel, initrd, cmdline,
                                         disk_path, uuid, metadata_xml))
    dom.create()
    return dom
