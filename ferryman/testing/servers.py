"""Private RabbitMQ, Redis, PostgreSQL and ZooKeeper servers on loopback, for tests.

Each server gets its own ports and directories, so tests never depend on (or
disturb) a system-wide service. Only the standard library is used.
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


class RedisServer(_Server):
    """A throwaway redis-server with persistence disabled."""

    kind = "redis"

    def __init__(self, base_dir=None):
        super().__init__(base_dir)
        (self.port,) = free_ports(1)

    @property
    def url(self):
        return "redis://%s:%d/0" % (HOST, self.port)

    def _log_files(self):
        if not self.base_dir:
            return []
        return [os.path.join(self.base_dir, n)
                for n in ("stdout.log", "redis.log")]

    def _procs(self):
        return [self._proc] if self._proc is not None else []

    def ping(self, timeout=1.0):
        try:
            with socket.create_connection((HOST, self.port), timeout) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout=30):
        if self.running:
            return
        self._prepare_dir()
        self._proc = self._spawn([
            "redis-server", "--port", str(self.port), "--bind", HOST,
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", self.base_dir,
            "--logfile", os.path.join(self.base_dir, "redis.log")])
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self._proc.poll() is not None:
                self._fail("redis-server exited with %s"
                           % self._proc.returncode)
            if time.monotonic() > deadline:
                self._fail("no PONG after %ss" % timeout)
            time.sleep(0.02)

    def _shutdown(self):
        _terminate(self._proc)
        self._proc = None


# Debian's zookeeper.jar names its dependencies in its manifest; an upstream
# tarball keeps them beside it in lib/.
ZOOKEEPER_CLASSPATHS = (
    ["/usr/share/java/zookeeper.jar"],
    ["/usr/share/zookeeper/zookeeper.jar"],
    ["/usr/share/zookeeper/lib/*"],
)
# Optional: without an SLF4J binding the server logs nothing at all.
SLF4J_SIMPLE = "/usr/share/java/slf4j-simple.jar"


def _zookeeper_classpath():
    for paths in ZOOKEEPER_CLASSPATHS:
        if all(glob.glob(p) for p in paths):
            if os.path.exists(SLF4J_SIMPLE):
                paths = paths + [SLF4J_SIMPLE]
            return ":".join(paths)
    raise RuntimeError("zookeeper failed to start: no server jar in %s"
                       % ", ".join(p[0] for p in ZOOKEEPER_CLASSPATHS))


class ZooKeeperServer(_Server):
    """A standalone ZooKeeper (``ZooKeeperServerMain``) with its own data dir.

    Session timeouts are what a client asks for within ``min_session`` and
    ``max_session`` seconds (a jobboard's claim expiry is its session timeout,
    so the stock 4-40 s clamp would silently change it); a small tick makes the
    server expire a dead client's session close to that timeout.
    """

    kind = "zookeeper"

    def __init__(self, base_dir=None, tick=0.1, min_session=1.0,
                 max_session=600.0):
        super().__init__(base_dir)
        (self.port,) = free_ports(1)
        self.tick, self.min_session, self.max_session = \
            tick, min_session, max_session

    @property
    def url(self):
        return "zookeeper://%s:%d" % (HOST, self.port)

    @property
    def hosts(self):
        return "%s:%d" % (HOST, self.port)

    def _log_files(self):
        return [os.path.join(self.base_dir, "stdout.log")] if self.base_dir else []

    def _procs(self):
        return [self._proc] if self._proc is not None else []

    def command(self, word, timeout=1.0):
        """A four-letter word's answer ('' when the server does not answer)."""
        try:
            with socket.create_connection((HOST, self.port), timeout) as s:
                s.sendall(word.encode())
                chunks = []
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        return b"".join(chunks).decode(errors="replace")
                    chunks.append(chunk)
        except OSError:
            return ""

    def ready(self):
        # "srvr" answers with the version only once the server serves requests
        # ("ruok" says imok earlier, while the database is still loading).
        return self.command("srvr").startswith("Zookeeper version")

    def _setup(self):
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("zookeeper failed to start: no java on PATH")
        classpath = _zookeeper_classpath()
        self._prepare_dir()
        data = os.path.join(self.base_dir, "data")
        os.makedirs(data, exist_ok=True)
        cfg = os.path.join(self.base_dir, "zoo.cfg")
        with open(cfg, "w") as f:
            f.write("tickTime=%d\n" % int(self.tick * 1000)
                    + "clientPortAddress=%s\n" % HOST
                    + "clientPort=%d\n" % self.port
                    + "dataDir=%s\n" % data
                    + "minSessionTimeout=%d\n" % int(self.min_session * 1000)
                    + "maxSessionTimeout=%d\n" % int(self.max_session * 1000)
                    + "admin.enableServer=false\n"
                    + "4lw.commands.whitelist=srvr,ruok\n"
                    + "autopurge.purgeInterval=0\n")
        return [java, "-Xmx256m", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
                "-Dzookeeper.jmx.log4j.disable=true",
                "-Dorg.slf4j.simpleLogger.showDateTime=true",
                "-cp", classpath,
                "org.apache.zookeeper.server.ZooKeeperServerMain", cfg]

    def start(self, timeout=60):
        if self.running:
            return
        self._proc = self._spawn(self._setup())
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self._proc.poll() is not None:
                self._fail("java exited with %s" % self._proc.returncode)
            if time.monotonic() > deadline:
                self._fail("not serving after %ss" % timeout)
            time.sleep(0.05)

    def _shutdown(self):
        # The JVM's shutdown hook closes the server on SIGTERM.
        _terminate(self._proc)
        self._proc = None


POSTGRESQL_BINS = "/usr/lib/postgresql/*/bin"


def _postgresql_bin_dir():
    """The newest installed server version's bin directory (Debian layout)."""
    def version(path):
        try:
            return float(os.path.basename(os.path.dirname(path)))
        except ValueError:
            return 0.0
    dirs = [d for d in glob.glob(POSTGRESQL_BINS)
            if os.path.exists(os.path.join(d, "postgres"))]
    if not dirs:
        raise RuntimeError("postgresql failed to start: no server binaries in %s"
                           % POSTGRESQL_BINS)
    return max(dirs, key=version)


class PostgreSQLServer(_Server):
    """A private PostgreSQL cluster on loopback with a ``ferryman`` database.

    ``initdb`` and the server refuse to run as root, so as root they run as the
    ``postgres`` system user (``runuser``) in a directory that user owns; the
    postmaster stays in the foreground, our child, in its own session.
    Durability is off (fsync and friends): the data is thrown away on stop.
    """

    kind = "postgresql"
    database = "ferryman"

    def __init__(self, base_dir=None):
        super().__init__(base_dir)
        (self.port,) = free_ports(1)
        self._as_root = os.geteuid() == 0
        self.user = "postgres" if self._as_root else _current_user()
        self._run_dir = None      # data and socket dirs, owned by self.user
        self._own_run_dir = False

    @property
    def url(self):
        return "postgresql+psycopg2://%s@%s:%d/%s" % (
            self.user, HOST, self.port, self.database)

    @property
    def data_dir(self):
        return os.path.join(self._run_dir, "data") if self._run_dir else None

    @property
    def socket_dir(self):
        return os.path.join(self._run_dir, "socket") if self._run_dir else None

    def _cmd(self, name, *args):
        argv = [os.path.join(self._bin, name)] + list(args)
        if self._as_root:
            argv = ["runuser", "-u", self.user, "--"] + argv
        return argv

    def _env(self):
        env = dict(os.environ)
        for key in list(env):
            if key.startswith("PG"):
                env.pop(key)  # PGDATA, PGHOST... would redirect the tools
        env.update({"LC_ALL": "C", "LANG": "C", "TZ": "UTC"})
        return env

    def _run(self, name, *args, timeout=60):
        return subprocess.run(
            self._cmd(name, *args), env=self._env(), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout, cwd="/")

    def _user_can_write(self, path):
        res = subprocess.run(["runuser", "-u", self.user, "--", "test", "-w", path],
                             stdin=subprocess.DEVNULL, capture_output=True)
        return res.returncode == 0

    def _setup(self):
        self._bin = _postgresql_bin_dir()
        self._prepare_dir()
        if self._run_dir is None:
            if not self._as_root:
                self._run_dir = self.base_dir
            else:
                if self._own_dir:
                    # Our mkdtemp: hand it over, so postgres can get in.
                    os.chown(self.base_dir, _uid(self.user), -1)
                self._run_dir = tempfile.mkdtemp(prefix="pg-", dir=self.base_dir)
                os.chown(self._run_dir, _uid(self.user), _gid(self.user))
                if not self._user_can_write(self._run_dir):
                    # A caller's base_dir under a private (0700) parent.
                    shutil.rmtree(self._run_dir, ignore_errors=True)
                    self._run_dir = tempfile.mkdtemp(prefix="ferryman-pg-")
                    self._own_run_dir = True
                    os.chown(self._run_dir, _uid(self.user), _gid(self.user))
        if not os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
            res = self._run("initdb", "-D", self.data_dir, "-A", "trust",
                            "-U", self.user, "-E", "UTF8", "--locale=C",
                            "--no-sync", "--no-instructions")
            with open(os.path.join(self.base_dir, "initdb.log"), "w") as f:
                f.write(res.stdout + res.stderr)
            if res.returncode != 0:
                self._fail("initdb exited with %s" % res.returncode)
        if not os.path.isdir(self.socket_dir):
            os.makedirs(self.socket_dir)
            if self._as_root:
                os.chown(self.socket_dir, _uid(self.user), _gid(self.user))

    def _log_files(self):
        if not self.base_dir:
            return []
        return [os.path.join(self.base_dir, n)
                for n in ("initdb.log", "stdout.log")]

    def _procs(self):
        return [self._proc] if self._proc is not None else []

    def ready(self, timeout=1):
        try:
            res = subprocess.run(
                [os.path.join(self._bin, "pg_isready"), "-q", "-h", HOST,
                 "-p", str(self.port), "-U", self.user, "-d", "postgres",
                 "-t", str(max(1, int(timeout)))],
                env=self._env(), stdin=subprocess.DEVNULL,
                capture_output=True, timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            return False
        return res.returncode == 0

    def _create_database(self):
        res = subprocess.run(
            [os.path.join(self._bin, "psql"), "-X", "-q", "-h", HOST,
             "-p", str(self.port), "-U", self.user, "-d", "postgres",
             "-v", "ON_ERROR_STOP=1", "-tA", "-c",
             "SELECT 1 FROM pg_database WHERE datname = '%s'" % self.database],
            env=self._env(), stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=30)
        if res.returncode == 0 and res.stdout.strip() == "1":
            return None  # a restart keeps the data dir, and the database
        res = subprocess.run(
            [os.path.join(self._bin, "createdb"), "-h", HOST, "-p", str(self.port),
             "-U", self.user, "-E", "UTF8", "-T", "template0", self.database],
            env=self._env(), stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=30)
        if res.returncode != 0:
            return "createdb exited with %s: %s" % (res.returncode,
                                                    res.stderr.strip())
        return None

    def start(self, timeout=60):
        if self.running:
            return
        self._setup()
        deadline = time.monotonic() + timeout
        self._proc = self._spawn(self._cmd(
            "postgres", "-D", self.data_dir, "-p", str(self.port),
            "-c", "listen_addresses=%s" % HOST,
            "-c", "unix_socket_directories=%s" % self.socket_dir,
            "-c", "fsync=off", "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off", "-c", "logging_collector=off",
            "-c", "max_connections=200"), env=self._env())
        while not self.ready():
            if self._proc.poll() is not None:
                self._fail("postgres exited with %s" % self._proc.returncode)
            if time.monotonic() > deadline:
                self._fail("not accepting connections after %ss" % timeout)
            time.sleep(0.05)
        error = self._create_database()
        if error:
            self._fail(error)

    def _shutdown(self):
        if self.running:
            try:
                # Fast: roll back open transactions, disconnect, checkpoint, exit.
                self._run("pg_ctl", "stop", "-D", self.data_dir, "-m", "fast",
                          "-w", "-t", "30", timeout=40)
            except subprocess.TimeoutExpired:
                pass
        _terminate(self._proc)
        self._proc = None

    def _cleanup_dir(self):
        if self._own_run_dir and self._run_dir:
            shutil.rmtree(self._run_dir, ignore_errors=True)
        if self._own_dir or self._own_run_dir:
            self._run_dir = None
            self._own_run_dir = False
        super()._cleanup_dir()


def _current_user():
    import pwd
    return pwd.getpwuid(os.geteuid()).pw_name


def _uid(user):
    import pwd
    return pwd.getpwnam(user).pw_uid


def _gid(user):
    import pwd
    return pwd.getpwnam(user).pw_gid
