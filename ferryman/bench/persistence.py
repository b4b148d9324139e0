"""ferryman-bench persistence: what durable orchestration costs over the bare RPC
calls a migration makes, measured side by side in one run.

Three ways to move the same guest (simulated driver, zero-length copy, one
conductor and its agents in one process), alternating, N times each:
- durable: the conductor's own path: the request's checks, then the flow saved in
  SQL as it runs, with its task history, on the runner's thread pool;
- in-memory: the same request and the same flow on the same pool, on an engine
  without persistence and without task history;
- bare: the agent RPC calls a file-level migration needs, in a plain loop, no
  engine, no database.
All three call the conductor's manager directly (no RPC to the conductor), so the
only difference between durable and in-memory is persistence. Last, with the
cloud stopped, TaskFlow's serial engine alone runs as many no-op tasks as the
flow has: the floor every engine-driven flow pays, against which the 1.2x goal
can be judged.

The transport is the in-process one by default. Its listeners poll without
sleeping, so they compete with the conductor's own Python for the interpreter
lock, and everything CPU-bound (engine, SQL) costs several times what it costs in
a conductor on RabbitMQ. ``--rabbitmq`` runs the same benchmark over a private
RabbitMQ node started for the run.
"""

import contextlib
import json
import statistics
import time
import uuid

import sqlalchemy as sa
import taskflow.engines
from taskflow.patterns import linear_flow
from taskflow import task

import flows
from ferryman.bench import transport as bench_transport
from ferryman.common import exception
from ferryman.common import validation
from ferryman.common import vocabulary as vocab
from ferryman.sim import cloud as sim
from flows.tasks import base as task_base

MODES = ('bare', 'in-memory', 'durable')


class _Counter(object):
    """SQL statements and commits on the conductor's database engine."""

    def __init__(self, engine):
        self.statements = self.commits = 0
        sa.event.listen(engine, 'before_cursor_execute', self._statement)
        sa.event.listen(engine, 'commit', self._commit)

    def _statement(self, *args, **kwargs):
        self.statements += 1

    def _commit(self, *args, **kwargs):
        self.commits += 1


def _bare(cloud, guest, source, destination):
    """The agent calls a file-level migration needs, and nothing else: the
    request's storage probe, the flow's checks, preparation, copy and finish.
    (The flow also asks for the job before starting it, so that a resumed flow
    never starts a copy twice: that call is a cost of resumability, not of the
    migration, and is left out here.)"""
    compute = cloud.conductor.manager.compute
    src = cloud.db.hosts.get(source)
    info = {k: src[k] for k in ('hypervisor_type', 'cpu_model', 'cpu_features')}
    for _probe in range(2):
        token = uuid.uuid4().hex  # what the conductor sends (agents check it)
        compute.check_destination(destination, guest, info, token)
        compute.check_source(source, guest['uuid'], token)
        compute.remove_probe(destination, token)
    compute.plug_networking(destination, guest)
    compute.start_migration(source, guest, destination, vocab.FILE_LEVEL, {})
    while compute.get_migration_job(source, guest['uuid'])['status'] != vocab.JOB_COMPLETED:
        time.sleep(cloud.conductor_conf.conductor.monitor_interval)
    compute.post_migration_source(source, guest, vocab.FILE_LEVEL)
    compute.post_migration_destination(destination, guest, vocab.FILE_LEVEL)


def _in_memory(cloud, name, destination):
    """The conductor's request and flow, unsaved, on the runner's own pool."""
    manager = cloud.conductor.manager
    runner = manager.runner
    real_submit = runner.submit
    futures = []

    def run_unsaved(migration, store):
        flow = task_base.bind(flows.build(migration['subtype']), runner.services)
        engine = taskflow.engines.load(flow, store=store, engine='serial')
        futures.append(runner.pool.executor.submit(engine.run))
    runner.submit = run_unsaved
    try:
        mig = manager.live_migrate({}, name, host=destination)
    finally:
        runner.submit = real_submit
    futures[0].result()
    return mig['id']


def _durable(cloud, name, destination):
    manager = cloud.conductor.manager
    mig = manager.live_migrate({}, name, host=destination)
    manager.runner.wait(mig['id'])
    return mig['id']


class _Noop(task.Task):
    def execute(self):
        return None


def engine_floor_ms(tasks, runs):
    """Median CPU ms to load and run a serial engine over ``tasks`` no-op tasks:
    what TaskFlow itself costs a flow of that size, with no RPC and no database."""
    samples = []
    for i in range(runs + 3):
        flow = linear_flow.Flow('floor').add(*[_Noop('t%d' % n) for n in range(tasks)])
        cpu = time.process_time()
        taskflow.engines.load(flow, engine='serial').run()
        if i >= 3:  # the first runs import and warm caches
            samples.append(time.process_time() - cpu)
    return statistics.median(samples) * 1000.0


def _measure(cloud, migrations):
    # A guest on the shared pair with nothing to copy: the flow is all overhead.
    guest = cloud.cloud.create_guest('compute2', 'bench', memory_mb=1,
                                     disks=[], dirty_rate_mibps=0.0)
    cloud.refresh()
    hosts = ['compute2', 'compute3']
    counter = _Counter(cloud.db.engine)
    timings = {m: [] for m in MODES}
    cpu_times = {m: [] for m in MODES}
    sql = {m: [0, 0] for m in MODES}
    # One unmeasured round first: connections, reply queues, statement caches.
    for i in range((migrations + 1) * len(MODES)):
        mode = MODES[i % len(MODES)]
        if i % len(MODES) == 0:
            # Agents report only when told to here: keep every host up however
            # long a loaded machine makes the run (untimed).
            cloud.refresh()
        source = cloud.db.instances.get('bench')['host']
        destination = hosts[1 - hosts.index(source)]
        statements, commits = counter.statements, counter.commits
        cpu = time.process_time()
        started = time.perf_counter()
        if mode == 'durable':
            mig_id = _durable(cloud, 'bench', destination)
        elif mode == 'in-memory':
            mig_id = _in_memory(cloud, 'bench', destination)
        else:
            _bare(cloud, guest, source, destination)
            mig_id = None
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        if i >= len(MODES):
            timings[mode].append(elapsed)
            cpu_times[mode].append(cpu)
            sql[mode][0] += counter.statements - statements
            sql[mode][1] += counter.commits - commits
        if mig_id is None:
            # The bare path moved the guest behind the database's back.
            _record_move(cloud, guest['uuid'], destination)
        else:
            status = cloud.db.migrations.get(mig_id)['status']
            if status != vocab.COMPLETED:
                raise exception.FerrymanError(
                    'benchmark migration %s (%s) ended %s' % (mig_id, mode, status))
    return timings, cpu_times, {m: (s / migrations, c / migrations)
                                for m, (s, c) in sql.items()}


def run(migrations=20, as_json=False, rabbitmq=False):
    validation.whole_number('migrations', migrations)
    overrides = {'fake.time_scale': 0.0, 'conductor.monitor_interval': 0.001}
    with contextlib.ExitStack() as stack:
        transport = bench_transport.use(stack, overrides, rabbitmq)
        cloud = stack.enter_context(sim.SimCloud(overrides=overrides))
        tasks = sum(1 for _ in flows.iter_tasks(flows.build(vocab.FILE_LEVEL)))
        timings, cpu_times, sql = _measure(cloud, migrations)
    # Measured with the cloud stopped: nothing else runs in the process.
    floor = engine_floor_ms(tasks, max(migrations, 10))
    report = {'transport': transport, 'migrations_per_mode': migrations,
              'tasks_per_flow': tasks, 'cpu_engine_alone_ms': floor,
              'min_ms': {m: min(v) * 1000.0 for m, v in timings.items()},
              'sql_per_migration': {m: {'statements': s, 'commits': c}
                                    for m, (s, c) in sql.items()}}
    # Wall time is what a caller waits; CPU time (every thread of the process:
    # conductor, agents, RPC) is what the work costs, and barely moves when
    # other processes load the machine.
    for clock, samples in (('', timings), ('cpu_', cpu_times)):
        medians = {m: statistics.median(v) * 1000.0 for m, v in samples.items()}
        bare = medians['bare']
        report.update({
            clock + 'median_ms': medians,
            clock + 'overhead_ms_per_migration': {
                m: medians[m] - bare for m in ('durable', 'in-memory')},
            clock + 'ratio_to_bare': {m: medians[m] / bare if bare else None
                                      for m in ('durable', 'in-memory')},
            clock + 'persistence_ms_per_task':
                (medians['durable'] - medians['in-memory']) / tasks,
        })
    if as_json:
        print(json.dumps(report, indent=2))
        return report
    print('file-level migration, zero-length copy, %s, %d runs per mode, %d tasks '
          'per flow; medians per migration' % (transport, migrations, tasks))
    print('  %-10s %9s %8s %11s %7s | %8s %11s %7s | %s' % (
        'mode', 'wall ms', 'min', 'over bare', 'x bare', 'CPU ms', 'over bare',
        'x bare', 'SQL statements/commits'))
    for mode in MODES:
        cells = []
        for clock in ('', 'cpu_'):
            if mode == 'bare':
                cells += ['', '']
            else:
                cells += ['%+.1f' % report[clock + 'overhead_ms_per_migration'][mode],
                          '%.2fx' % report[clock + 'ratio_to_bare'][mode]]
        print('  %-10s %9.1f %8.1f %11s %7s | %8.1f %11s %7s | %4.0f/%3.0f' % (
            mode, report['median_ms'][mode], report['min_ms'][mode], cells[0],
            cells[1], report['cpu_median_ms'][mode], cells[2], cells[3],
            sql[mode][0], sql[mode][1]))
    print('  persistence per task (durable - in-memory, /%d): %.2f ms wall, '
          '%.2f ms CPU' % (tasks, report['persistence_ms_per_task'],
                           report['cpu_persistence_ms_per_task']))
    print('  TaskFlow alone (serial engine, %d no-op tasks, no RPC, no database): '
          '%.1f ms CPU; 1.2x of bare leaves %.1f ms for all overhead' % (
              tasks, floor, 0.2 * report['median_ms']['bare']))
    return report


def _record_move(cloud, uuid, destination):
    from conductor.db import models
    with cloud.db.session.begin() as s:
        inst = s.get(models.Instance, uuid)
        s.query(models.Allocation).filter_by(consumer=uuid).update(
            {'host': destination})
        inst.host = destination
