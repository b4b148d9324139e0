"""What the chaos tests stand on: crash points that kill a chosen process at a
step, agent faults that kill the agent around a step, and simulated migration
jobs that outlive their agent as libvirt's do."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from compute_agent import faults
from compute_agent.virt import fake
from conductor import crash
from ferryman.common import conf as ferryman_conf


def _conf(tmp_path, **conductor):
    conf = ferryman_conf.make_conf(config_files=[], overrides={
        'state_path': str(tmp_path), 'fake.time_scale': 1.0,
        'fake.state_dir': str(tmp_path / 'fake')})
    for key, value in conductor.items():
        conf.set_override(key, value, group='conductor')
    return conf


def test_crash_file_kills_the_named_process_at_its_point_only(tmp_path):
    victim = subprocess.Popen(['sleep', '60'])
    try:
        path = tmp_path / 'crash.json'
        path.write_text(json.dumps({'start-migration:EXECUTED': victim.pid}))
        conf = _conf(tmp_path, crash_file=str(path))
        crash.reached(conf, 'start-migration', 'RUNNING')
        crash.reached(conf, 'claim-resources', 'EXECUTED')
        assert victim.poll() is None
        crash.reached(conf, 'start-migration', 'EXECUTED')
        assert victim.wait(5) == -signal.SIGKILL
    finally:
        victim.kill()
        victim.wait()


def test_crash_points_off_or_unreadable_kill_nothing(tmp_path, caplog):
    victim = subprocess.Popen(['sleep', '60'])
    try:
        point = {'start-migration:EXECUTED': victim.pid}
        path = tmp_path / 'crash.json'
        conf = _conf(tmp_path, crash_file=str(path))
        crash.reached(conf, 'start-migration', 'EXECUTED')  # no file yet
        # Half-written by a test: read as nothing, and said so.
        path.write_text(json.dumps(point)[:-1])
        crash.reached(conf, 'start-migration', 'EXECUTED')
        assert 'not a JSON object yet' in caplog.text
        crash.reached(None, 'start-migration', 'EXECUTED')
        time.sleep(0.1)
        assert victim.poll() is None
        # The same conf reads the file again at the next transition: once whole,
        # the point kills (so the calls above had their chance to).
        path.write_text(json.dumps(point))
        crash.reached(conf, 'start-migration', 'EXECUTED')
        assert victim.wait(5) == -signal.SIGKILL
    finally:
        victim.kill()
        victim.wait()


def test_agent_kill_fault_is_consumed_once_and_returned(tmp_path):
    path = str(tmp_path / 'faults.json')
    faults.write_file(path, {'start_migration': {'times': 1, 'skip': 1,
                                                 'kill': 'after'}})
    assert faults.check_file(path, 'start_migration', 'h1') is None  # skipped
    fault = faults.check_file(path, 'start_migration', 'h1')
    assert fault['kill'] == 'after'  # the caller kills once the step acted
    assert faults.check_file(path, 'start_migration', 'h1') is None


def test_agent_kill_before_kills_the_agent(tmp_path):
    path = str(tmp_path / 'faults.json')
    faults.write_file(path, {'plug_networking': {'times': 1, 'skip': 0,
                                                 'kill': 'before'}})
    code = ('from compute_agent import faults; '
            'faults.check_file(%r, "plug_networking", "h1"); print("acted")' % path)
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == -signal.SIGKILL and 'acted' not in res.stdout


def _driver(tmp_path, host, shared):
    conf = _conf(tmp_path)
    conf.set_override('instances_path', str(tmp_path / shared), group='fake')
    d = fake.FakeDriver(conf, host)
    d.init_host()
    return d


_START_AND_HANG = """
import sys, time
from compute_agent.virt import fake
from ferryman.common import conf as ferryman_conf
conf = ferryman_conf.make_conf(config_files=[], overrides={
    'state_path': sys.argv[1], 'fake.time_scale': 1.0,
    'fake.state_dir': sys.argv[1] + '/fake', 'fake.instances_path': sys.argv[2]})
d = fake.FakeDriver(conf, 'h1')
d.init_host()
g = [g for g in d.cloud.guests('h1') if g['name'] == 'g1'][0]
d.start_migration(g, 'h2', 'file-level', {})
print(d.get_migration_job(g['uuid'])['status'], flush=True)
time.sleep(60)
"""


def test_simulated_job_outlives_its_agent(tmp_path):
    _driver(tmp_path, 'h2', 'nfs').plug_networking(
        _driver(tmp_path, 'h1', 'nfs').cloud.create_guest(
            'h1', 'g1', memory_mb=64, dirty_rate_mibps=0.0))
    cloud = fake.FakeCloud(str(tmp_path / 'fake'))
    uuid = cloud.guests('h1')[0]['uuid']
    # A link slow enough that the job still copies when its agent dies.
    with cloud.editing('h1') as state:
        state['info']['bandwidth_mibps'] = 16.0
    agent = subprocess.Popen([sys.executable, '-c', _START_AND_HANG, str(tmp_path),
                              str(tmp_path / 'nfs')], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert agent.stdout.readline().strip() == 'running'
    finally:
        agent.kill()
        agent.wait()
    assert cloud.find_guest(uuid) == {'h1': 'running', 'h2': 'incoming'}
    # The next agent on h1 finds the job in the hypervisor's state, carries on.
    again = _driver(tmp_path, 'h1', 'nfs')
    deadline = time.monotonic() + 30
    while again.get_migration_job(uuid)['status'] == 'running':
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert again.get_migration_job(uuid)['status'] == 'completed'
    assert cloud.find_guest(uuid) == {'h2': 'running'}
    assert cloud.load('h1')['jobs'] == {}


@pytest.mark.parametrize('gone', ['source guest', 'incoming guest'])
def test_a_job_that_ended_unwatched_is_not_adopted(tmp_path, gone):
    src = _driver(tmp_path, 'h1', 'nfs')
    _driver(tmp_path, 'h2', 'nfs')
    guest = src.cloud.create_guest('h1', 'g1', memory_mb=64)
    with src.cloud.editing('h1') as state:
        state['jobs'] = {guest['uuid']: {'destination': 'h2',
                                         'subtype': 'file-level', 'params': {}}}
        if gone == 'source guest':
            del state['guests'][guest['uuid']]
    again = fake.FakeDriver(src.conf, 'h1')
    again.init_host()
    assert again.get_migration_job(guest['uuid']) == {'status': 'none'}
    assert src.cloud.load('h1')['jobs'] == {}
    assert os.path.isdir(str(tmp_path / 'nfs'))
