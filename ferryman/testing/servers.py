"""Private Redis, PostgreSQL and ZooKeeper servers on loopback, for tests, beside
the RabbitMQ node and the base they share (:mod:`ferryman.sim.servers`, which the
sandbox uses too).

Each server gets its own ports and directories, so tests never depend on (or
disturb) a system-wide service. Only the standard library is used.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

from ferryman.sim.servers import HOST, RabbitMQServer, _Server  # noqa: F401
from ferryman.sim.servers import _tail, _terminate  # noqa: F401
from ferryman.sim.servers import free_ports, port_open  # noqa: F401


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
