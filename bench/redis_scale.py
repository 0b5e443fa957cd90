"""Where the Redis broker's ceiling is: the CPU one event costs Redis and each worker, measured on this
machine against a private redis-server and a private 3-master Redis Cluster, for W = 1, 2 and 4 workers.

    python bench/redis_scale.py [--streams 200] [--events 20000] [--singles 2000] [--workers 1,2,4]
                                [--pace 0.002] [--redis one,cluster] [--shards 16] [--masters 3]

For each Redis and W: a fresh gunicorn (``gunicorn.conf.py``, W workers) on it, ``--streams`` raw
streams held open by this process (opened several at once, so every worker holds some) and drained by a
thread. This process publishes with ``Push`` (the Python API, as a job runner or a sync-worker app does)
and reads the CPU of Redis and of every worker from ``/proc`` before and after each phase:

- foreign: unicasts to an id no stream has, in batches of 100: every worker reads and drops each one;
- foreign, one at a time: the same, one ``Push.send`` per event, paced (each event wakes every reader);
- unicast: batches of 100 to the streams' ids, round robin: each event read by W workers, delivered once;
- single: one ``Push.send`` per event to one stream's id, paced, so each event wakes the readers alone;
- broadcast: batches of 10 broadcasts: each event delivered to every stream.

Each phase ends when every stream has its marker event, so the CPU counted is all of its work. Redis's
CPU is the sum over its servers (a cluster's masters), and the busiest one's is printed beside it.
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis
from flask import Flask
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as ClusterClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness.redis_servers import OneRedis, RedisCluster  # noqa: E402
from pushsvc import Push  # noqa: E402

# A lone event every 2 ms by default: far slower than a worker delivers, so each one wakes it.
DEFAULT_PACE_SECONDS = 0.002


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_for(url: str):
    """A client of the Redis (or the cluster) the URL names, for the bench's own checks."""
    if url.startswith("redis+cluster://"):
        host, port = url.partition("://")[2].split(",")[0].split(":")
        return ClusterClient(startup_nodes=[ClusterNode(host, int(port.partition("/")[0]))])
    return redis.Redis.from_url(url)


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid``, from the scheduler's own nanosecond count (``schedstat``).

    Not ``/proc/<pid>/stat``: that is sampled at the timer tick, and a chain of processes woken by a
    timer (a paced publisher, then Redis, then the worker) runs right at the tick, so lone events would
    be charged several times what they cost."""
    return sum(int((task / "schedstat").read_text().split()[0])
               for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9


def wait(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if predicate():
                return
        except (OSError, redis.RedisError):
            pass
        time.sleep(0.05)
    raise TimeoutError(what)


class Streams:
    """Raw SSE streams drained by one thread; counts, per stream, how often a marker text arrived."""

    def __init__(self, port: int, client_ids: list[str]):
        self.socks: dict[socket.socket, str] = {}
        self.tail: dict[socket.socket, bytes] = {}
        self.marks: dict[socket.socket, int] = {}
        self.marker = b""
        self.selector = selectors.DefaultSelector()
        for client_id in client_ids:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(f"GET /sse/subscribe/{client_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            sock.setblocking(False)
            self.socks[sock] = client_id
            self.tail[sock] = b""
            self.marks[sock] = 0
            self.selector.register(sock, selectors.EVENT_READ)
        self.running = True
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while self.running:
            for key, _ in self.selector.select(0.2):
                sock = key.fileobj
                try:
                    data = sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                text = self.tail[sock] + data
                if self.marker:
                    self.marks[sock] += text.count(self.marker)
                self.tail[sock] = text[-len(self.marker):] if self.marker else b""

    def expect(self, marker: str) -> None:
        self.marker = f"data: {marker}\n".encode()
        for sock in self.marks:
            self.marks[sock] = 0
            self.tail[sock] = b""

    def all_marked(self) -> bool:
        return all(self.marks.values())

    def close(self) -> None:
        self.running = False
        self.thread.join(5)
        for sock in self.socks:
            sock.close()


class Service:
    """gunicorn with ``workers`` gevent workers on the Redis at ``url``."""

    def __init__(self, url: str, workers: int, log: Path):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSVC_")}
        env.update({"PUSHSVC_BROKER_URL": url, "PUSHSVC_WORKERS": str(workers),
                    "PUSHSVC_LOG_LEVEL": "WARNING", "PUSHSVC_BIND": f"127.0.0.1:{self.port}"})
        self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                                     cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.workers = workers
        client = client_for(url)
        # Every worker serves (its reader started) once it has answered a health check.
        def all_up() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                s.recv(100)
            # With a cluster, each shard has its own presence: every worker writes a share into each.
            key = "{pushsvc:0}:workers" if url.startswith("redis+cluster://") else "{pushsvc}:workers"
            return client.scard(key) >= workers
        wait(all_up, 30, "the workers did not come up")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)


def phase(name: str, publish, streams: Streams, pids: list[int], redis_pids: list[int], events: int,
          deliveries: int) -> dict[str, float]:
    marker = f"mark-{name}-{time.monotonic_ns()}"
    streams.expect(marker)
    before = [cpu_seconds(p) for p in pids], [cpu_seconds(p) for p in redis_pids], time.perf_counter()
    publish(marker)
    wait(streams.all_marked, 120, f"{name}: markers did not arrive")
    workers = sum(cpu_seconds(p) for p in pids) - sum(before[0])
    servers = [cpu_seconds(p) - b for p, b in zip(redis_pids, before[1], strict=True)]
    return {"events": events, "deliveries": deliveries, "wall_s": time.perf_counter() - before[2],
            "worker_cpu_s": workers, "redis_cpu_s": sum(servers), "busiest_redis_cpu_s": max(servers)}


def held(port: int, streams: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"GET /sse/clients HTTP/1.0\r\n\r\n")
        body = b""
        while chunk := s.recv(65536):
            body += chunk
    return f'"connections":{streams},'.encode() in body


def run_workers(url: str, redis_pids: list[int], workers: int, args: argparse.Namespace, log: Path) -> dict:
    service = Service(url, workers, log)
    ids = [f"s{i}" for i in range(args.streams)]
    streams = Streams(service.port, ids)
    app = Flask(__name__)
    push = Push(app, broker_url=url, log_level="WARNING")
    results = {}
    context = app.app_context()
    context.push()
    try:
        wait(lambda: held(service.port, args.streams), 30, "the streams were not all held")
        pids = service.worker_pids()

        def batches(target, total: int, size: int):
            """``target(k)``: the target fields of the k-th event."""
            def publish(marker: str) -> None:
                for start in range(0, total, size):
                    push.send_batch([{**target(k), "data": "x" * 64} for k in range(start, start + size)])
                push.send_many(ids, marker)
            return publish

        def singles(to: str, total: int):
            def publish(marker: str) -> None:
                for _ in range(total):
                    push.send(to, "x" * 64)
                    time.sleep(args.pace)
                push.send_many(ids, marker)
            return publish

        n, single = args.events, args.singles
        results["foreign"] = phase("foreign", batches(lambda k: {"to": "nobody"}, n, 100), streams, pids,
                                   redis_pids, n, 0)
        results["foreign-single"] = phase("foreign-single", singles("nobody", single), streams, pids,
                                          redis_pids, single, 0)
        results["unicast"] = phase("unicast", batches(lambda k: {"to": ids[k % len(ids)]}, n, 100), streams,
                                   pids, redis_pids, n, n)
        results["single"] = phase("single", singles(ids[0], single), streams, pids, redis_pids, single,
                                  single)
        broadcasts = max(10, n // args.streams)
        results["broadcast"] = phase("broadcast", batches(lambda k: {"broadcast": True}, broadcasts, 10),
                                     streams, pids, redis_pids, broadcasts, broadcasts * args.streams)
    finally:
        context.pop()
        streams.close()
        service.stop()
    return results


def report(kind: str, all_results: dict[int, dict]) -> None:
    """Per-event constants from the phases, for every W; then Redis's cost split by least squares into a
    part per published event and a part per reader."""
    print(f"\n{kind}")
    print(f"{'W':>2} {'phase':15} {'events':>7} {'wall s':>7} {'worker µs/event':>16} {'worker µs/read':>15} "
          f"{'worker µs/delivery':>19} {'redis µs/event':>15} {'busiest server':>15}")
    for workers, results in all_results.items():
        for name, r in results.items():
            per_event = r["worker_cpu_s"] / r["events"] * 1e6
            per_delivery = r["worker_cpu_s"] / r["deliveries"] * 1e6 if r["deliveries"] else float("nan")
            per_redis, busiest = (r[k] / r["events"] * 1e6 for k in ("redis_cpu_s", "busiest_redis_cpu_s"))
            print(f"{workers:>2} {name:15} {r['events']:>7} {r['wall_s']:>7.2f} {per_event:>16.1f} "
                  f"{per_event / workers:>15.1f} {per_delivery:>19.1f} {per_redis:>15.1f} {busiest:>15.1f}")
    for name in next(iter(all_results.values())):
        points = [(w, r[name]["redis_cpu_s"] / r[name]["events"] * 1e6) for w, r in all_results.items()]
        if len(points) < 2:
            continue
        mean_w = sum(w for w, _ in points) / len(points)
        mean_c = sum(c for _, c in points) / len(points)
        spread = sum((w - mean_w) ** 2 for w, _ in points)
        slope = sum((w - mean_w) * (c - mean_c) for w, c in points) / spread
        print(f"redis {name:15}: {mean_c - slope * mean_w:7.1f} µs per published event + {slope:6.1f} µs per "
              "reader")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--singles", type=int, default=2000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--pace", type=float, default=DEFAULT_PACE_SECONDS,
                        help="seconds between two lone events (the one-at-a-time phases)")
    parser.add_argument("--redis", default="one,cluster", help="one Redis, a Redis Cluster, or both")
    parser.add_argument("--shards", type=int, default=16, help="shards on the cluster")
    parser.add_argument("--masters", type=int, default=3, help="masters of the cluster")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed")
    for kind in args.redis.split(","):
        server = RedisCluster(args.masters) if kind == "cluster" else OneRedis()
        url = server.url(args.shards)
        label = (f"Redis Cluster, {args.masters} masters, {args.shards} shards" if kind == "cluster"
                 else "one Redis")
        try:
            all_results = {}
            for workers in (int(w) for w in args.workers.split(",")):
                server.flushall()
                all_results[workers] = run_workers(url, server.pids, workers, args,
                                                   Path(tempfile.gettempdir()) / "pushsvc-bench-gunicorn.log")
            load = os.getloadavg()
            print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.streams} streams, "
                  "64-byte events")
            report(label, all_results)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
