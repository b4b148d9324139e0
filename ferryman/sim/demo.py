"""ferryman demo: one guest of each storage kind live-migrated in a simulated cloud.

Exits 0 only if all three migrations completed and each guest runs on its
destination alone.
"""

import json

from ferryman.sim import cloud as sim

# Guest, destination: compute1 -> compute2 copies local disks (block), compute2 ->
# compute3 shares the instance directory (file-level); the volume-backed guest gets
# no host and lets the scheduler choose (block-storage).
PLAN = [('batch-1', 'compute2'), ('web-1', 'compute3'), ('db-1', None)]


def run(as_json=False):
    from rich.console import Console
    console = Console()
    results = []
    ok = True
    with sim.SimCloud() as cloud:
        guests = cloud.seed_demo_guests()
        started = [cloud.api.live_migrate(name, host=host) for name, host in PLAN]
        for (name, _host), mig in zip(PLAN, started):
            mig = cloud.wait(mig['id'])
            where = cloud.cloud.find_guest(guests[name]['uuid'])
            placed = where == {mig['destination']: 'running'}
            ok = ok and placed and mig['status'] == 'completed'
            results.append({
                'id': mig['id'], 'instance': name, 'subtype': mig['subtype'],
                'source': mig['source'], 'destination': mig['destination'],
                'status': mig['status'], 'error': mig['error'],
                'runs_on': sorted(where), 'stats': mig['stats'],
                'tasks': cloud.api.get_task_history(mig['id'])})
    if as_json:
        print(json.dumps({'migrations': results, 'ok': ok}, indent=2, default=str))
        return 0 if ok else 1
    from rich.table import Table
    for r in results:
        table = Table(title='%s: %s %s -> %s, %s' % (
            r['instance'], r['subtype'], r['source'], r['destination'], r['status']))
        for col in ('atom', 'state', 'host', 'ms'):
            table.add_column(col)
        for e in r['tasks']:
            table.add_row(e['atom'], e['state'], e['host'] or '', _ms(e))
        console.print(table)
        if r['stats']:
            stats = r['stats']
            console.print('  hypervisor: %.1f s simulated copy, %s ms downtime, '
                          '%.0f MiB sent' % (
                              stats['total_time_s'], stats['downtime_ms'],
                              stats['data_sent_mb']))
        if r['error']:
            console.print('  error: %s' % r['error'])
        console.print('  guest now runs on: %s' % ', '.join(r['runs_on']))
    verdict = ('green', 'All three migrations completed.') if ok else (
        'red', 'Demo FAILED.')
    console.print('[bold %s]%s[/]' % verdict)
    return 0 if ok else 1


def _ms(event):
    if not (event['started_at'] and event['ended_at']):
        return ''
    import datetime
    parse = datetime.datetime.fromisoformat
    delta = parse(event['ended_at'].rstrip('Z')) - parse(event['started_at'].rstrip('Z'))
    return '%.1f' % (delta.total_seconds() * 1000)
