"""Real processes for tests: gunicorn with gevent workers and a private redis-server, each on a free
loopback port, each stopped by its PID (process group) however the test ends."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def require(binary: str, flag: str) -> str:
    """The path of ``binary``, or skip (locally) / fail (when ``flag`` is set, as in CI)."""
    path = shutil.which(binary) or (binary if os.path.exists(binary) else None)
    if path is None:
        message = f"{binary} is not installed"
        if os.environ.get(flag) == "1":
            pytest.fail(f"{message}, and {flag}=1 says it must be")
        pytest.skip(message)
    return path


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Signal the process group of ``proc``; SIGKILL what is left after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class Gunicorn:
    """``gunicorn -c gunicorn.conf.py wsgi:app`` from the project's root, as a user starts it."""

    def __init__(self, *, workers: int = 1, env: dict[str, str] | None = None, app: str = "wsgi:app",
                 port: int | None = None, args: tuple[str, ...] = (), health: str = "/healthz",
                 wrapper: tuple[str, ...] = ()):
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        # No PUSHSVC_* of the test run reaches the server: the settings are the test's own, and switches
        # such as PUSHSVC_REQUIRE_REDIS are read by the tests, not by pushsvc (which would warn of them).
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSVC_")}
        self.env.update({"PUSHSVC_HEARTBEAT_SECONDS": "15", "PYTHONUNBUFFERED": "1"})
        self.env.update(env or {})
        self.app = app
        self.args = args
        # A command that runs gunicorn, such as ("prlimit", "--nofile=300:300", "--").
        self.wrapper = wrapper
        self.health = health
        self.log = tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> Gunicorn:
        cmd = [*self.wrapper, sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", self.app,
               "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers), *self.args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + self.health, timeout=1).status_code in (200, 503):
                    return
            time.sleep(0.1)
        raise TimeoutError(f"gunicorn did not answer within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """PIDs of the gunicorn workers (children of the arbiter)."""
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig)

    def url(self, path: str) -> str:
        return self.base + path

    def __enter__(self) -> Gunicorn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        # A server the test is done with gets gunicorn's quick stop (SIGQUIT: the same drain of every
        # stream, then exit). The graceful one waits out the gevent worker's 1 s sleep and costs a second
        # per server; tests of the graceful stop call stop() (SIGTERM) or send the signal themselves.
        self.stop(signal.SIGQUIT)
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


class RedisServer:
    """A private ``redis-server`` on a free port that keeps nothing on disk."""

    def __init__(self, port: int | None = None):
        self.binary = require("redis-server", "PUSHSVC_REQUIRE_REDIS")
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.dir = tempfile.mkdtemp(prefix="pushsvc-redis-")

    def start(self, timeout: float = 10) -> RedisServer:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def service(broker: str, env: dict[str, str] | None = None) -> Iterator[Gunicorn]:
    """The service under test for ``broker``: ``memory`` is one gevent worker with the embedded broker;
    ``redis`` is two gevent workers sharing a private redis-server, so they must act as one service."""
    env = dict(env or {})
    if broker == "memory":
        with Gunicorn(env=env) as gunicorn:
            yield gunicorn
        return
    redis = RedisServer().start()
    try:
        with Gunicorn(workers=2, env={**env, "PUSHSVC_BROKER_URL": redis.url}) as gunicorn:
            gunicorn.redis = redis
            yield gunicorn
    finally:
        redis.cleanup()
