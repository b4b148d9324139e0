import contextlib
import uuid

import pytest

from ferryman import local


@pytest.fixture(scope='session')
def cloud():
    with local.LocalCloud() as c:
        yield c


@pytest.fixture
def guest(cloud):
    """A fresh guest factory: unique names keep tests independent on one cloud."""
    made = []

    def make(host='compute1', storage='local', **kwargs):
        name = 'g-%s' % uuid.uuid4().hex[:8]
        if storage == 'local':
            # Small disks: some tests copy in real time.
            kwargs.setdefault('disks', [{'name': 'root', 'size_gb': 1,
                                         'format': 'qcow2'}])
        g = cloud.cloud.create_guest(host, name, storage=storage,
                                     data='data of %s' % name, **kwargs)
        cloud.refresh()
        made.append(g)
        return g

    yield make
    for host in cloud.hosts:
        cloud.cloud.clear_faults(host)


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
