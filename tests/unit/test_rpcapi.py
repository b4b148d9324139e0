"""The RPC clients ask each call for the version that brought it, never more, and
keep their version history in one place, up to the version their servers serve."""

import re

import pytest

from compute_agent import manager as compute_manager
from compute_agent import rpcapi as compute_rpcapi
from conductor import manager as conductor_manager
from conductor import rpcapi as conductor_rpcapi
from ferryman.common import rpc


class _Recorder(object):
    """A client that records the version each call was prepared with."""

    def __init__(self):
        self.calls = []
        self.version = None

    def prepare(self, version=None, **kwargs):
        prepared = _Recorder()
        prepared.calls, prepared.version = self.calls, version
        return prepared

    def can_send_version(self, version):
        return True

    def call(self, ctxt, method, **kwargs):
        self.calls.append((method, self.version))

    cast = call


@pytest.fixture
def recorder(monkeypatch):
    client = _Recorder()
    monkeypatch.setattr(rpc, 'get_client', lambda *a, **kw: client)
    return client


def _history(module):
    return re.findall(r'^\s+(\d+\.\d+) - ', module.__doc__, re.M)


@pytest.mark.parametrize('module,server', [
    (conductor_rpcapi, conductor_manager.ConductorManager),
    (compute_rpcapi, compute_manager.ComputeManager)])
def test_one_history_up_to_the_served_version(module, server):
    history = _history(module)
    assert history[0] == module.BASE_VERSION
    assert history[-1] == module.VERSION
    assert history == sorted(history, key=lambda v: tuple(map(int, v.split('.'))))
    assert server.target.version == module.VERSION


def test_conductor_calls_ask_for_the_version_that_brought_them(recorder):
    api = conductor_rpcapi.ConductorAPI(conf=None)
    api.list_hosts()
    api.get_migration('m')
    api.live_migrate('i')
    api.abort_migration('m')
    api.audit()
    api.drain_host('h')
    api.list_drains()
    api.describe_instances()
    api.force_down('h', True)
    api.live_migrate('i', request_id='req-1')
    api.list_refused_requests('i')
    api.evacuate('i')
    assert recorder.calls == [
        ('list_hosts', '1.0'), ('get_migration', '1.0'), ('live_migrate', '1.1'),
        ('abort_migration', '1.1'), ('audit', '1.2'), ('drain_host', '1.3'),
        ('list_drains', '1.3'), ('describe_instances', '1.4'),
        ('force_down', '1.5'), ('live_migrate', '1.6'),
        ('list_refused_requests', '1.6'), ('evacuate', '1.7')]
