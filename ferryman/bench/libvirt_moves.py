"""tools/bench-libvirt: Ferryman against bare ``virsh migrate`` on real QEMU guests.

One busy guest (256 MiB, dirtying 16 MiB by default) goes back and forth between two
test hosts of a :class:`~ferryman.testing.libvirt_cluster.LibvirtCluster`, N times
through Ferryman (conductor RPC: request to ``completed``) and N times with

    virsh -c SRC migrate --live --p2p --persistent --undefinesource DOMAIN DEST \\
        --migrateuri tcp://127.0.0.1

(without --live on a QEMU before 9.0, where both copy a TCG guest paused) in the
same run, in turns. Ferryman's moves go in pairs (there and back) because
the conductor learns where a guest is only from its own migrations; so the order
is F F V V F F V V ... Prints figures; asserts nothing. Needs root.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import libvirt

from compute_agent.virt.libvirt.driver import TCG_LIVE_COPY_FIXED
from ferryman.testing.libvirt_cluster import LibvirtCluster
from flows import states

MIB = 1024 * 1024
PAIRS = {states.FILE_LEVEL: ('host2', 'host3'), states.BLOCK: ('host1', 'host2')}


class JobEvents(object):
    """libvirt's own figures of each migration, as the source announces them
    (VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, operation migration-out): the same source
    for both methods, and not used up when an agent reads the completed job's
    statistics on the destination (Ferryman's post_migration_destination does)."""

    def __init__(self, cluster):
        self._done = {}
        self._conns = []
        for h in cluster.hosts:
            conn = libvirt.open(h.uri)  # after the event loop: ours get events
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED,
                                        self._completed, h.name)
            self._conns.append(conn)

    @staticmethod
    def start_loop():
        libvirt.virEventRegisterDefaultImpl()

        def loop():
            while True:
                libvirt.virEventRunDefaultImpl()
        threading.Thread(target=loop, name='libvirt-events', daemon=True).start()

    def _completed(self, _conn, dom, params, host):
        if params.get('operation') == libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT:
            self._done[(host, dom.UUIDString())] = params

    def forget(self, host, guest):
        self._done.pop((host, guest.uuid), None)

    def wait(self, host, guest, timeout=5):
        """(job seconds, downtime ms) of the last migration of guest out of host."""
        stats = self.wait_stats(host, guest, timeout)
        if stats is None:
            return None, None
        return stats.get('time_elapsed', 0) / 1000.0, stats.get('downtime')

    def wait_stats(self, host, guest, timeout=5):
        """libvirt's completed-job figures of the last migration out of host."""
        deadline = time.monotonic() + timeout
        while (host, guest.uuid) not in self._done:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)
        return self._done.pop((host, guest.uuid))

    def close(self):
        for conn in self._conns:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass


def ferryman_move(cluster, events, guest, src, dst, poll=0.05):
    events.forget(src, guest)
    t0 = time.monotonic()
    mig = cluster.api.live_migrate(guest.uuid, host=dst)
    while mig['status'] not in states.TERMINAL:
        time.sleep(poll)
        mig = cluster.api.get_migration(mig['id'])
    wall = time.monotonic() - t0
    stats = mig.get('stats') or {}
    job_s, downtime = events.wait(src, guest, 1 if mig['status'] != 'completed' else 5)
    return {'method': 'ferryman', 'from': src, 'to': dst, 'total_s': wall,
            'job_s': stats.get('total_time_s'), 'downtime_ms': stats.get('downtime_ms'),
            'libvirt_job_s': job_s, 'libvirt_downtime_ms': downtime,
            'migration': mig['id'], 'status': mig['status'], 'error': mig.get('error')}


def virsh_move(cluster, events, guest, src, dst, subtype):
    events.forget(src, guest)
    s, d = cluster.hosts[src], cluster.hosts[dst]
    argv = ['virsh', '-c', s.uri, 'migrate', '--live', '--p2p', '--persistent',
            '--undefinesource', guest.name, d.uri, '--migrateuri', 'tcp://127.0.0.1']
    if s.conn.getVersion() < TCG_LIVE_COPY_FIXED:
        # The same work as Ferryman's agents do here: a TCG guest is copied paused
        # on this QEMU (issue #12; [libvirt] tcg_memory_copy).
        argv.remove('--live')
    if subtype == states.BLOCK:
        # What Ferryman's create_local_disks does, untimed here.
        _create_like(cluster, src, dst, guest.disk)
        argv += ['--copy-storage-inc', '--migrate-disks', 'vda']
    else:
        # As Ferryman's agents do for storage their probe proved shared
        # ([libvirt] trust_shared_storage in the test cluster).
        argv += ['--unsafe']
    t0 = time.monotonic()
    res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=600)
    wall = time.monotonic() - t0
    if res.returncode:
        raise RuntimeError('%s failed: %s' % (' '.join(argv), res.stderr.strip()))
    if subtype == states.BLOCK:
        # What Ferryman's post_migration_source does, untimed here.
        shutil.rmtree(cluster.hosts[src].path(os.path.dirname(guest.disk)),
                      ignore_errors=True)
    job_s, downtime = events.wait(src, guest)
    return {'method': 'virsh', 'from': src, 'to': dst, 'total_s': wall,
            'job_s': job_s, 'downtime_ms': downtime,
            'libvirt_job_s': job_s, 'libvirt_downtime_ms': downtime, 'status': 'completed'}


def _create_like(cluster, src, dst, path):
    info = json.loads(subprocess.run(
        ['qemu-img', 'info', '-U', '--output=json', cluster.outside(src, path)],
        check=True, capture_output=True, text=True).stdout)
    out = cluster.hosts[dst].path(path)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', out,
                    str(info['virtual-size'])], check=True, capture_output=True)


def schedule(n):
    """F F V V F F V V ..., n of each; an odd n ends with one F and one V."""
    return ['ferryman', 'ferryman', 'virsh', 'virsh'] * (n // 2) + (
        ['ferryman', 'virsh'] if n % 2 else [])


def _median(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def _fmt(value, scale=1.0, spec='%.3f'):
    return 'n/a' if value is None else spec % (value * scale)


def summarize(rows):
    out = {}
    for method in ('ferryman', 'virsh'):
        mine = [r for r in rows if r['method'] == method]
        out[method] = {k: _median(mine, k) for k in (
            'total_s', 'job_s', 'downtime_ms', 'libvirt_job_s', 'libvirt_downtime_ms')}
        out[method]['n'] = len(mine)
    f, v = out['ferryman'], out['virsh']
    out['ratio'] = {
        'total': f['total_s'] / v['total_s'] if v['total_s'] else None,
        'downtime': (f['downtime_ms'] / v['downtime_ms']
                     if f['downtime_ms'] is not None and v['downtime_ms'] else None),
        'libvirt_downtime': (f['libvirt_downtime_ms'] / v['libvirt_downtime_ms']
                             if f['libvirt_downtime_ms'] is not None and
                             v['libvirt_downtime_ms'] else None),
    }
    return out


def _where(cluster, guest):
    running = [h for h, state in cluster.where(guest).items()
               if state == libvirt.VIR_DOMAIN_RUNNING]
    if len(running) != 1:
        raise RuntimeError('guest %s runs on %s' % (guest.uuid, running or 'no host'))
    return running[0]


# (working set MiB the guest rewrites, link cap MiB/s): each converges in pre-copy
# at QEMU's default 300 ms downtime, after one pass or several.
VALIDATION_POINTS = ((0, 20), (4, 20), (8, 50), (16, 100), (24, 100))
QEMU_DEFAULT_DOWNTIME_MS = 300.0


def real_migration(cluster, events, guest, src, dst, bandwidth, poll=0.05):
    """One bare libvirt migration capped at ``bandwidth``, sampled as it runs.

    Returns libvirt's completed figures and what the simulator takes as the
    guest's and the link's description: the data of the first pass (QEMU sends no
    zero pages, so this is the guest's non-zero memory), the mean dirty rate and
    the median transfer rate QEMU observed (under TCG on a busy machine QEMU's
    own CPU, not the cap, may bound it)."""
    events.forget(src, guest)
    dom = cluster.hosts[src].conn.lookupByUUIDString(guest.uuid)
    flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER |
             libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE |
             libvirt.VIR_MIGRATE_UNSAFE)
    params = {libvirt.VIR_MIGRATE_PARAM_URI: 'tcp://127.0.0.1',
              libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: int(bandwidth)}
    errors = []

    def migrate():
        try:
            dom.migrateToURI3(cluster.hosts[dst].uri, params, flags)
        except libvirt.libvirtError as exc:
            errors.append(exc.get_error_message())
    thread = threading.Thread(target=migrate, daemon=True)
    thread.start()
    first_pass_mb, dirty, bps = None, [], []
    while thread.is_alive():
        try:
            st = dom.jobStats()
        except libvirt.libvirtError:
            st = {}
        page = st.get('memory_page_size', 4096)
        if st.get('memory_iteration', 0) >= 2 and first_pass_mb is None:
            first_pass_mb = (st.get('memory_normal', 0) * page) / MIB
        if st.get('memory_dirty_rate'):
            dirty.append(st['memory_dirty_rate'] * page / MIB)
        if st.get('memory_bps'):
            bps.append(st['memory_bps'] / MIB)
        thread.join(poll)
    if errors:
        raise RuntimeError('migration %s -> %s failed: %s' % (src, dst, errors[0]))
    done = events.wait_stats(src, guest) or {}
    page = done.get('memory_page_size', 4096)
    normal_mb = done.get('memory_normal', 0) * page / MIB
    return {'total_s': (done.get('time_elapsed', 0) - done.get('setup_time', 0)) / 1000.0,
            'iterations': done.get('memory_iteration'),
            'downtime_ms': done.get('downtime'),
            'sent_mb': normal_mb,
            'first_pass_mb': first_pass_mb if first_pass_mb is not None else normal_mb,
            'dirty_mibps': statistics.mean(dirty) if dirty else 0.0,
            'link_mibps': statistics.median(bps) if bps else float(bandwidth)}


def simulated_migration(memory_mb, dirty_mibps, working_set_mb, bandwidth):
    from compute_agent.virt import simulation
    model = simulation.MigrationModel(
        memory_mb, dirty_mibps, bandwidth, max_downtime_ms=QEMU_DEFAULT_DOWNTIME_MS,
        working_set_mb=working_set_mb)
    model.run_for(3600.0)
    st = model.stats()
    return {'total_s': st['elapsed_s'], 'iterations': st['iteration'],
            'downtime_ms': st['downtime_ms'], 'sent_mb': st['data_processed_mb'],
            'status': st['status']}


def validate_simulator(args):
    """The simulated driver's migration model against real QEMU, same parameters."""
    base = args.base_dir or tempfile.mkdtemp(prefix='ferryman-bench-')
    a, b = PAIRS[states.FILE_LEVEL]
    rows = []
    JobEvents.start_loop()
    with LibvirtCluster(base) as cluster:
        events = JobEvents(cluster)
        print('simulator vs real QEMU: %d MiB guests, %s <-> %s, QEMU default downtime '
              '%.0f ms; the simulator is given each guest\'s non-zero memory (the '
              'real first pass), its working set, and the dirty and transfer rates '
              'QEMU measured' % (args.memory, a, b, QEMU_DEFAULT_DOWNTIME_MS),
              flush=True)
        print('%8s %5s %6s | %8s %6s | %8s %8s %6s | %6s %6s | %7s %7s' % (
            'wset_MiB', 'cap', 'link', 'data_MiB', 'dirty', 'real_s', 'sim_s',
            'ratio', 'r_iter', 's_iter', 'r_sent', 's_sent'), flush=True)
        for working_set, bandwidth in VALIDATION_POINTS:
            guest = cluster.boot_guest(a, memory_mib=args.memory, dirty_mib=working_set)
            here = a
            for _ in range(args.runs):
                time.sleep(args.settle)
                there = b if here == a else a
                real = real_migration(cluster, events, guest, here, there, bandwidth)
                here = there
                sim = simulated_migration(real['first_pass_mb'], real['dirty_mibps'],
                                          working_set or None, real['link_mibps'])
                row = {'working_set_mb': working_set, 'bandwidth_mibps': bandwidth,
                       'real': real, 'sim': sim,
                       'time_ratio': (sim['total_s'] / real['total_s']
                                      if real['total_s'] else None)}
                rows.append(row)
                print('%8d %5d %6.1f | %8.1f %6.1f | %8.3f %8.3f %6s | %6s %6s | '
                      '%7.1f %7.1f'
                      % (working_set, bandwidth, real['link_mibps'],
                         real['first_pass_mb'], real['dirty_mibps'], real['total_s'],
                         sim['total_s'],
                         _fmt(row['time_ratio'], spec='%.2f'), real['iterations'],
                         sim['iterations'], real['sent_mb'], sim['sent_mb']),
                      flush=True)
            cluster.destroy_guest(guest)
        events.close()
    ratios = [r['time_ratio'] for r in rows if r['time_ratio']]
    # QEMU counts dirty-bitmap syncs: one before the first pass and one at the
    # switch-over besides one per further pass; the model counts passes.
    same_iter = sum(1 for r in rows
                    if (r['real']['iterations'] or 0) - 2 == r['sim']['iterations'])
    print()
    print('simulated/real total time: median %s, min %s, max %s; passes equal '
          '(QEMU syncs - 2 = simulated passes) in %d of %d' % (
              _fmt(statistics.median(ratios), spec='%.2f'),
              _fmt(min(ratios), spec='%.2f'), _fmt(max(ratios), spec='%.2f'),
              same_iter, len(rows)))
    if args.json:
        print(json.dumps({'validation': rows}, indent=2))
    if not args.base_dir and not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0


def run(args):
    if args.validate_simulator:
        return validate_simulator(args)
    base = args.base_dir or tempfile.mkdtemp(prefix='ferryman-bench-')
    a, b = PAIRS[args.subtype]
    rows = []
    t_start = time.monotonic()
    JobEvents.start_loop()
    with LibvirtCluster(base) as cluster:
        events = JobEvents(cluster)
        print('cluster up in %.1f s (%s); guest %d MiB dirtying %d MiB; %s %s <-> %s'
              % (cluster.timings['cluster'], base, args.memory, args.dirty,
                 args.subtype, a, b), flush=True)
        guest = cluster.boot_guest(a, memory_mib=args.memory, dirty_mib=args.dirty)
        here = believed = a  # where it runs; where the conductor has it
        print('%-3s %-9s %-13s %9s %9s %12s %14s %17s' % (
            '#', 'method', 'move', 'total_s', 'job_s', 'downtime_ms',
            'libvirt_job_s', 'libvirt_downtime'), flush=True)
        for i, method in enumerate(schedule(args.runs)):
            if method == 'ferryman' and here != believed:
                # A failed Ferryman migration whose guest moved all the same: put
                # it back where the conductor has it (untimed).
                virsh_move(cluster, events, guest, here, believed, args.subtype)
                here = believed
                print('    (moved back to %s with virsh)' % here, flush=True)
            # Each move starts from a guest that has run a while where it is.
            time.sleep(args.settle)
            there = b if here == a else a
            if method == 'ferryman':
                row = ferryman_move(cluster, events, guest, here, there)
                if row['status'] == 'completed':
                    believed = there
            else:
                row = virsh_move(cluster, events, guest, here, there, args.subtype)
            rows.append(row)
            here = _where(cluster, guest)
            print('%-3d %-9s %-13s %9s %9s %12s %14s %17s%s' % (
                i + 1, method, '%s->%s' % (row['from'], row['to']),
                _fmt(row['total_s']), _fmt(row['job_s']),
                _fmt(row['downtime_ms'], spec='%.0f'), _fmt(row['libvirt_job_s']),
                _fmt(row['libvirt_downtime_ms'], spec='%.0f'),
                '' if row['status'] == 'completed' else '  %s (guest now on %s): %s'
                % (row['status'].upper(), here, row['error'])), flush=True)
        events.close()
        cluster.destroy_guest(guest)
    ok = [r for r in rows if r['status'] == 'completed']
    summary = summarize(ok)
    summary['failed'] = [{k: r[k] for k in ('from', 'to', 'status', 'error')}
                         for r in rows if r['status'] != 'completed']
    f, v, r = summary['ferryman'], summary['virsh'], summary['ratio']
    print()
    print('medians over %d completed Ferryman (%d failed) and %d bare virsh migrations '
          '(%.0f s in all):' % (f['n'], len(summary['failed']), v['n'],
                                time.monotonic() - t_start))
    print('  ferryman: request->completed %s s; from its stats: job %s s, downtime %s ms;'
          ' libvirt\'s figures: job %s s, downtime %s ms' % (
              _fmt(f['total_s']), _fmt(f['job_s']), _fmt(f['downtime_ms'], spec='%.0f'),
              _fmt(f['libvirt_job_s']), _fmt(f['libvirt_downtime_ms'], spec='%.0f')))
    print('  virsh:    command %s s; libvirt\'s figures: job %s s, downtime %s ms' % (
        _fmt(v['total_s']), _fmt(v['job_s']), _fmt(v['downtime_ms'], spec='%.0f')))
    print('  ferryman/bare: total %s, downtime %s (from Ferryman\'s stats), %s '
          '(libvirt\'s figures for both)' % (
              _fmt(r['total'], spec='%.2f'), _fmt(r['downtime'], spec='%.2f'),
              _fmt(r['libvirt_downtime'], spec='%.2f')))
    if args.json:
        print(json.dumps({'runs': rows, 'summary': summary}, indent=2))
    if not args.base_dir and not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog='bench-libvirt', description=__doc__.split('\n')[0])
    p.add_argument('-n', '--runs', type=int, default=5,
                   help='migrations of each kind (default 5)')
    p.add_argument('--memory', type=int, default=256, help='guest memory, MiB')
    p.add_argument('--dirty', type=int, default=16,
                   help='MiB the guest rewrites over and over')
    p.add_argument('--subtype', choices=sorted(PAIRS), default=states.FILE_LEVEL,
                   help='file-level: host2 <-> host3 (default); block: host1 <-> host2')
    p.add_argument('--settle', type=float, default=1.0,
                   help='seconds the guest runs where it is before each move')
    p.add_argument('--base-dir', help='where the cluster lives (default: a temporary '
                   'directory, removed afterwards)')
    p.add_argument('--keep', action='store_true', help='keep the temporary directory')
    p.add_argument('--json', action='store_true', help='also print every figure as JSON')
    p.add_argument('--validate-simulator', action='store_true',
                   help='instead: the simulated driver\'s migration model against '
                        'real QEMU for the same guests and links (-n runs per point)')
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error('--runs must be at least 1')
    return run(args)


if __name__ == '__main__':
    sys.exit(main())
