"""A whole simulated cloud in one process: the demo's and the unit tests' ground.

One conductor and N compute agents with the simulated driver, talking over the
in-process transport, with sqlite in a private directory. Separate processes over
RabbitMQ are the functional tests' business, not this module's, except for scale
runs, whose agents may run in a few processes of their own (``agent_processes``).
"""

import os
import shutil
import tempfile
import time
import uuid

from compute_agent import rpcapi as compute_rpcapi
from compute_agent.virt import fake
from conductor import rpcapi as conductor_rpcapi
from conductor import service as conductor_service
from ferryman.sim import agent_pool
from ferryman.sim import services as sim_services
from ferryman.common import conf as ferryman_conf
from ferryman.common import inprocess
from ferryman.common import rpc
from ferryman.common import rpc_auth
from ferryman.common import schemas
from flows import states

# Three hosts: compute2 and compute3 share an instance directory (NFS-like), so
# compute1 -> compute2 is block, compute2 -> compute3 is file-level, and a
# volume-backed guest moves block-storage anywhere.
DEMO_HOSTS = {'compute1': None, 'compute2': 'nfs', 'compute3': 'nfs'}
DEMO_GUESTS = [
    # name, host, memory MiB, storage, dirty rate MiB/s
    ('batch-1', 'compute1', 2048, 'local', 50.0),
    ('web-1', 'compute2', 1024, 'local', 20.0),
    ('db-1', 'compute1', 4096, 'volume', 200.0),
]


class SimCloud(object):
    """Signed messages as in production: a secret in ``base_dir``/keys, each
    agent its own key derived from it."""

    CONDUCTOR = 'conductor'

    def __init__(self, hosts=None, base_dir=None, overrides=None, agent_processes=0):
        self.hosts = dict(DEMO_HOSTS if hosts is None else hosts)
        self._own_dir = base_dir is None
        self.base_dir = base_dir or tempfile.mkdtemp(prefix='ferryman-')
        self.overrides = {
            # A broker of its own: another simulated cloud in the process (a
            # benchmark's, a test's) never sees its messages.
            'transport_url': inprocess.url('sim-%s' % uuid.uuid4().hex[:12]),
            'oslo_messaging_rabbit.heartbeat_timeout_threshold': 0,
            'state_path': self.base_dir,
            'compute.report_interval': 3600.0,  # reports are pushed by refresh()
            'conductor.monitor_interval': 0.02,
            'conductor.post_migration_retry_delay': 0.01,
            'fake.time_scale': 0.0001,
        }
        self.overrides.update(overrides or {})
        if not self.overrides.get('auth.secret_file') and \
                not self.overrides.get('auth.insecure_allow_unsigned'):
            self.overrides['auth.secret_file'] = sim_services.write_secret(self.base_dir)
        self.conductor = None
        self.agents = {}
        self.agent_processes = agent_processes
        self.pool = None
        self.cloud = fake.FakeCloud(os.path.join(self.base_dir, 'fake'))

    def conf(self, host, **extra):
        """The conductor's configuration, or host ``host``'s agent's."""
        overrides = dict(self.overrides, host=host) if host == self.CONDUCTOR \
            else sim_services.agent_overrides(self.overrides, host)
        return ferryman_conf.make_conf(config_files=[],
                                       overrides=dict(overrides, **extra))

    def operator_key(self, name='operator'):
        """An operator key file, beside the secret, for a client of this cloud
        (the CLI, ferryman-api); None where messages go unsigned."""
        secret = self.overrides.get('auth.secret_file')
        if not secret:
            return None
        return rpc_auth.write_operator_key(
            secret, name, os.path.join(os.path.dirname(secret),
                                       'operator-%s.key' % name))

    def start(self):
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self):
        rpc.quiet_messaging_logs()
        self.conductor_conf = self.conf(self.CONDUCTOR)
        self.conductor = conductor_service.ConductorService(self.conductor_conf).start()
        self.api = conductor_rpcapi.ConductorAPI(self.conductor_conf)
        if self.agent_processes:
            self.pool = agent_pool.AgentPool(self.hosts, self.overrides,
                                             self.agent_processes).start()
            self.compute = compute_rpcapi.ComputeAPI(self.conductor_conf)
            return self
        for host, shared in self.hosts.items():
            self.agents[host] = sim_services.start_agent(self.overrides, host, shared)
        return self

    @property
    def db(self):
        return self.conductor.manager.db

    def refresh(self, vanish_after=None):
        """Every agent reports now, and the conductor has taken the reports in;
        with ``vanish_after=0`` it forgets at once guests no host reports.

        Straight into the conductor: a cast over RPC may be handled after a later
        call, so a test could look before the report landed.
        """
        if vanish_after is None:
            vanish_after = self.conductor_conf.conductor.vanished_guest_grace

        def take(host, info, guests):
            # The check the conductor's report_host makes: what the drivers
            # report must pass it.
            schemas.check(schemas.CONDUCTOR_SERVICE, 'report_host', {
                'host': host, 'info': info, 'guests': guests})
            self.db.reports.record(host, info, guests, vanish_after=vanish_after)

        for agent in self.agents.values():
            take(agent.host, agent.manager.host_info(),
                 agent.manager.driver.list_guests())
        if self.pool is not None:
            for host in sorted(self.hosts):
                take(host, self.compute.get_host_info(host),
                     self.compute.list_guests(host))

    def seed_demo_guests(self):
        guests = {}
        for name, host, memory, storage, dirty in DEMO_GUESTS:
            guests[name] = self.cloud.create_guest(
                host, name, memory_mb=memory, vcpus=2, storage=storage,
                dirty_rate_mibps=dirty, data='written by %s before migrating' % name)
        self.refresh()
        return guests

    def wait(self, migration_id, timeout=60):
        """The migration once it has ended, or as it is when ``timeout`` runs
        out. Ended also when no flow of this runner ran it (a job another
        runner claimed, or one ended at a resume)."""
        deadline = time.monotonic() + timeout
        self.conductor.manager.runner.wait(migration_id, timeout)
        while True:
            mig = self.api.get_migration(migration_id)
            if mig['status'] in states.TERMINAL or time.monotonic() > deadline:
                return mig
            time.sleep(0.05)

    def stop(self):
        if self.pool is not None:
            self.pool.stop()
            self.pool = None
        services = list(self.agents.values())
        if self.conductor is not None:
            services.append(self.conductor)
        sim_services.stop_services(services)
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
