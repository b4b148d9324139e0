import pytest

from ferryman.testing.cluster import Cluster


@pytest.fixture(scope='session')
def cluster(tmp_path_factory):
    """RabbitMQ, a conductor and three agents as processes, shared by the session:
    starting them takes longer than all the tests that use them."""
    with Cluster(tmp_path_factory.mktemp('cluster')) as c:
        yield c


@pytest.fixture(autouse=True)
def _clear_faults(request):
    yield
    # Only where a test used the cluster: the others must not start it.
    if 'cluster' in request.fixturenames:
        c = request.getfixturevalue('cluster')
        for host in c.hosts:
            c.cloud.clear_faults(host)
