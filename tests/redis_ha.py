"""Redis with Sentinel for tests: a master, its replicas and three sentinels, each a private process on a
free loopback port with its files in a temporary directory, each stopped by its PID."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import redis

from .helpers import wait_for
from .servers import RedisServer, free_port, require, stop_process

MASTER_NAME = "pushsvc"
# Fast enough for a test (a dead master is noticed within a second), slow enough that a loaded 2-core
# machine does not see a master that is merely busy as down.
DOWN_AFTER_MS = 1500
FAILOVER_TIMEOUT_MS = 4000


class RedisNode(RedisServer):
    """A ``redis-server`` that may start as a replica of another, and keeps its own directory;
    ``args`` are more options for it (a cluster node's, say)."""

    def __init__(self, *, replica_of: int | None = None, args: tuple[str, ...] = ()):
        super().__init__()
        self.replica_of = replica_of
        self.args = args

    def start(self, timeout: float = 10) -> RedisNode:
        # A replica (re)joining gets its copy at once, not after the 5 s Redis waits for more replicas.
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                "no", "--dir", self.dir, "--daemonize", "no", "--repl-diskless-sync-delay", "0"]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        args += self.args
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        assert wait_for(self.answers, timeout), f"redis-server on {self.port} did not start"
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def answers(self) -> bool:
        with contextlib.suppress(redis.RedisError), self.client() as client:
            return bool(client.ping())
        return False

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)


class SentinelNode:
    """``redis-server <conf> --sentinel`` watching one master; its config file (which Sentinel rewrites)
    lives in a directory of its own."""

    def __init__(self, master_port: int):
        self.binary = require("redis-server", "PUSHSVC_REQUIRE_REDIS")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="pushsvc-sentinel-")
        self.conf = Path(self.dir) / "sentinel.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndaemonize no\ndir {self.dir}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> SentinelNode:
        self.proc = subprocess.Popen([self.binary, str(self.conf), "--sentinel"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        assert wait_for(lambda: self.ask("PING") is not None, 10), f"sentinel on {self.port} did not start"
        return self

    def ask(self, *command: str):
        """One command to this sentinel; ``None`` when it does not answer."""
        with contextlib.suppress(redis.RedisError), redis.Redis(port=self.port, socket_timeout=5) as client:
            return client.execute_command(*command)
        return None

    def master(self) -> dict[str, str]:
        """This sentinel's view of the master (``SENTINEL MASTER``), as text."""
        reply = self.ask("SENTINEL", "MASTER", MASTER_NAME) or []
        if isinstance(reply, dict):
            return {_text(k): _text(v) for k, v in reply.items()}
        return {_text(reply[i]): _text(reply[i + 1]) for i in range(0, len(reply), 2)}

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class Sentinels:
    """A master, its replicas and three sentinels (quorum two), ready once all of them see each other."""

    def __init__(self, replicas: int = 1):
        self.replicas = replicas
        self.nodes: list[RedisNode] = []
        self.sentinels: list[SentinelNode] = []
        self.url = ""

    def start(self) -> Sentinels:
        """Start them all, in order; :meth:`stop` stops whatever started, however far this got."""
        master = RedisNode()
        self.nodes.append(master)
        master.start()
        for _ in range(self.replicas):
            self.nodes.append(RedisNode(replica_of=master.port))
            self.nodes[-1].start()
        for _ in range(3):
            self.sentinels.append(SentinelNode(master.port))
            self.sentinels[-1].start()
        self.url = "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + \
            f"/{MASTER_NAME}/0"
        self.wait_ready(master.port)
        return self

    def wait_ready(self, master_port: int, timeout: float = 30) -> None:
        """Until every sentinel names ``master_port`` as a healthy master with its replicas in sync and
        knows the other two sentinels (a failover asked before that is refused)."""
        def ready() -> bool:
            for sentinel in self.sentinels:
                view = sentinel.master()
                if view.get("port") != str(master_port) or view.get("flags") != "master":
                    return False
                if view.get("num-slaves") != str(self.replicas) or view.get("num-other-sentinels") != "2":
                    return False
            info = self.node(master_port).client().info("replication")
            online = [v for v in info.values() if isinstance(v, dict) and v.get("state") == "online"]
            return len(online) == self.replicas
        assert wait_for(ready, timeout, interval=0.2), [s.master() for s in self.sentinels]

    def node(self, port: int) -> RedisNode:
        return next(n for n in self.nodes if n.port == port)

    def master_port(self) -> int | None:
        """The master's port as most sentinels name it now."""
        ports = [s.master().get("port") for s in self.sentinels]
        best = max(set(ports), key=ports.count)
        return int(best) if best and ports.count(best) >= 2 else None

    def wait_new_master(self, old_port: int, timeout: float = 30) -> int:
        assert wait_for(lambda: self.master_port() not in (None, old_port), timeout, interval=0.1), \
            [s.master() for s in self.sentinels]
        port = self.master_port()
        assert port is not None
        assert wait_for(lambda: self.node(port).client().info("replication")["role"] == "master", timeout)
        return port

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: promote the replica now, without waiting for agreement."""
        assert self.sentinels[0].ask("SENTINEL", "FAILOVER", MASTER_NAME) is not None

    def kill(self, port: int) -> None:
        self.node(port).signal(signal.SIGKILL)
        self.node(port).proc.wait(10)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in self.nodes:
            node.cleanup()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def sentinels(replicas: int = 1) -> Iterator[Sentinels]:
    started = Sentinels(replicas)
    try:
        yield started.start()
    finally:
        started.stop()

