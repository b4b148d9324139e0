"""Private servers on loopback, each in directories of its own: the base every
private server shares and a RabbitMQ node (the sandbox's broker; the test harness
adds Redis, PostgreSQL and ZooKeeper in :mod:`ferryman.testing.servers`).

Each server gets its own ports and directories, so nothing depends on (or
disturbs) a system-wide service. Only the standard library is used.
"""

import glob
import os
import random
import secrets
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time

HOST = "127.0.0.1"
RABBITMQ_BIN = "/usr/lib/rabbitmq/bin"


def free_ports(count):
    """Return ``count`` distinct ports that are currently free.

    Sockets are held open together so the kernel cannot hand out the same
    port twice; binding on all interfaces because the Erlang distribution
    and epmd ports are not loopback-only.
    """
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_range_free(first, size):
    socks = []
    try:
        for port in range(first, first + size):
            s = socket.socket()
            socks.append(s)
            s.bind(("", port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def port_open(port, host=HOST, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(paths, lines=40, skip=None):
    """The last ``lines`` of each file, leaving out lines ``skip`` (a compiled
    pattern) finds."""
    out = []
    for path in paths:
        try:
            with open(path, errors="replace") as f:
                text = [line for line in f.read().splitlines()
                        if skip is None or not skip.search(line)][-lines:]
        except OSError:
            continue
        out.append("==> %s <==\n%s" % (path, "\n".join(text)))
    return "\n".join(out) or "(no log output)"


def _terminate(proc, timeout=10):
    """Make sure ``proc`` and its whole session are gone, and reap it."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
        try:
            # Children (erl_child_setup, inet_gethost...) share the group.
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers after the leader died
    except ProcessLookupError:
        pass


class _Server:
    def __init__(self, base_dir=None):
        self._own_dir = base_dir is None
        self.base_dir = base_dir
        self._proc = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _prepare_dir(self):
        if self.base_dir is None:
            self.base_dir = tempfile.mkdtemp(prefix="ferryman-%s-" % self.kind)
        os.makedirs(self.base_dir, exist_ok=True)

    def _spawn(self, argv, env=None, stdout_name="stdout.log"):
        out = open(os.path.join(self.base_dir, stdout_name), "ab")
        try:
            return subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()

    def _fail(self, msg):
        logs = _tail(self._log_files())
        self._shutdown()
        self._cleanup_dir()
        raise RuntimeError("%s failed to start: %s\n%s" % (self.kind, msg, logs))

    def _cleanup_dir(self):
        if self._own_dir and self.base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    @property
    def running(self):
        return self._proc is not None and self._proc.poll() is None

    @property
    def pids(self):
        """Pids of processes this object started and has not yet reaped."""
        return [p.pid for p in self._procs() if p.poll() is None]

    def stop(self):
        self._shutdown()
        self._cleanup_dir()

    def restart(self, timeout=90):
        self._shutdown()
        self.start(timeout)


class RabbitMQServer(_Server):
    """A private RabbitMQ node run by the current user in ``base_dir``.

    With ``tls`` ({'ca', 'cert', 'key'}: PEM paths) it listens on ``port``
    over TLS only: no plain AMQP listener at all.
    """

    kind = "rabbitmq"

    def __init__(self, base_dir=None, name=None, tls=None):
        super().__init__(base_dir)
        self.port, self.dist_port, self.epmd_port = free_ports(3)
        self.nodename = "%s@localhost" % (name or "ferryman%d" % self.port)
        self.tls = tls
        self._epmd = None

    @property
    def url(self):
        return "rabbit://guest:guest@%s:%d/" % (HOST, self.port)

    def _ctl_range(self):
        # CLI tools default to 35672-35682, which may overlap ports picked
        # for the node; keep them in a free block below the ephemeral range.
        taken = {self.port, self.dist_port, self.epmd_port}
        rng = random.Random(self.port)
        for _ in range(200):
            first = rng.randrange(20000, 30000)
            if (taken.isdisjoint(range(first, first + 11))
                    and _port_range_free(first, 11)):
                return first, first + 10
        raise RuntimeError("no free port range for rabbitmqctl")

    def _setup(self):
        self._prepare_dir()
        d = self.base_dir
        home = os.path.join(d, "home")
        os.makedirs(home, exist_ok=True)
        cookie = os.path.join(home, ".erlang.cookie")
        if not os.path.exists(cookie):
            # Written up front so server and CLI never race to create it.
            with open(cookie, "w") as f:
                f.write("".join(secrets.choice(string.ascii_uppercase)
                                for _ in range(20)))
            os.chmod(cookie, 0o400)
        conf = "loopback_users.guest = true\n"
        if self.tls:
            conf += ("listeners.tcp = none\n"
                     "listeners.ssl.default = %s:%d\n" % (HOST, self.port)
                     + "ssl_options.cacertfile = %s\n" % self.tls["ca"]
                     + "ssl_options.certfile = %s\n" % self.tls["cert"]
                     + "ssl_options.keyfile = %s\n" % self.tls["key"]
                     + "ssl_options.verify = verify_none\n"
                     "ssl_options.fail_if_no_peer_cert = false\n")
        files = {
            "rabbitmq.conf": conf,
            "rabbitmq-env.conf": "",
            "enabled_plugins": "[].\n",
        }
        for fname, text in files.items():
            with open(os.path.join(d, fname), "w") as f:
                f.write(text)
        ctl_min, ctl_max = self._ctl_range()
        env = dict(os.environ)
        env.update({
            "HOME": home,
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": os.path.join(d, "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": os.path.join(d, "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(d, "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": os.path.join(d, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(d, "log"),
            "RABBITMQ_PID_FILE": self.pid_file,
            "RABBITMQ_CTL_DIST_PORT_MIN": str(ctl_min),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(ctl_max),
            "ERL_EPMD_PORT": str(self.epmd_port),
        })
        for key in ("RABBITMQ_ERLANG_COOKIE", "ERL_EPMD_ADDRESS",
                    "RABBITMQ_NODE_IP_ADDRESS", "RABBITMQ_NODE_PORT"):
            env.pop(key, None)
        if not self.tls:
            # (With TLS the configuration file says where it listens.)
            env.update({"RABBITMQ_NODE_IP_ADDRESS": HOST,
                        "RABBITMQ_NODE_PORT": str(self.port)})
        self._env = env

    @property
    def pid_file(self):
        return os.path.join(self.base_dir, "rabbitmq.pid")

    def _log_files(self):
        if not self.base_dir:
            return []
        return ([os.path.join(self.base_dir, "stdout.log")]
                + sorted(glob.glob(os.path.join(self.base_dir, "log", "*.log"))))

    def _procs(self):
        return [p for p in (self._proc, self._epmd) if p is not None]

    def _ctl(self, *args, timeout=60):
        return subprocess.run(
            [os.path.join(RABBITMQ_BIN, "rabbitmqctl"), "-q", "-n",
             self.nodename] + list(args),
            env=self._env, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=timeout)

    def start(self, timeout=90):
        if self.running:
            return
        self._setup()
        deadline = time.monotonic() + timeout
        # Our own foreground epmd: erl reuses it instead of daemonising one
        # we could not reap, and stopping it is just killing our child.
        self._epmd = self._spawn(
            ["epmd", "-port", str(self.epmd_port)], env=self._env,
            stdout_name="epmd.log")
        while not port_open(self.epmd_port):
            if self._epmd.poll() is not None:
                self._fail("epmd exited with %s" % self._epmd.returncode)
            if time.monotonic() > deadline:
                self._fail("epmd did not listen on %d" % self.epmd_port)
            time.sleep(0.05)
        self._proc = self._spawn(
            [os.path.join(RABBITMQ_BIN, "rabbitmq-server")], env=self._env)
        while True:
            left = deadline - time.monotonic()
            if self._proc.poll() is not None:
                self._fail("rabbitmq-server exited with %s"
                           % self._proc.returncode)
            if left <= 0:
                self._fail("not ready after %ss" % timeout)
            try:
                res = self._ctl("wait", self.pid_file, "--timeout",
                                str(max(1, int(min(left, 60)))),
                                timeout=left + 5)
            except subprocess.TimeoutExpired:
                continue
            if res.returncode == 0 and port_open(self.port):
                return
            time.sleep(0.2)

    def _shutdown(self):
        if self.running:
            try:
                # Returns once the node process has exited.
                self._ctl("stop", self.pid_file, timeout=30)
            except subprocess.TimeoutExpired:
                pass
        _terminate(self._proc)
        _terminate(self._epmd, timeout=5)
        self._proc = self._epmd = None
