"""ferryman-bench drain: many hosts drained at once by one conductor.

One conductor in this process and ``hosts`` simulated agents (zero-length
copies): over RabbitMQ the agents run in ``agent_processes`` processes of their
own, so this process's CPU and RSS are the conductor's; over the in-process
transport they share this process.
The guests are spread over the first half of the hosts; every one of those hosts
is drained at once, so each guest is live-migrated once, scheduled onto the other
half, under the drain limits (per host ``max_parallel``, in the cluster
``max_cluster``). Printed: migrations orchestrated per second (completed over the
wall time from the first drain request to the last completion), median and p99
time from request to completed, the conductor's CPU seconds and peak RSS, the
agents' CPU seconds, and an overcommit check: no provider (host, NUMA cell, PCI
device) holds more than its capacity, every guest is on exactly one host, the
one on record, and ``ferryman audit`` finds nothing.
"""

import collections
import contextlib
import datetime
import json
import resource
import statistics
import time

from conductor import drain as host_drain
from conductor import placement
from conductor.db import api as db_api
from ferryman.bench import transport as bench_transport
from ferryman.common import exception
from ferryman.common import validation
from ferryman.sim import cloud as sim
from flows import states


def _parse(ts):
    return datetime.datetime.fromisoformat(ts.rstrip('Z'))


def _percentile(values, fraction):
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def overcommit(db):
    """Providers holding more than they can: [(provider, resource, used, cap)]."""
    out = []
    for host in db.list_hosts():
        for r in placement.RESOURCES:
            cap = placement.capacity(host, r)
            if host['used'][r] > cap:
                out.append((host['name'], r, host['used'][r], cap))
        for p in host['providers']:
            for klass, used in p['used'].items():
                cap = (placement.cell_capacity(host, p, klass)
                       if p['kind'] == placement.NUMA else p['inventory'].get(klass, 0))
                if used > cap:
                    out.append((p['name'], klass, used, cap))
    return out


def _misplaced(cloud, uuids):
    """Guests not running on exactly the one host the database names."""
    where = collections.defaultdict(list)
    for host in cloud.cloud.hosts():
        for uuid, guest in cloud.cloud.load(host)['guests'].items():
            if guest['power_state'] == 'running':
                where[uuid].append(host)
    return [u for u in uuids
            if where.get(u) != [cloud.db.get_instance(u)['host']]]


def run(hosts=100, guests=1000, max_parallel=2, max_cluster=5, workers=16,
        as_json=False, rabbitmq=False, agent_processes=None, timeout=3600.0):
    if agent_processes is None:
        agent_processes = 2 if rabbitmq else 0
    validation.whole_number('agent_processes', agent_processes, 0)
    if agent_processes and not rabbitmq:
        raise exception.InvalidArgument(
            name='agent_processes', value=agent_processes,
            reason='agents in other processes need RabbitMQ (--rabbitmq)')
    validation.whole_number('hosts', hosts, 2)
    validation.whole_number('guests', guests)
    host_drain.validate_max_parallel(max_parallel)
    validation.whole_number('max_cluster', max_cluster)
    validation.whole_number('workers', workers)
    names = ['bench%03d' % i for i in range(hosts)]
    sources = names[:(hosts + 1) // 2]
    overrides = {'fake.time_scale': 0.0, 'conductor.monitor_interval': 0.001,
                 'conductor.workers': workers,
                 'conductor.max_outbound_per_host': max_parallel,
                 'conductor.drain_max_cluster': max_cluster,
                 # Passes come when a migration ends (and every second).
                 'conductor.drain_interval': 1.0,
                 # A hundred agents in one process: a few RPC workers each, not
                 # oslo.messaging's 64 (thousands of threads load the machine).
                 'executor_thread_pool_size': 4,
                 # Agents report when told to (refresh), not on a timer.
                 'conductor.host_down_after': 10 ** 6,
                 # One flow per guest: the reaper has nothing to find.
                 'conductor.reaper_interval': 3600.0}
    with contextlib.ExitStack() as stack:
        transport = bench_transport.use(stack, overrides, rabbitmq)
        cloud = stack.enter_context(sim.SimCloud(
            hosts=dict.fromkeys(names), overrides=overrides,
            agent_processes=agent_processes))
        made = []
        for i in range(guests):
            host = sources[i % len(sources)]
            made.append(cloud.cloud.create_guest(
                host, 'b%05d' % i, memory_mb=1024, vcpus=1, storage='volume',
                dirty_rate_mibps=0.0)['uuid'])
        cloud.refresh()
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        agents_cpu0 = cloud.pool.cpu_s() if cloud.pool else 0.0
        started, started_at = time.monotonic(), db_api.utcnow()
        drains = [cloud.api.drain_host(h, max_parallel=max_parallel)['id']
                  for h in sources]
        deadline = started + timeout
        ours = set(drains)
        while True:
            # One call a second: polling each drain in a tight loop made the
            # conductor serve the benchmark more than it orchestrated.
            ends = [d for d in cloud.api.list_drains() if d['id'] in ours]
            if all(d['status'] != 'running' for d in ends):
                break
            if time.monotonic() > deadline:
                raise exception.FerrymanError('drains not done in %s s' % timeout)
            time.sleep(1.0)
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        agents_cpu = (cloud.pool.cpu_s() - agents_cpu0) if cloud.pool else None
        migs = [m for m in cloud.db.list_migrations() if m['importance'] == 'high']
        done = [m for m in migs if m['status'] == states.COMPLETED]
        # To the last completion, as recorded: not to the poll that noticed it.
        # (On the database's clock, the one its times are recorded by.)
        wall = (max([_parse(m['updated_at']) for m in migs] or [db_api.utcnow()])
                - started_at).total_seconds()
        latency = [(_parse(m['updated_at']) - _parse(m['created_at'])).total_seconds()
                   for m in done]
        over = overcommit(cloud.db)
        misplaced = _misplaced(cloud, made)
        violations = cloud.conductor.manager.audit({})['violations']
        failed = collections.Counter(
            g['error'] for d in ends for g in d['guests'].values()
            if g['status'] == host_drain.FAILED)
    report = {
        'transport': transport, 'hosts': hosts, 'guests': guests,
        'drained_hosts': len(sources), 'max_parallel_per_host': max_parallel,
        'max_cluster': max_cluster, 'workers': workers,
        'agent_processes': agent_processes,
        'migrations_completed': len(done), 'migrations_failed': len(migs) - len(done),
        'guests_not_moved': sum(failed.values()),
        'wall_s': wall,
        'migrations_per_s': len(done) / wall if wall else None,
        'request_to_completed_s': {
            'median': statistics.median(latency) if latency else None,
            'p99': _percentile(latency, 0.99)},
        'cpu_s': (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime -
                                                        usage0.ru_stime),
        'peak_rss_mb': usage1.ru_maxrss / 1024.0,
        'agents_cpu_s': agents_cpu,
        'overcommitted_providers': [list(o) for o in over],
        'guests_misplaced': len(misplaced),
        'audit_violations': len(violations),
        'failures': dict(failed.most_common(5)),
    }
    report['ok'] = (not over and not misplaced and not violations and
                    len(done) == guests)
    if as_json:
        print(json.dumps(report, indent=2))
        return report
    print('drain of %d of %d hosts, %d guests, at most %d per host and %d in the '
          'cluster, %d flow workers, zero-length copies, %s, agents %s' % (
              len(sources), hosts, guests, max_parallel, max_cluster, workers,
              transport, 'in %d processes of their own' % agent_processes
              if agent_processes else 'in the conductor\'s process'))
    print('  migrations completed   %d (failed %d, guests not moved %d)' % (
        len(done), report['migrations_failed'], report['guests_not_moved']))
    print('  wall time              %.1f s' % wall)
    print('  orchestrated           %.1f migrations/s' % report['migrations_per_s'])
    lat = report['request_to_completed_s']
    if latency:
        print('  request -> completed   median %.3f s, p99 %.3f s' % (
            lat['median'], lat['p99']))
    who = 'conductor' if agent_processes else 'conductor + agents'
    print('  CPU, %-19s%.1f s' % (who, report['cpu_s']))
    print('  peak RSS, %-14s%.0f MiB' % (who, report['peak_rss_mb']))
    if agents_cpu is not None:
        print('  CPU, agents            %.1f s' % agents_cpu)
    print('  overcommitted providers %d, guests misplaced %d, audit violations %d'
          % (len(over), len(misplaced), len(violations)))
    for text, n in failed.most_common(5):
        print('  could not move (%d): %s' % (n, text))
    print('  %s' % ('OK' if report['ok'] else 'NOT OK'))
    return report
