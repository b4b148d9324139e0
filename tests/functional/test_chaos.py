"""Chaos: for every subtype and every step of its flow, kill -9 a process at that
step (the conductor, the source agent, the destination agent, or the RabbitMQ
broker), restart it as a supervisor would, and check that the migration ends
completed or rolled back within a bound, with the guest on exactly one host,
nothing left on the other, and ``audit`` clean. Prints the table fault x step ->
outcome, and the totals.

Separate processes over a real RabbitMQ, simulated agents. Where a process dies:
- conductor: at the step's EXECUTED point (its work done, its result not yet
  saved), from ``[conductor] crash_file``;
- an agent, at a step it performs: inside the call, after acting and before
  answering (the reply is lost; the conductor's call times out); at a step it does
  not perform: killed by the conductor as the step starts;
- the broker: killed (its whole process group) as the step starts, restarted.
"""

import json
import os
import time
import uuid

import oslo_messaging as messaging
import pytest

import flows
from conductor import rpcapi as conductor_rpcapi
from ferryman.common import conf as ferryman_conf
from ferryman.common import rpc
from ferryman.testing.cluster import Cluster, answering

pytestmark = pytest.mark.functional

TERMINAL = ('completed', 'failed', 'cancelled', 'error')
# Long enough for a restart, short enough to keep the run quick.
RPC_TIMEOUT = 3
BOUND_S = 90

# Where each subtype's guest starts and goes (compute2 and compute3 share storage).
ROUTES = {'block': ('compute1', 'compute2', 'local'),
          'file-level': ('compute2', 'compute3', 'local'),
          'block-storage': ('compute1', 'compute3', 'volume')}

# Steps an agent performs: atom -> (role, agent call, calls of it to let pass
# first). The request's own storage probe makes the first check and remove-probe
# calls; the monitor's first progress call is StartMigration's own check.
AGENT_CALLS = {
    'check-destination': ('destination', 'check_destination', 1),
    'check-source': ('source', 'check_source', 1),
    'remove-probe': ('destination', 'remove_probe', 1),
    'create-local-disks': ('destination', 'create_local_disks', 0),
    'connect-volumes': ('destination', 'connect_volumes', 0),
    'plug-networking': ('destination', 'plug_networking', 0),
    'start-migration': ('source', 'start_migration', 0),
    'monitor-migration': ('source', 'get_migration_job', 1),
    'post-migration-source': ('source', 'post_migration_source', 0),
    'post-migration-destination': ('destination', 'post_migration_destination', 0),
}
FAULTS = ('conductor', 'source', 'destination', 'rabbitmq')
# The broker takes seconds to restart: killed where a call is in flight before
# the copy, while it is watched, and after switch-over, rather than at every step.
BROKER_STEPS = ('start-migration', 'monitor-migration', 'post-migration-destination')


def _steps(subtype):
    return [t.name for t in flows.iter_tasks(flows.build(subtype))]


CASES = [(fault, subtype, step)
         for subtype in ROUTES for step in _steps(subtype) for fault in FAULTS
         if fault != 'rabbitmq' or step in BROKER_STEPS]


@pytest.fixture(scope='module')
def chaos(tmp_path_factory):
    base = tmp_path_factory.mktemp('chaos')
    crash_file = os.path.join(str(base), 'crash.json')
    with Cluster(base, options={
            'DEFAULT': {'rpc_response_timeout': RPC_TIMEOUT},
            'conductor': {'crash_file': crash_file,
                          'agent_unreachable_timeout': 30},
            # Room for every case's guest: none competes for capacity.
            'fake': {'vcpus': 1024}}) as c:
        c.crash_file = crash_file
        conf = ferryman_conf.make_conf(config_files=[], overrides={
            'transport_url': c.rabbit.url, 'rpc_response_timeout': RPC_TIMEOUT,
            'auth.operator_key_file': c.operator_options('test')['operator_key_file']})
        c.api = conductor_rpcapi.ConductorAPI(conf)
        try:
            yield c
        finally:
            # Else its connection retries the stopped broker for the rest of the run.
            rpc.cleanup(conf)


@pytest.fixture(scope='module')
def table(request):
    rows = {}
    yield rows
    tr = request.config.pluginmanager.get_plugin('terminalreporter')
    capture = request.config.pluginmanager.get_plugin('capturemanager')
    if not (tr and capture and rows):
        return
    lines = ['', 'chaos: fault x step -> outcome (seconds from fault to end)']
    width = max(len('%s %s' % (s, st)) for _f, s, st in rows)
    lines.append('%-*s  %s' % (width, 'subtype step', '  '.join(
        '%-22s' % f for f in FAULTS)))
    for subtype in ROUTES:
        for step in _steps(subtype):
            cells = [rows.get((f, subtype, step), '-') for f in FAULTS]
            lines.append('%-*s  %s' % (width, '%s %s' % (subtype, step), '  '.join(
                '%-22s' % cell for cell in cells)))
    outcomes = [r.split()[0] for r in rows.values()]
    lines.append('totals: %d cases: %s' % (len(rows), ', '.join(
        '%s %d' % (o, outcomes.count(o)) for o in sorted(set(outcomes)))))
    with capture.global_and_fixture_disabled():
        for line in lines:
            tr.write_line(line)


def _seed(c, subtype):
    source, _dest, storage = ROUTES[subtype]
    name = 'chaos-%s' % uuid.uuid4().hex[:8]
    guest = c.cloud.create_guest(
        source, name, memory_mb=64, storage=storage, data='data of %s' % name,
        disks=[{'name': 'root', 'size_gb': 1, 'format': 'qcow2'}])
    c.wait_for(lambda: any(i['uuid'] == guest['uuid'] and i['host'] == source
                           for i in c.api.list_instances(host=source)),
               'guest %s reported' % name)
    return guest


def _arm(c, fault, subtype, step):
    """Set the kill up; return the process that will die (a cluster name)."""
    source, dest, _storage = ROUTES[subtype]
    if fault == 'conductor':
        point, victim, name = '%s:EXECUTED' % step, 'self', 'conductor'
    elif fault == 'rabbitmq':
        point, victim, name = '%s:RUNNING' % step, -c.rabbit._proc.pid, 'rabbitmq'
    else:
        name = source if fault == 'source' else dest
        role, call, skip = AGENT_CALLS.get(step, (None, None, 0))
        if role == fault:
            with open(c.fault_file(name), 'w') as f:
                json.dump({call: {'times': 1, 'skip': skip, 'kill': 'after'}}, f)
            return name
        point, victim = '%s:RUNNING' % step, c.procs[name].pid
    with open(c.crash_file, 'w') as f:
        json.dump({point: victim}, f)
    return name


def _disarm(c):
    for path in [c.crash_file] + [c.fault_file(h) for h in c.hosts]:
        if os.path.exists(path):
            os.unlink(path)


def _dead(c, name):
    if name == 'rabbitmq':
        return c.rabbit._proc.poll() is not None
    return c.procs[name].poll() is not None


def _restart(c, name):
    if name == 'rabbitmq':
        c.rabbit.restart()
    else:
        c.procs.pop(name).wait()
        c.restart(name)


def _migration(c, guest_uuid):
    migs = answering(BOUND_S, c.api.list_migrations, instance=guest_uuid)
    return migs[-1] if migs else None


@pytest.mark.parametrize('fault,subtype,step', CASES)
def test_kill_at_step(chaos, table, fault, subtype, step):
    c = chaos
    source, dest, storage = ROUTES[subtype]
    guest = _seed(c, subtype)
    victim = _arm(c, fault, subtype, step)
    try:
        try:
            c.api.live_migrate(guest['name'], host=dest)
        except (messaging.MessagingTimeout, messaging.MessageDeliveryFailure):
            pass  # the reply may be lost to the kill; the migration is found below
        deadline = time.monotonic() + 60
        while not _dead(c, victim):
            assert time.monotonic() < deadline, '%s never died at %s' % (victim, step)
            time.sleep(0.05)
    finally:
        _disarm(c)
    killed = time.monotonic()
    _restart(c, victim)
    while True:
        mig = _migration(c, guest['uuid'])
        if mig and mig['status'] in TERMINAL:
            break
        assert time.monotonic() - killed < BOUND_S, 'migration stuck: %s\n%s' % (
            mig, c.logs())
        time.sleep(0.2)
    took = time.monotonic() - killed
    table[(fault, subtype, step)] = '%s %.1f' % (mig['status'], took)
    assert mig['status'] in ('completed', 'failed'), mig
    where, other = (dest, source) if mig['status'] == 'completed' else (source, dest)
    assert c.cloud.find_guest(guest['uuid']) == {where: 'running'}
    assert c.cloud.leftovers(other, guest['uuid']) == []
    if storage == 'local':
        assert c.cloud.read_disk(where, guest['uuid']) == 'data of %s' % guest['name']
    report = answering(BOUND_S, c.api.audit)
    assert report['violations'] == [], report
