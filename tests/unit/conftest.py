import contextlib
import time
import uuid

import pytest

from ferryman.sim import cloud as sim
from flows import states


@pytest.fixture(scope='session')
def cloud():
    with sim.SimCloud() as c:
        yield c


@pytest.fixture
def doomed(cloud):
    """Uuids of guests to delete after the test, checking they leave no claim
    behind: tests share one cloud, so what one leaks another would meet as
    missing capacity."""
    uuids = []
    yield uuids
    for host in cloud.hosts:
        cloud.cloud.clear_faults(host)
    _destroy(cloud, uuids)


@pytest.fixture
def guest(cloud, doomed):
    """A fresh guest factory: unique names keep tests independent on one cloud."""

    def make(host='compute1', storage='local', **kwargs):
        name = 'g-%s' % uuid.uuid4().hex[:8]
        if storage == 'local':
            # Small disks: some tests copy in real time.
            kwargs.setdefault('disks', [{'name': 'root', 'size_gb': 1,
                                         'format': 'qcow2'}])
        g = cloud.cloud.create_guest(host, name, storage=storage,
                                     data='data of %s' % name, **kwargs)
        cloud.refresh()
        doomed.append(g['uuid'])
        return g

    return make


def _destroy(cloud, uuids, timeout=30.0):
    deadline = time.monotonic() + timeout
    for u in uuids:
        for mig in cloud.db.migrations.list(instance=u):
            if mig['status'] in states.ACTIVE:
                cloud.conductor.manager.runner.wait(
                    mig['id'], max(0.1, deadline - time.monotonic()))
    migrations = {u: cloud.db.migrations.list(instance=u) for u in uuids}
    active = [m['id'] for ms in migrations.values() for m in ms
              if m['status'] in states.ACTIVE]
    assert not active, 'migrations still active after the test: %s' % active
    for u in uuids:
        cloud.cloud.destroy_guest(u)
    cloud.refresh(vanish_after=0)
    held = {}
    for u in uuids:
        # A migration in error keeps its guest (and claims) for an operator.
        if any(m['status'] == states.ERROR for m in migrations[u]):
            continue
        for consumer in [u] + [m['id'] for m in migrations[u]]:
            held[consumer] = (cloud.db.allocations.list(consumer=consumer) +
                              cloud.db.allocations.nested(consumer=consumer))
    leaked = {c: a for c, a in held.items() if a}
    assert not leaked, 'claims left after the test: %s' % leaked


@pytest.fixture
def real_time(cloud):
    """compute1 copies in real time: long enough to be watched and steered."""
    with _overriding(cloud, [('time_scale', 1.0, 'fake')]):
        yield


@pytest.fixture
def stuck(cloud, guest):
    """Guests whose copy runs until someone ends it: a panda (never paused) on
    a compute1 that forbids post-copy and auto-converge, dirtying faster than the
    link, copied in real time (the policy's timeouts are then minutes away)."""
    with _overriding(cloud, [('allow_post_copy', False, 'compute'),
                             ('allow_auto_converge', False, 'compute'),
                             ('time_scale', 1.0, 'fake')]):
        def make(**kwargs):
            kwargs.setdefault('memory_mb', 1024)
            return guest('compute1', 'local', dirty_rate_mibps=5000.0,
                         sla_class='panda', **kwargs)
        yield make


@contextlib.contextmanager
def _overriding(cloud, overrides):
    agent = cloud.agents['compute1'].conf
    for name, value, group in overrides:
        agent.set_override(name, value, group=group)
    cloud.refresh()
    try:
        yield
    finally:
        for name, _value, group in overrides:
            agent.clear_override(name, group=group)
        cloud.refresh()


# What the conductor asks agents to remove before switch-over.
UNDO_STEPS = ('delete_local_disks', 'disconnect_volumes', 'unplug_networking',
              'abort_migration')


@pytest.fixture
def undo_calls(cloud, monkeypatch):
    """The undo steps the conductor asks of agents during the test, as (step,
    host, guest uuid); each call still goes through."""
    calls = []
    compute = cloud.conductor.manager.compute
    for name in UNDO_STEPS:
        def spy(host, what, *args, _real=getattr(compute, name), _name=name,
                **kwargs):
            calls.append((_name, host, what['uuid'] if isinstance(what, dict)
                          else what))
            return _real(host, what, *args, **kwargs)
        monkeypatch.setattr(compute, name, spy)
    return calls


@pytest.fixture
def cli_conf(tmp_path, cloud):
    """A configuration file for the ferryman CLI to reach the shared cloud."""
    path = tmp_path / 'ferryman.conf'
    path.write_text('[DEFAULT]\ntransport_url = %s\n[oslo_messaging_rabbit]\n'
                    'heartbeat_timeout_threshold = 0\n[auth]\noperator_key_file = %s\n'
                    % (cloud.overrides['transport_url'], cloud.operator_key('cli')))
    return str(path)
