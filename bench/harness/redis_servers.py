"""Private Redis servers for the benchmarks, on free loopback ports: one redis-server, or a Redis Cluster of
``masters`` redis-servers with no replicas (a benchmark measures the work, not the failover), joined by
``redis-cli --cluster create``. Both offer ``url(shards)``, ``pids``, ``flushall()`` and ``stop()``."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def _free_port(*, bus: bool = False) -> int:
    """A free loopback port; with ``bus``, one whose cluster bus port (10000 above it) is free as well."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not bus:
            return port
        if port + 10000 < 65536:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


class RedisCluster:
    def __init__(self, masters: int = 3):
        self.dir = Path(tempfile.mkdtemp(prefix="pushsvc-bench-cluster-"))
        self.ports = [_free_port(bus=True) for _ in range(masters)]
        self.procs: list[subprocess.Popen] = []
        for port in self.ports:
            node_dir = self.dir / str(port)
            node_dir.mkdir()
            self.procs.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                 "no", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--dir", str(node_dir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        for port in self.ports:
            self._wait(lambda p=port: redis.Redis(port=p).ping(), "a node did not start")
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        for port in self.ports:
            self._wait(lambda p=port: redis.Redis(port=p).cluster("info")["cluster_state"] == "ok",
                       "the cluster did not come up")

    @staticmethod
    def _wait(predicate, what: str, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if predicate():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise TimeoutError(what)

    def url(self, shards: int) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + f"/?shards={shards}"

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def flushall(self) -> None:
        for port in self.ports:
            redis.Redis(port=port).flushall()

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class OneRedis:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="pushsvc-bench-")
        port = _free_port()
        self.proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save",
                                      "", "--appendonly", "no", "--dir", self.dir], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.url_ = f"redis://127.0.0.1:{port}/0"
        self.pids = [self.proc.pid]
        RedisCluster._wait(lambda: redis.Redis(port=port).ping(), "redis-server did not start")

    def url(self, shards: int) -> str:
        return self.url_

    def flushall(self) -> None:
        redis.Redis.from_url(self.url_).flushall()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
