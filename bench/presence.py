"""What presence costs: server CPU per connect, with presence transitions off and on, side by side.

    python bench/presence.py                       # both brokers, 5,000-stream storm, 200 connects/s churn
    python bench/presence.py --broker redis --streams 2000 --churn-seconds 5

For each broker (memory: one worker; redis: one worker and a private redis-server) and each mode:

* ``off``: ``PUSHSVC_PRESENCE_TRACKING=0`` and no hooks, pushsvc as it was before presence;
* ``on``: tracking on (the default) and the four lifecycle hooks registered (``bench/presence_app.py``,
  each only counting), so every connect makes an ``online`` and every end an ``offline`` to call hooks for.

Two loads, each with a new client id per stream (every connect is a transition, the worst case) and one of
50 groups each (so group units are counted too): a *storm* opens ``--streams`` streams as fast as the
server answers (in waves of 100), and *churn* opens ``--rate`` new streams a second while closing as
many of the oldest, over a pool of 1,000. Server CPU (user + system, from ``/proc/<pid>/stat``) is taken
from just before the load until the server is idle again (the grace period and the sweeps included),
divided by the connects made (a refused stream, ``event: busy``, is counted apart, not as a connect).
The client is a single-threaded Python ``selectors`` loop; its own CPU is shown too, since on a 2-core
machine it competes with the server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
GRACE_SECONDS = 1.0
POOL = 1000
# The storm opens streams in waves of this many at once, each wave as fast as the server answers. With
# hundreds in flight, a Redis worker's 16 pooled connections are all busy with the subscribes' HEAD
# calls, its canary write times out and it refuses streams (event: busy) for a second: the figures would
# be of refusals, not connects.
STORM_WAVE = 100
GROUPS = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def own_cpu() -> float:
    usage = os.times()
    return usage.user + usage.system


class Server:
    """gunicorn with one gevent worker serving ``bench/presence_app.py`` (and a redis-server)."""

    def __init__(self, broker: str, mode: str):
        self.port = free_port()
        self.redis: subprocess.Popen | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSVC_")}
        env.update({"PUSHSVC_MAX_CONNECTIONS": "12000", "PUSHSVC_LOG_LEVEL": "WARNING",
                    "PUSHSVC_PRESENCE_GRACE_SECONDS": str(GRACE_SECONDS), "PUSHSVC_BACKLOG": "8192",
                    "PUSHSVC_PRESENCE_TRACKING": "1" if mode == "on" else "0",
                    "BENCH_HOOKS": "1" if mode == "on" else "0"})
        self.dir = tempfile.mkdtemp(prefix="pushsvc-bench-")
        if broker == "redis":
            redis_port = free_port()
            binary = shutil.which("redis-server")
            if binary is None:
                raise SystemExit("redis-server is not installed")
            self.redis = subprocess.Popen([binary, "--port", str(redis_port), "--bind", "127.0.0.1",
                                           "--save", "", "--appendonly", "no", "--dir", self.dir],
                                          stdout=subprocess.DEVNULL, start_new_session=True)
            env["PUSHSVC_BROKER_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        self.log = open(Path(self.dir) / "gunicorn.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--pythonpath", "bench",
             "presence_app:app", "--bind", f"127.0.0.1:{self.port}", "--workers", "1"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()
        self.worker = self._worker_pid()

    def _wait_ready(self) -> None:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            with contextlib.suppress(OSError):
                if self.get("/healthz") is not None:
                    return
            time.sleep(0.2)
        raise RuntimeError("the server did not start: " + (Path(self.dir) / "gunicorn.log").read_text())

    def _worker_pid(self) -> int:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return int(out.stdout.split()[0])

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as reply:
            return json.loads(reply.read())

    def cpu(self) -> tuple[float, float]:
        """(worker, redis-server) CPU seconds so far."""
        return cpu_seconds(self.worker), cpu_seconds(self.redis.pid) if self.redis else 0.0

    def settle(self, start: tuple[float, float], *, at_least: float) -> tuple[float, float]:
        """Wait until the server used under 1 % CPU for half a second (after ``at_least`` seconds)."""
        time.sleep(at_least)
        last = self.cpu()
        for _ in range(60):
            time.sleep(0.5)
            now = self.cpu()
            if sum(now) - sum(last) < 0.005:
                break
            last = now
        return now[0] - start[0], now[1] - start[1]

    def stop(self) -> None:
        for proc in (self.proc, self.redis):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Client:
    """Many streams from one thread: non-blocking connects, a GET each, done once ``retry:`` came."""

    def __init__(self, port: int):
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.serial = 0
        #: Why streams were refused (``event: busy``), by reason: they are not counted as connects.
        self.refused: dict[str, int] = {}

    def open(self, count: int, prefix: str, timeout: float = 60) -> list[socket.socket]:
        pending: dict[socket.socket, bytes] = {}
        for _ in range(count):
            self.serial += 1
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", self.port))
            path = f"/sse/subscribe/{prefix}-{self.serial}?group=g{self.serial % GROUPS}"
            pending[sock] = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
            self.selector.register(sock, selectors.EVENT_WRITE)
        opened, waiting = [], len(pending)
        end = time.monotonic() + timeout
        while waiting and time.monotonic() < end:
            for key, events in self.selector.select(1):
                sock = key.fileobj
                if events & selectors.EVENT_WRITE:
                    sock.send(pending.pop(sock))
                    self.selector.modify(sock, selectors.EVENT_READ)
                    pending[sock] = b""
                    continue
                try:
                    chunk = sock.recv(4096)
                except BlockingIOError:
                    continue
                pending[sock] += chunk
                if b"retry:" in pending[sock] or not chunk:
                    self.selector.unregister(sock)
                    self._answered(sock, pending.pop(sock), opened)
                    waiting -= 1
        if waiting:
            raise RuntimeError(f"{waiting} of {count} streams got no answer within {timeout} s")
        return opened

    def _answered(self, sock: socket.socket, head: bytes, opened: list[socket.socket]) -> None:
        if b"event: busy" not in head:
            opened.append(sock)
            return
        reason = json.loads(head.split(b"data: ", 1)[1].split(b"\n", 1)[0])["reason"]
        self.refused[reason] = self.refused.get(reason, 0) + 1
        sock.close()

    @staticmethod
    def close(streams: list[socket.socket]) -> None:
        for sock in streams:
            sock.close()


def storm(server: Server, client: Client, streams: int) -> dict:
    start, client_start, began = server.cpu(), own_cpu(), time.monotonic()
    opened: list[socket.socket] = []
    while len(opened) < streams:
        opened += client.open(min(STORM_WAVE, streams - len(opened)), "storm")
    connected = time.monotonic() - began
    worker, redis = server.settle(start, at_least=1.0)
    result = {"connects": len(opened), "refused": dict(client.refused), "connect_s": connected,
              "worker_cpu": worker, "redis_cpu": redis, "client_cpu": own_cpu() - client_start}
    Client.close(opened)
    server.settle(server.cpu(), at_least=GRACE_SECONDS + 1)
    return result


def churn(server: Server, client: Client, rate: int, seconds: float) -> dict:
    pool = deque(client.open(POOL, "pool"))
    server.settle(server.cpu(), at_least=GRACE_SECONDS + 1)
    client.refused.clear()
    start, client_start = server.cpu(), own_cpu()
    step, made = 0.1, 0
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        tick = time.monotonic()
        per_step = int(rate * step)
        new = client.open(per_step, "churn")
        pool.extend(new)
        Client.close([pool.popleft() for _ in range(min(len(new), len(pool)))])
        made += len(new)
        time.sleep(max(0.0, step - (time.monotonic() - tick)))
    achieved = made / (time.monotonic() - began)
    worker, redis = server.settle(start, at_least=GRACE_SECONDS + 1)
    result = {"connects": made, "refused": dict(client.refused), "rate": achieved, "worker_cpu": worker,
              "redis_cpu": redis, "client_cpu": own_cpu() - client_start}
    Client.close(list(pool))
    return result


def run(broker: str, mode: str, args: argparse.Namespace) -> dict:
    server = Server(broker, mode)
    try:
        client = Client(server.port)
        # The first stream starts the worker's broker (the Redis reader): not part of what is measured.
        Client.close(client.open(1, "warmup"))
        time.sleep(1)
        client.refused.clear()
        result = {"broker": broker, "mode": mode, "storm": storm(server, client, args.streams),
                  "churn": churn(server, client, args.rate, args.churn_seconds)}
        if mode == "on":
            result["hooks"] = server.get("/bench/hooks")
        return result
    finally:
        server.stop()


def per_connect_ms(load: dict) -> str:
    total = load["worker_cpu"] + load["redis_cpu"]
    return f"{1000 * total / load['connects']:.3f}"


def report(results: list[dict]) -> str:
    lines = ["| broker | presence | load | connects | refused | worker CPU s | redis CPU s | ms/connect |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for load in ("storm", "churn"):
            data = r[load]
            label = (f"storm ({data['connect_s']:.1f} s)" if load == "storm"
                     else f"churn ({data['rate']:.0f}/s)")
            refused = sum(data["refused"].values())
            lines.append(f"| {r['broker']} | {r['mode']} | {label} | {data['connects']} | {refused} | "
                         f"{data['worker_cpu']:.2f} | {data['redis_cpu']:.2f} | {per_connect_ms(data)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=("memory", "redis", "both"), default="both")
    parser.add_argument("--streams", type=int, default=5000, help="streams in the connect storm")
    parser.add_argument("--rate", type=int, default=200, help="connects (and as many ends) per second")
    parser.add_argument("--churn-seconds", type=float, default=10.0)
    args = parser.parse_args()
    brokers = ("memory", "redis") if args.broker == "both" else (args.broker,)
    results = []
    for broker in brokers:
        for mode in ("off", "on"):
            print(f"{broker}, presence {mode} …", file=sys.stderr, flush=True)
            results.append(run(broker, mode, args))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(report(results))


if __name__ == "__main__":
    main()
