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
        g = cloud.cloud.create_guest(host, name, storage=storage,
                                     data='data of %s' % name, **kwargs)
        cloud.refresh()
        made.append(g)
        return g

    yield make
    for host in cloud.hosts:
        cloud.cloud.clear_faults(host)
