"""tools/bench-libvirt: Ferryman against bare ``virsh migrate`` on real QEMU guests.

One busy guest (256 MiB, dirtying 16 MiB by default) goes back and forth between two
test hosts of a :class:`~ferryman.testing.libvirt_cluster.LibvirtCluster`, N times
through Ferryman (conductor RPC: request to ``completed``) and N times with

    virsh -c SRC migrate --live --p2p --persistent --undefinesource DOMAIN DEST \\
        --migrateuri tcp://127.0.0.1

in the same run, in turns. Ferryman's moves go in pairs (there and back) because
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
import time

import libvirt

from ferryman.testing.libvirt_cluster import LibvirtCluster
from flows import states

PAIRS = {'file-level': ('host2', 'host3'), 'block': ('host1', 'host2')}


def _completed_job(cluster, host, guest):
    """libvirt's own figures of the last migration in, from the destination."""
    dom = cluster.domain(host, guest)
    try:
        stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED |
                             libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
    except libvirt.libvirtError:
        stats = {}
    if not stats:
        return None, None
    return stats.get('time_elapsed', 0) / 1000.0, stats.get('downtime')


def ferryman_move(cluster, guest, src, dst, poll=0.05):
    t0 = time.monotonic()
    mig = cluster.api.live_migrate(guest.uuid, host=dst)
    while mig['status'] not in states.TERMINAL:
        time.sleep(poll)
        mig = cluster.api.get_migration(mig['id'])
    wall = time.monotonic() - t0
    if mig['status'] != states.COMPLETED:
        raise RuntimeError('Ferryman migration %s %s: %s' % (
            mig['id'], mig['status'], mig.get('error')))
    stats = mig.get('stats') or {}
    job_s, downtime = _completed_job(cluster, dst, guest)
    return {'method': 'ferryman', 'from': src, 'to': dst, 'total_s': wall,
            'job_s': stats.get('total_time_s'), 'downtime_ms': stats.get('downtime_ms'),
            'libvirt_job_s': job_s, 'libvirt_downtime_ms': downtime,
            'migration': mig['id']}


def virsh_move(cluster, guest, src, dst, subtype):
    s, d = cluster.hosts[src], cluster.hosts[dst]
    argv = ['virsh', '-c', s.uri, 'migrate', '--live', '--p2p', '--persistent',
            '--undefinesource', guest.name, d.uri, '--migrateuri', 'tcp://127.0.0.1']
    if subtype == 'block':
        # What Ferryman's create_local_disks does, untimed here.
        _create_like(cluster, src, dst, guest.disk)
        argv += ['--copy-storage-inc', '--migrate-disks', 'vda']
    t0 = time.monotonic()
    res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=600)
    wall = time.monotonic() - t0
    if res.returncode:
        raise RuntimeError('%s failed: %s' % (' '.join(argv), res.stderr.strip()))
    if subtype == 'block':
        # What Ferryman's post_migration_source does, untimed here.
        shutil.rmtree(cluster.hosts[src].path(os.path.dirname(guest.disk)),
                      ignore_errors=True)
    job_s, downtime = _completed_job(cluster, dst, guest)
    return {'method': 'virsh', 'from': src, 'to': dst, 'total_s': wall,
            'job_s': job_s, 'downtime_ms': downtime,
            'libvirt_job_s': job_s, 'libvirt_downtime_ms': downtime}


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


def run(args):
    base = args.base_dir or tempfile.mkdtemp(prefix='ferryman-bench-')
    a, b = PAIRS[args.subtype]
    rows = []
    t_start = time.monotonic()
    with LibvirtCluster(base) as cluster:
        print('cluster up in %.1f s (%s); guest %d MiB dirtying %d MiB; %s %s <-> %s'
              % (cluster.timings['cluster'], base, args.memory, args.dirty,
                 args.subtype, a, b), flush=True)
        # Writable for block (libvirt copies it); read-only on the shared directory.
        guest = cluster.boot_guest(a, memory_mib=args.memory, dirty_mib=args.dirty,
                                   readonly=args.subtype != 'block')
        here = a
        print('%-3s %-9s %-13s %9s %9s %12s %14s %18s' % (
            '#', 'method', 'move', 'total_s', 'job_s', 'downtime_ms',
            'libvirt_job_s', 'libvirt_downtime'), flush=True)
        for i, method in enumerate(schedule(args.runs)):
            # Each move starts from a guest that has run a while where it is.
            time.sleep(args.settle)
            there = b if here == a else a
            if method == 'ferryman':
                row = ferryman_move(cluster, guest, here, there)
            else:
                row = virsh_move(cluster, guest, here, there, args.subtype)
            rows.append(row)
            here = there
            print('%-3d %-9s %-13s %9s %9s %12s %14s %18s' % (
                i + 1, method, '%s->%s' % (row['from'], row['to']),
                _fmt(row['total_s']), _fmt(row['job_s']),
                _fmt(row['downtime_ms'], spec='%.0f'), _fmt(row['libvirt_job_s']),
                _fmt(row['libvirt_downtime_ms'], spec='%.0f')), flush=True)
        cluster.destroy_guest(guest)
    summary = summarize(rows)
    f, v, r = summary['ferryman'], summary['virsh'], summary['ratio']
    print()
    print('medians over %d Ferryman and %d bare virsh migrations (%.0f s in all):'
          % (f['n'], v['n'], time.monotonic() - t_start))
    print('  ferryman: request->completed %s s, job (stats) %s s, downtime (stats) '
          '%s ms; libvirt completed job %s s, downtime %s ms' % (
              _fmt(f['total_s']), _fmt(f['job_s']), _fmt(f['downtime_ms'], spec='%.0f'),
              _fmt(f['libvirt_job_s']), _fmt(f['libvirt_downtime_ms'], spec='%.0f')))
    print('  virsh:    command %s s, libvirt completed job %s s, downtime %s ms' % (
        _fmt(v['total_s']), _fmt(v['job_s']), _fmt(v['downtime_ms'], spec='%.0f')))
    print('  ferryman/bare: total %s, downtime %s (libvirt\'s downtime figures: %s)' % (
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
    p.add_argument('--subtype', choices=sorted(PAIRS), default='file-level',
                   help='file-level: host2 <-> host3 (default); block: host1 <-> host2')
    p.add_argument('--settle', type=float, default=1.0,
                   help='seconds the guest runs where it is before each move')
    p.add_argument('--base-dir', help='where the cluster lives (default: a temporary '
                   'directory, removed afterwards)')
    p.add_argument('--keep', action='store_true', help='keep the temporary directory')
    p.add_argument('--json', action='store_true', help='also print every figure as JSON')
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error('--runs must be at least 1')
    return run(args)


if __name__ == '__main__':
    sys.exit(main())
