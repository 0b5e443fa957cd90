"""A clean stop leaves a clean log: SIGTERM to a real gunicorn (1 and 2 workers, both brokers) writes no
``Exception ignored`` and no ``Traceback``, however early the configuration imports Flask; nor does a
quick stop (Ctrl-C, SIGQUIT).

The noise this guards against came from the interpreter's last steps in each worker (see
``pushsvc.server.worker.native_logging_lock``): it showed only when Flask was imported before the worker
patched the standard library, so that case runs too, through a configuration that imports Flask first,
as one that reads an application's settings would.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .servers import Gunicorn, RedisServer
from .sse import RawStream

NOISE = ("Exception ignored", "Traceback")


@contextlib.contextmanager
def running(broker: str, workers: int, args: tuple[str, ...] = ()) -> Iterator[Gunicorn]:
    redis = RedisServer().start() if broker == "redis" else None
    env = {"PUSHSVC_BROKER_URL": redis.url} if redis else {}
    server = Gunicorn(workers=workers, env=env, args=args)
    try:
        yield server.start()
    finally:
        server.stop()
        if redis is not None:
            redis.cleanup()


def stop_and_read_log(server: Gunicorn, sig: int = signal.SIGTERM) -> str:
    """Serve a little (an open stream, a publish), stop with ``sig`` to the whole process group (as
    systemd and a terminal's Ctrl-C do), return the whole log."""
    stream = RawStream(server.port, "/sse/subscribe/stop-log")
    try:
        assert stream.read_until(b"retry: 3000\n")
        reply = httpx.post(server.url("/sse/publish"), json={"to": "stop-log", "data": "bye"}, timeout=10)
        assert reply.status_code == 202
        server.stop(sig)
        assert server.proc is not None and server.proc.returncode == 0, server.output()
    finally:
        stream.close()
    return server.output()


def assert_clean(log: str, workers: int) -> None:
    assert log.count("Worker exiting") >= workers, log
    for noise in NOISE:
        assert noise not in log, log


@pytest.mark.parametrize(("broker", "workers"), [("memory", 1), ("redis", 1), ("redis", 2)])
def test_sigterm_leaves_a_clean_log(broker: str, workers: int) -> None:
    with running(broker, workers) as server:
        assert_clean(stop_and_read_log(server), workers)


@pytest.mark.parametrize(("broker", "workers"), [("memory", 1), ("redis", 2)])
def test_sigterm_leaves_a_clean_log_when_flask_is_imported_before_the_workers(
        broker: str, workers: int, tmp_path: Path) -> None:
    config = tmp_path / "flask_first.conf.py"
    config.write_text("import flask  # noqa: F401\n"
                      "from pushsvc.server.gunicorn_conf import *  # noqa: F403\n")
    with running(broker, workers, args=("-c", str(config))) as server:
        assert_clean(stop_and_read_log(server), workers)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_a_quick_stop_leaves_a_clean_log(sig: int) -> None:
    with running("redis", 2) as server:
        assert_clean(stop_and_read_log(server, sig), 2)
