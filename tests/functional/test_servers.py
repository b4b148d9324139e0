import os
import socket
import subprocess
import sys
import threading
import time

from kazoo.client import KazooClient
import pytest

from ferryman.testing.servers import RabbitMQServer, RedisServer, ZooKeeperServer
from ferryman.testing.servers import port_open

pytestmark = pytest.mark.functional


def _alive(pid):
    # A zombie counts as dead: it only means someone has not reaped it yet.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _session_members(sid):
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != "self":
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except OSError:
                pass
    return [p for p in pids if _alive(p)]


def _amqp_answers(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        # connection.start frame: type 1 (method) on channel 0.
        return s.recv(7)[:3] == b"\x01\x00\x00"


def _node_pid(server):
    with open(server.pid_file) as f:
        return int(f.read().strip())


def test_rabbitmq_start_restart_stop():
    server = RabbitMQServer()
    try:
        server.start()
        base = server.base_dir
        assert server.url == "rabbit://guest:guest@127.0.0.1:%d/" % server.port
        assert _amqp_answers(server.port)
        first_node = _node_pid(server)

        server.restart()
        assert _amqp_answers(server.port)
        assert _node_pid(server) != first_node
        pids = server.pids + [_node_pid(server)]
        sessions = list(server.pids)
    finally:
        server.stop()

    for port in (server.port, server.dist_port, server.epmd_port):
        assert not port_open(port), port
    assert not [p for p in pids if _alive(p)]
    assert not [p for sid in sessions for p in _session_members(sid)]
    assert server.pids == []
    assert not os.path.exists(base)


def test_redis_start_stop():
    with RedisServer() as server:
        assert server.url == "redis://127.0.0.1:%d/0" % server.port
        with socket.create_connection(("127.0.0.1", server.port), 5) as s:
            s.sendall(b"PING\r\n")
            assert s.recv(64) == b"+PONG\r\n"
        pids, base = server.pids, server.base_dir
        assert pids
    assert not port_open(server.port)
    assert not [p for p in pids if _alive(p)]
    assert not os.path.exists(base)


def test_redis_start_failure_reports_log():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = RedisServer()
        server.port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match="(?s)exited.*already in use"):
            server.start(timeout=10)
    assert server.pids == []
    assert server.base_dir is None


# Holds an ephemeral node in its own session until killed.
_OWNER = """
import sys, time
from kazoo.client import KazooClient
c = KazooClient(hosts=sys.argv[1], timeout=float(sys.argv[2]))
c.start(timeout=30)
c.create('/claim', b'mine', ephemeral=True, makepath=True)
print('ready', flush=True)
time.sleep(600)
"""


def test_zookeeper_start_stop_and_session_expiry():
    session = 1.5
    with ZooKeeperServer() as server:
        assert server.url == "zookeeper://127.0.0.1:%d" % server.port
        assert server.command("ruok") == "imok"
        pids, base = server.pids, server.base_dir
        assert pids
        owner = subprocess.Popen([sys.executable, "-c", _OWNER, server.hosts,
                                  str(session)], stdout=subprocess.PIPE, text=True)
        watcher = KazooClient(hosts=server.hosts, timeout=10)
        watcher.start(timeout=30)
        try:
            assert owner.stdout.readline() == "ready\n"
            assert watcher.get("/claim")[0] == b"mine"
            gone = threading.Event()
            watcher.exists("/claim", watch=lambda _event: gone.set())
            owner.kill()
            killed = time.monotonic()
            owner.wait(10)
            # The session the client asked for, not the server's stock 4-40 s
            # clamp: the node goes once the owner has been silent that long
            # (its last ping was at most a third of it before the kill).
            assert gone.wait(session + 10), "ephemeral node outlived its session"
            took = time.monotonic() - killed
            assert watcher.exists("/claim") is None
            assert session * 2 / 3 - 0.2 <= took <= session + 2.0, took
        finally:
            owner.kill()
            owner.wait(10)
            watcher.stop()
            watcher.close()
    assert not port_open(server.port)
    assert not [p for p in pids if _alive(p)]
    assert not os.path.exists(base)


def test_zookeeper_start_failure_reports_log():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = ZooKeeperServer()
        server.port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match="(?s)exited.*already in use"):
            server.start(timeout=30)
    assert server.pids == []
    assert server.base_dir is None
