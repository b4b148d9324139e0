"""ferryman bench persistence: what durable orchestration costs over the bare RPC
calls a migration makes, measured side by side in one run.

Three ways to move the same guest (simulated driver, zero-length copy, one process,
in-process transport), alternating, N times each:
- durable: the conductor's own path (flow saved in SQL as it runs, task history);
- in-memory: the same flow on a TaskFlow engine without persistence;
- bare: the same agent RPC calls in a plain loop, no engine, no database.
"""

import json
import statistics
import time

import taskflow.engines

import flows
from ferryman import local


def _bare(cloud, guest, source, destination):
    """The agent calls a file-level migration makes, and nothing else: the
    request's storage probe and the flow's checks, preparation, copy, finish."""
    compute = cloud.conductor.manager.compute
    src = cloud.db.get_host(source)
    info = {k: src[k] for k in ('hypervisor_type', 'cpu_model', 'cpu_features')}
    for probe in range(2):
        token = 'bench%d' % probe
        compute.check_destination(destination, guest, info, token)
        compute.check_source(source, guest['uuid'], token)
        compute.remove_probe(destination, token)
    compute.plug_networking(destination, guest)
    compute.start_migration(source, guest, destination, 'file-level', {})
    while compute.get_migration_job(source, guest['uuid'])['status'] != 'completed':
        time.sleep(cloud.conductor_conf.conductor.monitor_interval)
    compute.post_migration_source(source, guest, 'file-level')
    compute.post_migration_destination(destination, guest, 'file-level')


def _in_memory(cloud, name, destination):
    """The conductor's flow, unsaved: the request's checks, then the engine."""
    manager = cloud.conductor.manager
    real_submit = manager.runner.submit
    captured = {}

    def run_here(migration, store):
        captured['store'] = store
        engine = taskflow.engines.load(flows.build(migration['subtype']),
                                       store=store, engine='serial')
        engine.run()
    manager.runner.submit = run_here
    try:
        manager.live_migrate({}, name, host=destination)
    finally:
        manager.runner.submit = real_submit
    return captured['store']['migration_id']


def _durable(cloud, name, destination):
    mig = cloud.api.live_migrate(name, host=destination)
    return cloud.wait(mig['id'])['id']


def run(migrations=20, as_json=False):
    overrides = {'fake.time_scale': 0.0, 'conductor.monitor_interval': 0.001}
    timings = {'durable': [], 'in-memory': [], 'bare': []}
    with local.LocalCloud(overrides=overrides) as cloud:
        # A guest on the shared pair with nothing to copy: the flow is all overhead.
        guest = cloud.cloud.create_guest('compute2', 'bench', memory_mb=1,
                                         disks=[], dirty_rate_mibps=0.0)
        cloud.refresh()
        hosts = ['compute2', 'compute3']
        tasks = sum(1 for _ in flows.iter_tasks(flows.build('file-level')))
        for i in range(migrations * 3):
            mode = ('durable', 'in-memory', 'bare')[i % 3]
            source = cloud.db.get_instance('bench')['host']
            destination = hosts[1 - hosts.index(source)]
            started = time.perf_counter()
            if mode == 'durable':
                mig_id = _durable(cloud, 'bench', destination)
            elif mode == 'in-memory':
                mig_id = _in_memory(cloud, 'bench', destination)
            else:
                _bare(cloud, guest, source, destination)
                # The bare path moved the guest behind the database's back.
                _record_move(cloud, guest['uuid'], destination)
                mig_id = None
            timings[mode].append(time.perf_counter() - started)
            if mig_id is not None:
                status = cloud.api.get_migration(mig_id)['status']
                assert status == 'completed', (mode, status)
    medians = {m: statistics.median(v) * 1000.0 for m, v in timings.items()}
    bare = medians['bare']
    report = {
        'migrations_per_mode': migrations, 'tasks_per_flow': tasks,
        'median_ms': medians,
        'overhead_ms_per_migration': {m: medians[m] - bare
                                      for m in ('durable', 'in-memory')},
        'ratio_to_bare': {m: medians[m] / bare for m in ('durable', 'in-memory')},
        'persistence_ms_per_task': (medians['durable'] - medians['in-memory']) / tasks,
    }
    if as_json:
        print(json.dumps(report, indent=2))
        return report
    print('file-level migration, zero-length copy, %d runs per mode, %d tasks per '
          'flow (medians)' % (migrations, tasks))
    for mode in ('bare', 'in-memory', 'durable'):
        extra = '' if mode == 'bare' else '  (+%.1f ms, %.2fx bare)' % (
            report['overhead_ms_per_migration'][mode], report['ratio_to_bare'][mode])
        print('  %-10s %8.1f ms%s' % (mode, medians[mode], extra))
    print('  persistence per task: %.2f ms' % report['persistence_ms_per_task'])
    return report


def _record_move(cloud, uuid, destination):
    from conductor.db import models
    with cloud.db.session.begin() as s:
        inst = s.get(models.Instance, uuid)
        s.query(models.Allocation).filter_by(consumer=uuid).update(
            {'host': destination})
        inst.host = destination
