"""ferryman sandbox: a whole Ferryman to try with the unmodified ``openstack`` client.

A private RabbitMQ node, a conductor, one simulated compute agent per host and
ferryman-api, each a process of its own (as they run for real), all on loopback
and all under one private temporary directory. Messages are signed as in
production: the conductor holds a throwaway secret, each agent its own key.
Stopping (SIGINT or SIGTERM) ends every process it started and removes that
directory, so nothing is left running and nothing is left behind.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from compute_agent.virt import fake
from conductor import rpcapi
from ferryman.common import conf as ferryman_conf
from ferryman.common import exception
from ferryman.common import rpc
from ferryman.common import rpc_auth
from ferryman.common import validation
from ferryman.sim import services as sim_services
from ferryman.sim import servers

HOST = servers.HOST
# Simulated seconds to real ones: a 1 GiB guest's move takes a few seconds, long
# enough to see MIGRATING and its progress, short enough to wait for.
TIME_SCALE = 0.3


def plan(hosts):
    """{host: name of the instance directory it shares, or None} and the guests
    to boot [(name, host, memory MiB, storage)] on ``hosts`` simulated hosts:
    compute1 keeps its disks to itself (a move from it copies them: block), the
    others share one directory (a move between them is file-level), and every
    host runs a volume-backed guest (block-storage wherever it goes)."""
    names = ['compute%d' % i for i in range(1, hosts + 1)]
    layout = {name: (None if i == 0 else 'nfs') for i, name in enumerate(names)}
    guests = []
    for i, name in enumerate(names, 1):
        guests.append(('web-%d' % i, name, 1024, 'local'))
        guests.append(('db-%d' % i, name, 2048, 'volume'))
    return layout, guests


def _write_conf(path, sections):
    with open(path, 'w') as f:
        for section, opts in sections.items():
            f.write('[%s]\n' % section)
            f.writelines('%s = %s\n' % kv for kv in opts.items())
            f.write('\n')
    return path


def _port_free(port):
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


class Sandbox(object):
    """``hosts`` simulated hosts; ferryman-api on ``api_port`` (a free one if
    None). Use as a context manager, or start() then stop()."""

    def __init__(self, hosts=3, api_port=None, ready_timeout=120.0, guests=None,
                 options=None):
        """``guests``: that many small volume-backed guests spread over the hosts
        in place of the demo's (a benchmark's); ``options``: {section: {option:
        value}} added to every service's configuration."""
        validation.whole_number('hosts', hosts, 2)
        if api_port is not None:
            validation.whole_number('api_port', api_port, 1)
            if api_port > 65535:
                raise exception.InvalidArgument(name='api_port', value=api_port,
                                                reason='expected at most 65535')
            if not _port_free(api_port):
                raise exception.InvalidArgument(
                    name='api_port', value=api_port,
                    reason='already in use on %s' % HOST)
        self.hosts, self.guests = plan(hosts)
        if guests is not None:
            validation.whole_number('guests', guests)
            names = sorted(self.hosts)
            self.guests = [('guest-%05d' % i, names[i % len(names)], 512, 'volume')
                           for i in range(guests)]
        self.options = options or {}
        self.api_port = api_port
        self.ready_timeout = ready_timeout
        self.base_dir = None
        self.rabbit = None
        self.procs = {}
        self.config_file = None

    # Configuration. ----------------------------------------------------------------
    @property
    def endpoint(self):
        return 'http://%s:%d/v2.1' % (HOST, self.api_port)

    def exports(self):
        return ('export OS_AUTH_TYPE=none OS_ENDPOINT=%s OS_IDENTITY_API_VERSION=3'
                % self.endpoint)

    def _service_conf(self, name, secret, shared=None):
        b = self.base_dir
        fake_opts = {'state_dir': os.path.join(b, 'fake'),
                     'time_scale': TIME_SCALE}
        if shared:
            fake_opts['instances_path'] = os.path.join(b, shared)
        if name == 'conductor':
            auth = {'secret_file': secret}
        else:
            auth = {'key_file': rpc_auth.write_agent_key(
                secret, name, os.path.join(os.path.dirname(secret), name + '.key'))}
        sections = {
            'DEFAULT': {'transport_url': self.rabbit.url, 'host': name,
                        'state_path': b, 'log_file': os.path.join(b, name + '.log')},
            'database': {'connection': 'sqlite:///%s/ferryman.sqlite' % b},
            'compute': {'report_interval': 2.0},
            'conductor': {'host_down_after': 20},
            'fake': fake_opts,
            'auth': auth,
        }
        for section, opts in self.options.items():
            sections.setdefault(section, {}).update(opts)
        return _write_conf(os.path.join(b, name + '.conf'), sections)

    @staticmethod
    def _operator_key(secret, name):
        return rpc_auth.write_operator_key(
            secret, name, os.path.join(os.path.dirname(secret),
                                       'operator-%s.key' % name))

    # Processes. --------------------------------------------------------------------
    def _spawn(self, name, module, conf):
        with open(os.path.join(self.base_dir, name + '.out'), 'ab') as out:
            # Own session: a Ctrl-C at the terminal reaches the sandbox alone,
            # which then stops everything in order.
            self.procs[name] = subprocess.Popen(
                [sys.executable, '-m', module, '--config-file', conf],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    @property
    def pids(self):
        """Every process the sandbox started and has not reaped."""
        pids = [p.pid for p in self.procs.values() if p.poll() is None]
        return pids + (self.rabbit.pids if self.rabbit else [])

    def _logs(self):
        return servers._tail([os.path.join(self.base_dir, n + ext)
                              for n in self.procs for ext in ('.out', '.log')])

    def _wait_for(self, predicate, what):
        deadline = time.monotonic() + self.ready_timeout
        while not predicate():
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise exception.FerrymanError('%s exited with %s\n%s' % (
                        name, proc.returncode, self._logs()))
            if time.monotonic() > deadline:
                raise exception.FerrymanError('not ready after %s s: %s\n%s' % (
                    self.ready_timeout, what, self._logs()))
            time.sleep(0.2)

    def _api_answers(self):
        try:
            with urllib.request.urlopen('http://%s:%d/' % (HOST, self.api_port),
                                        timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def _conductor_knows(self, rpcapi, uuids):
        try:
            up = {h['name'] for h in rpcapi.list_hosts() if h['up']}
            known = {i['uuid'] for i in rpcapi.list_instances()}
        except Exception:  # not answering yet: the conductor is still starting
            return False
        return up >= set(self.hosts) and known >= uuids

    def start(self):
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self):
        self.base_dir = tempfile.mkdtemp(prefix='ferryman-sandbox-')
        self.rabbit = servers.RabbitMQServer(os.path.join(self.base_dir, 'rabbitmq'))
        self.rabbit.start()
        if self.api_port is None:
            self.api_port = servers.free_ports(1)[0]
        secret = sim_services.write_secret(self.base_dir)
        self._spawn('conductor', 'ferryman.cmd.conductor',
                    self._service_conf('conductor', secret))
        cloud = fake.FakeCloud(os.path.join(self.base_dir, 'fake'))
        uuids = set()
        for host, shared in self.hosts.items():
            self._spawn(host, 'ferryman.cmd.compute_agent',
                        self._service_conf(host, secret, shared))
        # What `ferryman --config-file` needs: the broker, and an operator's
        # key (the conductor refuses unsigned requests), as ferryman-api has.
        self.config_file = _write_conf(
            os.path.join(self.base_dir, 'ferryman.conf'),
            {'DEFAULT': {'transport_url': self.rabbit.url},
             'auth': {'operator_key_file': self._operator_key(secret, 'cli')}})
        api_sections = {
            'DEFAULT': {'transport_url': self.rabbit.url,
                        'log_file': os.path.join(self.base_dir, 'api.log')},
            'api': {'listen': HOST, 'port': self.api_port, 'auth_strategy': 'none'},
            'auth': {'operator_key_file': self._operator_key(secret,
                                                             'ferryman-api')}}
        for section, opts in self.options.items():
            if section in ('DEFAULT', 'api'):
                api_sections[section].update(opts)
        self._spawn('api', 'ferryman.cmd.api', _write_conf(
            os.path.join(self.base_dir, 'api.conf'), api_sections))
        client_conf = ferryman_conf.make_conf(config_files=[self.config_file])
        client = rpcapi.ConductorAPI(client_conf, timeout=3)
        try:
            self._wait_for(lambda: self._conductor_knows(client, uuids),
                           'every agent up')
            # A host's simulated hypervisor exists once its agent has started.
            for name, host, memory, storage in self.guests:
                uuids.add(cloud.create_guest(
                    host, name, memory_mb=memory, vcpus=1, storage=storage,
                    dirty_rate_mibps=20.0, data='written by %s' % name)['uuid'])
            self._wait_for(lambda: self._conductor_knows(client, uuids),
                           'every guest known')
        finally:
            rpc.cleanup(client_conf)
        self._wait_for(self._api_answers, 'ferryman-api answering')
        return self

    def stop(self):
        """Stop everything started, the API first (no new requests), then the
        agents and the conductor, then the broker; remove the directory."""
        order = ['api'] + [h for h in self.hosts] + ['conductor']
        procs = [self.procs.pop(n) for n in order if n in self.procs]
        procs += list(self.procs.values())
        self.procs = {}
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs:
            servers._terminate(proc, timeout=15)
        if self.rabbit is not None:
            self.rabbit.stop()
            self.rabbit = None
        if self.base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def run(hosts=3, api_port=None, out=None):
    """Start a sandbox, say how to reach it, serve until SIGINT or SIGTERM."""
    out = out or sys.stdout
    stop = threading.Event()

    def _signal(_signum, _frame):
        stop.set()

    # Before starting: a signal while starting stops at once, cleaned up.
    previous = {s: signal.signal(s, _signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        box = Sandbox(hosts=hosts, api_port=api_port)
        with box:
            if stop.is_set():
                return 0
            names = ', '.join(sorted(box.hosts))
            print('Ferryman sandbox in %s: RabbitMQ on %s:%d, a conductor, %d '
                  'simulated hosts (%s) with %d guests, ferryman-api on port %d.'
                  % (box.base_dir, HOST, box.rabbit.port, len(box.hosts), names,
                     len(box.guests), box.api_port), file=out)
            print(box.exports(), file=out)
            print('config file: %s' % box.config_file, file=out)
            print('  e.g. ferryman --config-file %s migration list' % box.config_file,
                  file=out)
            print('pids: %s' % ' '.join(str(p) for p in sorted(box.pids)), file=out)
            print('Ctrl-C stops everything and removes %s.' % box.base_dir, file=out,
                  flush=True)
            while not stop.wait(1.0):
                pass
        print('stopped', file=out, flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
