"""ferryman-bench api: what ferryman-api costs over the RPC calls it makes.

A sandbox (:mod:`ferryman.sim.sandbox`: RabbitMQ, a conductor, simulated agents
and ferryman-api, each a process of its own) with ``servers`` guests; this
process is only the clients. Each call is timed ``samples`` times one after
another, through the API (HTTP with keep-alive, ``auth_strategy none``) and as
the same conductor calls over bare RPC (``conductor/rpcapi.py``, the client the
API uses, over the same broker):

- ``os-migrateLive`` at 2.30 (the answer waits for the conductor's checks):
  describe_instances(instance) then live_migrate(instance); each sample moves
  another guest (zero-length copies);
- ``GET /os-migrations``: list_migrations() (of the 2 x samples migrations);
- ``GET /servers/detail``: describe_instances().

The API's own cost per call is its p50 less the bare RPC's p50 (the goal: at
most 2 ms). Then ``clients`` clients at once, each its own connection, each
``GET /servers/{id}`` and ``GET /os-migrations?instance_uuid=``: every answer
must be a 200.
"""

import concurrent.futures
import contextlib
import http.client
import json
import os
import statistics
import threading
import time

from conductor import rpcapi
from ferryman.bench import drain as bench_drain
from ferryman.common import conf as ferryman_conf
from ferryman.common import exception
from ferryman.common import rpc
from ferryman.common import validation
from ferryman.sim import sandbox

GOAL_MS = 2.0
CALLS = ('GET /servers/detail', 'GET /os-migrations', 'os-migrateLive')


class _HTTP(object):
    """One keep-alive connection to the API."""

    def __init__(self, port, timeout=120):
        self.conn = http.client.HTTPConnection(sandbox.HOST, port, timeout=timeout)

    def request(self, method, path, body=None, version='2.30'):
        headers = {'X-Auth-Token': 'notused',
                   'OpenStack-API-Version': 'compute %s' % version}
        if body is not None:
            body = json.dumps(body)
            headers['Content-Type'] = 'application/json'
        try:
            self.conn.request(method, '/v2.1' + path, body=body, headers=headers)
            resp = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError,
                BrokenPipeError):
            # The server closed a connection left idle (as a browser or
            # keystoneauth would, open another); timed phases warm up first.
            self.conn.close()
            self.conn.request(method, '/v2.1' + path, body=body, headers=headers)
            resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, data

    def close(self):
        self.conn.close()


def _timed(fn, samples):
    """Milliseconds of each of ``samples`` calls of ``fn(i)``."""
    out = []
    for i in range(samples):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def _figures(ms):
    return {'p50_ms': statistics.median(ms),
            'p99_ms': bench_drain._percentile(ms, 0.99), 'samples': len(ms)}


def _expect(status, data, wanted, what):
    if status != wanted:
        raise RuntimeError('%s answered %s, not %s: %s' % (
            what, status, wanted, data[:300].decode(errors='replace')))


def _log_errors(box, lines=40):
    """The last ERROR lines (tracebacks included) of the sandbox's ferryman-api
    log."""
    with open(os.path.join(box.base_dir, 'api.log'), errors='replace') as f:
        return [line for line in f.read().splitlines() if ' ERROR ' in line][-lines:]


def _concurrent(port, uuids, clients):
    """``clients`` clients at once, started together: (errors, latencies ms,
    wall s)."""
    barrier = threading.Barrier(clients)
    errors, times = [], []
    lock = threading.Lock()

    def client(i):
        uuid = uuids[i % len(uuids)]
        conn = _HTTP(port)
        try:
            barrier.wait(60)
            for path in ('/servers/%s' % uuid,
                         '/os-migrations?instance_uuid=%s' % uuid):
                t0 = time.perf_counter()
                try:
                    status, data = conn.request('GET', path, version='2.80')
                    ok = status == 200
                except (OSError, http.client.HTTPException) as exc:
                    status, data, ok = type(exc).__name__, str(exc).encode(), False
                ms = (time.perf_counter() - t0) * 1000.0
                with lock:
                    times.append(ms)
                    if not ok:
                        errors.append('%s %s: %s' % (path, status, data[:120]))
        finally:
            conn.close()

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client, i) for i in range(clients)]:
            future.result()
    return errors, times, time.monotonic() - started


def run(servers=1000, hosts=4, samples=100, clients=200, as_json=False):
    validation.whole_number('servers', servers, 2)
    validation.whole_number('hosts', hosts, 2)
    validation.whole_number('samples', samples)
    validation.whole_number('clients', clients)
    # Two moves per sample (API and RPC), each of another guest.
    if 2 * samples > servers:
        raise exception.InvalidArgument(
            name='samples', value=samples,
            reason='each sample moves two guests: at most servers / 2 (%d)'
            % (servers // 2))
    per_host = -(-servers // hosts)
    options = {
        # Room for every guest, and for a host's guests plus those moved in.
        'fake': {'time_scale': 0.0, 'vcpus': 4 * per_host,
                 'memory_mb': 4 * per_host * 512},
        # Hundreds of guests per host: reports are big; on a loaded machine a
        # late one must not count a host down in the middle of a run.
        'compute': {'report_interval': 10.0},
        'conductor': {'monitor_interval': 0.01, 'host_down_after': 600},
        'api': {'workers': 32},
    }
    with contextlib.ExitStack() as stack:
        box = stack.enter_context(sandbox.Sandbox(
            hosts=hosts, guests=servers, options=options, ready_timeout=600.0))
        conf = ferryman_conf.make_conf(config_files=[box.config_file])
        stack.callback(rpc.cleanup, conf)
        bare = rpcapi.ConductorAPI(conf, timeout=120)
        web = _HTTP(box.api_port)
        stack.callback(web.close)
        instances = sorted(bare.list_instances(), key=lambda i: i['name'])
        uuids = [i['uuid'] for i in instances]
        # The first call on a connection sets it up: not a sample.
        bare.list_migrations()
        web.request('GET', '/os-migrations')

        def api_detail(_i):
            _expect(*web.request('GET', '/servers/detail'), 200, 'servers/detail')

        def api_migrations(_i):
            _expect(*web.request('GET', '/os-migrations'), 200, 'os-migrations')

        def api_move(i):
            _expect(*web.request('POST', '/servers/%s/action' % uuids[2 * i], {
                'os-migrateLive': {'host': None, 'block_migration': 'auto'}}),
                202, 'os-migrateLive')

        def rpc_move(i):
            bare.describe_instances(instance=uuids[2 * i + 1])
            bare.live_migrate(uuids[2 * i + 1])

        results = {}
        # The moves first: the listings then hold 2 x samples migrations.
        for call, api_fn, rpc_fn in (
                (CALLS[2], api_move, rpc_move),
                (CALLS[1], api_migrations, lambda _i: bare.list_migrations()),
                (CALLS[0], api_detail, lambda _i: bare.describe_instances())):
            # Untimed first: the server may have closed the idle connection.
            web.request('GET', '/')
            api_ms = _timed(api_fn, samples)
            results[call] = {'api': _figures(api_ms),
                             'rpc': _figures(_timed(rpc_fn, samples))}
            results[call]['api_cost_p50_ms'] = (results[call]['api']['p50_ms'] -
                                                results[call]['rpc']['p50_ms'])
        moved = len(bare.list_migrations())
        errors, times, wall = _concurrent(box.api_port, uuids, clients)
        # Read before the sandbox goes with its logs: why a request failed.
        api_log = _log_errors(box) if errors else []
    report = {
        'servers': servers, 'hosts': hosts, 'samples': samples, 'calls': results,
        'migrations_started': moved,
        'concurrent': {'clients': clients, 'requests': len(times),
                       'errors': len(errors), 'first_errors': errors[:5],
                       'api_log_errors': api_log,
                       'wall_s': wall, **_figures(times)},
        'goal_api_cost_p50_ms': GOAL_MS,
    }
    report['ok'] = not errors and moved == 2 * samples
    if as_json:
        print(json.dumps(report, indent=2))
        return report
    print('ferryman-api vs bare RPC: %d servers on %d simulated hosts, RabbitMQ on '
          'loopback, conductor, agents and API each a process; %d samples each'
          % (servers, hosts, samples))
    print('  %-22s %9s %9s %9s %9s %10s' % (
        'call', 'API p50', 'API p99', 'RPC p50', 'RPC p99', 'API cost'))
    for call in CALLS:
        r = results[call]
        print('  %-22s %7.2fms %7.2fms %7.2fms %7.2fms %8.2fms' % (
            call, r['api']['p50_ms'], r['api']['p99_ms'], r['rpc']['p50_ms'],
            r['rpc']['p99_ms'], r['api_cost_p50_ms']))
    print('  (API cost: API p50 less RPC p50; goal at most %.0f ms)' % GOAL_MS)
    c = report['concurrent']
    print('  %d clients at once: %d requests, %d errors, p50 %.1f ms, p99 %.1f ms, '
          '%.1f s' % (clients, c['requests'], c['errors'], c['p50_ms'], c['p99_ms'],
                      c['wall_s']))
    for err in errors[:5]:
        print('    %s' % err)
    for line in api_log:
        print('    api.log: %s' % line)
    print('  %s' % ('OK' if report['ok'] else 'NOT OK'))
    return report
