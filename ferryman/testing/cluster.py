"""A Ferryman cloud of separate processes over a private RabbitMQ, for functional tests.

The conductor and one compute agent per host run as real console scripts, each with
its own configuration file; tests drive them only through the ``ferryman`` CLI and
inspect the simulated hypervisors through :class:`FakeCloud`. This is what
``ferryman.sim.cloud.SimCloud`` does in one process, with the transport and the
process boundaries made real.

With ``jobboard`` set, several conductors (``conductor``, ``conductor2``...) share
a private jobboard (Redis, or ZooKeeper) and a private PostgreSQL database.
"""

import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.parse

import oslo_messaging as messaging

from compute_agent.virt.fake import FakeCloud
from ferryman.common import rpc_auth
from ferryman.testing import tls as test_tls
from ferryman.testing.servers import PostgreSQLServer
from ferryman.testing.servers import RabbitMQServer, RedisServer, _tail, _terminate
from ferryman.testing.servers import ZooKeeperServer

# compute2 and compute3 share an instance directory (see ferryman.sim.cloud.DEMO_HOSTS).
HOSTS = {'compute1': None, 'compute2': 'nfs', 'compute3': 'nfs'}
# The jobboard servers a cluster can start, by the scheme of their URL.
BOARD_SERVERS = {'redis': RedisServer, 'zookeeper': ZooKeeperServer}


def answering(bound_s, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, an RPC call, made again and again while the
    conductor or the broker restarts, for at most ``bound_s`` seconds."""
    deadline = time.monotonic() + bound_s
    while True:
        try:
            return fn(*args, **kwargs)
        except messaging.MessagingTimeout:
            if time.monotonic() > deadline:
                raise
        except messaging.MessageDeliveryFailure:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)  # the broker is down: no timeout paces the retries


class Cluster(object):

    def __init__(self, base_dir, hosts=None, ready_timeout=60, conductors=1,
                 jobboard=None, options=None, tls=False):
        """``jobboard``: None for no board, else ``[jobboard]`` options whose
        ``backend_url`` scheme (``redis://``, the default, or ``zookeeper://``)
        names the private server to start (its URL is filled in);
        ``conductors``: how many to run; ``options``: {section: {option: value}}
        added to every service's configuration; ``tls``: the broker speaks TLS
        only, with a certificate from a CA made for the run, which every
        service and the CLI trust (``[oslo_messaging_rabbit] ssl_ca_file``).

        Messages are signed as in production: the conductors hold a secret,
        each agent its own key (files of mode 0600 under ``base_dir``/keys)."""
        self.options = options or {}
        self.tls = tls
        self.tls_files = None
        self.base_dir = os.path.abspath(base_dir)
        self.hosts = dict(HOSTS if hosts is None else hosts)
        self.ready_timeout = ready_timeout
        self.conductors = ['conductor'] + ['conductor%d' % i
                                           for i in range(2, conductors + 1)]
        self.jobboard = jobboard
        self.board_kind = None
        if jobboard is not None:
            url = jobboard.get('backend_url') or 'redis://'
            self.board_kind = urllib.parse.urlsplit(url).scheme
            if self.board_kind not in BOARD_SERVERS:
                raise ValueError('jobboard backend_url %r: expected one of %s' % (
                    url, ', '.join('%s://' % k for k in sorted(BOARD_SERVERS))))
        self.rabbit = self.board_server = self.postgresql = None
        self.database = 'sqlite:///%s/ferryman.sqlite' % self.base_dir
        self.procs = {}
        self.client_conf = os.path.join(self.base_dir, 'client.conf')
        self.cloud = FakeCloud(os.path.join(self.base_dir, 'fake'))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # Configuration. ----------------------------------------------------------------
    def _write_conf(self, name, sections):
        path = os.path.join(self.base_dir, name + '.conf')
        with open(path, 'w') as f:
            for section, opts in sections.items():
                f.write('[%s]\n' % section)
                f.writelines('%s = %s\n' % kv for kv in opts.items())
                f.write('\n')
        return path

    def _secret(self):
        keys = os.path.join(self.base_dir, 'keys')
        secret = os.path.join(keys, 'secret')
        if not os.path.exists(secret):
            os.makedirs(keys, mode=0o700, exist_ok=True)
            rpc_auth.write_private(secret, rpc_auth.new_secret())
        return secret

    def auth_options(self, name, conductor):
        """[auth] of a service: a conductor holds the secret, an agent only
        its own key."""
        secret = self._secret()
        if conductor:
            return {'secret_file': secret}
        return {'key_file': rpc_auth.write_agent_key(
            secret, name, os.path.join(os.path.dirname(secret), name + '.key'))}

    def operator_options(self, name):
        """[auth] of an operator's client (the CLI, ferryman-api): its own
        operator key, as an operator is given one."""
        secret = self._secret()
        return {'operator_key_file': rpc_auth.write_operator_key(
            secret, name, os.path.join(os.path.dirname(secret),
                                       'operator-%s.key' % name))}

    def broker_options(self):
        """[oslo_messaging_rabbit] every process needs to reach the broker."""
        if not self.tls_files:
            return {}
        return {'ssl': True, 'ssl_ca_file': self.tls_files['ca']}

    def _service_conf(self, name, instances_path=None):
        b = self.base_dir
        fake = {'state_dir': os.path.join(b, 'fake'), 'time_scale': 0.0001}
        if instances_path:
            fake['instances_path'] = instances_path
        sections = {
            'DEFAULT': {'transport_url': self.rabbit.url, 'host': name,
                        'state_path': b, 'debug': True,
                        'log_file': os.path.join(b, name + '.log')},
            'database': {'connection': self.database},
            'compute': {'report_interval': 0.5},
            'conductor': {'monitor_interval': 0.05,
                          'post_migration_retry_delay': 0.05,
                          'host_down_after': 10},
            'fake': fake,
            'auth': self.auth_options(name, name in self.conductors),
        }
        if self.tls_files:
            sections['oslo_messaging_rabbit'] = self.broker_options()
        if name in self.hosts:
            sections['compute']['fault_injection_file'] = self.fault_file(name)
        if self.board_server is not None:
            sections['jobboard'] = dict(self.jobboard,
                                        backend_url=self.board_server.url)
        for section, opts in self.options.items():
            sections.setdefault(section, {}).update(opts)
        return self._write_conf(name, sections)

    def fault_file(self, host):
        """The agent's injected faults (see compute_agent.faults)."""
        return os.path.join(self.base_dir, host + '.faults')

    # Processes. --------------------------------------------------------------------
    def _logs(self, name):
        return [os.path.join(self.base_dir, name + ext) for ext in ('.out', '.log')]

    def _spawn(self, name, script, conf, *more_confs):
        argv = [script, '--config-file', conf]
        for extra in more_confs:
            argv += ['--config-file', extra]
        with open(self._logs(name)[0], 'ab') as out:
            # Own session: termination reaches any child the service forks.
            self.procs[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def restart(self, name, **sections):
        """(Re)start one service with its configuration, plus ``sections`` (e.g.
        conductor={'crash_at': ...}) in a second file that overrides it."""
        old = self.procs.pop(name, None)
        if old is not None:
            _terminate(old, 10)
        script = 'ferryman-conductor' if name in self.conductors else \
            'ferryman-compute-agent'
        extra = self._write_conf(name + '-extra', sections)
        self._spawn(name, script, os.path.join(self.base_dir, name + '.conf'), extra)

    def _starts(self, name):
        try:
            with open(self._logs(name)[1]) as f:
                return f.read().count('listening on topic')
        except OSError:
            return 0

    def restart_conductors(self, only=None, **conductor):
        """Restart the conductors (all, or those named in ``only``) with
        ``conductor`` options; return once each new one listens (its claim loop
        runs, so a takeover is by a live one)."""
        names = list(only or self.conductors)
        before = {n: self._starts(n) for n in names}
        for name in names:
            self.restart(name, conductor=conductor)
        self.wait_for(lambda: all(self._starts(n) > before[n] for n in names),
                      'conductors started')

    def exited(self, name, timeout=60):
        """Wait for a service to exit by itself (a crash test); its exit code."""
        proc = self.procs[name]
        code = proc.wait(timeout)
        del self.procs[name]
        return code

    def _check_alive(self):
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError('%s exited early with %s\n%s' % (
                    name, proc.returncode, _tail(self._logs(name))))

    def start(self):
        os.makedirs(self.base_dir, exist_ok=True)
        try:
            if self.tls:
                self.tls_files = test_tls.make_ca_and_server(
                    os.path.join(self.base_dir, 'tls'))
            self.rabbit = RabbitMQServer(os.path.join(self.base_dir, 'rabbitmq'),
                                         tls=self.tls_files)
            servers = [self.rabbit]
            if self.jobboard is not None:
                self.board_server = BOARD_SERVERS[self.board_kind](
                    os.path.join(self.base_dir, self.board_kind))
                self.postgresql = PostgreSQLServer(
                    os.path.join(self.base_dir, 'postgresql'))
                servers += [self.board_server, self.postgresql]
            # Side by side: each spends seconds waiting for its own start.
            with concurrent.futures.ThreadPoolExecutor(len(servers)) as pool:
                for future in [pool.submit(server.start) for server in servers]:
                    future.result()
            if self.postgresql is not None:
                self.database = self.postgresql.url
            self._write_conf('client', {
                'DEFAULT': {'transport_url': self.rabbit.url},
                'oslo_messaging_rabbit': self.broker_options(),
                'auth': self.operator_options('client')})
            for i, name in enumerate(self.conductors):
                self._spawn(name, 'ferryman-conductor', self._service_conf(name))
                if i == 0 and len(self.conductors) > 1:
                    # The first creates the schema; several at once would race.
                    self.wait_for(lambda: self.cli('host', 'list', timeout=3)[0] == 0,
                                  'first conductor answering')
            for host, shared in self.hosts.items():
                path = os.path.join(self.base_dir, shared) if shared else None
                self._spawn(host, 'ferryman-compute-agent',
                            self._service_conf(host, path))
            self.wait_for(self._all_up, 'every agent up in host list')
        except BaseException:
            self.stop()
            raise
        return self

    def _all_up(self):
        # Short: a call sent before the conductor's queue exists is simply lost.
        rc, hosts = self.cli('host', 'list', timeout=3)
        return rc == 0 and {h['name'] for h in hosts if h['up']} >= set(self.hosts)

    def logs(self):
        """Tails of every service's logs, for failure messages."""
        return _tail([p for n in self.procs for p in self._logs(n)])

    def wait_for(self, predicate, what, timeout=None, interval=0.2):
        """Poll ``predicate`` until true; raise with the logs if a process dies
        or time runs out."""
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        while True:
            self._check_alive()
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise RuntimeError('not ready after %ss: %s\n%s' % (
                    timeout or self.ready_timeout, what, self.logs()))
            time.sleep(interval)

    def cli(self, *args, timeout=60):
        """Run ``ferryman ARGS --json``: (exit code, parsed stdout or None)."""
        argv = ['ferryman'] + [str(a) for a in args] + [
            '--json', '--config-file', self.client_conf, '--timeout', str(timeout)]
        # The subprocess bound is wider than the RPC one so the CLI can report it.
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=timeout + 30)
        try:
            data = json.loads(res.stdout) if res.stdout.strip() else None
        except ValueError:
            raise RuntimeError('%s printed no JSON (rc %s):\n%s\n%s' % (
                ' '.join(argv), res.returncode, res.stdout, res.stderr))
        return res.returncode, data

    def seed(self, name, host, **kwargs):
        """Boot a guest on the simulated host; return it once the conductor knows it."""
        return self.seed_many([name], host, **kwargs)[0]

    def seed_many(self, names, host, **kwargs):
        """Boot guests on the simulated host; return them once the conductor knows
        them all (one wait for the agent's report, not one per guest)."""
        guests = [self.cloud.create_guest(host, name, **kwargs) for name in names]
        wanted = {g['uuid'] for g in guests}

        def known():
            rc, instances = self.cli('instance', 'list', timeout=10)
            return rc == 0 and wanted <= {i['uuid'] for i in instances
                                          if i['host'] == host}
        self.wait_for(known, 'guests %s reported by %s' % (', '.join(names), host))
        return guests

    def kill(self, *names, timeout=10, sig=signal.SIGTERM):
        """Signal the processes' sessions (SIGTERM: SIGKILL after ``timeout``);
        reap them."""
        procs = [self.procs.pop(n) for n in names if n in self.procs]
        # Signalled together: each service takes a few seconds to wind down.
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        for proc in procs:
            _terminate(proc, timeout)
        return [p.returncode for p in procs]

    def stop(self):
        # Throwaway services: no graceful wind-down to wait for (seconds each).
        self.kill(*list(self.procs), sig=signal.SIGKILL)
        for server in (self.rabbit, self.board_server, self.postgresql):
            if server is not None:
                server.stop()
        self.rabbit = self.board_server = self.postgresql = None
