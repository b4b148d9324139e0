import pytest

from conductor.db import api as db_api
from ferryman.testing.cluster import Cluster


@pytest.fixture(scope='session')
def cluster(tmp_path_factory):
    """RabbitMQ, a conductor and three agents as processes, shared by the session:
    starting them takes longer than all the tests that use them."""
    with Cluster(tmp_path_factory.mktemp('cluster')) as c:
        yield c


@pytest.fixture
def db(cluster):
    """The conductors' database, read directly (the module's own cluster)."""
    database = db_api.Database(cluster.database)
    yield database
    database.engine.dispose()


@pytest.fixture(autouse=True)
def _clear_faults(request):
    yield
    # Only where a test used the cluster: the others must not start it.
    if 'cluster' in request.fixturenames:
        c = request.getfixturevalue('cluster')
        for host in c.hosts:
            c.cloud.clear_faults(host)


@pytest.fixture(scope='module')
def timings(request):
    """Figures a module collects, printed when it ends (even under -q)."""
    t = {}
    yield t
    plugins = request.config.pluginmanager
    tr = plugins.get_plugin('terminalreporter')
    capture = plugins.get_plugin('capturemanager')
    if tr and capture and t:
        with capture.global_and_fixture_disabled():
            tr.write_line('\n%s timings (s): %s' % (
                request.module.__name__.rsplit('.', 1)[-1],
                ', '.join('%s=%.2f' % kv for kv in sorted(t.items()))))
