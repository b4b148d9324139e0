"""`ferryman sandbox` tried as a new user would: started as a process, driven by
the unmodified `openstack` client with the environment it prints and by
`ferryman --config-file` with the file it prints, then interrupted: every process
it started is gone and the temporary directory it used is empty again."""

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.functional

BIN = os.path.dirname(sys.executable)


def _sessions():
    """{session id: [pids]} of every process on the machine, from /proc."""
    out = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp, session.
        out.setdefault(int(fields[3]), []).append(int(entry))
    return out


def _read_until(proc, marker, timeout):
    """stdout lines up to and including the one starting with ``marker``."""
    lines, deadline = [], time.monotonic() + timeout
    while not lines or not lines[-1].startswith(marker):
        left = deadline - time.monotonic()
        assert left > 0, 'no %r after %s s:\n%s' % (marker, timeout, ''.join(lines))
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            # Unbuffered: a line read is a line select() saw arrive.
            line = proc.stdout.readline().decode()
            assert line, 'sandbox exited (%s):\n%s' % (proc.wait(), ''.join(lines))
            lines.append(line)
    return lines


@pytest.fixture
def sandbox(tmp_path):
    """`ferryman sandbox` running with a temporary directory of the test's own
    (so what it leaves behind is seen): (process, printed lines, that dir)."""
    tmp = tmp_path / 'tmp'
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), PATH=BIN + os.pathsep +
               os.environ.get('PATH', ''))
    proc = subprocess.Popen([os.path.join(BIN, 'ferryman'), 'sandbox', '--hosts', '3'],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, bufsize=0)
    try:
        lines = _read_until(proc, 'Ctrl-C', 180)
        yield proc, lines, tmp
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        proc.stdout.close()


def test_sandbox_serves_openstack_and_leaves_nothing(sandbox):
    proc, lines, tmp = sandbox
    text = ''.join(lines)
    (exports,) = [ln for ln in lines if ln.startswith('export ')]
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get('PATH', ''))
    env.update(kv.split('=', 1) for kv in exports.split()[1:])
    assert env['OS_AUTH_TYPE'] == 'none' and env['OS_IDENTITY_API_VERSION'] == '3'
    assert re.match(r'http://127\.0\.0\.1:\d+/v2\.1\Z', env['OS_ENDPOINT'])
    config_file = re.search(r'^config file: (\S+)$', text, re.M).group(1)
    pids = [int(p) for p in re.search(r'^pids: ([\d ]+)$', text, re.M).group(1).split()]
    # RabbitMQ (epmd, the node), the conductor, three agents, the API.
    assert len(pids) == 7, text

    def openstack(*args):
        res = subprocess.run(['openstack'] + list(args), env=env,
                             stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=180)
        assert res.returncode == 0, (args, res.stdout, res.stderr)
        return json.loads(res.stdout) if '-f' in args else res.stdout

    servers = openstack('server', 'list', '--long', '-f', 'json')
    hosts = {s['Name']: s['Host'] for s in servers}
    # Each host a guest with local disks and one on volumes.
    assert hosts == {'web-1': 'compute1', 'web-2': 'compute2', 'web-3': 'compute3',
                     'db-1': 'compute1', 'db-2': 'compute2', 'db-3': 'compute3'}
    assert {s['Status'] for s in servers} == {'ACTIVE'}

    openstack('server', 'migrate', '--live-migration', '--wait', 'web-1')
    shown = openstack('server', 'show', 'web-1', '-f', 'json')
    assert shown['status'] == 'ACTIVE'
    assert shown['OS-EXT-SRV-ATTR:host'] != 'compute1'

    migs = openstack('server', 'migration', 'list', '-f', 'json')
    assert [(m['Source Compute'], m['Dest Compute'], m['Status'], m['Type'])
            for m in migs] == [('compute1', shown['OS-EXT-SRV-ATTR:host'],
                                'completed', 'live-migration')]
    (action,) = openstack('server', 'event', 'list', 'web-1', '-f', 'json')
    assert action['Action'] == 'live-migration'
    event = openstack('server', 'event', 'show', 'web-1', action['Request ID'],
                      '-f', 'json')
    assert event['events'] and {e['result'] for e in event['events']} == {'Success'}

    # The printed configuration file reaches the same conductor.
    res = subprocess.run([os.path.join(BIN, 'ferryman'), '--config-file', config_file,
                          'migration', 'list', '--json'], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert [(m['id'], m['status']) for m in json.loads(res.stdout)] == [
        (migs[0]['UUID'], 'completed')]

    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 0
    assert proc.stdout.read().decode().strip().endswith('stopped')
    # Each service ran in a session of its own: no process is left in any.
    left = {sid: ps for sid, ps in _sessions().items() if sid in pids}
    assert not left, left
    assert os.listdir(tmp) == []
    assert not os.path.exists(os.path.dirname(config_file))
    shutil.rmtree(tmp)


def test_sandbox_refuses_a_taken_port_and_starts_nothing(tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run([os.path.join(BIN, 'ferryman'), 'sandbox', '--api-port',
                              str(port)], env=dict(os.environ, TMPDIR=str(tmp_path)),
                             capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert 'api_port' in res.stderr and str(port) in res.stderr
    assert os.listdir(tmp_path) == []
