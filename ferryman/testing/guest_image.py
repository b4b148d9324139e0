"""A tiny Linux guest for real migrations: Debian's cloud kernel + a busybox initramfs.

The guest's ``/init`` keeps memory dirty and proves it is alive on the serial console:

* ``ferryman.dirty_mib=N`` on the kernel command line: copy N MiB of /dev/urandom
  into a tmpfs file over and over (0 = idle);
* a line ``ferryman-heartbeat N`` (N counting up from 1) every ~0.5 s;
* with a disk at /dev/vda: at boot print ``ferryman-disk: <first line of the disk>``,
  then, given ``ferryman.write=TEXT``, write ``TEXT`` there and print
  ``ferryman-disk-written: TEXT``. Resetting the guest reads the disk again.

The initramfs is written by this module (no cpio run, no root needed for device
nodes) and cached by the hash of what goes in it.
"""

import collections
import glob
import gzip
import hashlib
import io
import os
import stat
import tempfile

BUSYBOX = '/bin/busybox'
KERNEL_GLOB = '/boot/vmlinuz-*cloud-amd64'
# The cloud kernel builds virtio as modules (loaded by /init with their dependencies).
VIRTIO_MODULES = ('virtio_pci', 'virtio_blk')

HEARTBEAT = 'ferryman-heartbeat'
BOOT = 'ferryman-boot'
DISK = 'ferryman-disk:'
DISK_WRITTEN = 'ferryman-disk-written:'

GuestImage = collections.namedtuple('GuestImage', 'kernel initrd')

INIT = r'''#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o size=90% tmpfs /tmp
for m in /lib/modules/*.ko; do insmod "$m"; done
echo ferryman-boot
dirty=0
write=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        ferryman.dirty_mib=*) dirty=${arg#*=} ;;
        ferryman.write=*) write=${arg#*=} ;;
    esac
done
# A virtio block device (id 2) should have its /dev/vda by now; allow a little slack.
disk=
for d in /sys/bus/virtio/devices/*; do
    [ "$(cat "$d/device" 2>/dev/null)" = 0x0002 ] && disk=1
done
i=0
while [ -n "$disk" ] && [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
if [ -b /dev/vda ]; then
    echo "ferryman-disk: $(head -c 512 /dev/vda | tr -d '\000' | head -n 1)"
    if [ -n "$write" ]; then
        # One padded sector, flushed to the host before we say so.
        printf '%s\n' "$write" | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null
        echo "ferryman-disk-written: $write"
    fi
fi
if [ "$dirty" -gt 0 ]; then
    (while :; do
        dd if=/dev/urandom of=/tmp/dirty bs=1M count="$dirty" conv=notrunc 2>/dev/null
    done) &
fi
n=0
# PID 1 must never return: the kernel panics when init exits.
while :; do
    n=$((n + 1))
    echo "ferryman-heartbeat $n"
    sleep 0.5
done
'''


def find_kernel():
    kernels = sorted(glob.glob(KERNEL_GLOB))
    if not kernels:
        raise RuntimeError('no kernel matches %s: run tools/install-libvirt' % KERNEL_GLOB)
    return kernels[-1]


def _module_paths(kernel):
    """The .ko files for VIRTIO_MODULES, dependencies first (from modules.dep)."""
    root = '/lib/modules/%s' % os.path.basename(kernel)[len('vmlinuz-'):]
    deps = {}
    with open(os.path.join(root, 'modules.dep')) as f:
        for line in f:
            mod, _, rest = line.partition(':')
            deps[mod] = rest.split()
    by_name = {os.path.basename(m)[:-len('.ko')]: m for m in deps if m.endswith('.ko')}
    ordered = []

    def visit(mod):
        if mod not in ordered:
            for dep in deps[mod]:
                visit(dep)
            ordered.append(mod)
    for name in VIRTIO_MODULES:
        if name not in by_name:
            raise RuntimeError('module %s.ko (uncompressed) not in %s/modules.dep'
                               % (name, root))
        visit(by_name[name])
    return [os.path.join(root, m) for m in ordered]


class _Newc(object):
    """Writer of the kernel's initramfs format (cpio "newc")."""

    def __init__(self):
        self.out = io.BytesIO()
        self.ino = 0

    def add(self, name, mode, data=b'', rdev=(0, 0)):
        self.ino += 1
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0)
        self.out.write(b'070701' + b''.join(b'%08X' % f for f in fields))
        self.out.write(name.encode() + b'\0')
        self._pad()
        self.out.write(data)
        self._pad()

    def _pad(self):
        self.out.write(b'\0' * (-self.out.tell() % 4))

    def finish(self):
        self.add('TRAILER!!!', 0)
        return self.out.getvalue()


def _initramfs(modules):
    w = _Newc()
    for d in ('bin', 'dev', 'proc', 'sys', 'tmp', 'lib', 'lib/modules'):
        w.add(d, stat.S_IFDIR | 0o755)
    # The kernel opens /dev/console for init's stdio before devtmpfs is mounted.
    w.add('dev/console', stat.S_IFCHR | 0o600, rdev=(5, 1))
    with open(BUSYBOX, 'rb') as f:
        w.add('bin/busybox', stat.S_IFREG | 0o755, f.read())
    for applet in ('sh', 'mount', 'insmod', 'cat', 'echo', 'head', 'tr', 'dd', 'ls',
                   'grep', 'sleep', 'printf'):
        w.add('bin/' + applet, stat.S_IFLNK | 0o777, b'busybox')
    for i, path in enumerate(modules):
        # Numbered so that the glob in /init loads them in dependency order.
        with open(path, 'rb') as f:
            w.add('lib/modules/%02d-%s' % (i, os.path.basename(path)),
                  stat.S_IFREG | 0o644, f.read())
    w.add('init', stat.S_IFREG | 0o755, INIT.encode())
    return gzip.compress(w.finish(), mtime=0)


def build(dest_dir, kernel=None):
    """Return a :class:`GuestImage` (kernel, initrd), building the initrd in dest_dir
    unless an identical one is already there."""
    kernel = kernel or find_kernel()
    modules = _module_paths(kernel)
    digest = hashlib.sha256(INIT.encode())
    for path in [BUSYBOX] + modules:
        with open(path, 'rb') as f:
            digest.update(path.encode() + b'\0' + hashlib.sha256(f.read()).digest())
    initrd = os.path.join(os.path.abspath(dest_dir),
                          'ferryman-initrd-%s.gz' % digest.hexdigest()[:16])
    if not os.path.exists(initrd):
        os.makedirs(dest_dir, exist_ok=True)
        # Atomic: concurrent test processes may build the same image.
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix='.initrd-')
        with os.fdopen(fd, 'wb') as f:
            f.write(_initramfs(modules))
        os.chmod(tmp, 0o644)
        os.replace(tmp, initrd)
    return GuestImage(kernel, initrd)


def cmdline(dirty_mib=0, write=None):
    """The kernel command line for the guest's workload."""
    args = ['console=ttyS0', 'quiet', 'panic=-1', 'ferryman.dirty_mib=%d' % dirty_mib]
    if write:
        if any(c.isspace() for c in write):
            raise ValueError('the disk marker must not contain spaces: %r' % write)
        args.append('ferryman.write=' + write)
    return ' '.join(args)
