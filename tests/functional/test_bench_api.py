"""`ferryman-bench api` at a tiny size: it runs, prints each figure, and leaves
nothing behind (the sandbox it measures is stopped and removed). Timings are
the machine's: no figure is asserted beyond being there."""

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.functional

BIN = os.path.dirname(sys.executable)
NUMBER = r'-?\d+\.\d+ms'


def test_bench_api_prints_its_figures(tmp_path):
    res = subprocess.run(
        [os.path.join(BIN, 'ferryman-bench'), 'api', '--servers', '12', '--hosts',
         '2', '--samples', '3', '--clients', '8'],
        env=dict(os.environ, TMPDIR=str(tmp_path)), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout, res.stderr)
    out = res.stdout
    assert '12 servers on 2 simulated hosts' in out and '3 samples each' in out
    for call in ('GET /servers/detail', 'GET /os-migrations', 'os-migrateLive'):
        # API p50, p99, RPC p50, p99, the API's own cost.
        assert re.search(r'^  %s +(%s +){4}%s$' % (re.escape(call), NUMBER, NUMBER),
                         out, re.M), out
    assert re.search(r'^  8 clients at once: 16 requests, 0 errors, p50 ', out, re.M), out
    assert out.rstrip().endswith('OK')
    assert os.listdir(tmp_path) == []


def test_bench_api_refuses_bad_sizes_before_starting(tmp_path):
    res = subprocess.run(
        [os.path.join(BIN, 'ferryman-bench'), 'api', '--servers', '10', '--samples',
         '6'], env=dict(os.environ, TMPDIR=str(tmp_path)), capture_output=True,
        text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.startswith('ferryman-bench: Invalid value 6 for samples')
    assert 'Traceback' not in res.stderr
    assert os.listdir(tmp_path) == []
