"""gunicorn refuses configurations that cannot work, with one line that says what to change."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .servers import ROOT, Gunicorn, free_port


def start(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    g = Gunicorn(env=env)
    cmd = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app",
           "--bind", f"127.0.0.1:{free_port()}", *args]
    return subprocess.run(cmd, cwd=ROOT, env=g.env, capture_output=True, text=True, timeout=30)


def test_memory_broker_with_two_workers_is_refused():
    result = start("--workers", "2", env={})
    assert result.returncode != 0
    assert "PUSHSVC_BROKER_URL=redis://" in result.stderr
    assert "--workers 1" in result.stderr


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PUSHSVC_HEARTBEAT_SECONDS": "often"}, "PUSHSVC_HEARTBEAT_SECONDS"),
        ({"PUSHSVC_BROKER_URL": "amqp://localhost"}, "PUSHSVC_BROKER_URL"),
        ({"PUSHSVC_MAX_CONNECTIONS": "500", "PUSHSVC_WORKER_CONNECTIONS": "100"}, "PUSHSVC_MAX_CONNECTIONS"),
    ],
)
def test_bad_settings_stop_startup_naming_the_setting(env, name):
    result = start("--workers", "1", env=env)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("pushsvc:")]
    assert len(lines) == 1 and name in lines[0]


def print_config(*args: str, env: dict[str, str]) -> dict[str, str]:
    g = Gunicorn(env=env)
    cmd = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--print-config", "wsgi:app", *args]
    out = subprocess.run(cmd, cwd=ROOT, env=g.env, capture_output=True, text=True, timeout=30).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in out.splitlines()) if _}


def test_environment_sets_gunicorn_and_the_command_line_wins():
    env = {"PUSHSVC_BIND": "127.0.0.1:9001", "PUSHSVC_WORKERS": "3", "PUSHSVC_MAX_CONNECTIONS": "500",
           "PUSHSVC_GRACEFUL_TIMEOUT": "7"}
    config = print_config(env=env)
    assert config["bind"] == "['127.0.0.1:9001']"
    assert config["workers"] == "3"
    # gunicorn's gevent worker, plus a drain of open streams on SIGTERM (pushsvc/server/worker.py).
    assert config["worker_class"] == "pushsvc.server.worker.DrainingWorker"
    assert config["worker_connections"] == "1500"  # streams capped below it, with room to spare
    assert config["graceful_timeout"] == "7"
    # A reconnect storm waits in the kernel's accept queue instead of having its SYNs dropped.
    assert config["backlog"] == "8192"
    assert print_config(env={"PUSHSVC_BACKLOG": "3000"})["backlog"] == "3000"
    config = print_config("--bind", "127.0.0.1:9002", "--workers", "1", env=env)
    assert config["bind"] == "['127.0.0.1:9002']" and config["workers"] == "1"
