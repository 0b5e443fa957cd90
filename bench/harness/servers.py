"""The systems under test and the processes behind them: pushsvc, flask-sse, sse-starlette, Nchan, Redis.

Each :class:`Server` knows how to start, which paths the load generator subscribes and publishes on, how
many streams it holds now, and which processes make up its CPU (the server, and the Redis it depends on).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .common import BENCH, OUT, ROOT, free_port, stop

NCHAN_MODULE = "modules/ngx_nchan_module.so"   # relative to nginx's own prefix (Debian's modules dir)


class Redis:
    """A private redis-server on a free port, nothing on disk."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="bench-redis-", dir=OUT)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--maxclients", "30000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(100):
            with contextlib.suppress(OSError):
                if self.command("PING").startswith("+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def command(self, *words: str) -> str:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall((" ".join(words) + "\r\n").encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                data += chunk
                complete = data.endswith(b"\r\n") and (not data.startswith(b"$") or data.count(b"\r\n") >= 2)
                if not chunk or complete:
                    break
            return data.decode(errors="replace")

    def clients(self) -> int:
        for line in self.command("INFO", "clients").splitlines():
            if line.startswith("connected_clients:"):
                return int(line.split(":")[1]) - 1   # less this query's own connection
        return -1

    def stop(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def _healthz_connections(body: bytes) -> int:
    return int(json.loads(body)["connections"])


@dataclass
class Server:
    """One system under test: its processes, the Redis it depends on (if any), and its paths."""

    name: str
    cmd: list[str]                   # "{port}" is replaced by the port
    env: dict[str, str]
    cwd: Path
    sub: dict[str, str]              # subscribe path per layout: "broadcast" / "unicast"
    body: dict[str, str]             # publish body per mode ($I target, $D data)
    publish: dict[str, str] = field(default_factory=lambda: {"broadcast": "/sse/publish",
                                                             "unicast": "/sse/publish"})
    count_path: str = "/healthz"     # answers the streams held now, read by ``count``
    count: Callable[[bytes], int] = _healthz_connections
    ready: str | None = None         # the load generator polls it (a server that sends no headers early)
    redis: Redis | None = None
    workers: int = 1                 # child processes expected (0: the started process serves itself)
    batch: bool = True               # takes a JSON array of events in one publish
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    cleanup: Callable[[], None] | None = None

    def start(self) -> None:
        self.log_path = OUT / f"{self.name}-{self.port}.log"
        cmd = [part.replace("{port}", str(self.port)) for part in self.cmd]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_started()
        except BaseException:
            self.stop()
            raise

    def _wait_started(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            if len(self.worker_pids()) >= self.workers and self.streams() is not None:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start: {self.log_path.read_text()[-2000:]}")

    def worker_pids(self) -> list[int]:
        """The processes that hold the streams."""
        if not self.workers:
            return [self.proc.pid]
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def cpu_pids(self, *, with_redis: bool = True) -> list[int]:
        pids = list(dict.fromkeys([self.proc.pid, *self.worker_pids()]))
        return [*pids, self.redis.proc.pid] if self.redis and with_redis else pids

    def streams(self) -> int | None:
        """Streams the server holds now (to wait for a clean slate between scenarios)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{self.count_path}", timeout=5) as r:
                return self.count(r.read())
        except (OSError, ValueError, KeyError):
            return None

    def settle(self, channels: int = 0, timeout: float = 90) -> None:
        """Wait until the server has noticed that the last scenario's streams are gone.

        flask-sse has no heartbeat: a stream learns its client left only when an event is written to it,
        so the peer gets one event without a marker on every channel the scenario used.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} died")
            if self.streams() == 0:
                return
            if self.name == "flask-sse":
                self.purge(channels)
            time.sleep(1)

    def purge(self, channels: int) -> None:
        items = [{"channel": "all", "data": "purge"}, *({"channel": f"c{i}", "data": "purge"}
                                                        for i in range(channels))]
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/publish", json.dumps(items).encode(),
                                         {"Content-Type": "application/json"})
        with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=30):
            pass

    def stop(self) -> None:
        stop(self.proc)
        if self.redis:
            self.redis.stop()
        if self.cleanup:
            self.cleanup()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSVC_")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def pushsvc(workers: int = 1, broker: Redis | None = None) -> Server:
    env = _env(PUSHSVC_LOG_LEVEL="warning", PUSHSVC_MAX_CONNECTIONS="10500", PUSHSVC_WORKERS=str(workers))
    if broker:
        env["PUSHSVC_BROKER_URL"] = broker.url
    return Server(
        name="pushsvc" if not broker else f"pushsvc-redis-{workers}w",
        cmd=[sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:{port}",
             "wsgi:app"], env=env, cwd=ROOT,
        sub={"broadcast": "/sse/subscribe/c$I", "unicast": "/sse/subscribe/c$I"},
        body={"broadcast": '{"broadcast":true,"data":"$D"}', "unicast": '{"to":"c$I","data":"$D"}'},
        redis=broker, workers=workers)


def flask_sse() -> Server:
    redis = Redis()
    return Server(
        name="flask-sse", cmd=[sys.executable, "-m", "gunicorn", "-c", "peer_gunicorn.conf.py", "--bind",
                               "127.0.0.1:{port}", "peer_app:app"],
        env=_env(PEER_REDIS_URL=redis.url), cwd=BENCH,
        sub={"broadcast": "/stream?channel=all", "unicast": "/stream?channel=c$I"},
        body={"broadcast": '{"channel":"all","data":"$D"}', "unicast": '{"channel":"c$I","data":"$D"}'},
        publish={"broadcast": "/publish", "unicast": "/publish"}, count_path="/ready", count=int,
        ready="/ready", redis=redis)


def sse_starlette() -> Server:
    """sse-starlette on uvicorn, one process, with uvloop and httptools (uvicorn's fastest setup)."""
    return Server(
        name="sse-starlette",
        cmd=[sys.executable, "-m", "uvicorn", "starlette_app:app", "--host", "127.0.0.1", "--port", "{port}",
             "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
             "--backlog", "8192", "--timeout-keep-alive", "5"],
        env=_env(), cwd=BENCH,
        sub={"broadcast": "/subscribe/c$I", "unicast": "/subscribe/c$I"},
        body={"broadcast": '{"broadcast":true,"data":"$D"}', "unicast": '{"to":"c$I","data":"$D"}'},
        publish={"broadcast": "/publish", "unicast": "/publish"}, count_path="/healthz", workers=0)


NGINX_CONF = """\
load_module {module};
worker_processes 1;
worker_rlimit_nofile 65536;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 32768; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        location ~ ^/sub/(.+)$ {{ nchan_subscriber eventsource; nchan_channel_id $1; }}
        location = /pub {{ nchan_publisher; nchan_channel_id $arg_id; nchan_message_buffer_length 16; }}
        location = /status {{ nchan_stub_status; }}
    }}
}}
"""


def _nchan_subscribers(body: bytes) -> int:
    for line in body.decode().splitlines():
        if line.startswith("subscribers:"):
            return int(line.split(":")[1])
    raise ValueError("no subscriber count in nchan_stub_status")


def nchan() -> Server:
    """Nchan (Debian's libnginx-mod-nchan) in one nginx worker, its configuration in a temporary dir."""
    conf_dir = tempfile.mkdtemp(prefix="bench-nchan-", dir=OUT)
    server = Server(
        name="nchan", cmd=["nginx", "-c", f"{conf_dir}/nginx.conf", "-g", "daemon off;"], env=_env(),
        cwd=Path(conf_dir),
        sub={"broadcast": "/sub/all", "unicast": "/sub/c$I"},
        body={"broadcast": "$D", "unicast": "$D"},
        publish={"broadcast": "/pub?id=all", "unicast": "/pub?id=c$I"}, count_path="/status",
        count=_nchan_subscribers, batch=False, cleanup=lambda: shutil.rmtree(conf_dir, ignore_errors=True))
    Path(conf_dir, "nginx.conf").write_text(NGINX_CONF.format(module=NCHAN_MODULE, dir=conf_dir,
                                                              port=server.port))
    return server


SYSTEMS: dict[str, Callable[[], Server]] = {
    "pushsvc": pushsvc, "flask-sse": flask_sse, "sse-starlette": sse_starlette, "nchan": nchan,
}
